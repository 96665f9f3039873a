"""Load shedding: an adaptive per-process concurrency limit for campaign writes, and queue age.

Shed requests cost no I/O at all: the limiter is a counter under a lock, and the queue age is
read from the proxy's X-Request-Start header.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from miandan.api import metrics


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
