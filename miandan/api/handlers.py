"""Django-level error views: JSON in the api.md shape under /api/, Django's defaults elsewhere."""

import sys

from django.views import defaults

from .errors import database_unavailable, error_response


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    if _is_api(request):
        return error_response("invalid", "请求格式有误", 400, fields={})
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return error_response("not_found", "找不到该资源", 404)
    return defaults.permission_denied(request, exception)


def not_found(request, exception=None):
    if _is_api(request):
        return error_response("not_found", "找不到该资源", 404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        # Called while the exception is being handled: a database outage outside a DRF view (middleware) is 503.
        unavailable = database_unavailable(sys.exc_info()[1])
        if unavailable is not None:
            response = error_response(status=503, **unavailable)
            response["Retry-After"] = str(unavailable["retry_after"])
            return response
        return error_response("server_error", "服务开小差了，请稍后再试", 500)
    return defaults.server_error(request)
