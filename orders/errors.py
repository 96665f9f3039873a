from miandan.api.errors import DomainError
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


class NoStoreAvailable(DomainError):
    code = "no_store_available"
    detail = "附近的门店都忙不过来或已打烊，请稍后再试"
    status = 409


class OrderNotFound(DomainError):
    code = "not_found"
    detail = "找不到该订单"
    status = 404


class CannotCancel(DomainError):
    code = "cannot_cancel"
    detail = "门店已接单，订单不能取消了"
    status = 409
