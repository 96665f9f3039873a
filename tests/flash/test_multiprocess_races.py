"""Races against a real multi-process server: gunicorn, 4 worker processes x 4 threads, on the test database.

In-process races share one interpreter (and its GIL); here each request may land in another process with its
own connection pool and its own per-process caches, as in production (gunicorn.conf.py's shape).

- guard OFF (RATELIMIT_ENABLE=0, MIANDAN_SHED_ENABLED=0) so every request reaches the services: the budget
  for n cards claimed by 10n users at once, and one invitee accepting 50 codes at once;
- guard ON with a tight join limit: every answer is the service's (201 / 409) or the guard's (429 / 503
  carrying Retry-After), nothing else, and the books still balance.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from accounts.services import token_create
from referrals.models import Referral
from referrals.services import invite_code_get_or_create
from tests.celery_worker import _database_url
from tests.concurrency import require_postgres
from tests.factories import CampaignFactory, UserFactory
from tests.referrals.conftest import relax
from tests.servers import serve
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db(transaction=True)
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
CLIENTS = 64  # requests in flight at once


def _server(tmp_path, **extra):
    from django.db import connections

    require_postgres()
    connections.close_all()
    env = {**os.environ, "DATABASE_URL": _database_url(), "CONN_MAX_AGE": "0", "REDIS_URL": settings.REDIS_URL or "",
           "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "CELERY_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
           "LOG_LEVEL": "WARNING", **{k: str(v) for k, v in extra.items()}}
    env.pop("MIANDAN_TEST_DB_NAME", None)
    # --preload: Django is imported once and forked, so four workers are up in seconds even on a busy box.
    return serve(lambda port: [GUNICORN, "miandan.wsgi", "-b", f"127.0.0.1:{port}", "-w", "4", "-k", "gthread",
                               "--threads", "4", "--preload", "--log-level", "warning"], env, tmp_path / "gunicorn.log",
                 ready_timeout=90)


def _storm(calls):
    """Each call is (method, url, token, json); all sent at once from CLIENTS threads; answers in order."""
    def send(call):
        method, url, token, body = call
        with httpx.Client(timeout=60) as client:
            r = client.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"})
            return r.status_code, (r.json().get("code") if r.headers.get("content-type", "").startswith(
                "application/json") else None), r.headers.get("Retry-After")

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(send, calls))


GUARD_OFF = {"RATELIMIT_ENABLE": "0", "MIANDAN_SHED_ENABLED": "0"}


def test_budget_for_n_cards_claimed_by_10n_users_across_gunicorn_workers(tmp_path):
    n = 12
    campaign = CampaignFactory(total_budget=Decimal("25.00") * n, bucket_count=4)
    tokens = [token_create(user=UserFactory(), device_id=f"mp-{i}") for i in range(10 * n)]  # one phone each
    with _server(tmp_path, **GUARD_OFF) as url:
        answers = _storm([("POST", f"{url}/api/v1/campaigns/{campaign.slug}/join", t, {"app_version": "1.0.0"})
                          for t in tokens])
    counts = Counter((status, code) for status, code, _ in answers)
    assert sum(v for (s, _), v in counts.items() if s == 201) == n, counts
    assert counts[(409, "budget_exhausted")] == 9 * n, counts
    assert Voucher.objects.filter(campaign=campaign).count() == n
    report = reconcile(campaign=campaign)
    assert report.ok and report.totals["remaining"] == 0, report.differences


def test_one_invitee_accepting_fifty_codes_across_gunicorn_workers(tmp_path):
    campaign = relax(CampaignFactory())
    token = token_create(user=(invitee := UserFactory()), device_id="one-phone")
    codes = [invite_code_get_or_create(user=UserFactory(), campaign=campaign).code for _ in range(50)]
    with _server(tmp_path, **GUARD_OFF) as url:
        answers = _storm([("POST", f"{url}/api/v1/campaigns/{campaign.slug}/referrals", token, {"code": c})
                          for c in codes])
    statuses = Counter((status, code if status != 201 else None) for status, code, _ in answers)
    assert statuses == {(201, None): 1, (409, "already_referred"): 49}, statuses
    referral = Referral.objects.get(campaign=campaign)
    assert referral.invitee == invitee
    assert Voucher.objects.filter(campaign=campaign).count() == 2
    assert reconcile(campaign=campaign).ok


def test_with_the_guard_on_every_answer_is_the_service_or_the_guard_with_retry_after(tmp_path):
    n = 10
    campaign = CampaignFactory(total_budget=Decimal("25.00") * n, bucket_count=4)
    tokens = [token_create(user=UserFactory(), device_id=f"mp-{i}") for i in range(40)]  # one phone each
    # One IP for all: the per-IP join limit (20/min) turns the storm's tail into 429s.
    with _server(tmp_path, RATELIMIT_ENABLE="1", MIANDAN_SHED_ENABLED="1", MIANDAN_RATELIMITS="join_ip=20/m") as url:
        answers = _storm([("POST", f"{url}/api/v1/campaigns/{campaign.slug}/join", t, {"app_version": "1.0.0"})
                          for t in tokens * 2])  # every user twice: repeats answer 200 with the same card
    allowed = {200, 201, 409, 429, 503}
    assert {status for status, _, _ in answers} <= allowed, Counter(a[:2] for a in answers)
    guard = [a for a in answers if a[0] in (429, 503)]
    assert guard, "the per-IP limit never answered"
    assert all(code in ("rate_limited", "busy") and retry and int(retry) >= 1 for _, code, retry in guard), guard
    assert all(code == "budget_exhausted" for status, code, _ in answers if status == 409)
    created = sum(1 for a in answers if a[0] == 201)
    assert created == Voucher.objects.filter(campaign=campaign).count() <= n
    assert reconcile(campaign=campaign).ok
