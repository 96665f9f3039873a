"""Worker death at a CONFIRMED moment, recovered by the broker's redelivery (acks_late), not by a sweep.

The moment is made and confirmed without a sleep or a hook in the code: the test holds a row lock (its own
PostgreSQL connection, `SELECT ... FOR UPDATE`) on the row the step writes, then waits until PostgreSQL itself
reports a backend blocked behind that lock (`pg_blocking_pids`) running the step's statement. Only then is the
prefork worker SIGKILLed, parent and children: its half-done transaction can never commit (no COMMIT will ever
come from a dead client) and its message was never acknowledged, so RabbitMQ hands the SAME message (same task
id) to the next worker when the dead one's connection drops.

- submit: killed inside `_record_sent`, after the merchant took the order, before `placed -> sent_to_store`;
- redeem: killed inside the completion transaction, after the order row says completed and the card says
  redeemed (both uncommitted), while the budget bucket is being charged (`budget_spend`).

The merchant runs without callbacks, so only the worker (never the web server) applies its answers: what
finishes the order after the kill is the redelivered message.
"""

from __future__ import annotations

import contextlib
import re
import uuid

import psycopg
import pytest
from django.utils import timezone

from accounts.services import token_create
from campaign.models import BudgetBucket, LedgerEntry
from miandan.tasks import enqueue
from orders.models import Order, OrderEvent
from tests.celery_worker import _database_url
from tests.factories import UserFactory, VoucherFactory
from tests.fulfilment import Stack, wait_until
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]
CHAIN = ["placed", "sent_to_store", "accepted", "delivering", "completed"]


@pytest.fixture
def stack(tmp_path, settings, catalogue):
    s = Stack(tmp_path, settings)
    if not s.broker.startswith("amqp"):
        pytest.skip("redelivery on connection loss is RabbitMQ's; the Redis broker waits for its visibility timeout")
    yield s
    s.close()


@contextlib.contextmanager
def row_lock(table: str, pk: int):
    """Hold `SELECT ... FOR UPDATE` on one row from a connection of the test's own; yields its backend pid."""
    with psycopg.connect(_database_url(), autocommit=False) as conn:
        conn.execute(f'SELECT 1 FROM "{table}" WHERE id = %s FOR UPDATE', (pk,))
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:
            yield pid
        finally:
            conn.rollback()


def blocked_behind(pid: int, statement: str) -> int | None:
    """The backend (pid) waiting for a lock `pid` holds while running `statement`, as PostgreSQL reports it."""
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid)) AND wait_event_type = 'Lock'",
            (pid,)).fetchone()
    return row[0] if row is not None and statement in row[1] else None


def backend_gone(pid: int) -> bool:
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None


def received(log: str, task: str) -> list[str]:
    return re.findall(rf"Task {re.escape(task)}\[([0-9a-f-]+)\] received", log)


def after_restart(stack: Stack) -> str:
    return stack.worker.log().split(f"--- start #{stack.worker.starts}")[1]


def chain(order_id: int) -> list[str]:
    return list(OrderEvent.objects.filter(order_id=order_id).order_by("id").values_list("to_status", flat=True))


def assert_final_once(order_id: int, card: Voucher, campaign) -> None:
    order = Order.objects.get(pk=order_id)
    assert order.status == "completed"
    steps = chain(order_id)
    assert steps == [s for s in CHAIN if s in steps] and steps[-1] == "completed", steps  # each state once
    card.refresh_from_db()
    assert (card.status, card.order_id) == ("redeemed", order_id)
    spends = LedgerEntry.objects.filter(order_id=order_id, kind="spend")
    assert spends.count() == 1 and spends.get().amount == order.subsidy
    bucket = BudgetBucket.objects.get(pk=card.bucket_id)
    assert bucket.spent == order.subsidy
    assert reconcile(campaign=campaign).ok


