"""Celery tasks for fulfilment: thin, take ids, call one service (architecture.md, convention 7).

None of them waits for a store: each is one short exchange with the merchant (a submit, a batch poll,
a cancel notice) plus conditional transitions. The store's answers arrive later as events.
"""

import logging
import random

from miandan.tasks import enqueue, task

from . import services
from .merchant import MerchantUnavailable, get_merchant
from .models import Order

logger = logging.getLogger(__name__)


def _backoff(retries: int) -> float:
    return random.uniform(0.5, 1.0) * min(60, 2 ** (retries + 1))


@task(name="orders.submit", bind=True, max_retries=8, soft_time_limit=20, time_limit=30)
def order_submit_task(self, order_id: int) -> str | None:
    try:
        return services.order_submit(order_id=order_id)
    except MerchantUnavailable as exc:
        if self.request.is_eager:
            # Inline (the demo): no retry loop in the request; the poller re-sends the order when it is due.
            logger.warning("order %s not sent, merchant unavailable: %s", order_id, exc)
            return None
        # Bounded, with backoff and jitter; after the last one the poller re-sends the order when it is due.
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@task(name="orders.advance", max_retries=0, soft_time_limit=10, time_limit=20)
def order_advance_task(order_id: int) -> None:
    """The old name of the fulfilment task: messages queued before the upgrade are handed to `orders.submit`."""
    enqueue(services.SUBMIT_TASK, order_id)


@task(name="orders.poll", max_retries=0, soft_time_limit=50, time_limit=60)
def order_poll_task() -> dict:
    return services.order_poll_due()


@task(name="orders.merchant_cancel", bind=True, max_retries=3, soft_time_limit=20, time_limit=30)
def order_merchant_cancel_task(self, order_id: int) -> None:
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return
    try:
        get_merchant().cancel(order)
    except MerchantUnavailable as exc:
        if self.request.is_eager:
            logger.warning("merchant not told that order %s was cancelled: %s", order_id, exc)
            return
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@task(name="orders.sweep", max_retries=2, soft_time_limit=50, time_limit=60)
def order_sweep_task() -> dict:
    return services.order_sweep()
