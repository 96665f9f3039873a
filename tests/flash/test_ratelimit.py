"""Rate limits (django-ratelimit on Redis) answered in the api.md shape, and the Redis-down policy."""

import copy

import pytest
from rest_framework.test import APIClient

from vouchers.models import Voucher
from vouchers.selectors import reconcile

# Every test runs on a single Redis and on a three-master Redis Cluster (tests/conftest.py `redis_backend`).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_backend")]

JOIN = "/api/v1/campaigns/{}/join"


def _join(client, campaign):
    return client.post(JOIN.format(campaign.slug), {"app_version": "1.0.0"}, format="json")


def test_nth_plus_one_request_in_window_is_429_with_retry_after(settings, auth_client, campaign):
    settings.MIANDAN_RATELIMITS = {"join_user": "3/m"}
    statuses = [_join(auth_client, campaign).status_code for _ in range(3)]
    assert statuses == [201, 200, 200]
    limited = _join(auth_client, campaign)
    assert limited.status_code == 429
    body = limited.json()
    assert body["code"] == "rate_limited"
    assert body["detail"]
    assert 1 <= body["retry_after"] <= 60
    assert limited["Retry-After"] == str(body["retry_after"])
    assert Voucher.objects.count() == 1
    assert reconcile(campaign=campaign).ok


def test_limit_is_per_user_and_per_ip(settings, make_auth_client, campaign):
    settings.MIANDAN_RATELIMITS = {"join_user": "1/m", "join_ip": "3/m"}
    alice, bob = make_auth_client(), make_auth_client()
    assert _join(alice, campaign).status_code == 201
    assert _join(alice, campaign).status_code == 429  # alice's own budget is spent ...
    assert _join(bob, campaign).status_code == 201  # ... bob's is not
    carol = make_auth_client()
    assert _join(carol, campaign).status_code == 429  # but the shared IP (4th request) is over its limit
    other_ip = _join_from(make_auth_client(), campaign, "10.1.2.3")
    assert other_ip.status_code == 201


def _join_from(client, campaign, ip):
    return client.post(JOIN.format(campaign.slug), {"app_version": "1.0.0"}, format="json", REMOTE_ADDR=ip)


def test_x_forwarded_for_only_counts_behind_trusted_proxies(settings, make_auth_client, campaign):
    settings.MIANDAN_RATELIMITS = {"join_user": "off", "join_ip": "1/m"}
    settings.MIANDAN_PROXY_COUNT = 0
    a, b = make_auth_client(), make_auth_client()
    assert a.post(JOIN.format(campaign.slug), {"app_version": "1.0.0"}, HTTP_X_FORWARDED_FOR="10.0.0.1").status_code == 201
    # Spoofed header ignored without a trusted proxy: same REMOTE_ADDR, so limited.
    assert b.post(JOIN.format(campaign.slug), {"app_version": "1.0.0"}, HTTP_X_FORWARDED_FOR="10.0.0.2").status_code == 429
    settings.MIANDAN_PROXY_COUNT = 1
    c = make_auth_client()
    assert c.post(JOIN.format(campaign.slug), {"app_version": "1.0.0"}, HTTP_X_FORWARDED_FOR="10.0.0.3").status_code == 201


def test_otp_limited_per_phone(settings):
    settings.MIANDAN_RATELIMITS = {"otp_phone": "2/10m"}
    settings.MIANDAN_SMS_BACKEND = "fixed"
    settings.MIANDAN_FIXED_OTP = "123456"
    client = APIClient()
    for _ in range(2):
        assert client.post("/api/v1/auth/otp", {"phone": "13700000001"}, format="json").status_code == 202
    third = client.post("/api/v1/auth/otp", {"phone": "13700000001"}, format="json")
    assert third.status_code == 429
    assert third.json()["code"] == "rate_limited"
    assert int(third["Retry-After"]) >= 1
    assert client.post("/api/v1/auth/otp", {"phone": "13700000002"}, format="json").status_code == 202


