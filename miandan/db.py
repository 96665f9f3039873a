"""Database helpers shared by every app's services (no business rules here)."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import OperationalError, connection

P = ParamSpec("P")
R = TypeVar("R")

# PostgreSQL SQLSTATEs worth one more try: the other transaction won, ours can simply re-run.
_RETRYABLE = {"40P01", "40001"}  # deadlock_detected, serialization_failure


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def advisory_key(*parts: object) -> int:
    """The 64-bit key `advisory_lock` takes for these parts (for a statement that takes the lock itself)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def advisory_lock(*parts: object) -> None:
    """Transaction-scoped lock on an arbitrary key (PostgreSQL); SQLite already serialises writers.

    Must run inside a transaction. Used to serialise one user's work in one campaign
    (slot allocation, referral graph edits) without a hot row.
    """
    if not is_postgres():
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(*parts)])


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE behind a Django database error, if any."""
    cause = exc.__cause__
    return getattr(cause, "sqlstate", None) or getattr(getattr(cause, "pgcode", None), "__str__", lambda: None)()


def retry_on_conflict(attempts: int = 4) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Re-run a whole durable service when PostgreSQL aborted it for a deadlock or serialisation failure."""

    def decorator(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in range(attempts):
                try:
                    return fn(*args, **kwargs)
                except OperationalError as exc:
                    if sqlstate(exc) not in _RETRYABLE or attempt == attempts - 1:
                        raise
                    time.sleep(0.005 * (2**attempt))
            raise AssertionError("unreachable")

        return wrapper

    return decorator
