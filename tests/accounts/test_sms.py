"""SMS backends (issue 16): the HTTP provider backend against a real local server; no code in logs outside DEBUG."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from accounts.sms import ConsoleBackend, HttpBackend, SmsSendFailed


class Provider:
    """A tiny SMS provider: answers each POST with the next planned status (or sleeps past the timeout)."""

    def __init__(self, plan: list):
        self.plan = list(plan)
        self.received: list[dict] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                provider.received.append({"body": body, "auth": self.headers.get("Authorization")})
                step = provider.plan.pop(0) if provider.plan else 200
                if step == "hang":
                    time.sleep(1.0)
                    step = 200
                self.send_response(step)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider(settings):
    made = []

    def start(*plan):
        p = Provider(list(plan))
        made.append(p)
        settings.MIANDAN_SMS_HTTP_URL = p.url
        settings.MIANDAN_SMS_HTTP_TOKEN = "sms-secret"
        settings.MIANDAN_SMS_HTTP_TIMEOUT = 0.3
        settings.MIANDAN_SMS_HTTP_RETRIES = 2
        return p

    yield start
    for p in made:
        p.close()


def test_http_backend_posts_the_text_with_its_token(provider):
    p = provider(200)
    HttpBackend().send("13800000001", "123456")
    assert len(p.received) == 1
    assert p.received[0]["auth"] == "Bearer sms-secret"
    assert p.received[0]["body"]["phone"] == "13800000001" and "123456" in p.received[0]["body"]["text"]


def test_http_backend_retries_a_timeout_and_a_5xx(provider):
    p = provider("hang", 503, 200)
    started = time.monotonic()
    HttpBackend().send("13800000001", "123456")
    assert len(p.received) == 3
    assert time.monotonic() - started < 2.0  # the hung try was cut at the 0.3 s timeout


def test_http_backend_gives_up_without_leaking_the_code(provider, caplog):
    p = provider(500, 500, 500, 500)
    with caplog.at_level(logging.DEBUG), pytest.raises(SmsSendFailed) as failed:
        HttpBackend().send("13800000001", "654321")
    assert len(p.received) == 3  # 1 try + 2 retries
    assert "654321" not in str(failed.value) and "654321" not in caplog.text


def test_http_backend_does_not_retry_a_4xx(provider):
    p = provider(400, 200)
    with pytest.raises(SmsSendFailed):
        HttpBackend().send("13800000001", "123456")
    assert len(p.received) == 1


def test_the_console_backend_logs_a_code_only_with_debug(settings, caplog):
    settings.DEBUG = False
    with caplog.at_level(logging.DEBUG, logger="miandan.sms"):
        ConsoleBackend().send("13800000001", "135790")
    assert "135790" not in caplog.text and "withheld" in caplog.text
    settings.DEBUG = True
    with caplog.at_level(logging.DEBUG, logger="miandan.sms"):
        ConsoleBackend().send("13800000001", "135790")
    assert "135790" in caplog.text
