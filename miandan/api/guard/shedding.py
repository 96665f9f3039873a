"""Load shedding: a per-process concurrency limit for campaign writes, learned from their latency.

The model (docs/operations.md, "The admission model"):

- Campaign writes (join, referral accept, orders) are admitted while fewer than `limit` run in this
  process; the rest are refused at once with 503 `busy`, unless the door gives them a wait budget (they did
  not queue in front) and a slot is expected within it: then they block for the slot (no CPU), so a client
  that would come straight back does not spin refusals through the cores the admitted writes need.
- The limit follows capacity, not a fixed latency: each admitted write that did its work (201) reports
  its latency; its route's no-load latency is the lowest its smoothed latency (EWMA over ~5 writes) was
  over the last two windows (`window` seconds each). While smoothed latency / no-load latency stays
  within `tolerance` and the limit is what holds writes back, the limit rises by 1/limit per completion
  (about +1 per round of writes); above it, the limit is multiplied by tolerance / ratio (at least 0.5),
  at most once per latency interval.
  So it rises until the cores are busy (more concurrency then only adds latency) and falls on a
  latency spike.
- A queue signal (time spent before Django, from a trusted proxy's X-Request-Start): while most of the
  last 20 writes queued longer than the target, the limit is cut by 20 % (at most every 50 ms). A
  single request never moves the limit: it can at most be shed itself (too late to be worth starting).
- Answers that never reach PostgreSQL (a join refused from Redis: budget exhausted, card cap) do not need a
  slot: the work the limit protects is the database's. Per route the limiter keeps the share of recent
  answers that ran no SQL statement; while most did (>= `defer_share`) and the limit is full, a write is let
  in unadmitted ("deferred", at most `max_limit` at a time) and must take a slot at its first SQL statement,
  or is refused there with the same 503 `busy`. So a crowd refused from Redis is answered instead of shed,
  while real work still never runs past the limit; on any other route mix the door sheds as before.
- Floor: never below what the cores can run (ceil(cores / gunicorn workers), at least 1); ceiling: the
  worker's threads minus one (one never runs a write: refusals and reads; a waiter holds it at most its budget),
  or MIANDAN_SHED_MAX_LIMIT.

Shed requests cost no I/O at all: the limiter is a counter under a lock.
"""

from __future__ import annotations

import math
import os
import random
import shlex
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from miandan.api import metrics

# The environ key miandan.server.ThreadWorker stamps. Not imported from there: that would load gunicorn into
# every process that imports the guard, Celery workers included (13 MB; tests/test_footprint.py).
QUEUED_AT = "miandan.queued_at"


@dataclass
class Ticket:
    start: float


DEFERRED = "deferred"  # AdaptiveLimiter.admit: go on without a slot; take one at the first SQL statement


