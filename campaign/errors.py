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
