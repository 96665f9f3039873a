"""Liveness (/healthz) and readiness (/readyz) for the load balancer and the orchestrator."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

from django.conf import settings
from django.db import connections
from django.http import JsonResponse

logger = logging.getLogger(__name__)
# Bounded work: at most one probe per dependency in flight (a probe still stuck from an earlier request is
# reported "timeout" instead of queueing another), and the Redis client (pool of at most 2 connections) is
# reused between probes.
_pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="readyz")
_inflight: dict[str, Future] = {}
_inflight_lock = threading.Lock()
_redis_clients: dict[tuple, object] = {}


def healthz(request):
    """Liveness: answers while the process lives, touches nothing else."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # The check runs in a pool thread: never leave its connection behind (one probe in flight at most, so
        # at most one such connection exists; PgBouncer in front makes it cheap).
        connections.close_all()


def _check_redis() -> None:
    from miandan.redis import make_client

    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_URL not set")
    timeout = settings.MIANDAN_READYZ_TIMEOUT
    ident = (settings.REDIS_URL, timeout)
    client = _redis_clients.get(ident)
    if client is None:
        # One client per URL, reused (a probe per call must not open a pool per call); a cluster URL gets the
        # cluster client (miandan.redis.make_client).
        client = _redis_clients[ident] = make_client(settings.REDIS_URL, connect_timeout=timeout,
                                                     socket_timeout=timeout, max_connections=2)
    client.ping()


def _check_broker() -> None:
    from kombu import Connection

    timeout = settings.MIANDAN_READYZ_TIMEOUT
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=timeout,
                    transport_options={"socket_timeout": timeout, "socket_connect_timeout": timeout}) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        conn.default_channel  # noqa: B018 - opening a channel proves the broker answers, not just the socket


def _checks() -> dict:
    checks = {"database": _check_database}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis
    if settings.CELERY_BROKER_URL and not settings.CELERY_TASK_ALWAYS_EAGER:
        checks["broker"] = _check_broker
    return checks


def readyz(request):
    """Readiness: 200 only when the database, Redis and the Celery broker answer within the timeout.

    The three checks run in parallel with one deadline, so a blackholed dependency costs at most
    MIANDAN_READYZ_TIMEOUT (+ a little), never a hung probe. In the demo setup (no REDIS_URL,
    Celery eager) Redis and the broker are not part of the platform and are reported "skipped".
    """
    checks = _checks()
    deadline = settings.MIANDAN_READYZ_TIMEOUT + 0.5
    started = time.perf_counter()
    futures: dict[str, Future] = {}
    with _inflight_lock:
        for name, fn in checks.items():
            running = _inflight.get(name)
            if running is None or running.done():
                running = _inflight[name] = _pool.submit(fn)
            futures[name] = running
    wait(futures.values(), timeout=deadline)
    results: dict[str, str] = {}
    for name, future in futures.items():
        if not future.done():
            results[name] = "timeout"
        elif future.exception() is not None:
            # Names only in the answer: exception text can carry hosts, users, paths. The log has it.
            exc = future.exception()
            logger.warning("readyz: %s failed: %s: %s", name, type(exc).__name__, str(exc)[:200])
            results[name] = "error"
        else:
            results[name] = "ok"
    for name in ("redis", "broker"):
        results.setdefault(name, "skipped")
    failed = sorted(name for name, value in results.items() if value not in ("ok", "skipped"))
    body = {
        "status": "ok" if not failed else "unavailable",
        "checks": results,
        "failed": failed,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if failed:
        body.update(code="not_ready", detail="依赖服务不可用：" + "、".join(failed))
    return JsonResponse(body, status=200 if not failed else 503, json_dumps_params={"ensure_ascii": False})
