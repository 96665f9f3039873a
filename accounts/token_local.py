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
- a keeper thread PINGs the subscription every 0.5 s; nothing heard for 1.5 s (checked on the request path
  too, so a stalled keeper or a hung Redis cannot keep entries served), a reconnect by redis-py (which loses
  what was published meanwhile) or any error empties the cache, and nothing is served from it until a new
  subscription is confirmed.
- every entry also dies after MIANDAN_TOKEN_LOCAL_SECONDS, whatever happens to pub/sub, and the keeper purges
  dead entries every 0.5 s.

What is not invalidated (a user's `last_login`, another token's `last_used_at`) may be read up to one entry's
life older than the Redis copy alone would allow. A revocation whose Redis write fails (Redis down or hung)
reaches the other processes when their subscription is found lost, within 1.5 s; without this copy they would
have fallen back to PostgreSQL at once. Reviewed by a second engineer (race reproductions under load, Redis
killed, stopped and restarted): the drain now reads past redis-py's own non-message replies and the request
path checks the subscription's liveness itself, the two gaps that review found.

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
PING_EVERY = 0.5
# Nothing read from the subscription for this long (the keeper's PINGs are answered every PING_EVERY): it is
# treated as lost, on the request path too, so a stalled keeper or a hung Redis cannot keep entries served.
PONG_WITHIN = 1.5


def channel() -> str:
    return key("tokinv")


def publishes() -> bool:
    """Revocations are published wherever a process may hold copies: plain Redis (whatever this process's
    own MIANDAN_TOKEN_LOCAL_SECONDS says; another process may have it on)."""
    url = settings.REDIS_URL
    return bool(url) and not is_cluster_url(url)


def enabled() -> bool:
    return publishes() and settings.MIANDAN_TOKEN_LOCAL_SECONDS > 0 and settings.MIANDAN_TOKEN_CACHE_SECONDS > 0


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
        self.last_pong = 0.0  # when Redis was last known alive: the send time of the last PING answered
        self.ping_sent_at = 0.0
        self.pings_out = 0  # PINGs sent and not answered yet

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
                # No redis-py health check on this connection (the keeper's PINGs are the check): its reply
                # makes get_message return None with more waiting behind it (found in review).
                pubsub.connection.health_check_interval = 0
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
                        if self.generation != generation:  # stopped meanwhile: a newer keeper owns the state
                            pubsub.close()
                            return
                        self.pubsub, self.last_pong, self.pings_out = pubsub, time.monotonic(), 0
                        self.epoch += 1
                time.sleep(PING_EVERY)
                with self.lock:
                    if self.generation != generation:
                        return  # stopped: a newer keeper (or none) owns the state
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
                    self.ping_sent_at = time.monotonic()
                    self.pings_out += 1
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
            connection = pubsub.connection
            if connection is not None and not pubsub.miandan_reconnect.happened and not connection.can_read(timeout=0):
                return  # nothing on the socket or in the parser's buffer: the common case, without get_message
            for _ in range(100_000):  # bounded: a socket that never runs dry is treated as lost below
                message = pubsub.get_message(timeout=0.0)
                if pubsub.miandan_reconnect.happened:
                    self._lose(pubsub)
                    return
                if message is None:
                    if pubsub.connection is not None and pubsub.connection.can_read(timeout=0):
                        continue  # something was read that is not a message (a reply): there is more
                    return
                kind = message.get("type")
                if kind == "message":
                    data = message.get("data") or ""
                    if isinstance(data, bytes):
                        data = data.decode()
                    for key_hash in data.split():
                        self.entries.pop(key_hash, None)
                    self.epoch += 1
                elif kind not in ("subscribe", "unsubscribe"):
                    # An answer to the keeper's PING (its shape differs between RESP2 and RESP3 in redis-py, so
                    # it is not matched by type). Once every PING is answered, Redis is known alive as of the last
                    # one's sending: an old answer read late proves nothing newer.
                    self.pings_out = max(0, self.pings_out - 1)
                    if self.pings_out == 0:
                        self.last_pong = max(self.last_pong, self.ping_sent_at)
            self._lose(pubsub)
        except REDIS_ERRORS + (OSError, ValueError):
            self._lose(pubsub)

    # --- the request side ----------------------------------------------------------------------------

    def begin(self) -> int | None:
        """Before reading the Redis copy: a ticket for `put`, or None when the cache is off."""
        if not enabled():
            return None
        self._start()
        with self.lock:
            return self.epoch if self._live() else None

    def _live(self) -> bool:
        """Caller holds the lock: subscribed, and heard from within PONG_WITHIN (whether or not the keeper runs)."""
        if self.pubsub is None:
            return False
        if time.monotonic() - self.last_pong > PONG_WITHIN:
            self._drain()  # the answer to the last PING may be waiting
            if self.pubsub is not None and time.monotonic() - self.last_pong > PONG_WITHIN:
                self._lose(self.pubsub)
        return self.pubsub is not None

    def get(self, key_hash: str) -> str | None:
        """The raw token copy of a live entry, or None."""
        if not enabled() or self.pid != os.getpid():
            return None
        with self.lock:
            entry = self.entries.get(key_hash)
            if entry is None or not self._live():
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
            if not self._live() or self.epoch != ticket:
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
