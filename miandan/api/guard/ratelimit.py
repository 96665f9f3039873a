"""Per-user / per-IP / per-phone rate limits (django-ratelimit counters in Redis), with a circuit breaker.

When the rate-limit Redis errors, the breaker skips Redis for a second instead of paying a timeout
per request, and each route applies its `redis_down` policy (miandan.options).
"""

from __future__ import annotations

import logging
import time

from django.core.signals import setting_changed
from django.dispatch import receiver
from django_ratelimit.core import get_usage

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


def check_rate_limits(policy: RoutePolicy, request) -> int | None:
    """Count this request against each limit of the policy. Returns Retry-After seconds if over a limit."""
    if breaker.is_open():
        raise RateLimitUnavailable()
    retry_after = None
    for name, kind in policy.limits:
        configured = rate(name)
        if configured is None:
            continue
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
