from miandan.api.errors import DomainError, InvalidInput
from vouchers.errors import NoVoucher  # noqa: F401  (re-exported: the order API raises it)

from .parser import SUGGESTIONS


class NotUnderstood(DomainError):
    code = "not_understood"
    detail = "没听懂这句话"
    status = 422

    def __init__(self, detail: str | None = None, *, suggestions=SUGGESTIONS, why: str | None = None, **kwargs) -> None:
        # `why` says which kind of refusal it is (other_intent, off_menu, quantity, contradiction, injection,
        # no_product, ambiguous, two_brands, option_not_offered): for the app's wording and for analytics.
        extra = {"suggestions": list(suggestions)}
        if why:
            extra["why"] = why
        super().__init__(detail, extra=extra, **kwargs)


class OptionNotOffered(InvalidInput):
    """An option the product does not have (小杯 of a drink sold only large): 400 `invalid` naming the choices.

    A chat order turns it into 422 `not_understood` with the choices as suggestions (orders.services.order_chat).
    """

    def __init__(self, message: str, options: list[str]) -> None:
        self.message, self.options = message, list(options)
        self.hint = f"{message}，可选：{'、'.join(self.options)}"
        super().__init__(message, extra={"fields": {"items": [self.hint]}})


class NoStoreAvailable(DomainError):
    code = "no_store_available"
    detail = "附近的门店都忙不过来或已打烊，请稍后再试"
    status = 409


class StoreCapReached(DomainError):
    """Every candidate store (or its brand) used up today's subsidy cap of the campaign (issue 20)."""

    code = "store_cap_reached"
    detail = "附近门店今日的免单名额已用完，请明天再来或按原价下单"
    status = 409


class OrderNotFound(DomainError):
    code = "not_found"
    detail = "找不到该订单"
    status = 404


class CannotCancel(DomainError):
    code = "cannot_cancel"
    detail = "门店已接单，订单不能取消了"
    status = 409


# --- merchant callbacks (POST /api/v1/merchants/{merchant}/events) --------------------------

class BadSignature(DomainError):
    code = "bad_signature"
    detail = "签名无效"
    status = 401


class StaleEvent(DomainError):
    code = "stale_event"
    detail = "请求时间戳已过期（超过 5 分钟）"
    status = 401


class InvalidEvent(InvalidInput):
    def __init__(self, fields: dict) -> None:
        super().__init__("门店事件格式有误", extra={"fields": fields})


class UnknownOrder(DomainError):
    code = "unknown_order"
    detail = "没有这个订单（或它不是发给该门店系统的）"
    status = 404


class EventIdReused(DomainError):
    code = "event_id_reused"
    detail = "同一个事件号已用于内容不同的事件"
    status = 409
