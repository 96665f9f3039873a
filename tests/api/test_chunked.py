"""A body sent with Transfer-Encoding: chunked reaches the API through gunicorn (miandan/chunked.py).

Found by an outside review: without a Content-Length Django and DRF read no body, so a valid login streamed
by a phone's HTTP stack was answered 400 "该字段是必填项". Through the real server, as the app meets it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.concurrency import require_postgres
from tests.fulfilment import _database_url
from tests.servers import serve

pytestmark = pytest.mark.django_db(transaction=True)
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


@pytest.fixture
def server(tmp_path):
    from django.db import connections

    require_postgres()
    connections.close_all()
    env = {**os.environ, "DATABASE_URL": _database_url(), "CONN_MAX_AGE": "0", "REDIS_URL": settings.REDIS_URL or "",
           "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "CELERY_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
           "LOG_LEVEL": "WARNING", "MIANDAN_SMS_BACKEND": "fixed", "MIANDAN_FIXED_OTP": "246810"}
    env.pop("MIANDAN_TEST_DB_NAME", None)
    with serve(lambda port: [GUNICORN, "miandan.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1", "-k", "gthread",
                             "--threads", "2", "--log-level", "warning"], env, tmp_path / "gunicorn.log",
               ready_timeout=90) as url:
        yield url


def _chunks(payload: bytes, size: int = 7):
    for i in range(0, len(payload), size):
        yield payload[i:i + size]


def test_a_chunked_login_is_read_and_a_chunked_oversized_body_is_413(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        sent = client.post("/api/v1/auth/otp", json={"phone": "13800009999"})
        assert sent.status_code == 202, sent.text
        body = json.dumps({"phone": "13800009999", "code": "246810", "device_id": "chunky"}).encode()
        # A generator body has no length: httpx sends it with Transfer-Encoding: chunked.
        login = client.post("/api/v1/auth/token", content=_chunks(body), headers={"Content-Type": "application/json"})
        assert login.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in login.request.headers
        assert login.status_code == 200, login.text
        assert login.json()["token"]

        huge = json.dumps({"text": "奶茶" * 40_000}).encode()  # over the 64 KiB limit
        refused = client.post("/api/v1/orders/chat", content=_chunks(huge, 4096),
                              headers={"Content-Type": "application/json",
                                       "Authorization": f"Bearer {login.json()['token']}"})
        assert refused.status_code == 413 and refused.json()["code"] == "payload_too_large", refused.text