class AdaptiveLimiter:
    """Latency-gradient concurrency limit with a learned no-load baseline, a floor and a ceiling.

    `clock` is injectable so the behaviour can be tested on a simulated clock.
    """

    def __init__(self, *, min_limit: int, max_limit: int, initial: float | None = None, tolerance: float = 2.0,
                 window: float = 10.0, queue_target: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 defer_share: float = 0.5, max_waiting: int = 0) -> None:
        self.min_limit = max(1, int(min_limit))
        self.max_limit = max(self.min_limit, int(max_limit))
        start = initial if initial is not None else self.min_limit
        self.limit = float(min(max(start, self.min_limit), self.max_limit))
        self.tolerance = tolerance
        self.window = window
        self.queue_target = queue_target
        self.clock = clock
        self.inflight = 0
        self.shed = 0
        self.latency = 0.0  # the last write's route: smoothed latency over its no-load latency
        self.queue = 0.0  # share of the last 20 trusted queue samples above the target
        self._late_ring: deque[bool] = deque(maxlen=20)
        # route -> [window start, min of the smoothed latency this window, min last window, smoothed latency]
        self._windows: dict[str, list[float]] = {}
        self._held_back = False  # a write was refused since the last completion: the limit is binding
        self._last_decrease = -math.inf
        self.defer_share = defer_share
        self.deferred = 0  # requests in flight without a slot, to be admitted at their first SQL statement
        # route -> share of its recent answers (EWMA over ~10) that ran no SQL statement; unknown routes: 0
        self._no_sql: dict[str, float] = {}
        self.max_waiting = max(0, int(max_waiting))
        self.waiting = 0  # writes blocked in admit(wait=...) for a slot (each holds a server thread, no CPU)
        self.timed_out = 0  # waiters whose slot did not come within their budget (then shed)
        self.service: float | None = None  # EWMA of an admitted write's latency (s), from writes that did their work
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        metrics.SHED_LIMIT.set(self.limit)

    # --- admission ---------------------------------------------------------------------------
    def try_acquire(self, *, start: float | None = None, wait: float = 0.0) -> Ticket | None:
        """A slot, or None (the limit is full and no slot is expected within `wait` seconds, or none came).
        `start`: when the request began, if earlier than now."""
        return self._acquire(start=start, defer_key=None, wait=wait)  # without a defer_key it is never DEFERRED

    def admit(self, key: str = "", *, wait: float = 0.0) -> Ticket | str | None:
        """At the door: a slot; else DEFERRED while most of `key`'s recent answers ran no SQL (and fewer than
        `max_limit` are deferred already); else, when a slot is expected within `wait` seconds, the slot after
        waiting for it; else None (shed). A DEFERRED request calls `try_acquire` before its first SQL statement
        and `end_deferred` when it is answered."""
        return self._acquire(start=None, defer_key=key, wait=wait)

    def _acquire(self, *, start: float | None, defer_key: str | None, wait: float = 0.0) -> Ticket | str | None:
        with self._lock:
            if self.inflight >= math.floor(self.limit):
                self._held_back = True  # a write wanted a slot: the limit is binding either way
                if (defer_key is not None and self._no_sql.get(defer_key, 0.0) >= self.defer_share
                        and self.deferred < self.max_limit):
                    self.deferred += 1
                    return DEFERRED
                if not self._wait_for_slot(wait):
                    self.shed += 1
                    return None
            self.inflight += 1
        metrics.SHED_INFLIGHT.inc()
        return Ticket(start=self.clock() if start is None else start)

    def _wait_for_slot(self, budget: float) -> bool:
        """Under the lock, the limit full: wait up to `budget` seconds for a slot, but only when one is expected
        in time, (waiters ahead + 1) x the write's smoothed latency / limit. A refusal is then still answered at
        once (a client told "busy" after waiting gained nothing), and a closed-loop client that would only come
        straight back waits a few milliseconds instead of spinning refusals through the same cores."""
        # No budget, no write finished yet (no basis for a promise), or every waiter's thread taken: refuse.
        if budget <= 0 or self.service is None or self.waiting >= self.max_waiting:
            return False
        if (self.waiting + 1) * self.service / max(1, math.floor(self.limit)) > budget:
            return False
        deadline = time.monotonic() + budget  # real time: waiting blocks a real thread whatever `clock` is
        self.waiting += 1
        metrics.SHED_WAITING.inc()
        try:
            while self.inflight >= math.floor(self.limit):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.timed_out += 1
                    metrics.SHED_WAIT_TIMEOUTS.inc()
                    return False
                self._slot_freed.wait(remaining)
            return True
        finally:
            self.waiting -= 1
            metrics.SHED_WAITING.dec()

    def end_deferred(self) -> None:
        with self._lock:
            self.deferred -= 1

    def answered(self, key: str, *, ran_sql: bool) -> None:
        """Learn whether `key`'s answers reach PostgreSQL (every answered request, admitted or deferred)."""
        with self._lock:
            self._no_sql[key] = 0.9 * self._no_sql.get(key, 0.0) + (0.0 if ran_sql else 0.1)

    def cancel(self, ticket: Ticket) -> None:
        """Give the slot back without a latency sample (refused before the view: paused, rate limited)."""
        with self._lock:
            self.inflight -= 1
            self._slot_freed.notify()
        metrics.SHED_INFLIGHT.dec()

    def release(self, ticket: Ticket, *, key: str = "", sample: bool = True) -> None:
        """Free the slot; with `sample`, learn from the write's latency (`key`: its route, each has its own baseline).

        Only writes that did their work are samples (the guard passes 201 answers): a flood of cheap
        answers (401, 409 from Redis) must not teach the limiter a baseline real writes can never meet.
        """
        now = self.clock()
        latency = max(0.0, now - ticket.start)
        with self._lock:
            binding = self._held_back or self.inflight >= math.floor(self.limit)
            self._held_back = False
            self.inflight -= 1
            self._slot_freed.notify()
            if sample:
                self.service = latency if self.service is None else 0.8 * self.service + 0.2 * latency
                self._learn(key, latency, now, binding)
            elif binding and self.latency <= self.tolerance:
                # A cheap answer (409 from Redis, 400) while writes were held back: no latency lesson, but the
                # limit was binding and the writes that did work are not slow, so there is room.
                self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)
            limit = self.limit
        metrics.SHED_INFLIGHT.dec()
        metrics.SHED_LIMIT.set(limit)

    # --- signals ------------------------------------------------------------------------------
    def baseline(self, key: str = "") -> float:
        window = self._windows.get(key)
        return min(window[1], window[2]) if window else math.inf

    def _learn(self, key: str, latency: float, now: float, binding: bool) -> None:
        window = self._windows.get(key)
        # The route's smoothed latency (EWMA over ~5 writes): one lucky or unlucky write barely moves it.
        smooth = latency if window is None else 0.8 * window[3] + 0.2 * latency
        if window is None or now - window[0] >= self.window:
            # Two windows: the baseline forgets a minimum after one to two windows (a slower path, a bigger
            # database), so it can rise, but never while a calm spell is recent.
            self._windows[key] = window = [now, smooth, window[1] if window else math.inf, smooth]
        else:
            window[1] = min(window[1], smooth)
            window[3] = smooth
        self.latency = smooth / max(min(window[1], window[2]), 1e-6)
        if self.latency > self.tolerance:
            if now - self._last_decrease >= smooth:  # one cut per round of writes
                self.limit = max(float(self.min_limit), self.limit * max(0.5, self.tolerance / self.latency))
                self._last_decrease = now
        elif binding:
            self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)

    def queue_sample(self, waited_ms: float) -> None:
        """A trusted queue-wait sample. The limit falls only while most of the last 20 requests queued longer
        than the target (a standing queue): no single request, however late it claims to be, moves it."""
        late = waited_ms / 1000.0 > self.queue_target
        with self._lock:
            self._late_ring.append(late)
            self.queue = sum(self._late_ring) / len(self._late_ring)
            now = self.clock()
            if (len(self._late_ring) == self._late_ring.maxlen and self.queue > 0.5
                    and now - self._last_decrease >= 0.05):
                self.limit = max(float(self.min_limit), self.limit * 0.8)
                self._last_decrease = now
            limit = self.limit
        metrics.SHED_LIMIT.set(limit)

    def snapshot(self) -> dict:
        with self._lock:
            return {"limit": self.limit, "inflight": self.inflight, "shed": self.shed, "latency_ratio": self.latency,
                    "deferred": self.deferred, "no_sql": dict(self._no_sql), "waiting": self.waiting,
                    "timed_out": self.timed_out, "service": self.service,
                    "baselines": {k: min(w[1], w[2]) for k, w in self._windows.items()}, "queue": self.queue,
                    "min": self.min_limit, "max": self.max_limit}


