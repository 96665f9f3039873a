"""Prometheus metrics: /metrics and the middleware that counts requests.

Multiprocess-safe: when PROMETHEUS_MULTIPROC_DIR is set (gunicorn with several workers), every
process writes its samples to files there and /metrics aggregates them (prometheus_client's
multiprocess mode). Point the variable at an empty directory that is wiped on deploy.

Process-local counters (requests, rejections, shedding, cards issued) are incremented where they
happen (vouchers.services counts a card when its transaction commits). State that lives in the
database (orders by state, cards by status, budget remaining) is read at scrape time by readers
that the domain apps register in their AppConfig.ready() (`register_state_reader`), so this
module imports no domain app; each reader's result and the Celery queue depth go through a short
shared cache, so many workers being scraped do not each run the same GROUP BY.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)
MULTIPROC = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REQUESTS = Counter("miandan_http_requests_total", "HTTP requests by route and status", ["route", "method", "status"])
LATENCY = Histogram(
    "miandan_http_request_duration_seconds", "Server time per request by route", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REJECTIONS = Counter("miandan_rejections_total", "Refused API requests by error code", ["code", "route"])
SHED = Counter("miandan_shed_total", "Requests shed by the adaptive limiter", ["route"])
SHED_LIMIT = Gauge("miandan_shed_limit", "Adaptive concurrency limit (per process)", multiprocess_mode="liveall")
SHED_INFLIGHT = Gauge("miandan_shed_inflight", "Campaign writes in flight", multiprocess_mode="livesum")
SHED_WAITING = Gauge("miandan_shed_waiting", "Campaign writes waiting for an admission slot", multiprocess_mode="livesum")
SHED_WAIT_TIMEOUTS = Counter("miandan_shed_wait_timeouts_total",
                             "Writes that waited for a slot and were refused when their budget ran out")
RATELIMIT_REDIS_ERRORS = Counter("miandan_ratelimit_redis_errors_total", "Rate-limit checks without Redis", ["policy"])
CARDS_ISSUED = Counter("miandan_cards_issued_total", "Cards issued (committed) by this process", ["source"])
PACE_ALERTS = Counter("miandan_budget_pace_alerts_total", "Spend-ahead-of-plan alerts fired (issue 20)", ["campaign"])
ENQUEUE_FAILURES = Counter("miandan_enqueue_failures_total", "Tasks that could not be sent to the broker", ["task"])

SCRAPE_CACHE_SECONDS = 5


# --- request counting --------------------------------------------------------------

class MetricsMiddleware:
    """Counts every request by route (URL name, never the raw path: bounded label values)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.url_name or match.route) if match is not None else "unmatched"
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - start)
        if response.status_code >= 400:
            code = getattr(response, "error_code", None)
            data = getattr(response, "data", None)
            if code is None and isinstance(data, dict):
                code = data.get("code")
            REJECTIONS.labels(str(code or response.status_code), route).inc()
        return response


# --- scrape-time gauges from the database and the broker ---------------------------

def _queue_depth() -> dict[str, int]:
    if settings.CELERY_TASK_ALWAYS_EAGER or not settings.CELERY_BROKER_URL:
        return {}
    from amqp.exceptions import ChannelError

    from miandan.celery import app

    name = settings.CELERY_TASK_DEFAULT_QUEUE
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=1)
        try:
            ok = conn.default_channel.queue_declare(queue=name, passive=True)
        except ChannelError as exc:
            if str(getattr(exc, "reply_code", "")) == "404" or "NOT_FOUND" in str(exc):
                return {name: 0}  # never declared: nothing was ever sent to it
            raise
        return {name: int(ok.message_count)}


@dataclass(frozen=True)
class StateGauge:
    """One gauge family read from the database at scrape time: plain data, so it can sit in the shared cache."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)


StateReader = Callable[[], Iterable[StateGauge]]
_STATE_READERS: dict[str, StateReader] = {}


def register_state_reader(key: str, reader: StateReader) -> None:
    """A domain app contributes gauges (AppConfig.ready()); `key` names its cache entry."""
    _STATE_READERS[key] = reader


def _cached(key: str, fn, default):
    try:
        value = cache.get(key)
    except Exception:
        value = None
    if value is not None:
        return value
    try:
        value = fn()
    except Exception as exc:  # a metric must never break the scrape
        logger.warning("metrics: %s unavailable: %s", key, exc)
        return default
    try:
        cache.set(key, value, SCRAPE_CACHE_SECONDS)
    except Exception:
        pass
    return value


class StateCollector:
    """Gauges computed at scrape time (identical in every process, so collected once, not per worker)."""

    def collect(self):
        for key, reader in sorted(_STATE_READERS.items()):
            for gauge in _cached(f"metrics:state:{key}", lambda reader=reader: list(reader()), []):
                family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=list(gauge.labels))
                for labels, value in gauge.samples:
                    family.add_metric(list(labels), value)
                yield family
        depth = GaugeMetricFamily("miandan_celery_queue_depth", "Messages waiting in the Celery queue", labels=["queue"])
        for queue, n in _cached("metrics:queue-depth", _queue_depth, {}).items():
            depth.add_metric([queue], n)
        yield depth


def metrics_allowed(request) -> bool:
    """A scrape with the bearer MIANDAN_METRICS_TOKEN, or from MIANDAN_METRICS_ALLOWED_NETS (the client address
    behind MIANDAN_PROXY_COUNT trusted proxies, so a proxy on localhost does not open it to everyone)."""
    import hmac
    import ipaddress

    from miandan.api.guard.client import client_ip

    token = settings.MIANDAN_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header[:7].lower() == "bearer " and hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return False
    for net in settings.MIANDAN_METRICS_ALLOWED_NETS:
        try:
            if address in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:  # the deploy check miandan.E012 names it
            continue
    return False


def metrics_view(request):
    if not metrics_allowed(request):
        from django.http import JsonResponse

        return JsonResponse({"code": "not_found", "detail": "找不到该资源"}, status=404,
                            json_dumps_params={"ensure_ascii": False})
    if MULTIPROC:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector())
    body = generate_latest(registry) + generate_latest(state)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
