"""Celery beat tasks of the voucher engine. Thin: each calls one service and is safe to run twice."""

from __future__ import annotations

from miandan.api.idempotency import idempotency_purge
from miandan.tasks import task

from .services import voucher_expire_batch

EXPIRE_BATCH = 1000
EXPIRE_MAX_BATCHES = 50  # bounded work per run; the next beat tick continues


@task(name="vouchers.expire_batch", soft_time_limit=50, time_limit=60)
def vouchers_expire(batch_size: int = EXPIRE_BATCH, max_batches: int = EXPIRE_MAX_BATCHES) -> int:
    """Expire issued cards past their date, in batches of `batch_size`, each its own transaction.

    Each batch returns its cards' reservations to the budget (ledger `release` rows). Cards already
    expired or locked by another worker (SKIP LOCKED) are not touched, so overlapping runs are harmless.
    """
    total = 0
    for _ in range(max_batches):
        done = voucher_expire_batch(limit=batch_size)
        total += done
        if done < batch_size:
            break
    return total


@task(name="api.idempotency_purge")
def idempotency_records_purge() -> int:
    """Delete Idempotency-Key records older than their 24 h retention."""
    return idempotency_purge()
