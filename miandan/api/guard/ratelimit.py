"""Per-user / per-IP / per-phone rate limits (fixed-window counters in Redis), with a circuit breaker.

The counters live in the `ratelimit` cache alias (RATELIMIT_REDIS_URL, its own short timeouts). With
Redis behind it, every limit of a request is counted in ONE pipelined round trip (INCR + EXPIRE per
limit); django-ratelimit's `get_usage` paid two round trips per limit. The windows are
django-ratelimit's (fixed, staggered per key by a CRC of the key), so the rates read the same. Without
Redis (the demo's local-memory cache) django-ratelimit counts as before.

When the rate-limit Redis errors, the breaker skips Redis for a second instead of paying a timeout
per request, and each route applies its `redis_down` policy (miandan.options).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_ratelimit.core import _split_rate, get_usage

from miandan.options import RoutePolicy, rate

from .client import bearer_key, client_ip, json_body

logger = logging.getLogger("miandan.api.guard")


def key_value(kind: str, request) -> str:
    """The counter key of one limit: "ip", "phone" (login endpoints) or "user" (the bearer token)."""
    if kind == "ip":
        return "ip:" + client_ip(request)
    if kind == "phone":
        phone = json_body(request).get("phone")
        # Only a plausible phone becomes part of a Redis key; anything else (NUL, lone surrogates)
        # is the view's 400 to give, keyed by IP here.
        if isinstance(phone, str) and 0 < len(phone) <= 20 and phone.isascii() and phone.isdigit():
            return "p:" + phone
        return "ip:" + client_ip(request)
    return bearer_key(request) or "ip:" + client_ip(request)


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


breaker = _Breaker()


@receiver(setting_changed)
def _reset_on_settings_change(*, setting, **kwargs):
    if setting in ("CACHES", "RATELIMIT_USE_CACHE"):
        breaker.reset()


class RateLimitUnavailable(Exception):
    pass


# Reads of other modules that ride in the rate-limit pipeline, so a guarded request pays one Redis round trip
# for its counters and its own reads (accounts/auth.py: the bearer token's copy). Each is called with the request
# and the pipeline, adds its commands and returns (how many it added, a callback for their replies), or None.
Prefetch = Callable[[Any, Any], "tuple[int, Callable[[list], None]] | None"]
_prefetches: list[Prefetch] = []


def register_prefetch(prefetch: Prefetch) -> None:
    if prefetch not in _prefetches:
        _prefetches.append(prefetch)


def _shares_main_redis() -> bool:
    """The counters' Redis is the one the rest of the app reads (the default), and not a cluster (a cluster
    pipeline would split the keys by slot anyway)."""
    from miandan.redis import is_cluster_url

    return bool(settings.REDIS_URL) and settings.RATELIMIT_REDIS_URL == settings.REDIS_URL and \
        not is_cluster_url(settings.REDIS_URL)


def _redis_of(cache):
    """The raw redis-py client behind a django-redis cache, or None for any other backend."""
    get_client = getattr(getattr(cache, "client", None), "get_client", None)
    return get_client(write=True) if get_client is not None else None


def _window_end(value: str, period: int, now: int) -> int:
    """django-ratelimit's window: fixed, its edge staggered per key so that not every window ends at once."""
    if period == 1:
        return now
    end = now - (now % period) + (zlib.crc32(value.encode()) % period)
    return end + period if end < now else end


def check_rate_limits(policy: RoutePolicy, request) -> int | None:
    """Count this request against each limit of the policy. Returns Retry-After seconds if over a limit."""
    if not settings.RATELIMIT_ENABLE:
        return None
    if breaker.is_open():
        raise RateLimitUnavailable()
    limits = [(name, kind, rate(name)) for name, kind in policy.limits]
    limits = [(name, kind, configured) for name, kind, configured in limits if configured is not None]
    if not limits:
        return None
    cache = caches[settings.RATELIMIT_USE_CACHE]
    client = _redis_of(cache)
    if client is None:
        return _check_with_django_ratelimit(limits, request)
    now = int(time.time())
    counted = []
    try:
        pipe = client.pipeline(transaction=False)
        for name, kind, configured in limits:
            count, period = _split_rate(configured)
            value = key_value(kind, request)
            end = _window_end(value, period, now)
            key = cache.make_key(f"rl:{name}:{value}:{end}")
            pipe.incr(key)
            pipe.expire(key, period + 2)
            counted.append((count, end))
        riders = [r for r in (p(request, pipe) for p in _prefetches) if r] if _prefetches and _shares_main_redis() \
            else []
        results = pipe.execute()
    except Exception as exc:
        breaker.trip()
        raise RateLimitUnavailable() from exc
    offset = 2 * len(counted)
    for added, consume in riders:
        consume(results[offset:offset + added])
        offset += added
    retry_after = None
    for i, (count, end) in enumerate(counted):
        if results[2 * i] > count:
            retry_after = max(retry_after or 0, max(1, end - now))
    return retry_after


def _check_with_django_ratelimit(limits, request) -> int | None:
    retry_after = None
    for name, kind, configured in limits:
        value = key_value(kind, request)
        try:
            usage = get_usage(request, group=f"guard:{name}", key=lambda _g, _r, v=value: v, rate=configured,
                              increment=True)
        except Exception as exc:
            breaker.trip()
            raise RateLimitUnavailable() from exc
        if usage is None:
            continue
        if usage["time_left"] == -1 and usage["limit"] == 0:
            # django-ratelimit could not read the counter (a cache that swallows errors).
            breaker.trip()
            raise RateLimitUnavailable()
        if usage["should_limit"]:
            retry_after = max(retry_after or 0, max(1, int(usage["time_left"])))
    return retry_after
