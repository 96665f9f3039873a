"""The broker is down when an order is placed: the order is kept and sent once the broker is back, never lost.

Real processes (tests/fulfilment.py): gunicorn, a Celery worker on RabbitMQ, the simulated merchant. The test
process places the order while its Celery app points at a broker that does not answer (nothing listens on
the port), so the submit message cannot be sent; the order must stay `placed` with a due check. When the
broker is back, the poller (`order_poll_due`, the beat job) re-sends it and the order runs to `completed`.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from orders.models import Order, Store
from orders.services import order_chat, order_poll_due
from tests.factories import UserFactory, VoucherFactory
from tests.fulfilment import Stack, broker_down, wait_until
from tests.orders.conftest import LAT, LNG
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


@pytest.fixture
def stack(tmp_path, settings, catalogue):
    s = Stack(tmp_path, settings)
    yield s
    s.close()


def test_order_placed_while_the_broker_is_down_is_sent_when_it_returns(stack, campaign):
    stack.start()
    Store.objects.update(capacity_per_minute=1000)
    user = UserFactory()
    card = VoucherFactory(user=user, campaign=campaign)
    with broker_down():
        order = order_chat(user=user, text="一杯伯牙绝弦", lat=LAT, lng=LNG).order
    placed_at = timezone.now()
    time.sleep(3)  # the worker is up and listening: had the message been sent, it would have moved by now
    order.refresh_from_db()
    assert order.status == Order.Status.PLACED and order.attempts == 0
    assert order.next_check_at is not None  # due for the poller: the outbox row is the promise
    # Back on the live broker (the `with` above restored it): the beat job finds the order due and re-sends it.
    later = placed_at + dt.timedelta(seconds=django_settings.MIANDAN_ORDER_STUCK_SECONDS + 1)
    counts = order_poll_due(now=later)
    assert counts["resent"] == 1, counts
    wait_until(lambda: Order.objects.filter(pk=order.pk, status=Order.Status.COMPLETED).exists(), timeout=60,
               what="the re-sent order to complete\n" + stack.logs())
    card.refresh_from_db()
    assert card.status == Voucher.Status.REDEEMED and card.subsidy == Decimal("18.00")
    assert reconcile(campaign=campaign).ok
