"""The polling fallback: due orders are claimed once (SKIP LOCKED), asked about in batches, lost ones re-sent.

These run the poller in-process (eager tasks) against a real simulated merchant process without callbacks.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from demo.bulk import orders_bulk_place
from orders.models import Order, OrderEvent
from orders.services import _claim_due, order_poll_due
from tests.concurrency import run_threads
from tests.factories import CampaignFactory
from tests.fulfilment import SECRET, MerchantProcess, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def eager(settings):
    from miandan.celery import app

    old = app.conf.task_always_eager
    settings.CELERY_TASK_ALWAYS_EAGER = app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = old


@pytest.fixture
def merchant(tmp_path, settings):
    import os

    from tests.celery_worker import _database_url

    env = {**os.environ, "DATABASE_URL": _database_url(), "MIANDAN_MERCHANT_SECRET": SECRET,
           "MIANDAN_MERCHANT_ACCEPT_SECONDS": "0.2-0.4", "MIANDAN_MERCHANT_DELIVER_SECONDS": "0.2-0.4"}
    env.pop("MIANDAN_TEST_DB_NAME", None)
    process = MerchantProcess(tmp_path, env)
    settings.MIANDAN_MERCHANT_URL, settings.MIANDAN_MERCHANT_SECRET = process.url, SECRET
    process.start("--no-callbacks")
    yield process
    process.stop()


def test_two_pollers_at_once_claim_disjoint_batches(catalogue):
    campaign = CampaignFactory()
    ids = orders_bulk_place(campaign=campaign, count=60)
    Order.objects.filter(pk__in=ids).update(next_check_at=timezone.now() - dt.timedelta(seconds=1))
    results = run_threads(lambda: _claim_due(now=timezone.now(), limit=40), 3)
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok]
    claimed = [pk for r in results for pk, _ in r.value]
    assert len(claimed) == len(set(claimed)) == 60  # every due order once, none twice
    assert not Order.objects.filter(pk__in=ids, next_check_at__lte=timezone.now()).exists()  # pushed out


def test_poller_asks_in_batches_and_resends_what_the_merchant_lost(catalogue, eager, merchant, settings):
    campaign = CampaignFactory()
    ids = orders_bulk_place(campaign=campaign, count=5)
    Order.objects.filter(pk__in=ids).update(next_check_at=timezone.now())
    settings.MIANDAN_MERCHANT_POLL_SECONDS = 0
    # Due and never sent: the poller re-sends them (the submit runs inline here).
    counts = order_poll_due(batch=2)
    assert counts["resent"] == 5, counts
    assert set(Order.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"sent_to_store"}
    # The merchant loses everything it held (state file gone): it answers "unknown" and gets them again.
    merchant.kill()
    merchant.state.unlink()
    merchant.start()
    counts = order_poll_due(batch=2)
    assert counts["asked"] == 5 and counts["resent"] == 5, counts
    assert merchant.health()["received"] == 5 and merchant.health()["polls"] == 3  # batches of 2, 2 and 1
    # No callbacks: polling alone takes every order to completed, each state once.
    wait_until(lambda: order_poll_due(batch=2) and not Order.objects.filter(pk__in=ids).exclude(
        status="completed").exists(), timeout=30, interval=0.5, what="completed by polling")
    for order_id in ids:
        steps = list(OrderEvent.objects.filter(order_id=order_id).order_by("id").values_list("to_status", flat=True))
        assert steps == ["placed", "sent_to_store", "accepted", "delivering", "completed"]
        assert Order.objects.get(pk=order_id).attempts == 2  # sent twice: once before and once after the loss
    time.sleep(0.1)
    assert order_poll_due()["due"] == 0  # final orders leave the index


def test_unsent_orders_are_resent_with_backoff_by_age(catalogue, settings):
    """An order never sent is re-sent when due (its submit task goes to the broker), and its next check moves
    out with its age, so a slow queue does not get a new copy of every waiting order each minute."""
    settings.MIANDAN_ORDER_STUCK_SECONDS = 60
    campaign = CampaignFactory()
    young, old = orders_bulk_place(campaign=campaign, count=2)
    now = timezone.now()
    Order.objects.filter(pk=young).update(created_at=now - dt.timedelta(seconds=61), next_check_at=now)
    Order.objects.filter(pk=old).update(created_at=now - dt.timedelta(seconds=300), next_check_at=now)
    counts = order_poll_due(now=now)
    assert counts["due"] == 2 and counts["resent"] == 2, counts
    checks = dict(Order.objects.filter(pk__in=[young, old]).values_list("pk", "next_check_at"))
    assert abs((checks[young] - now).total_seconds() - 61) < 1  # max(60 s, its age of 61 s)
    assert abs((checks[old] - now).total_seconds() - 300) < 1  # backs off with age
    assert order_poll_due(now=now + dt.timedelta(seconds=30))["due"] == 0