def _ratelimit_cache_on(settings, url):
    caches = copy.deepcopy(settings.CACHES)
    caches["ratelimit"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "KEY_PREFIX": "mdt-flash-own",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient",
                    "SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
    settings.CACHES = caches


def test_rate_limit_redis_down_fails_open_for_join_and_closed_for_otp(settings, own_redis, make_auth_client, campaign):
    settings.MIANDAN_SMS_BACKEND = "fixed"
    settings.MIANDAN_FIXED_OTP = "123456"
    settings.MIANDAN_RATELIMITS = {"join_user": "1/m"}
    _ratelimit_cache_on(settings, own_redis.url)
    client = make_auth_client()
    assert _join(client, campaign).status_code == 201
    assert _join(client, campaign).status_code == 429  # the limits really live in this Redis

    own_redis.stop()

    # Join fails open: PostgreSQL still enforces one welcome card and the budget.
    again = _join(client, campaign)
    assert again.status_code == 200, again.content
    fresh = _join(make_auth_client(), campaign)
    assert fresh.status_code == 201
    # OTP sending fails closed: without counters an attacker could send unlimited SMS.
    otp = APIClient().post("/api/v1/auth/otp", {"phone": "13700000003"}, format="json")
    assert otp.status_code == 503
    assert otp.json()["code"] == "busy"
    assert int(otp["Retry-After"]) >= 1
    # Login fails open: the one-time code itself allows only 5 tries (in PostgreSQL).
    login = APIClient().post("/api/v1/auth/token", {"phone": "13700000003", "code": "123456", "device_id": "d"},
                             format="json")
    assert login.status_code in (200, 400)
    assert login.status_code != 500
    assert Voucher.objects.count() == 2
    assert reconcile(campaign=campaign).ok


def test_referral_accept_and_orders_are_rate_limited_per_user(settings, auth_client, campaign):
    settings.MIANDAN_RATELIMITS = {"referral_user": "1/m", "order_user": "2/m"}
    referrals = f"/api/v1/campaigns/{campaign.slug}/referrals"
    first = auth_client.post(referrals, {"code": "NOSUCHCD"}, format="json")
    assert first.status_code != 429  # counted, answered by the view (invalid code)
    limited = auth_client.post(referrals, {"code": "NOSUCHCD"}, format="json")
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert auth_client.get(referrals).status_code == 200  # listing is a read: never limited
    body = {"text": "帮我点一杯奶茶", "lat": 30.27, "lng": 120.15, "campaign": campaign.slug}
    statuses = [auth_client.post("/api/v1/orders/chat", body, format="json").status_code for _ in range(2)]
    assert 429 not in statuses
    # The plain order endpoint shares the user's order budget.
    third = auth_client.post("/api/v1/orders", {"store": 1, "items": []}, format="json")
    assert third.status_code == 429
    assert int(third["Retry-After"]) >= 1


def test_guard_answers_are_not_logged_as_request_errors(settings, auth_client, campaign, caplog):
    settings.MIANDAN_RATELIMITS = {"join_user": "1/m"}
    auth_client.post(JOIN.format(campaign.slug), {"app_version": "1.0.0"}, format="json")
    with caplog.at_level("WARNING", logger="django.request"):
        assert _join(auth_client, campaign).status_code == 429
    assert not [r for r in caplog.records if r.name == "django.request"]


@pytest.mark.single_redis_only  # start-up checks in subprocesses: the same on any Redis, and slow
def test_malformed_rate_override_is_refused_at_startup_and_never_breaks_requests(settings, auth_client, campaign):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MIANDAN_RATELIMITS": "join_user=ten"}
    for command in (["manage.py", "check"], ["-c", "import miandan.wsgi"]):  # management commands and gunicorn
        result = subprocess.run([sys.executable, *command], cwd=root, env=env, capture_output=True, text=True)
        assert result.returncode != 0, command
        assert "miandan.E001" in result.stderr and "join_user='ten'" in result.stderr, result.stderr[-500:]
    # Set some other way, a malformed value falls back to the default instead of failing requests.
    settings.MIANDAN_RATELIMITS = {"join_user": "ten"}
    assert _join(auth_client, campaign).status_code == 201
