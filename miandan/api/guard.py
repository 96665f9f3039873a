"""The flash-crowd guard: kill switches, load shedding and rate limits, before any view runs.

`GuardMiddleware.process_view` runs after URL resolution and right before the view, in this order:

1. kill switch  -> 503 `paused`   (campaign row from a 0.5 s per-process cache: no query per request)
2. shedding     -> 503 `busy`     (queued too long per X-Request-Start, or over the in-process adaptive
                                   concurrency limit: no I/O at all)
3. rate limits  -> 429 `rate_limited` (django-ratelimit counters in Redis)

Shedding comes before rate limiting (architecture.md lists it after) so that a shed request costs
no Redis round trip and does not use up the caller's rate-limit budget for work never done.

Which route gets what is the table in `miandan.options`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_ratelimit.core import get_usage

from . import metrics
from .errors import Busy, Paused, RateLimited, error_response

logger = logging.getLogger(__name__)

PAUSED_DETAIL = {
    "claims_enabled": "领卡功能暂时暂停，请稍后再试",
    "referrals_enabled": "邀请功能暂时暂停，请稍后再试",
    "orders_enabled": "下单功能暂时暂停，请稍后再试",
}
PAUSED_RETRY_AFTER = 30
REDIS_DOWN_DETAIL = "系统繁忙，请稍后再试"


# --- adaptive concurrency limiter ----------------------------------------------------

@dataclass
class Ticket:
    start: float


class AdaptiveLimiter:
    """AIMD concurrency limit for campaign writes in this process.

    - A request may start only while fewer than floor(limit) are in flight; otherwise it is shed.
    - Each completion measures its latency. Slower than `target` seconds: the limit shrinks by
      `backoff` (at most once per `target` interval, so one burst of slow completions counts once).
      Faster while the limiter was nearly full: the limit grows by 1/limit (about +1 per round).
    So the limit follows the latency PostgreSQL and the CPU actually deliver instead of a fixed number;
    with gunicorn gthread workers the threads it does not admit stay free for shed answers and core reads.
    """

    def __init__(self, *, min_limit: int, max_limit: int, initial: int, target: float, backoff: float = 0.8) -> None:
        self.min_limit = max(1, min_limit)
        self.max_limit = max(self.min_limit, max_limit)
        self.limit = float(min(max(initial, self.min_limit), self.max_limit))
        self.target = target
        self.backoff = backoff
        self.inflight = 0
        self.shed = 0
        self._last_decrease = 0.0
        self._lock = threading.Lock()
        metrics.SHED_LIMIT.set(self.limit)

    def try_acquire(self) -> Ticket | None:
        with self._lock:
            if self.inflight >= math.floor(self.limit):
                self.shed += 1
                return None
            self.inflight += 1
        metrics.SHED_INFLIGHT.inc()
        return Ticket(start=time.perf_counter())

    def release(self, ticket: Ticket) -> None:
        now = time.perf_counter()
        latency = now - ticket.start
        with self._lock:
            self.inflight -= 1
            if latency > self.target:
                if now - self._last_decrease >= self.target:
                    self.limit = max(self.min_limit, self.limit * self.backoff)
                    self._last_decrease = now
            elif self.inflight + 1 >= math.floor(self.limit):
                self.limit = min(self.max_limit, self.limit + 1.0 / self.limit)
            limit = self.limit
        metrics.SHED_INFLIGHT.dec()
        metrics.SHED_LIMIT.set(limit)

    def congested(self) -> None:
        """An outside signal (time queued before Django) says we are behind: back off like a slow completion."""
        now = time.perf_counter()
        with self._lock:
            if now - self._last_decrease >= self.target:
                self.limit = max(self.min_limit, self.limit * self.backoff)
                self._last_decrease = now
            limit = self.limit
        metrics.SHED_LIMIT.set(limit)

    def cancel(self, ticket: Ticket) -> None:
        """Give the slot back without a latency sample (the request was refused before the view)."""
        with self._lock:
            self.inflight -= 1
        metrics.SHED_INFLIGHT.dec()

    def snapshot(self) -> dict:
        with self._lock:
            return {"limit": self.limit, "inflight": self.inflight, "shed": self.shed}


_limiter: AdaptiveLimiter | None = None
_limiter_lock = threading.Lock()


def gunicorn_threads(argv: list[str] | None = None, cmd_args: str | None = None) -> int | None:
    """The --threads of the gunicorn running this process, if it was given on the command line or GUNICORN_CMD_ARGS."""
    import os
    import shlex
    import sys

    argv = list(sys.argv if argv is None else argv)
    if not argv or "gunicorn" not in os.path.basename(argv[0]):
        return None
    args = argv[1:] + shlex.split(os.environ.get("GUNICORN_CMD_ARGS", "") if cmd_args is None else cmd_args)
    threads = None
    for i, arg in enumerate(args):
        if arg == "--threads" and i + 1 < len(args):
            threads = args[i + 1]
        elif arg.startswith("--threads="):
            threads = arg.split("=", 1)[1]
    try:
        return max(1, int(threads)) if threads is not None else 1  # gunicorn's default is one thread
    except ValueError:
        return None


def get_limiter() -> AdaptiveLimiter:
    global _limiter
    if _limiter is None:
        with _limiter_lock:
            if _limiter is None:
                max_limit = settings.MIANDAN_SHED_MAX_LIMIT
                threads = gunicorn_threads()
                if threads is not None:
                    # Campaign writes may hold at most half of this worker's threads; the others must stay
                    # free to answer shed requests and core reads (docs/operations.md).
                    max_limit = min(max_limit, max(1, threads // 2))
                _limiter = AdaptiveLimiter(
                    min_limit=min(settings.MIANDAN_SHED_MIN_LIMIT, max_limit),
                    max_limit=max_limit,
                    initial=settings.MIANDAN_SHED_INITIAL_LIMIT,
                    target=settings.MIANDAN_SHED_TARGET_MS / 1000.0,
                )
    return _limiter


@receiver(setting_changed)
def _reset_on_settings_change(*, setting, **kwargs):
    global _limiter
    if setting.startswith("MIANDAN_SHED_"):
        _limiter = None
    if setting in ("CACHES", "RATELIMIT_USE_CACHE"):
        _breaker.reset()


def queued_ms(request, now: float | None = None) -> float | None:
    """Time the request waited before reaching Django, from the proxy's X-Request-Start header.

    Accepts "t=<epoch>" or "<epoch>" in seconds (nginx ${msec}), milliseconds or microseconds.
    This sees the queue in front of the threads (listen backlog, gunicorn's pool queue) that
    the in-process concurrency count cannot see.
    """
    raw = request.META.get("HTTP_X_REQUEST_START", "")
    if not raw:
        return None
    try:
        value = float(raw.strip().removeprefix("t="))
    except ValueError:
        return None
    if value > 1e14:
        value /= 1e6
    elif value > 1e11:
        value /= 1e3
    waited = ((now if now is not None else time.time()) - value) * 1000.0
    return waited if waited >= 0 else 0.0


# --- identity for rate-limit keys -------------------------------------------------------

def client_ip(request) -> str:
    """REMOTE_ADDR, or the address MIANDAN_PROXY_COUNT trusted proxies put in X-Forwarded-For."""
    count = getattr(settings, "MIANDAN_PROXY_COUNT", 0)
    if count > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= count:
            return hops[-count][:64]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def client_inet(request) -> str | None:
    """`client_ip` when it is a valid IP address (for inet columns), else None."""
    try:
        return str(ipaddress.ip_address(client_ip(request)))
    except ValueError:
        return None


def _bearer_key(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer " and len(header) > 7:
        # The token's hash identifies the user without a database lookup before the view.
        return "t:" + hashlib.sha256(header[7:].strip().encode()).hexdigest()[:32]
    return None


def _json_body(request) -> dict:
    if getattr(request, "_guard_body", None) is not None:
        return request._guard_body
    body: dict = {}
    if request.content_type == "application/json":
        try:
            parsed = json.loads(request.body or b"{}")
            body = parsed if isinstance(parsed, dict) else {}
        except Exception:  # malformed JSON or too big: the view answers 400 itself
            body = {}
    request._guard_body = body
    return body


def _key_value(kind: str, request) -> str:
    if kind == "ip":
        return "ip:" + client_ip(request)
    if kind == "phone":
        phone = _json_body(request).get("phone")
        # Only a plausible phone becomes part of a Redis key; anything else (NUL, lone surrogates)
        # is the view's 400 to give, keyed by IP here.
        if isinstance(phone, str) and 0 < len(phone) <= 20 and phone.isascii() and phone.isdigit():
            return "p:" + phone
        return "ip:" + client_ip(request)
    return _bearer_key(request) or "ip:" + client_ip(request)


# --- Redis circuit breaker for the rate-limit cache --------------------------------------

class _Breaker:
    """After a Redis error, skip Redis for `cool_off` seconds instead of paying a timeout per request."""

    cool_off = 1.0

    def __init__(self) -> None:
        self.open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def trip(self) -> None:
        if not self.is_open():
            logger.warning("guard: rate-limit Redis unavailable; applying each route's redis_down policy for %ss",
                           self.cool_off)
        self.open_until = time.monotonic() + self.cool_off

    def reset(self) -> None:
        self.open_until = 0.0


_breaker = _Breaker()


class RateLimitUnavailable(Exception):
    pass


def check_rate_limits(policy, request) -> int | None:
    """Count this request against each limit of the policy. Returns Retry-After seconds if over a limit."""
    from miandan.options import rate

    if _breaker.is_open():
        raise RateLimitUnavailable()
    retry_after = None
    for name, kind in policy.limits:
        configured = rate(name)
        if configured is None:
            continue
        value = _key_value(kind, request)
        try:
            usage = get_usage(request, group=f"guard:{name}", key=lambda _g, _r, v=value: v, rate=configured,
                              increment=True)
        except Exception as exc:
            _breaker.trip()
            raise RateLimitUnavailable() from exc
        if usage is None:
            continue
        if usage["time_left"] == -1 and usage["limit"] == 0:
            # django-ratelimit could not read the counter (a cache that swallows errors).
            _breaker.trip()
            raise RateLimitUnavailable()
        if usage["should_limit"]:
            retry_after = max(retry_after or 0, max(1, int(usage["time_left"])))
    return retry_after


# --- kill switches ------------------------------------------------------------------------

def switched_off(policy, request, view_kwargs) -> bool:
    """Is the policy's feature paused for the campaign this request is about?

    Join and referrals name the campaign in the path; a chat order may name it in the body
    (`campaign`). An order that names none is left to the order service, which finds the
    campaign of the user's card with a fresh read and answers the same 503 `paused`.
    """
    from campaign.selectors import campaign_get_cached

    if policy.switch is None:
        return False
    slug = view_kwargs.get("slug")
    if slug is None and policy.switch == "orders_enabled":
        named = _json_body(request).get("campaign")
        slug = named if isinstance(named, str) and 0 < len(named) <= 64 else None
    if slug is None:
        return False
    campaign = campaign_get_cached(slug=slug)
    if campaign is None:
        return False  # the view answers 404
    return not getattr(campaign, policy.switch)


# --- the middleware ----------------------------------------------------------------------

def _reject(code: str, detail: str, status: int, retry_after: int | None, route: str):
    extra = {"retry_after": retry_after} if retry_after is not None else {}
    response = error_response(code, detail, status, **extra)
    response.error_code = code
    # django.request would log every shed 503 as an ERROR line: at 10x load that is a log flood and
    # most of the cost of shedding. These answers are expected and counted in /metrics instead.
    response._has_been_logged = True
    return response


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
        from miandan.options import policy_for

        match = request.resolver_match
        policy = policy_for(url_name=match.url_name if match else None, path=request.path_info, method=request.method)
        if policy is None:
            return None
        request.guard_policy = policy.key

        try:
            paused = switched_off(policy, request, view_kwargs)
        except Exception:
            # The campaign row could not be read: the view will hit the same database and decide.
            logger.warning("guard: kill switch unreadable", exc_info=True)
            paused = False
        if paused:
            return _reject(Paused.code, PAUSED_DETAIL[policy.switch], 503, PAUSED_RETRY_AFTER, policy.key)

        if policy.shed and settings.MIANDAN_SHED_ENABLED:
            waited = queued_ms(request)
            if waited is not None and waited > settings.MIANDAN_SHED_MAX_QUEUE_MS:
                # Already late: the client has likely given up or will retry; do not start the work.
                get_limiter().congested()
                metrics.SHED.labels(policy.key).inc()
                return _reject(Busy.code, Busy.detail, 503, settings.MIANDAN_SHED_RETRY_AFTER, policy.key)
            ticket = get_limiter().try_acquire()
            if ticket is None:
                metrics.SHED.labels(policy.key).inc()
                return _reject(Busy.code, Busy.detail, 503, settings.MIANDAN_SHED_RETRY_AFTER, policy.key)
            request._guard_ticket = ticket

        try:
            retry_after = check_rate_limits(policy, request) if policy.limits else None
        except RateLimitUnavailable:
            metrics.RATELIMIT_REDIS_ERRORS.labels(policy.key).inc()
            if policy.redis_down == "closed":
                self._release(request)
                return _reject(Busy.code, REDIS_DOWN_DETAIL, 503, settings.MIANDAN_SHED_RETRY_AFTER, policy.key)
            retry_after = None
        if retry_after is not None:
            self._release(request)
            return _reject(RateLimited.code, RateLimited.detail, 429, retry_after, policy.key)
        return None

    @staticmethod
    def _release(request) -> None:
        ticket = getattr(request, "_guard_ticket", None)
        if ticket is not None:
            request._guard_ticket = None
            get_limiter().cancel(ticket)


# --- OpenAPI: the answers the guard adds in front of the views --------------------------------

def document_guard_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: add 429 / 503 (busy, paused) to every guarded operation."""
    import re

    from miandan.options import policy_for

    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("GuardError", {
        "type": "object",
        "required": ["code", "detail"],
        "properties": {
            "code": {"type": "string", "enum": ["rate_limited", "busy", "paused"]},
            "detail": {"type": "string"},
            "retry_after": {"type": "integer", "description": "seconds, same as the Retry-After header"},
        },
    })
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/GuardError"}}}
    retry = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}}
    for path, operations in result.get("paths", {}).items():
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            policy = policy_for(url_name=None, path=concrete, method=method.upper())
            if policy is None:
                continue
            responses = operation["responses"]
            if policy.limits:
                responses.setdefault("429", {"description": "rate_limited：操作太频繁（按用户与 IP 限流）",
                                             "content": ref, "headers": retry})
            reasons = []
            if policy.shed:
                reasons.append("busy：活动太火爆，已限流降级")
            if policy.switch:
                reasons.append("paused：该功能被运营暂停")
            if policy.redis_down == "closed":
                reasons.append("busy：限流服务不可用时拒绝发送")
            if reasons:
                existing = responses.get("503", {})
                description = "；".join(filter(None, [existing.get("description", ""), *reasons]))
                responses["503"] = {**existing, "description": description, "content": ref, "headers": retry}
    return result
