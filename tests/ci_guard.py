"""What CI=true means for the suite: the real services answer, and nothing is quietly skipped.

Imported by tests/conftest.py (its hooks are re-exported there). Kept in a module of its own so the
hooks can be tested by running pytest on a throwaway test file (tests/test_ci_guard.py).

- `pytest_configure` (called from the conftest's): under CI=true, PostgreSQL, Redis and the Celery broker
  must ANSWER (a login, a PING, a broker connection), and RabbitMQ too (the fulfilment tests run on it).
- Long tests (`@pytest.mark.long`) run only with MIANDAN_LONG_TESTS=1; otherwise they are skipped here,
  in one place. That is the ONLY skip CI accepts: each of them has a bounded twin in the default run.
- Under CI=true every other skip is turned into a failure (a missing chromium, broker or Redis used to
  turn whole groups of tests into "s" and a green run).
"""

from __future__ import annotations

import os

import pytest

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
LONG_REASON = "long test: set MIANDAN_LONG_TESTS=1 (a bounded version runs by default)"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def long_tests_enabled() -> bool:
    return bool(os.environ.get("MIANDAN_LONG_TESTS"))


def service_problems(settings) -> list[str]:
    """Which of the suite's services do not answer (empty list: all of them do)."""
    problems: list[str] = []
    if not settings.USING_POSTGRES:
        problems.append("DATABASE_URL is not PostgreSQL")
    else:
        import psycopg

        db = settings.DATABASES["default"]
        try:
            psycopg.connect(host=db.get("HOST") or "127.0.0.1", port=db.get("PORT") or 5432, user=db.get("USER") or None,
                            password=db.get("PASSWORD") or None, dbname="postgres", connect_timeout=3).close()
        except Exception as exc:
            problems.append(f"PostgreSQL does not answer ({exc.__class__.__name__}: {exc})")
    if not settings.REDIS_URL:
        problems.append("REDIS_URL is not set")
    else:
        import redis

        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
        except Exception as exc:
            problems.append(f"Redis does not answer at {settings.REDIS_URL} ({exc.__class__.__name__})")
    from kombu import Connection

    for name, url in (("the Celery broker", settings.CELERY_BROKER_URL), ("RabbitMQ", AMQP_URL)):
        if not url:
            problems.append(f"{name} is not configured (CELERY_BROKER_URL)")
            continue
        try:
            with Connection(url, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
        except Exception as exc:
            problems.append(f"{name} does not answer at {url} ({exc.__class__.__name__})")
    return problems


def check_services(settings) -> None:
    if in_ci():
        problems = service_problems(settings)
        if problems:
            raise pytest.UsageError("CI=true but " + "; ".join(problems))


def pytest_collection_modifyitems(config, items):
    # A test marked single_redis_only has nothing to repeat on the Redis Cluster: its [cluster] variant is
    # deselected here (not skipped at run time, which CI would count as a failure).
    dropped = [item for item in items if item.get_closest_marker("single_redis_only") is not None
               and getattr(item, "callspec", None) is not None and item.callspec.params.get("redis_backend") == "cluster"]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
    if long_tests_enabled():
        return
    skip = pytest.mark.skip(reason=LONG_REASON)
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        if item.get_closest_marker("long") is not None and not long_tests_enabled():
            return report  # the documented exception: MIANDAN_LONG_TESTS unset
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: a skip is a failure here (skipped: {reason})"
    return report