_limiter: AdaptiveLimiter | None = None
_limiter_lock = threading.Lock()


def _gunicorn_arg(name: str, argv: list[str] | None, cmd_args: str | None) -> str | None:
    argv = list(sys.argv if argv is None else argv)
    if not argv or "gunicorn" not in os.path.basename(argv[0]):
        return None
    args = argv[1:] + shlex.split(os.environ.get("GUNICORN_CMD_ARGS", "") if cmd_args is None else cmd_args)
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def gunicorn_threads(argv: list[str] | None = None, cmd_args: str | None = None) -> int | None:
    """This worker's threads: what gunicorn.conf.py's post_fork hook recorded, else --threads on the command line."""
    recorded = os.environ.get("MIANDAN_SERVER_THREADS") if argv is None and cmd_args is None else None
    if recorded:
        return max(1, int(recorded))
    argv = list(sys.argv if argv is None else argv)
    if not argv or "gunicorn" not in os.path.basename(argv[0]):
        return None
    threads = _gunicorn_arg("--threads", argv, cmd_args)
    try:
        return max(1, int(threads)) if threads is not None else 1  # gunicorn's default is one thread
    except ValueError:
        return None


def gunicorn_workers() -> int | None:
    recorded = os.environ.get("MIANDAN_SERVER_WORKERS")
    if recorded:
        return max(1, int(recorded))
    value = _gunicorn_arg("-w", None, None) or _gunicorn_arg("--workers", None, None)
    try:
        return max(1, int(value)) if value is not None else None
    except ValueError:
        return None


