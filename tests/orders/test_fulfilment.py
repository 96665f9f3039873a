"""Fulfilment end to end with a real prefork Celery worker on the real broker."""

import time
from decimal import Decimal

import pytest

from campaign.models import LedgerEntry
from orders.models import Order, OrderEvent
from orders.services import order_sweep
from tests.factories import VoucherFactory
from tests.orders.conftest import LAT, LNG
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db(transaction=True)
CHAIN = ["placed", "sent_to_store", "accepted", "delivering", "completed"]


def wait_for(order_id, statuses, timeout=45.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Order.objects.filter(pk=order_id).values_list("status", flat=True).first()
        if status in statuses:
            return status
        time.sleep(0.1)
    raise AssertionError(f"order {order_id} still {status!r}, wanted {statuses}")


def place(client, text="一杯伯牙绝弦"):
    r = client.post("/api/v1/orders/chat", {"text": text, "lat": LAT, "lng": LNG}, format="json")
    assert r.status_code == 201, r.content
    return r.json()


def events(order_id):
    return list(OrderEvent.objects.filter(order_id=order_id).order_by("id").values_list("to_status", flat=True))


def test_chat_sentence_to_completed_order(catalogue, auth_client, campaign, celery_worker):
    card = VoucherFactory(user=auth_client.user, campaign=campaign)
    celery_worker.start(MIANDAN_MERCHANT_LATENCY_MS=20)
    body = place(auth_client)
    assert wait_for(body["id"], {"completed", "failed"}) == "completed", celery_worker.log()[-3000:]
    assert events(body["id"]) == CHAIN
    card.refresh_from_db()
    assert card.status == Voucher.Status.REDEEMED and card.subsidy == Decimal("18.00")
    moves = list(LedgerEntry.objects.filter(voucher_id=card.pk).order_by("id").values_list("kind", "amount"))
    assert moves == [("reserve", Decimal("25.00")), ("spend", Decimal("18.00")), ("release", Decimal("7.00"))]
    assert auth_client.get(f"/api/v1/orders/{body['id']}").json()["status"] == "completed"
    assert reconcile(campaign=campaign).ok


def test_merchant_failure_fails_order_and_returns_card(catalogue, auth_client, campaign, celery_worker):
    card = VoucherFactory(user=auth_client.user, campaign=campaign)
    celery_worker.start(MIANDAN_MERCHANT_LATENCY_MS=10, MIANDAN_MERCHANT_FAILURE_RATE=1)
    body = place(auth_client)
    assert wait_for(body["id"], {"completed", "failed"}) == "failed"
    assert events(body["id"]) == ["placed", "failed"]
    assert Order.objects.get(pk=body["id"]).failure_reason
    card.refresh_from_db()
    assert card.status == Voucher.Status.ISSUED and card.order_id is None and card.subsidy is None
    assert not LedgerEntry.objects.filter(voucher_id=card.pk, kind="spend").exists()
    assert reconcile(campaign=campaign).ok
    # The card works again for the next order.
    assert place(auth_client)["voucher"] == card.code


def test_worker_killed_mid_step_completes_exactly_once_after_restart_and_sweep(
    catalogue, auth_client, campaign, celery_worker, settings
):
    card = VoucherFactory(user=auth_client.user, campaign=campaign)
    celery_worker.start(MIANDAN_MERCHANT_LATENCY_MS=3000)  # each merchant call takes ~1.5-4.5 s
    body = place(auth_client)
    wait_for(body["id"], {"sent_to_store"}, timeout=30)
    time.sleep(0.5)  # now inside await_acceptance (the merchant call of the next step)
    celery_worker.kill()
    assert Order.objects.get(pk=body["id"]).status == "sent_to_store"
    celery_worker.start(MIANDAN_MERCHANT_LATENCY_MS=20)
    settings.MIANDAN_ORDER_STUCK_SECONDS = 0
    # The killed worker's message sits unacked until the broker's visibility timeout; the
    # sweeper re-sends it now. Sweep twice: a duplicate delivery must change nothing.
    assert order_sweep()["resent"] == 1
    order_sweep()
    assert wait_for(body["id"], {"completed", "failed"}) == "completed", celery_worker.log()[-3000:]
    time.sleep(1.0)  # let the duplicate run to its no-op end
    assert events(body["id"]) == CHAIN
    card.refresh_from_db()
    assert card.status == Voucher.Status.REDEEMED
    assert LedgerEntry.objects.filter(voucher_id=card.pk, kind="spend").count() == 1
    assert Order.objects.get(pk=body["id"]).attempts == 1
    assert reconcile(campaign=campaign).ok


def test_sweeper_fails_orders_never_accepted(catalogue, auth_client, campaign, settings):
    card = VoucherFactory(user=auth_client.user, campaign=campaign)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    from miandan.celery import app

    app.conf.task_always_eager = False
    try:
        body = place(auth_client)
        settings.MIANDAN_ORDER_ACCEPT_DEADLINE_SECONDS = 0
        assert order_sweep()["failed"] == 1
    finally:
        app.conf.task_always_eager = settings.CELERY_TASK_ALWAYS_EAGER
    assert Order.objects.get(pk=body["id"]).status == "failed"
    card.refresh_from_db()
    assert card.status == Voucher.Status.ISSUED
    assert reconcile(campaign=campaign).ok


def test_eager_mode_runs_the_whole_chain(catalogue, auth_client, campaign, settings):
    """The demo has no broker: Celery runs eagerly and the chain must still complete."""
    from miandan.celery import app

    card = VoucherFactory(user=auth_client.user, campaign=campaign)
    settings.MIANDAN_MERCHANT_LATENCY_MS = 0
    old = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        body = place(auth_client)
    finally:
        app.conf.task_always_eager = old
    assert Order.objects.get(pk=body["id"]).status == "completed"
    assert events(body["id"]) == CHAIN
    card.refresh_from_db()
    assert card.status == Voucher.Status.REDEEMED
    assert reconcile(campaign=campaign).ok


def test_merchant_timeouts_are_retried_until_completion(catalogue, make_auth_client, campaign, celery_worker):
    clients = [make_auth_client() for _ in range(4)]
    for c in clients:
        VoucherFactory(user=c.user, campaign=campaign)
    # Seed 4: each worker process's first merchant call draws 0.10 < 0.2, so a timeout surely happens.
    celery_worker.start(MIANDAN_MERCHANT_LATENCY_MS=5, MIANDAN_MERCHANT_TIMEOUT_RATE=0.2, MIANDAN_MERCHANT_SEED=4)
    ids = [place(c)["id"] for c in clients]
    for order_id in ids:
        assert wait_for(order_id, {"completed", "failed"}, timeout=90) == "completed", celery_worker.log()[-3000:]
        assert events(order_id) == CHAIN
    assert "Retry in" in celery_worker.log() or "retry" in celery_worker.log().lower()
    assert reconcile(campaign=campaign).ok
