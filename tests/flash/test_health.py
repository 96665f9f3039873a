"""/healthz, /readyz and /metrics, and the request id on django.request log lines."""

import io
import json
import logging

import pytest

from miandan.api.logging import JsonFormatter
from miandan.api.middleware import RequestIdFilter

pytestmark = pytest.mark.django_db


def test_healthz(api_client):
    assert api_client.get("/healthz").json() == {"status": "ok"}


def test_readyz_ok_when_everything_answers(api_client):
    response = api_client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "ok"
    assert body["failed"] == []


def test_readyz_is_503_and_names_redis_when_its_redis_is_stopped(settings, own_redis, api_client):
    settings.REDIS_URL = own_redis.url
    assert api_client.get("/readyz").status_code == 200
    own_redis.stop()
    response = api_client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert "redis" in body["failed"]
    assert "database" not in body["failed"]
    assert body["checks"]["database"] == "ok"
    assert body["code"] == "not_ready"
    assert "redis" in body["detail"]


def test_readyz_names_the_broker(settings, own_redis, api_client):
    settings.CELERY_BROKER_URL = own_redis.url
    settings.CELERY_TASK_ALWAYS_EAGER = False
    own_redis.stop()
    response = api_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]


def test_metrics_count_requests_rejections_cards_and_budget(settings, auth_client, campaign):
    settings.MIANDAN_RATELIMITS = {"join_user": "1/m"}
    assert auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}).status_code == 201
    assert auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}).status_code == 429
    from tests.factories import OrderFactory

    OrderFactory(user=auth_client.user)
    text = auth_client.get("/metrics").content.decode()
    assert 'miandan_http_requests_total{method="POST",route="campaign-join",status="201"}' in text
    assert 'miandan_orders{state="placed"} 1.0' in text
    assert 'miandan_rejections_total{code="rate_limited",route="campaign-join"}' in text
    assert f'miandan_budget_remaining_yuan{{campaign="{campaign.slug}"}} 9975.0' in text
    assert f'miandan_cards{{campaign="{campaign.slug}",status="issued"}} 1.0' in text
    assert "miandan_shed_limit" in text
    assert "miandan_celery_queue_depth" in text


