"""Liveness (/healthz) and readiness (/readyz) for the load balancer and the orchestrator."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait

from django.conf import settings
from django.db import connections
from django.http import JsonResponse

_pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="readyz")


def healthz(request):
    """Liveness: answers while the process lives, touches nothing else."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # The check runs in a pool thread: never leave its connection behind.
        connections.close_all()


def _check_redis() -> None:
    from miandan.redis import make_client

    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_URL not set")
    timeout = settings.MIANDAN_READYZ_TIMEOUT
    client = make_client(settings.REDIS_URL, connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


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
    futures = {name: _pool.submit(fn) for name, fn in checks.items()}
    wait(futures.values(), timeout=deadline)
    results: dict[str, str] = {}
    for name, future in futures.items():
        if not future.done():
            results[name] = "timeout"
        elif future.exception() is not None:
            exc = future.exception()
            results[name] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
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
