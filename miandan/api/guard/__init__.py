"""The flash-crowd guard: load shedding, kill switches and rate limits, before any view runs.

1. shedding     -> 503 `busy`     (`SheddingMiddleware`, second in MIDDLEWARE, before URL resolution,
                                   sessions or DRF: the write's concurrency slot (after a short wait when
                                   one is expected soon), or a refusal that costs no I/O; shedding.py holds
                                   the model)
2. kill switch  -> 503 `paused`   (`GuardMiddleware.process_view`, right before the view: switches.py,
                                   the campaign gate's lookup from a 0.5 s per-process cache)
3. rate limits  -> 429 `rate_limited` (ratelimit.py: counters in Redis, one pipelined round trip)

Shedding comes first so that a refused request costs the least possible (no Redis round trip, no
rate-limit budget used for work never done). Which route gets what is the table in
`miandan.options`; who the caller is comes from client.py.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import connections
from django.http import HttpResponse

from miandan.api import metrics
from miandan.api.errors import Busy, DomainError, RateLimited, domain_error_response
from miandan.options import policy_for

from .client import client_inet, client_ip
from .ratelimit import RateLimitUnavailable, check_rate_limits, register_prefetch
from .shedding import (
    DEFERRED,
    AdaptiveLimiter,
    Ticket,
    get_limiter,
    gunicorn_threads,
    queued_ms,
    retry_after_seconds,
    server_queued_ms,
)
from .switches import paused, register_switch_check

__all__ = ["AdaptiveLimiter", "AdmissionRefused", "GuardMiddleware", "SheddingMiddleware", "Ticket", "client_inet", "client_ip",
           "get_limiter", "gunicorn_threads", "queued_ms", "register_prefetch", "register_switch_check"]

logger = logging.getLogger(__name__)
REDIS_DOWN_DETAIL = "系统繁忙，请稍后再试"


def _reject(error: DomainError):
    response = domain_error_response(error)
    # django.request would log every shed 503 as an ERROR line: at 10x load that is a log flood and
    # most of the cost of shedding. These answers are expected and counted in /metrics instead.
    response._has_been_logged = True
    return response


def _busy(detail: str = Busy.detail) -> DomainError:
    return Busy(detail, retry_after=retry_after_seconds())


_BUSY_BODIES: dict[int, bytes] = {}


def _shed_response(started: float, policy_key: str, *, counted: bool = False) -> HttpResponse:
    """503 `busy` in the api.md shape, its bytes built once per Retry-After value (no JSON encoding per refusal)."""
    retry = retry_after_seconds()
    body = _BUSY_BODIES.get(retry)
    if body is None:
        body = _BUSY_BODIES[retry] = domain_error_response(Busy(retry_after=retry)).content
    response = HttpResponse(body, status=503, content_type="application/json")
    response["Retry-After"] = str(retry)
    response.error_code = "busy"
    response._has_been_logged = True  # expected under load; counted in /metrics instead of one ERROR line each
    metrics.SHED.labels(policy_key).inc()
    if not counted:  # a refusal at the first SQL statement passed MetricsMiddleware already
        metrics.REJECTIONS.labels("busy", policy_key).inc()
    # The server's own time for the refusal, so a load test can tell it from time spent queueing outside.
    response["Server-Timing"] = f"shed;dur={(time.perf_counter() - started) * 1000:.3f}"
    return response


class AdmissionRefused(Busy):
    """A deferred write reached its first SQL statement while the limit was full (SheddingMiddleware answers it)."""


class _Admission:
    """One campaign write's slot, watched at the database: a `connection.execute_wrapper` for the request.

    It records whether the request ran any SQL (what the limiter learns per route); a deferred request (no slot
    from the door) takes its slot here, before its first statement runs, or is refused with AdmissionRefused.
    """

    def __init__(self, limiter: AdaptiveLimiter, ticket: Ticket | None, started: float, *, wait: float = 0.0) -> None:
        self.limiter = limiter
        self.ticket = ticket
        self.deferred = ticket is None
        self.started = started
        # The wait budget the door granted (seconds): a deferred write that meets a full limit at its first
        # statement may wait for a slot for what is left of it, as it could have at the door.
        self.wait_until = time.monotonic() + wait
        self.ran_sql = False
        self.refused = False

    def __call__(self, execute, sql, params, many, context):
        if not self.ran_sql:
            self.ran_sql = True
            if self.ticket is None:
                # Latency counts from the door, as for a write admitted there.
                self.ticket = self.limiter.try_acquire(start=self.started,
                                                       wait=max(0.0, self.wait_until - time.monotonic()))
                self.refused = self.ticket is None
        if self.refused:
            raise AdmissionRefused(retry_after=retry_after_seconds())
        return execute(sql, params, many, context)


class SheddingMiddleware:
    """Admission of campaign writes, before URL resolution and every other middleware but the request id.

    An admitted write holds a slot until its response is built; a write over the limit that may not wait for
    a slot, or one that already queued too long (in this worker or behind a trusted proxy), is answered
    503 `busy` here, without I/O.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method != "POST" or not settings.MIANDAN_SHED_ENABLED:
            return self.get_response(request)
        policy = policy_for(url_name=None, path=request.path_info, method="POST")
        if policy is None or not policy.shed:
            return self.get_response(request)
        started = time.perf_counter()
        limiter = get_limiter()
        waited = queued_ms(request)  # before this server: a trusted proxy's X-Request-Start
        if waited is not None:
            limiter.queue_sample(waited)
        queued = max(waited or 0.0, server_queued_ms(request) or 0.0)
        if queued > settings.MIANDAN_SHED_MAX_QUEUE_MS:
            # Already late: the client has likely given up or will retry; do not start the work.
            return _shed_response(started, policy.key)
        # With the limit full, a write that did not queue in front (no standing queue: at most QUEUE_TARGET_MS)
        # may wait for a slot for what is left of MAX_WAIT_MS, when the limiter expects one in that time; so a
        # client that would only come straight back waits instead of spinning refusals through the same cores.
        # Behind a standing queue waiting would only deepen it: refused at once, the queue drains.
        wait = 0.0
        if queued <= settings.MIANDAN_SHED_QUEUE_TARGET_MS:
            wait = max(0.0, settings.MIANDAN_SHED_MAX_WAIT_MS - queued) / 1000.0
        ticket = limiter.admit(policy.key, wait=wait)
        if ticket is None:
            return _shed_response(started, policy.key)
        admission = _Admission(limiter, None if ticket == DEFERRED else ticket, started, wait=wait)
        request._shed_sample = True
        try:
            with connections["default"].execute_wrapper(admission):
                response = self.get_response(request)
        except BaseException:
            self._finish(limiter, admission, policy.key, sample=False)
            raise
        if admission.refused:
            # Whatever a layer made of AdmissionRefused (DRF answers it as 503 busy), the answer is the shed one.
            self._finish(limiter, admission, policy.key, sample=False)
            return _shed_response(started, policy.key, counted=True)
        # A latency sample only from writes that did their work (201): cheap answers (409 from Redis,
        # 400, 401) would teach the limiter a baseline real writes never meet. Refused before the view
        # (`_shed_sample` off: paused, rate limited): its latency says nothing about capacity.
        self._finish(limiter, admission, policy.key, sample=request._shed_sample and response.status_code == 201,
                     cancel=not request._shed_sample)
        return response

    @staticmethod
    def _finish(limiter: AdaptiveLimiter, admission: _Admission, key: str, *, sample: bool,
                cancel: bool = True) -> None:
        if admission.deferred:
            limiter.end_deferred()
        if admission.ticket is not None:
            if cancel:
                limiter.cancel(admission.ticket)
            else:
                limiter.release(admission.ticket, key=key, sample=sample)
        limiter.answered(key, ran_sql=admission.ran_sql)


class GuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        policy = policy_for(url_name=match.url_name if match else None, path=request.path_info, method=request.method)
        if policy is None:
            return None
        request.guard_policy = policy.key

        try:
            stop = paused(policy, request, view_kwargs)
        except AdmissionRefused as refused:
            # A deferred write whose switch check had to read PostgreSQL, with no slot free: refused, not
            # "unreadable" (SheddingMiddleware turns this into its shed answer).
            return _reject(refused)
        except Exception:
            # The campaign row could not be read: the view will hit the same database and decide.
            logger.warning("guard: kill switch unreadable", exc_info=True)
            stop = None
        if stop is not None:
            self._release(request)
            return _reject(stop)

        try:
            retry_after = check_rate_limits(policy, request) if policy.limits else None
        except RateLimitUnavailable:
            metrics.RATELIMIT_REDIS_ERRORS.labels(policy.key).inc()
            if policy.redis_down == "closed":
                self._release(request)
                return _reject(_busy(REDIS_DOWN_DETAIL))
            retry_after = None
        if retry_after is not None:
            self._release(request)
            return _reject(RateLimited(retry_after=retry_after))
        return None

    @staticmethod
    def _release(request) -> None:
        # Refused before the view: SheddingMiddleware gives the slot back without a latency sample.
        if getattr(request, "_shed_sample", False):
            request._shed_sample = False
