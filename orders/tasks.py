"""Celery tasks for fulfilment: thin, take ids, call one service (architecture.md, convention 7)."""

from miandan.tasks import DEFAULT_RETRY_FOR, task

from . import services
from .merchant import MerchantTimeout


@task(name="orders.advance", max_retries=6, retry_for=(*DEFAULT_RETRY_FOR, MerchantTimeout), retry_backoff=1,
      retry_backoff_max=60, soft_time_limit=30, time_limit=40)
def order_advance_task(order_id: int) -> str | None:
    return services.order_advance(order_id=order_id)


@task(name="orders.sweep", max_retries=2, soft_time_limit=50, time_limit=60)
def order_sweep_task() -> dict:
    return services.order_sweep()
