"""App calls to /api/v1/ run a shorter middleware chain (miandan/api/stack.py): same answers, fewer layers."""

import io
import json

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.middleware.csrf import CsrfViewMiddleware

from accounts.services import token_create
from miandan.api.stack import ApiCallsFirst, is_app_api_call
from tests.factories import StaffFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def app():
    return ApiCallsFirst(WSGIHandler())


def call(handler, method, path, *, body=None, headers=None):
    """One request through a WSGI handler, as gunicorn would send it (test transaction kept: see ClientHandler)."""
    raw = json.dumps(body).encode() if body is not None else b""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "testserver",
               "SERVER_PORT": "80", "HTTP_HOST": "testserver", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.9.8.7",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(raw), "wsgi.errors": io.StringIO(),
               "CONTENT_LENGTH": str(len(raw)), "CONTENT_TYPE": "application/json"}
    environ.update(headers or {})
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(response_headers)

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        chunks = handler(environ, start_response)
        answer["body"] = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answer


def test_only_cookieless_api_v1_calls_take_the_short_chain(settings):
    assert is_app_api_call({"PATH_INFO": "/api/v1/me"})
    assert is_app_api_call({"PATH_INFO": "/api/v1/me", "HTTP_COOKIE": "theme=dark"})
    assert not is_app_api_call({"PATH_INFO": "/api/v1/me", "HTTP_COOKIE": f"a=1; {settings.SESSION_COOKIE_NAME}=x"})
    assert not is_app_api_call({"PATH_INFO": "/admin/"})
    assert not is_app_api_call({"PATH_INFO": "/api/docs/"})  # an HTML page: the full chain
    assert not is_app_api_call({"PATH_INFO": "/c/spring-tea/"})


def test_the_short_chain_has_no_csrf_or_session_layer(app):
    def has_csrf(handler):
        return any(isinstance(getattr(m, "__self__", None), CsrfViewMiddleware) for m in handler._view_middleware)

    assert has_csrf(app.full) and not has_csrf(app.api)


@pytest.mark.parametrize("language", ["zh-CN,zh;q=0.9", "en-US,en;q=0.9"])
def test_both_chains_give_the_same_answers(app, campaign, language):
    token = token_create(user=UserFactory(), device_id="stack-device")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT_LANGUAGE": language}
    requests = [
        ("GET", "/api/v1/me", None, auth),
        ("GET", f"/api/v1/campaigns/{campaign.slug}/", None, auth),
        ("GET", "/api/v1/me", None, {"HTTP_AUTHORIZATION": "Bearer nope", "HTTP_ACCEPT_LANGUAGE": language}),
        ("POST", "/api/v1/orders", {"text": 5}, auth),  # 400 in the api.md error shape, in the caller's language
        ("GET", "/api/v1/no-such-thing", None, auth),
    ]
    for method, path, body, headers in requests:
        short = call(app.api, method, path, body=body, headers=headers)
        full = call(app.full, method, path, body=body, headers=headers)
        assert short["status"] == full["status"], path
        assert short["body"] == full["body"], path
        for header in ("Content-Type", "X-Frame-Options", "X-Content-Type-Options", "Content-Language"):
            assert short["headers"].get(header) == full["headers"].get(header), (path, header)
    # And the join itself: 201 through the short chain, the repeat 200 through the full one.
    joined = call(app, "POST", f"/api/v1/campaigns/{campaign.slug}/join", body={"app_version": "1.0.0"}, headers=auth)
    again = call(app.full, "POST", f"/api/v1/campaigns/{campaign.slug}/join", body={"app_version": "1.0.0"},
                 headers=auth)
    assert (joined["status"], again["status"]) == (201, 200)
    assert json.loads(joined["body"])["code"] == json.loads(again["body"])["code"]  # the same welcome card


def test_a_browser_session_on_the_api_gets_the_full_chain(app, client):
    """Staff reading a report in the browser authenticate by session: that needs the session and auth layers."""
    client.force_login(StaffFactory(groups=["finance"]))
    cookie = f"{client.cookies.output(header='', sep=';').strip()}"
    answer = call(app, "GET", "/api/v1/reports/campaigns/none-such/budget", headers={"HTTP_COOKIE": cookie})
    assert answer["status"] == 404  # authenticated by its session; without the full chain it would be 401/403
    anonymous = call(app, "GET", "/api/v1/reports/campaigns/none-such/budget")
    assert anonymous["status"] in (401, 403)
