"""Celery tasks for fulfilment: thin, take ids, call one service (architecture.md, convention 7)."""

import random

from miandan.tasks import task

from . import services
from .merchant import MerchantTimeout
from .models import Order


def _status(order_id: int) -> str | None:
    return Order.objects.filter(pk=order_id).values_list("status", flat=True).first()


@task(name="orders.advance", bind=True, max_retries=6, soft_time_limit=30, time_limit=40)
def order_advance_task(self, order_id: int) -> str | None:
    before = _status(order_id)
    try:
        return services.order_advance(order_id=order_id)
    except MerchantTimeout as exc:
        after = _status(order_id)
        if after != before:
            # Some steps went through before this timeout: a fresh message with a fresh retry budget,
            # so a slow merchant cannot use up the retries of a four-step chain.
            order_advance_task.apply_async((order_id,), countdown=1)
            return after
        # Bounded, with backoff and jitter; after the last one the sweeper takes over.
        raise self.retry(exc=exc, countdown=random.uniform(0.5, 1.0) * min(60, 2 ** self.request.retries)) from exc


@task(name="orders.sweep", max_retries=2, soft_time_limit=50, time_limit=60)
def order_sweep_task() -> dict:
    return services.order_sweep()
