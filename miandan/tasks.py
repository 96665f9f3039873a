"""The one project decorator for Celery tasks (architecture.md, convention 7).

Every task in Miandan is declared with `@task(...)` instead of `@shared_task`, so that all of
them get the same safety settings without anyone having to remember them:

- an explicit, stable `name` (``"<app>.<verb>"``): renaming a Python function must not orphan
  messages already sitting in the broker or entries in `CELERY_BEAT_SCHEDULE`;
- ``acks_late=True`` + ``reject_on_worker_lost=True``: a worker killed mid-task leaves the message
  in the queue and another worker runs it again. Tasks must therefore be idempotent (take ids,
  re-read the row, return quietly when the object is gone or already past the step);
- soft/hard time limits (default 45 s / 60 s), so a stuck merchant call cannot pin a worker;
- bounded automatic retries with exponential backoff and jitter, only for the exceptions that
  are worth retrying (database connection loss, deadlocks, Redis/broker hiccups by default);
- one structured log line per run (name, outcome, duration) for the operators.

Usage::

    from miandan.tasks import task

    @task(name="orders.advance", max_retries=8, retry_for=(MerchantTimeout,))
    def order_advance(order_id: int) -> None:
        orders.services.order_advance(order_id=order_id)   # re-reads; quiet if gone or past the step

    # inside a service, after the write (never a network call inside the transaction), by name, so that
    # services never import their tasks module (tasks import services; the layers stay one-way):
    enqueue_on_commit("orders.advance", order.pk)

Beat schedules refer to the task by its name::

    CELERY_BEAT_SCHEDULE = {"vouchers-expire": {"task": "vouchers.expire_batch", "schedule": 60.0}}

`bind=True` is passed through, so a task can receive `self` and call `self.retry(...)` itself.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError, transaction

logger = logging.getLogger("miandan.tasks")

try:  # redis-py is a hard dependency, but keep this module importable without it
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    _REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)
except ImportError:  # pragma: no cover
    _REDIS_ERRORS = ()

# Transient failures: the same call a few seconds later is expected to succeed.
DEFAULT_RETRY_FOR: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, *_REDIS_ERRORS)


def task(
    *,
    name: str,
    max_retries: int = 5,
    retry_for: tuple[type[BaseException], ...] = DEFAULT_RETRY_FOR,
    retry_backoff: int = 2,
    retry_backoff_max: int = 300,
    soft_time_limit: int = 45,
    time_limit: int = 60,
    acks_late: bool = True,
    queue: str | None = None,
    bind: bool = False,
    **options: Any,
) -> Callable[[Callable[..., Any]], Any]:
    """Declare a Celery task with the project defaults. See the module docstring."""
    if "." not in name:
        raise ValueError("task names are '<app>.<verb>', e.g. 'vouchers.expire_batch'")

    def decorator(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            outcome = "ok"
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
            finally:
                logger.info(
                    "task finished",
                    extra={"task": name, "outcome": outcome, "duration_ms": round((time.monotonic() - started) * 1000, 1)},
                )

        celery_options: dict[str, Any] = {
            "name": name,
            "bind": bind,
            "acks_late": acks_late,
            "reject_on_worker_lost": True,
            "soft_time_limit": soft_time_limit,
            "time_limit": time_limit,
            "max_retries": max_retries,
            "autoretry_for": retry_for,
            "retry_backoff": retry_backoff,
            "retry_backoff_max": retry_backoff_max,
            "retry_jitter": True,
            **options,
        }
        if queue is not None:
            celery_options["queue"] = queue
        return shared_task(**celery_options)(run)

    return decorator


# --- sending tasks by name ----------------------------------------------------------------

_DISCOVERY = threading.Lock()


def _registered(name: str):
    """The task object registered under `name`, importing every app's tasks module once if needed."""
    from miandan.celery import app

    found = app.tasks.get(name)
    if found is None:
        # Celery's autodiscovery is lazy (it runs when a worker starts); a web process that never
        # imported a tasks module asks the loader once, which imports `<app>.tasks` for every app.
        # Under a lock: Celery's own guard makes a second, concurrent discovery return at once with
        # nothing imported yet, so the first requests of a threaded process lost their tasks
        # ("no task registered as 'orders.advance'": an order left in `placed` until the sweeper).
        with _DISCOVERY:
            found = app.tasks.get(name)
            if found is None:
                app.loader.import_default_modules()
                found = app.tasks.get(name)
            if found is None:
                importlib.import_module(f"{name.split('.', 1)[0]}.tasks")  # by convention, "<app>.<verb>"
                found = app.tasks.get(name)
    return found


def enqueue(name: str, *args: Any, **options: Any) -> bool:
    """Send task `name` now (run it inline in eager mode). Returns False, logged, when the broker refused.

    Callers that need the message to arrive have a sweeper: a False here is never a lost order.
    """
    try:
        found = _registered(name)
        if found is None:
            raise LookupError(f"no task registered as {name!r}")
        found.apply_async(args=args, **options)
        return True
    except Exception as exc:  # broker down or misconfigured: one line, no traceback per request during an outage
        from miandan.api.metrics import ENQUEUE_FAILURES

        logger.warning("could not enqueue %s%r: %s", name, args, exc)
        ENQUEUE_FAILURES.labels(name).inc()
        return False


def enqueue_on_commit(name: str, *args: Any, **options: Any) -> None:
    """`enqueue` once the caller's transaction commits (nothing is sent for a rolled-back write)."""
    transaction.on_commit(lambda: enqueue(name, *args, **options))
