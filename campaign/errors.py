from miandan.api.errors import DomainError


class CampaignNotFound(DomainError):
    code = "not_found"
    detail = "活动不存在"
    status = 404


class CampaignNotLive(DomainError):
    code = "campaign_not_live"
    detail = "活动未开始或已结束"
    status = 409


class BudgetExhausted(DomainError):
    code = "budget_exhausted"
    detail = "活动太火爆，免单卡已经发完了"
    status = 409


class BudgetBelowCommitted(DomainError):
    code = "budget_below_committed"
    detail = "预算不能低于已预留与已花费之和"
    status = 409


class InvalidCampaign(DomainError):
    code = "invalid"
    detail = "活动参数有误"
    status = 400


class BudgetPaced(BudgetExhausted):
    """The spend plan allows no more right now (issue 20). A kind of "exhausted for now": callers that
    handle BudgetExhausted (referral rewards) treat it the same way; the API answers with its own code."""

    code = "budget_paced"
    detail = "今日免单卡已发完，明天再来"
    status = 409


class DailyCapReached(BudgetExhausted):
    """The campaign's daily card cap is used up for this local day."""

    code = "daily_cap_reached"
    detail = "今日免单卡已发完，明天再来"
    status = 409
