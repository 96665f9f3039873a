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
    text = auth_client.get("/metrics").content.decode()
    assert 'miandan_http_requests_total{method="POST",route="campaign-join",status="201"}' in text
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
