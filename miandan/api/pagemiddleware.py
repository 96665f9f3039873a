"""Page-only middleware kept off app API calls.

Sessions, the auth middleware's lazy user, CSRF, messages and locale serve the admin and the HTML pages.
An app call (`/api/...` with a bearer token and no session cookie) uses none of them, yet paid for all of
them on every request. These subclasses (so Django's admin checks still find them in MIDDLEWARE) step
aside for such calls. A call that carries the session cookie (staff using the API from the admin) gets
the full chain, so DRF's session authentication and its CSRF check work exactly as before.

(Its own module: miandan.api.middleware is imported by the logging configuration before apps load.)
"""

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as _Auth
from django.contrib.messages.middleware import MessageMiddleware as _Messages
from django.contrib.sessions.middleware import SessionMiddleware as _Session
from django.middleware.csrf import CsrfViewMiddleware as _Csrf
from django.middleware.locale import LocaleMiddleware as _Locale


def is_app_api_call(request) -> bool:
    return (request.path_info.startswith("/api/")
            and f"{settings.SESSION_COOKIE_NAME}=" not in request.META.get("HTTP_COOKIE", ""))


class _PagesOnly:
    def __call__(self, request):
        if is_app_api_call(request):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_PagesOnly, _Session):
    pass


class LocaleMiddleware(_PagesOnly, _Locale):
    pass


class AuthenticationMiddleware(_PagesOnly, _Auth):
    pass


class MessageMiddleware(_PagesOnly, _Messages):
    pass


class CsrfViewMiddleware(_PagesOnly, _Csrf):
    def process_view(self, request, callback, callback_args, callback_kwargs):
        # Without a session cookie there is nothing a forged request could ride on (browsers do not send
        # bearer tokens by themselves).
        if is_app_api_call(request):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)
