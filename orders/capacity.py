"""Per-store, per-minute order capacity: a store at capacity is skipped, never buried (爆单).

Redis path: INCR of `<prefix>:cap:<store>:<minute>` (expires after two minutes); over capacity
the increment is undone at once, and a slot of an order that then fails to commit is given back
(`give_back`). Without Redis, or when Redis errors, the counter is a `StoreMinute` row taken
with a conditional upsert inside the order's own transaction, so a rollback returns the slot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.db import connection

from miandan.redis import get_redis, key

from .models import Store, StoreMinute

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    store_id: int
    redis_key: str | None  # None: held by a StoreMinute row in the open transaction


def current_minute() -> int:
    return int(time.time() // 60)


def take_redis(store: Store, minute: int | None = None) -> Slot | None | bool:
    """A slot from Redis; None when the store is full; False when Redis cannot answer (use the DB)."""
    client = get_redis()
    if client is None:
        return False
    k = key("cap", store.pk, minute if minute is not None else current_minute())
    try:
        pipe = client.pipeline()
        pipe.incr(k)
        pipe.expire(k, 120)
        count = pipe.execute()[0]
        if count > store.capacity_per_minute:
            client.decr(k)
            return None
        return Slot(store.pk, k)
    except Exception as exc:
        # One line, no traceback: during an outage this fires on every request.
        logger.warning("redis capacity counter failed; using the database: %s", exc)
        return False


def give_back(slot: Slot) -> None:
    if slot.redis_key is None:
        return
    client = get_redis()
    try:
        if client is not None:
            client.decr(slot.redis_key)
    except Exception as exc:  # the key expires within two minutes anyway
        # One line, no traceback: during an outage this fires on every request.
        logger.warning("could not give a capacity slot back: %s", exc)


def take_db(store: Store, minute: int | None = None) -> Slot | None:
    """Inside the caller's transaction: one conditional upsert, no read-modify-write."""
    minute = minute if minute is not None else current_minute()
    table = StoreMinute._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (store_id, minute, count) VALUES (%s, %s, 1) "
            f"ON CONFLICT (store_id, minute) DO UPDATE SET count = {table}.count + 1 "
            f"WHERE {table}.count < %s RETURNING count",
            [store.pk, minute, store.capacity_per_minute],
        )
        row = cursor.fetchone()
    return Slot(store.pk, None) if row else None


def used(store: Store, minute: int | None = None) -> int:
    minute = minute if minute is not None else current_minute()
    client = get_redis()
    if client is not None:
        try:
            value = client.get(key("cap", store.pk, minute))
            return int(value or 0)
        except Exception:
            pass
    row = StoreMinute.objects.filter(store=store, minute=minute).values_list("count", flat=True).first()
    return row or 0