def test_django_request_log_lines_carry_the_request_id(api_client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        response = api_client.get("/api/v1/no-such-thing", HTTP_X_REQUEST_ID="req-abc-123")
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 404
    assert response["X-Request-ID"] == "req-abc-123"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines, "django.request logged nothing"
    assert all(line["request_id"] == "req-abc-123" for line in lines)
    assert lines[0]["path"] == "/api/v1/no-such-thing"


def test_runserver_access_lines_are_json_with_the_request_id(tmp_path):
    """django.server (runserver's access log) writes JSON lines carrying the request id too."""
    import os
    import time
    import urllib.request

    from tests.servers import runserver

    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'rs.sqlite3'}", "LOG_LEVEL": "INFO"}
    env.pop("MIANDAN_TEST_DB_NAME", None)
    log = tmp_path / "runserver.log"
    with runserver(env, log) as url:
        request = urllib.request.Request(f"{url}/api/v1/no-such-thing", headers={"X-Request-ID": "rs-77"})
        try:
            urllib.request.urlopen(request, timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        deadline = time.monotonic() + 10
        server_lines = []
        while time.monotonic() < deadline and not server_lines:
            time.sleep(0.2)
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            server_lines = [line for line in lines if line["logger"] == "django.server" and "no-such-thing" in line["msg"]]
        assert server_lines, log.read_text()[-2000:]
        assert server_lines[0]["request_id"] == "rs-77"


def test_openapi_schema_documents_the_guard_answers(api_client):
    import yaml

    schema = yaml.safe_load(api_client.get("/api/schema/").content)
    join = schema["paths"]["/api/v1/campaigns/{slug}/join"]["post"]["responses"]
    assert "429" in join and "Retry-After" in join["429"]["headers"]
    assert "busy" in join["503"]["description"] and "paused" in join["503"]["description"]
    otp = schema["paths"]["/api/v1/auth/otp"]["post"]["responses"]
    assert "429" in otp and "503" in otp
    # Unguarded: no 429; its 503 is only the database being unreachable (busy), never a guard's pause.
    vouchers = schema["paths"]["/api/v1/vouchers/"]["get"]["responses"]
    assert "429" not in vouchers and "paused" not in vouchers["503"]["description"]
    assert schema["components"]["schemas"]["GuardError"]["properties"]["code"]["enum"] == ["rate_limited", "busy", "paused"]


def test_metrics_aggregate_all_gunicorn_workers_in_multiprocess_mode(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR, /metrics counts the requests of every worker, whichever answers."""
    import os
    import re
    import sys
    import urllib.request
    from pathlib import Path

    from tests.servers import serve

    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.sqlite3'}", "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
           "LOG_LEVEL": "ERROR"}
    env.pop("MIANDAN_TEST_DB_NAME", None)
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with serve(lambda port: [gunicorn, "miandan.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2"], env,
               tmp_path / "gunicorn.log") as url:
        for _ in range(30):
            urllib.request.urlopen(f"{url}/healthz", timeout=5).read()
        # Each worker writes its own sample files; the kernel normally spreads the 30 connections over both.
        assert list(prom_dir.glob("counter_*.db"))
        for _ in range(4):  # whichever worker answers the scrape reports the same total
            text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
            match = re.search(r'miandan_http_requests_total\{method="GET",route="healthz",status="200"\} (\d+)', text)
            assert match, text[:2000]
            assert int(float(match.group(1))) >= 31  # the readiness poll's hits plus our 30


def test_metrics_report_the_celery_queue_depth(settings, api_client):
    import re

    from miandan.celery import app

    if settings.CELERY_TASK_ALWAYS_EAGER or not settings.CELERY_BROKER_URL:
        pytest.skip("needs a Celery broker")
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    old = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        with app.connection_for_write() as conn:
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:
                pass
        for _ in range(3):  # no worker consumes this queue in this test
            app.send_task("flash.never_consumed", queue=queue)
        text = api_client.get("/metrics").content.decode()
        match = re.search(rf'miandan_celery_queue_depth{{queue="{re.escape(queue)}"}} (\d+)', text)
        assert match, text[-1500:]
        assert int(float(match.group(1))) == 3
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)
        app.conf.task_always_eager = old


def test_readyz_names_a_failed_dependency_without_its_error_text(settings, api_client):
    settings.REDIS_URL = "redis://secret-user:hunter2@127.0.0.1:1/0"  # nothing listens there
    response = api_client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"] in ("error", "timeout")
    text = response.content.decode()
    assert "hunter2" not in text and "secret-user" not in text and "Error" not in text and "refused" not in text


def test_readyz_never_queues_a_second_probe_behind_a_stuck_one(settings, api_client, monkeypatch):
    import threading

    from miandan.api import health

    release = threading.Event()
    calls = []

    def stuck():
        calls.append(1)
        release.wait(10)

    monkeypatch.setattr(health, "_checks", lambda: {"database": stuck})
    monkeypatch.setitem(health._inflight, "database", None)
    settings.MIANDAN_READYZ_TIMEOUT = 0.1
    try:
        for _ in range(3):
            assert api_client.get("/readyz").json()["checks"]["database"] == "timeout"
        assert len(calls) == 1  # the stuck probe is reused, not joined by two more
    finally:
        release.set()


def test_metrics_need_the_token_or_an_allowed_network(settings, client):
    settings.MIANDAN_METRICS_ALLOWED_NETS = ["10.0.0.0/8"]
    settings.MIANDAN_METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics").status_code == 404  # 127.0.0.1 is not listed now
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    # Behind a proxy on localhost the client's own address decides, not the proxy's.
    settings.MIANDAN_PROXY_COUNT = 1
    settings.MIANDAN_METRICS_ALLOWED_NETS = ["127.0.0.1/32"]
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 404