def test_worker_killed_inside_submit_then_inside_the_redeem_step_the_broker_redelivers_each(stack, campaign):
    """One order, two deaths on one stack (the two moments share the set-up; each is checked on its own)."""
    stack.start(merchant_args=("--no-callbacks",))
    stack.worker.stop()  # the submit waits in the queue while the test takes its lock
    user = UserFactory()
    card = VoucherFactory(user=user, campaign=campaign)
    order_id = stack.place(token_create(user=user, device_id="t"))["id"]
    worker_env = stack.env(MIANDAN_MERCHANT_POLL_SECONDS="1")  # no beat anywhere: nothing re-sends or polls

    # 1. Inside the submit: the merchant has the order, placed -> sent_to_store is not committed.
    with row_lock("orders_order", order_id) as holder:
        stack.worker.start(**worker_env)
        backend = wait_until(lambda: blocked_behind(holder, '"orders_order"'), timeout=30,
                             what="the worker blocked in _record_sent\n" + stack.logs())
        submit = received(after_restart(stack), "orders.submit")
        assert len(submit) == 1
        stack.worker.kill()
    wait_until(lambda: backend_gone(backend), timeout=10, what="the dead worker's backend gone (its transaction aborted)")
    assert Order.objects.get(pk=order_id).status == "placed"
    stack.worker.start(**worker_env)
    wait_until(lambda: Order.objects.get(pk=order_id).status == "sent_to_store", timeout=30,
               what="the redelivered submit recorded\n" + stack.logs())
    assert submit[0] in received(after_restart(stack), "orders.submit"), stack.worker.log()[-3000:]
    health = stack.merchant.health()
    assert health["received"] == 1 and health["repeats"] >= 1, health  # sent twice, one order to the merchant

    # 2. Inside the redeem step: order completed and card redeemed (uncommitted), the bucket being charged.
    wait_until(lambda: stack.merchant.held_rows() == {"done": 1}, timeout=30, what="merchant delivered")
    wait_until(lambda: Order.objects.filter(pk=order_id, next_check_at__lte=timezone.now()).exists(), timeout=10,
               what="order due for a poll")
    poll_id = str(uuid.uuid4())
    with row_lock("campaign_budgetbucket", card.bucket_id) as holder:
        assert enqueue("orders.poll", task_id=poll_id)
        backend = wait_until(lambda: blocked_behind(holder, '"campaign_budgetbucket"'), timeout=30,
                             what="the worker blocked in budget_spend\n" + stack.logs())
        # Committed so far: accepted and dispatched (one transaction per event); the completion is in flight.
        assert Order.objects.get(pk=order_id).status == "delivering"
        stack.worker.kill()
    wait_until(lambda: backend_gone(backend), timeout=10, what="the dead worker's backend gone (its transaction aborted)")
    card.refresh_from_db()
    assert Order.objects.get(pk=order_id).status == "delivering" and card.status == "locked"
    assert not LedgerEntry.objects.filter(order_id=order_id, kind="spend").exists()
    # The killed poll had pushed the order's next check 1 s out (its claim committed before the merchant's
    # answer was applied). A worker restarts in ~0.3 s now, and a redelivered poll that finds the order not due
    # yet does nothing (with no beat, nothing polls again): restart once the order is due, as beat's next tick
    # would find it.
    wait_until(lambda: Order.objects.filter(pk=order_id, next_check_at__lte=timezone.now()).exists(), timeout=10,
               what="order due again for the redelivered poll")
    stack.worker.start(**worker_env)
    wait_until(lambda: Order.objects.get(pk=order_id).status == "completed", timeout=60,
               what="order completed by the redelivered poll\n" + stack.logs())
    assert poll_id in received(after_restart(stack), "orders.poll"), stack.worker.log()[-3000:]
    assert_final_once(order_id, card, campaign)
    assert Order.objects.get(pk=order_id).merchant_ref.startswith(f"SIM-{order_id}-")