def limits_for_this_process() -> tuple[int, int, float]:
    """(floor, ceiling, initial) from the settings, or from the server shape when they are 0 (auto)."""
    cores = os.cpu_count() or 1
    workers = gunicorn_workers() or 1
    threads = gunicorn_threads()
    floor = settings.MIANDAN_SHED_MIN_LIMIT or max(1, math.ceil(cores / workers))
    if settings.MIANDAN_SHED_MAX_LIMIT:
        ceiling = settings.MIANDAN_SHED_MAX_LIMIT
    elif threads is not None:
        ceiling = threads - 1  # one thread never runs a write: refusals, reads and health checks
    else:
        ceiling = 16  # not under gunicorn (runserver, tests)
    ceiling = max(floor, ceiling)
    initial = settings.MIANDAN_SHED_INITIAL_LIMIT or min(ceiling, max(floor, 2))
    return floor, ceiling, float(initial)


def get_limiter() -> AdaptiveLimiter:
    global _limiter
    if _limiter is None:
        with _limiter_lock:
            if _limiter is None:
                floor, ceiling, initial = limits_for_this_process()
                # Each waiter holds a server thread: under gunicorn at most all of them (a waiter frees its thread
                # within MIANDAN_SHED_MAX_WAIT_MS), elsewhere (runserver, tests) as many as the ceiling.
                max_waiting = gunicorn_threads() or ceiling
                _limiter = AdaptiveLimiter(min_limit=floor, max_limit=ceiling, initial=initial,
                                           tolerance=settings.MIANDAN_SHED_TOLERANCE,
                                           queue_target=settings.MIANDAN_SHED_QUEUE_TARGET_MS / 1000.0,
                                           max_waiting=max_waiting)
    return _limiter


@receiver(setting_changed)
def _reset_on_settings_change(*, setting, **kwargs):
    global _limiter
    if setting.startswith("MIANDAN_SHED_"):
        _limiter = None


def retry_after_seconds() -> int:
    """Retry-After of a shed answer: base..2 x base seconds at random, so refused clients do not return in lockstep."""
    base = max(1, settings.MIANDAN_SHED_RETRY_AFTER)
    return random.randint(base, 2 * base)


# Queue ages outside this range are not a queue: a wrong clock or a forged header.
QUEUE_PLAUSIBLE_MS = (-1000.0, 60_000.0)


def server_queued_ms(request, now: float | None = None) -> float | None:
    """Time the request waited in this gunicorn worker's own queue for a thread (stamped by miandan.server's
    worker, so it can be trusted without a proxy); None under another server."""
    stamp = request.META.get(QUEUED_AT)
    if not isinstance(stamp, float):
        return None
    return max(0.0, ((now if now is not None else time.time()) - stamp) * 1000.0)


def queued_ms(request, now: float | None = None) -> float | None:
    """Time the request waited before reaching Django, from the proxy's X-Request-Start header.

    Honoured only behind a trusted proxy (MIANDAN_PROXY_COUNT > 0): a client could otherwise send any
    value. Accepts "t=<epoch>" or "<epoch>" in seconds (nginx ${msec}), milliseconds or microseconds;
    an implausible value (more than a second in the future, more than a minute old) is ignored.
    """
    if settings.MIANDAN_PROXY_COUNT <= 0:
        return None
    raw = request.META.get("HTTP_X_REQUEST_START", "")
    if not raw or len(raw) > 40:
        return None
    try:
        value = float(raw.strip().removeprefix("t="))
    except ValueError:
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    if value > 1e14:
        value /= 1e6
    elif value > 1e11:
        value /= 1e3
    waited = ((now if now is not None else time.time()) - value) * 1000.0
    low, high = QUEUE_PLAUSIBLE_MS
    if not low <= waited <= high:
        return None
    return max(0.0, waited)
