from campaign.errors import BudgetExhausted, CampaignNotLive  # noqa: F401  (re-exported for callers)
from miandan.api.errors import DomainError


class AppUpgradeRequired(DomainError):
    code = "app_upgrade_required"
    detail = "当前 App 版本过低，请升级到最新版本后参加活动"
    status = 403


class DeviceLimitReached(DomainError):
    code = "device_limit_reached"
    detail = "该设备领取的免单卡已达上限"
    status = 409


class CardLimitReached(DomainError):
    code = "card_limit_reached"
    detail = "您的免单卡已达上限"
    status = 409


class NoVoucher(DomainError):
    code = "no_voucher"
    detail = "您没有可用的免单卡"
    status = 409


class VoucherNotFound(DomainError):
    code = "not_found"
    detail = "找不到这张免单卡"
    status = 404


class VoucherStateConflict(DomainError):
    code = "voucher_state_conflict"
    detail = "这张免单卡当前状态不允许该操作"
    status = 409
