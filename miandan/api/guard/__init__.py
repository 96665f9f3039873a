"""The flash-crowd guard: kill switches, load shedding and rate limits, before any view runs.

`GuardMiddleware.process_view` runs after URL resolution and right before the view, in this order:

1. kill switch  -> 503 `paused`   (switches.py: the campaign gate's lookup, a 0.5 s per-process cache)
2. shedding     -> 503 `busy`     (shedding.py: queued too long per X-Request-Start, or over the in-process
                                   adaptive concurrency limit: no I/O at all)
3. rate limits  -> 429 `rate_limited` (ratelimit.py: django-ratelimit counters in Redis)

Shedding comes before rate limiting so that a shed request costs no Redis round trip and does not
use up the caller's rate-limit budget for work never done. Which route gets what is the table in
`miandan.options`; who the caller is comes from client.py.
"""

from __future__ import annotations

import logging

from django.conf import settings

from miandan.api import metrics
from miandan.api.errors import Busy, DomainError, RateLimited, domain_error_response
from miandan.options import policy_for

from .client import client_inet, client_ip
from .ratelimit import RateLimitUnavailable, check_rate_limits
from .shedding import AdaptiveLimiter, Ticket, get_limiter, gunicorn_threads, queued_ms
from .switches import paused, register_switch_check

__all__ = ["AdaptiveLimiter", "GuardMiddleware", "Ticket", "client_inet", "client_ip", "get_limiter",
           "gunicorn_threads", "queued_ms", "register_switch_check"]

logger = logging.getLogger(__name__)
REDIS_DOWN_DETAIL = "系统繁忙，请稍后再试"


def _reject(error: DomainError):
    response = domain_error_response(error)
    # django.request would log every shed 503 as an ERROR line: at 10x load that is a log flood and
    # most of the cost of shedding. These answers are expected and counted in /metrics instead.
    response._has_been_logged = True
    return response


def _busy(detail: str = Busy.detail) -> DomainError:
    return Busy(detail, retry_after=settings.MIANDAN_SHED_RETRY_AFTER)


class GuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        ticket = getattr(request, "_guard_ticket", None)
        if ticket is not None:
            request._guard_ticket = None
            get_limiter().release(ticket)
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        policy = policy_for(url_name=match.url_name if match else None, path=request.path_info, method=request.method)
        if policy is None:
            return None
        request.guard_policy = policy.key

        try:
            stop = paused(policy, request, view_kwargs)
        except Exception:
            # The campaign row could not be read: the view will hit the same database and decide.
            logger.warning("guard: kill switch unreadable", exc_info=True)
            stop = None
        if stop is not None:
            return _reject(stop)

        if policy.shed and settings.MIANDAN_SHED_ENABLED:
            waited = queued_ms(request)
            if waited is not None and waited > settings.MIANDAN_SHED_MAX_QUEUE_MS:
                # Already late: the client has likely given up or will retry; do not start the work.
                get_limiter().congested()
                metrics.SHED.labels(policy.key).inc()
                return _reject(_busy())
            ticket = get_limiter().try_acquire()
            if ticket is None:
                metrics.SHED.labels(policy.key).inc()
                return _reject(_busy())
            request._guard_ticket = ticket

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
        ticket = getattr(request, "_guard_ticket", None)
        if ticket is not None:
            request._guard_ticket = None
            get_limiter().cancel(ticket)
