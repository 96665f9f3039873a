"""One shared redis-py client for fast-path counters, or None when no REDIS_URL is set.

A URL `redis+cluster://host:port[,host:port...]` names a Redis Cluster (redis-py's RedisCluster; the
listed nodes are only where discovery starts, so list more than one to start while a node is down).
Every multi-key operation of the app (pipelines, Lua) keeps to one hash slot: campaign keys carry the
campaign as a hash tag (`{c<id>}`, see `key`); per-store and per-client keys are single-key operations.
`MOVED`/`ASK` and a failed-over master are handled by the client (it re-reads the slot map); while a
slot has no master, its commands raise one of `ERRORS` and each caller falls back to PostgreSQL.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from urllib.parse import unquote

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

logger = logging.getLogger(__name__)

CLUSTER_SCHEME = "redis+cluster://"
# What a fast path catches to mean "Redis does not know": a cluster without a reachable node raises
# RedisClusterException, which is not a RedisError.
ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, RedisClusterException)


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and url.startswith(CLUSTER_SCHEME)


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """`redis+cluster://a:7000,b:7001` -> [("a", 7000), ("b", 7001)]."""
    rest = url[len(CLUSTER_SCHEME):]
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    nodes = []
    for part in filter(None, netloc.split(",")):
        host, _, port = part.rpartition(":")
        nodes.append((host or "127.0.0.1", int(port or 6379)))
    if not nodes:
        raise ValueError(f"no node in {url!r}")
    return nodes


def _cluster_password(url: str) -> str | None:
    netloc = url[len(CLUSTER_SCHEME):].split("/", 1)[0]
    if "@" not in netloc:
        return None
    userinfo = netloc.rsplit("@", 1)[0]
    return unquote(userinfo.split(":", 1)[1]) if ":" in userinfo else unquote(userinfo) or None


def make_client(url: str, *, connect_timeout: float, socket_timeout: float, decode_responses: bool = True,
                **kwargs) -> redis.Redis | RedisCluster:
    """A client for a plain `redis://` URL or a `redis+cluster://` one (raises ERRORS if no node answers)."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout,
                                    decode_responses=decode_responses, **kwargs)
    if "/" in url[len(CLUSTER_SCHEME):].split("?", 1)[0]:
        db = url[len(CLUSTER_SCHEME):].split("?", 1)[0].split("/", 1)[1]
        if db not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
        password=_cluster_password(url),
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        decode_responses=decode_responses,
        # A master that is down leaves its slots uncovered until its replica takes over: keep serving
        # the other slots (their callers never see the outage).
        require_full_coverage=False,
        **kwargs,
    )


@functools.cache
def _client(url: str) -> redis.Redis | RedisCluster:
    kwargs = {} if is_cluster_url(url) else {"health_check_interval": 30}
    return make_client(url, connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
                       socket_timeout=settings.REDIS_SOCKET_TIMEOUT, **kwargs)


_retry_at = 0.0
_retry_lock = threading.Lock()


@receiver(setting_changed)
def _forget_clients(*, setting, **kwargs) -> None:
    global _retry_at
    if setting.startswith("REDIS_"):
        _client.cache_clear()
        _retry_at = 0.0


def get_redis() -> redis.Redis | RedisCluster | None:
    """The client, or None without Redis. A cluster whose nodes all fail to answer at start-up counts as
    no Redis (callers use PostgreSQL) and is tried again a second later, not on every request."""
    global _retry_at
    url = settings.REDIS_URL
    if not url:
        return None
    if not is_cluster_url(url):
        return _client(url)
    if time.monotonic() < _retry_at:
        return None
    try:
        return _client(url)
    except ERRORS as exc:
        with _retry_lock:
            _retry_at = time.monotonic() + 1.0
        logger.warning("redis cluster unreachable (%s); using the database for a second", exc)
        return None


def key(*parts: object) -> str:
    """Namespaced key. Pass the campaign id first as `{c<id>}` to keep a campaign on one cluster slot."""
    return ":".join([settings.REDIS_KEY_PREFIX, *map(str, parts)])
