"""One shared redis-py client for fast-path counters, or None when no REDIS_URL is set."""

from __future__ import annotations

import functools

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        health_check_interval=30,
        decode_responses=True,
    )


@receiver(setting_changed)
def _forget_clients(*, setting, **kwargs) -> None:
    if setting.startswith("REDIS_"):
        _client.cache_clear()


def get_redis() -> redis.Redis | None:
    url = settings.REDIS_URL
    return _client(url) if url else None


def key(*parts: object) -> str:
    """Namespaced key. Pass the campaign id first as `{c<id>}` to keep a campaign on one cluster slot."""
    return ":".join([settings.REDIS_KEY_PREFIX, *map(str, parts)])
