"""Adaptive load shedding: campaign writes get 503 busy when saturated; core reads never do."""

import threading

import pytest

from miandan.api.guard import AdaptiveLimiter, Ticket, get_limiter
from tests.factories import VoucherFactory
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_limiter(settings):
    settings.MIANDAN_SHED_MIN_LIMIT = 1
    settings.MIANDAN_SHED_MAX_LIMIT = 1
    settings.MIANDAN_SHED_INITIAL_LIMIT = 1
    return get_limiter()


def test_saturated_limiter_sheds_campaign_writes_but_serves_core_reads(tiny_limiter, auth_client, campaign):
    VoucherFactory(user=auth_client.user, campaign=campaign)
    held = tiny_limiter.try_acquire()  # one campaign write "in flight" fills the limit of 1
    assert held is not None
    try:
        shed = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
        assert shed.status_code == 503
        body = shed.json()
        assert body["code"] == "busy"
        assert body["detail"] == "活动太火爆了，请稍后再试"
        assert int(shed["Retry-After"]) >= 1
        assert body["retry_after"] == int(shed["Retry-After"])

        cards = auth_client.get("/api/v1/vouchers/")
        assert cards.status_code == 200
        assert cards.json()["count"] == 1
        assert auth_client.get(f"/api/v1/campaigns/{campaign.slug}/").status_code == 200
        assert auth_client.get("/healthz").status_code == 200
    finally:
        tiny_limiter.cancel(held)
    assert tiny_limiter.snapshot()["inflight"] == 0
    ok = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
    assert ok.status_code == 201
    assert tiny_limiter.snapshot()["inflight"] == 0  # the slot came back after the view
    assert reconcile(campaign=campaign).ok


@pytest.mark.django_db(transaction=True)
def test_a_real_request_in_flight_saturates_the_limiter(tiny_limiter, make_auth_client, campaign, monkeypatch):
    """A join held inside the view (test hook: an Event) makes the next one shed, and frees its slot after."""
    from vouchers import api as vouchers_api

    entered, release = threading.Event(), threading.Event()
    real_join = vouchers_api.campaign_join

    def held_join(**kwargs):
        entered.set()
        release.wait(30)
        return real_join(**kwargs)

    monkeypatch.setattr(vouchers_api, "campaign_join", held_join)
    first, second = make_auth_client(), make_auth_client()
    result = {}
    def in_flight():
        from django.db import connections

        try:
            result["r"] = first.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
        finally:
            connections.close_all()  # this thread's own connection

    thread = threading.Thread(target=in_flight)
    thread.start()
    assert entered.wait(30)
    try:
        shed = second.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
        assert shed.status_code == 503
        assert shed.json()["code"] == "busy"
        assert second.get("/healthz").status_code == 200
        assert second.get("/api/v1/vouchers/").status_code == 200
    finally:
        release.set()
        thread.join(30)
    assert result["r"].status_code == 201
    from django.db import connections

    connections.close_all()
    assert second.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json").status_code == 201
    assert reconcile(campaign=campaign).ok


def test_limit_shrinks_on_slow_completions_and_grows_when_fast_and_full():
    limiter = AdaptiveLimiter(min_limit=2, max_limit=20, initial=10, target=0.25)
    tickets = [limiter.try_acquire() for _ in range(10)]
    assert all(tickets)
    assert limiter.try_acquire() is None  # full at 10
    # A completion slower than the target (start time in the past, no sleeping) cuts the limit.
    limiter.release(Ticket(start=tickets[0].start - 1.0))
    assert limiter.snapshot()["limit"] == pytest.approx(8.0)
    # Further slow completions inside the same interval do not cut again (one burst counts once).
    limiter.release(Ticket(start=tickets[1].start - 1.0))
    assert limiter.snapshot()["limit"] == pytest.approx(8.0)
    for t in tickets[2:]:
        limiter.release(t)
    assert limiter.snapshot()["inflight"] == 0
    # Fast completions while the limiter is full raise the limit additively.
    before = limiter.snapshot()["limit"]
    for _ in range(20):
        batch = [limiter.try_acquire() for _ in range(int(limiter.snapshot()["limit"]))]
        for t in batch:
            limiter.release(t)
    assert limiter.snapshot()["limit"] > before
    # Never below the floor, never above the ceiling.
    for _ in range(50):
        limiter._last_decrease = 0.0
        t = limiter.try_acquire()
        limiter.release(Ticket(start=t.start - 1.0))
    assert limiter.snapshot()["limit"] == 2


def test_shed_and_rate_limited_requests_do_not_leak_slots(settings, tiny_limiter, auth_client, campaign):
    settings.MIANDAN_RATELIMITS = {"join_user": "1/m"}
    assert auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}).status_code == 201
    assert auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}).status_code == 429
    assert tiny_limiter.snapshot()["inflight"] == 0


def test_writes_that_queued_too_long_before_django_are_shed(settings, auth_client, campaign):
    import time

    settings.MIANDAN_SHED_MAX_QUEUE_MS = 500
    limiter = get_limiter()
    before = limiter.snapshot()["limit"]
    late = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json",
                            HTTP_X_REQUEST_START=f"t={time.time() - 5:.3f}")
    assert late.status_code == 503
    assert late.json()["code"] == "busy"
    assert limiter.snapshot()["limit"] < before  # the queue signal also tightens the concurrency limit
    # Core reads are never shed, however late.
    assert auth_client.get("/api/v1/vouchers/", HTTP_X_REQUEST_START=f"t={time.time() - 5:.3f}").status_code == 200
    fresh = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json",
                             HTTP_X_REQUEST_START=f"t={int(time.time() * 1000)}")  # milliseconds form
    assert fresh.status_code == 201


def test_write_limit_is_capped_at_half_the_gunicorn_threads():
    from miandan.api.guard import gunicorn_threads

    assert gunicorn_threads(["/venv/bin/gunicorn", "miandan.wsgi", "-w", "4", "--threads", "8"], "") == 8
    assert gunicorn_threads(["/venv/bin/gunicorn", "miandan.wsgi"], "--threads=6 -k gthread") == 6
    assert gunicorn_threads(["/venv/bin/gunicorn", "miandan.wsgi"], "") == 1  # sync worker: one at a time
    assert gunicorn_threads(["manage.py", "runserver"], "") is None  # not gunicorn: the settings decide


def test_gunicorn_threads_cap_applies_to_the_limiter(settings, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", ["/venv/bin/gunicorn", "miandan.wsgi", "--threads", "4"])
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    settings.MIANDAN_SHED_MAX_LIMIT = 64
    settings.MIANDAN_SHED_MIN_LIMIT = 2
    limiter = get_limiter()
    assert limiter.max_limit == 2
    assert limiter.snapshot()["limit"] <= 2
