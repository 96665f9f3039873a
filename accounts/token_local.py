"""A per-process copy of the token copies, invalidated through Redis pub/sub (issue 14).

Every app request authenticates, and the Redis round trip for the token copy was half the cost of the campaign
page in-process (0.83 ms with it, 0.42 ms without). Reads that find the token here pay a dictionary lookup, a
`select()` on one socket and a JSON decode instead.

Revocation stays as exact as the Redis copy it mirrors:
- `token_cache_forget` / `token_cache_drop` (accounts.auth) publish the token hashes on `<prefix>:tokinv` in
  the same round trip as the tombstones, and drop this process's entries at once.
- every process holds one subscribed connection. Before an entry is served, the socket is checked for
  pending invalidations and they are applied first (a non-blocking read, under this module's lock: only one
  thread ever reads the socket). Redis writes an invalidation to the subscribers' sockets in the same event
  loop turn as its reply to the publisher, so a request that starts after the revocation has returned finds
  the invalidation waiting on the socket (on a network, add the one-way delay to the subscriber).
- an entry is only added if no invalidation arrived since its Redis read began (an epoch counter): a copy
  read just before a revocation cannot be stored just after it.
- the subscription is checked by a keeper thread (PING every second, answer within 3 s): a lost or silent
  connection empties the cache and nothing is served from it until a new subscription is confirmed.
- every entry also dies after MIANDAN_TOKEN_LOCAL_SECONDS, whatever happens to pub/sub.

Off (every read goes to Redis as before) when MIANDAN_TOKEN_LOCAL_SECONDS is 0, when the token copy is off,
without Redis, and on a Redis Cluster URL.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from miandan.redis import ERRORS as REDIS_ERRORS
from miandan.redis import get_redis, is_cluster_url, key

logger = logging.getLogger(__name__)
# ~1 KB each: a bound on memory (~20 MB per process), not a working-set size (cleared when reached). Entries
# past their life are purged every second, so what is held is the tokens seen in the last few seconds.
MAX_ENTRIES = 20_000
PING_EVERY = 1.0
PONG_WITHIN = 3.0


def channel() -> str:
    return key("tokinv")


def publishes() -> bool:
    """Revocations are published wherever a process may hold copies: plain Redis (whatever this process's
    own MIANDAN_TOKEN_LOCAL_SECONDS says; another process may have it on)."""
    url = settings.REDIS_URL
    return bool(url) and not is_cluster_url(url)


def enabled() -> bool:
    url = settings.REDIS_URL
    return bool(url) and not is_cluster_url(url) and settings.MIANDAN_TOKEN_LOCAL_SECONDS > 0 \
        and settings.MIANDAN_TOKEN_CACHE_SECONDS > 0


class _Reconnected:
    def __init__(self) -> None:
        self.happened = False

    def on_connect(self, connection) -> None:
        self.happened = True


class _Local:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[float, str]] = {}  # key_hash -> (deadline, raw copy)
        self.epoch = 0
        self.pubsub = None  # subscribed and confirmed, or None (nothing is served)
        self.pid = 0  # the process the keeper runs in (a forked worker starts its own)
        self.generation = 0  # a keeper runs while this is its own
        self.last_pong = 0.0

    # --- the subscription --------------------------------------------------------------------------

    def _start(self) -> None:
        """Start the keeper in this process (a forked worker inherits neither the thread nor the socket)."""
        if self.pid == os.getpid():
            return
        with self.lock:
            if self.pid == os.getpid():
                return
            self.pid, self.pubsub, self.entries = os.getpid(), None, {}
            self.epoch += 1
            self.generation += 1
            threading.Thread(target=self._keep, args=(self.generation,), name="token-local-keeper",
                             daemon=True).start()

    def stop(self) -> None:
        """Forget everything and let the keeper end; the next use starts a new one (settings changed)."""
        with self.lock:
            self._lose(self.pubsub)
            self.generation += 1
            self.pid = 0

    def _subscribe(self):
        client = get_redis()
        if client is None:
            return None
        pubsub = client.pubsub()
        pubsub.subscribe(channel())
        deadline = time.monotonic() + PONG_WITHIN
        while time.monotonic() < deadline:  # the subscription is only real once Redis confirms it
            message = pubsub.get_message(timeout=0.2)
            if message and message.get("type") == "subscribe":
                # redis-py reconnects and resubscribes by itself when the connection drops; whatever was
                # published in between is lost, so a reconnect must count as a lost subscription.
                pubsub.miandan_reconnect = _Reconnected()  # held here: redis-py keeps only a weak reference
                pubsub.connection.register_connect_callback(pubsub.miandan_reconnect.on_connect)
                return pubsub
        pubsub.close()
        return None

    def _lose(self, pubsub) -> None:
        """Caller holds the lock: forget everything; nothing is served until a new subscription."""
        self.pubsub, self.entries = None, {}
        self.epoch += 1
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # closing a broken connection: nothing left to save
                pass

    def _keep(self, generation: int) -> None:
        pubsub = None
        while self.generation == generation:
            try:
                if pubsub is None:
                    pubsub = self._subscribe()
                    if pubsub is None:
                        time.sleep(1.0)
                        continue
                    with self.lock:
                        if self.generation != generation:
                            self._lose(pubsub)
                            return
                        self.pubsub, self.last_pong = pubsub, time.monotonic()
                        self.epoch += 1
                time.sleep(PING_EVERY)
                with self.lock:
                    if self.pubsub is not pubsub:
                        pubsub = None
                        continue
                    self._drain()
                    self._purge()
                    if self.pubsub is not pubsub:  # lost while draining
                        pubsub = None
                        continue
                    if time.monotonic() - self.last_pong > PONG_WITHIN:
                        logger.warning("token local cache: no answer from Redis pub/sub; cache off until resubscribed")
                        self._lose(pubsub)
                        pubsub = None
                        continue
                    pubsub.ping()
            except REDIS_ERRORS + (OSError, ValueError):
                with self.lock:
                    if self.pubsub is pubsub or self.pubsub is None:
                        self._lose(pubsub)
                pubsub = None
                time.sleep(1.0)
            except Exception:  # the keeper must not die quietly: off, logged, retried
                logger.exception("token local cache: keeper failed")
                with self.lock:
                    if self.pubsub is pubsub or self.pubsub is None:
                        self._lose(pubsub)
                pubsub = None
                time.sleep(1.0)

    def _purge(self) -> None:
        """Caller holds the lock: forget entries past their life (a flash crowd's tokens seen once)."""
        now = time.monotonic()
        for key_hash in [k for k, (deadline, _) in self.entries.items() if deadline <= now]:
            del self.entries[key_hash]

    def _drain(self) -> None:
        """Caller holds the lock: apply every invalidation already on the socket (non-blocking)."""
        pubsub = self.pubsub
        if pubsub is None:
            return
        try:
            while True:
                message = pubsub.get_message(timeout=0.0)
                if pubsub.miandan_reconnect.happened:
                    self._lose(pubsub)
                    return
                if message is None:
                    return
                # Anything read is a sign of life; the answer to the keeper's PING is one of them (its shape
                # differs between RESP2 and RESP3 in redis-py, so it is not matched by type).
                self.last_pong = time.monotonic()
                if message.get("type") == "message":
                    data = message.get("data") or ""
                    if isinstance(data, bytes):
                        data = data.decode()
                    for key_hash in data.split():
                        self.entries.pop(key_hash, None)
                    self.epoch += 1
        except REDIS_ERRORS + (OSError, ValueError):
            self._lose(pubsub)

    # --- the request side ----------------------------------------------------------------------------

    def begin(self) -> int | None:
        """Before reading the Redis copy: a ticket for `put`, or None when the cache is off."""
        if not enabled():
            return None
        self._start()
        with self.lock:
            return self.epoch if self.pubsub is not None else None

    def get(self, key_hash: str) -> str | None:
        """The raw token copy of a live entry, or None."""
        if not enabled() or self.pid != os.getpid():
            return None
        with self.lock:
            entry = self.entries.get(key_hash)
            if entry is None or self.pubsub is None:
                return None
            self._drain()  # invalidations already sent are applied before this entry is trusted
            entry = self.entries.get(key_hash)
            if entry is None or entry[0] <= time.monotonic():
                self.entries.pop(key_hash, None)
                return None
            return entry[1]

    def put(self, ticket: int | None, key_hash: str, raw: str) -> None:
        """Keep a copy read from Redis since `begin` gave `ticket`, unless anything was invalidated since.

        An entry lives MIANDAN_TOKEN_LOCAL_SECONDS, and no longer than the touch window: while it is served,
        this process sends no touch (the Redis read that filled it made the touch decision), so
        last_used_at lags by at most one entry's life."""
        if ticket is None:
            return
        with self.lock:
            self._drain()
            if self.pubsub is None or self.epoch != ticket:
                return  # something was invalidated since the Redis read began: it may have been this token
            if len(self.entries) >= MAX_ENTRIES:
                self.entries.clear()
            life = settings.MIANDAN_TOKEN_LOCAL_SECONDS
            if settings.MIANDAN_TOKEN_TOUCH_SECONDS > 0:
                life = min(life, settings.MIANDAN_TOKEN_TOUCH_SECONDS)
            self.entries[key_hash] = (time.monotonic() + life, raw)

    def drop(self, key_hashes) -> None:
        with self.lock:
            for key_hash in key_hashes:
                self.entries.pop(key_hash, None)
            self.epoch += 1

    def clear(self) -> None:
        with self.lock:
            self.entries = {}
            self.epoch += 1


LOCAL = _Local()


@receiver(setting_changed)
def _settings_changed(*, setting, **kwargs) -> None:
    # Another Redis or prefix (tests): what was copied came from elsewhere, and the subscription too.
    if setting.startswith("REDIS_") or setting.startswith("MIANDAN_TOKEN_"):
        LOCAL.stop()
