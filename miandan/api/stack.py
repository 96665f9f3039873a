"""Two middleware chains in one WSGI app: app calls to the JSON API skip what only the admin and pages use.

Every request of the phone app goes through the whole of settings.MIDDLEWARE otherwise: sessions, CSRF, the
auth and messages middleware, the static-file lookup and django-axes, none of which an app call with a bearer
token uses (measured in-process: 70 µs of a 370 µs API answer, BENCHMARKS.md). A request is an app call when
its path is under /api/v1/ and it carries no session cookie; anything else, including a staff member's
browser calling the API with its session, gets the full chain, so session authentication and CSRF behave as
before. settings.MIDDLEWARE itself stays complete: Django's deploy checks and the test client read it.
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

API_PREFIX = "/api/v1/"


class _ApiCallHandler(WSGIHandler):
    def load_middleware(self, is_async=False):
        # BaseHandler builds its chain from settings.MIDDLEWARE and takes no other list: lend it the API chain
        # for the build. This runs once, while the WSGI module is imported, before any request is served.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.MIANDAN_API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


def is_app_api_call(environ: dict) -> bool:
    return (environ.get("PATH_INFO", "").startswith(API_PREFIX)
            and settings.SESSION_COOKIE_NAME + "=" not in environ.get("HTTP_COOKIE", ""))


class ApiCallsFirst:
    """The WSGI app: app API calls to the short chain, every other request to `full` (Django's WSGIHandler)."""

    def __init__(self, full) -> None:
        self.full = full
        self.api = _ApiCallHandler()

    def __call__(self, environ, start_response):
        handler = self.api if is_app_api_call(environ) else self.full
        return handler(environ, start_response)
