"""Domain errors and the one place that renders every API error.

Services raise `DomainError` subclasses; this module turns them (and DRF's own
exceptions) into the api.md shape `{"code", "detail", ...extra}`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exc
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """A business rule said no. `code` is part of the API contract."""

    code = "error"
    detail = "请求无法完成"
    status = 400

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        extra: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.detail = detail or self.detail
        self.code = code or self.code
        self.status = status or self.status
        self.extra = dict(extra or {})
        self.retry_after = retry_after
        if retry_after is not None:
            self.extra.setdefault("retry_after", retry_after)
        super().__init__(f"{self.code}: {self.detail}")

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "detail": str(self.detail), **self.extra}


class NotFound(DomainError):
    code = "not_found"
    detail = "找不到该资源"
    status = 404


class InvalidInput(DomainError):
    code = "invalid"
    detail = "请求参数有误"
    status = 400


class RateLimited(DomainError):
    code = "rate_limited"
    detail = "操作太频繁了，请稍后再试"
    status = 429


class Busy(DomainError):
    code = "busy"
    detail = "活动太火爆了，请稍后再试"
    status = 503


class Paused(DomainError):
    code = "paused"
    detail = "该功能暂时暂停，请稍后再试"
    status = 503


def error_response(code: str, detail: str, status: int, **extra: Any) -> JsonResponse:
    """A plain Django response in the API error shape (for middleware and handlers)."""
    response = JsonResponse(
        {"code": code, "detail": detail, **extra}, status=status, json_dumps_params={"ensure_ascii": False}
    )
    if "retry_after" in extra:
        response["Retry-After"] = str(extra["retry_after"])
    return response


def domain_error_response(exc: DomainError) -> JsonResponse:
    """A DomainError as a plain Django response (middleware answers before DRF runs)."""
    response = error_response(exc.code, str(exc.detail), exc.status, **exc.extra)
    response.error_code = exc.code  # counted by the metrics middleware without parsing the body
    return response


# DRF messages it does not mark for translation, by (code, text); the rest come translated (or from locale/).
_UNTRANSLATED = {("null", "No data provided"): "没有提供数据"}


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    text = str(detail)
    return _UNTRANSLATED.get((getattr(detail, "code", None), text), text)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        response = Response(exc.body(), status=exc.status)
        if exc.retry_after is not None:
            response["Retry-After"] = str(exc.retry_after)
        # A business answer (409 budget_exhausted, card_limit_reached, ...), not an error: counted by code in
        # /metrics (miandan_rejections_total). django.request would write one WARNING line per answer, which at a
        # peak of refused joins is a log flood and a real share of each answer's CPU (issue 14).
        response._has_been_logged = True
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response({"code": "payload_too_large", "detail": "请求体太大"}, status=413)
    if isinstance(exc, SuspiciousOperation):
        return Response({"code": "invalid", "detail": "请求格式有误", "fields": {}}, status=400)
    if isinstance(exc, DataError):
        # Input the database cannot store (NUL bytes, out-of-range numbers) that slipped past a serializer:
        # the caller's fault, so a 400, never a 500. Logged so the missing validation gets fixed.
        logger.warning("DataError reached the API error handler: %s", exc)
        return Response({"code": "invalid", "detail": "请求参数有误", "fields": {}}, status=400)
    if isinstance(exc, Http404):
        return Response({"code": "not_found", "detail": "找不到该资源"}, status=404)
    if isinstance(exc, PermissionDenied):
        # api.md: anything the caller may not see is simply not there.
        return Response({"code": "not_found", "detail": "找不到该资源"}, status=404)
    if isinstance(exc, drf_exc.ValidationError):
        fields = _flatten(exc.detail)
        if not isinstance(fields, dict):
            fields = {"non_field_errors": fields if isinstance(fields, list) else [fields]}
        return Response({"code": "invalid", "detail": "请求参数有误", "fields": fields}, status=400)
    if isinstance(exc, drf_exc.ParseError):
        return Response({"code": "invalid", "detail": "请求体不是合法的 JSON", "fields": {}}, status=400)
    if isinstance(exc, drf_exc.UnsupportedMediaType):
        return Response({"code": "unsupported_media_type", "detail": "请使用 application/json"}, status=415)
    if isinstance(exc, (drf_exc.NotAuthenticated, drf_exc.AuthenticationFailed)):
        return Response(
            {"code": "not_authenticated", "detail": "请先登录"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="api"'},
        )
    if isinstance(exc, drf_exc.PermissionDenied):
        return Response({"code": "not_found", "detail": "找不到该资源"}, status=404)
    if isinstance(exc, drf_exc.NotFound):
        return Response({"code": "not_found", "detail": "找不到该资源"}, status=404)
    if isinstance(exc, drf_exc.MethodNotAllowed):
        return Response({"code": "method_not_allowed", "detail": "不支持该请求方法"}, status=405)
    if isinstance(exc, drf_exc.NotAcceptable):
        return Response({"code": "not_acceptable", "detail": "不支持请求的返回格式"}, status=406)
    if isinstance(exc, drf_exc.Throttled):
        wait = int(exc.wait or 1)
        return Response(
            {"code": "rate_limited", "detail": RateLimited.detail, "retry_after": wait},
            status=429,
            headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, drf_exc.APIException):
        return Response({"code": str(exc.default_code), "detail": str(exc.detail)}, status=exc.status_code)
    unavailable = database_unavailable(exc)
    if unavailable is not None:
        return Response(unavailable, status=503, headers={"Retry-After": str(unavailable["retry_after"])})
    logger.exception("unhandled API error", extra={"view": repr(context.get("view"))})
    return Response({"code": "server_error", "detail": "服务开小差了，请稍后再试"}, status=500)


DB_RETRY_AFTER = 2


def database_unavailable(exc: BaseException | None) -> dict[str, Any] | None:
    """The 503 `busy` body for a database that is unreachable or gave up on the statement, else None.

    A lost or refused connection, a failover, a statement cancelled by its timeout: transient, nothing was
    written (the transaction rolled back), so the client is told to come back (Retry-After) as under overload,
    not given a 500 (found by the chaos run, tests/chaos: PostgreSQL cut for two seconds under traffic).
    """
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return None
    logger.warning("database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc))
    return {"code": "busy", "detail": "服务繁忙，请稍后再试", "retry_after": DB_RETRY_AFTER}
