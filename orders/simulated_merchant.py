"""The simulated merchant: the other side of `orders.merchant.HttpMerchant`, run as its own process.

    python manage.py simulated_merchant        # listens on MIANDAN_MERCHANT_URL (default http://127.0.0.1:8790)

It behaves like a delivery platform that holds many orders at once: it takes an order (idempotent by our
order id), and later, on its own clock, accepts or rejects it, dispatches it and delivers it, telling the
platform each time with a signed event (`POST <callback base>/api/v1/merchants/sim/events`). It also answers
polls (`POST /orders/query`) and cancel notices. Behaviour comes from settings:

- `MIANDAN_MERCHANT_ACCEPT_SECONDS` ("a-b"): from receiving an order to accepting (or rejecting) it;
- `MIANDAN_MERCHANT_DELIVER_SECONDS` ("a-b"): from accepting to delivering (dispatch half way);
- `MIANDAN_MERCHANT_REJECT_RATE`: share of orders it rejects; `MIANDAN_MERCHANT_DUPLICATE_RATE`: share of
  events it sends twice; `MIANDAN_MERCHANT_SEED`: repeatable runs.

Design: one asyncio event loop, no thread per order. Every held order is a row in its own SQLite file (the
merchant's own table, so a restart loses nothing) and an entry in a heap of timers; one scheduler coroutine
pops what is due and a fixed pool of sender coroutines delivers the callbacks (retrying with backoff while
the platform does not answer 2xx). The next step of an order is scheduled only once the platform
acknowledged the previous event, so its events leave in order; the platform copes with any order anyway.
A kill loses at most what was not yet written: an acknowledged submit is written before the answer, an
event is marked acknowledged only after the platform's 2xx (so a restart may send it again: a duplicate,
which the platform ignores).

This module is an outside party on purpose: it does not import the platform's models or services, only the
signature scheme and event shape of `orders.merchant`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import json
import logging
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from .errors import BadSignature, StaleEvent
from .merchant import sign, verify_signature

logger = logging.getLogger("orders.simulated_merchant")
NAME = "sim"  # orders.merchant.SimulatedMerchant.name: the callback path segment
SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    order_id INTEGER PRIMARY KEY,
    ref TEXT NOT NULL,
    received REAL NOT NULL,
    steps TEXT NOT NULL,      -- JSON [[kind, planned unix time], ...]
    step INTEGER NOT NULL,    -- index of the next step to happen
    due REAL,                 -- when this order next needs the scheduler (NULL: nothing left to do)
    unacked TEXT,             -- JSON of the event that happened but the platform has not acknowledged
    history TEXT NOT NULL,    -- JSON list of every event that happened (answers polls)
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL       -- open | done | cancelled
);
CREATE INDEX IF NOT EXISTS held_open ON held (state) WHERE state = 'open';
"""


@dataclass
class Behaviour:
    accept: tuple[float, float] = (1.0, 3.0)
    deliver: tuple[float, float] = (2.0, 5.0)
    reject_rate: float = 0.0
    duplicate_rate: float = 0.0
    seed: int | None = None
    callbacks: bool = True


@dataclass
class Held:
    order_id: int
    ref: str
    received: float
    steps: list  # [[kind, planned time], ...]
    step: int = 0
    due: float | None = None
    unacked: dict | None = None
    history: list = field(default_factory=list)
    attempts: int = 0
    state: str = "open"

    def row(self) -> tuple:
        return (self.order_id, self.ref, self.received, json.dumps(self.steps), self.step, self.due,
                json.dumps(self.unacked) if self.unacked else None, json.dumps(self.history, ensure_ascii=False),
                self.attempts, self.state)

    @classmethod
    def from_row(cls, row) -> Held:
        return cls(order_id=row[0], ref=row[1], received=row[2], steps=json.loads(row[3]), step=row[4], due=row[5],
                   unacked=json.loads(row[6]) if row[6] else None, history=json.loads(row[7]), attempts=row[8],
                   state=row[9])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class Merchant:
    def __init__(self, *, state_path: Path, callback_url: str, secret: str, behaviour: Behaviour,
                 senders: int = 32) -> None:
        self.callback_url = callback_url.rstrip("/") + f"/api/v1/merchants/{NAME}/events"
        self.secret = secret
        self.behaviour = behaviour
        self.rng = random.Random(behaviour.seed)
        self.senders = senders
        self.db = sqlite3.connect(str(state_path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process (not a power cut)
        self.db.executescript(SCHEMA)
        self.open: dict[int, Held] = {}
        self.heap: list[tuple[float, int]] = []
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.wake = asyncio.Event()
        self.dirty: dict[int, Held] = {}
        self.answer_ms: collections.deque[float] = collections.deque(maxlen=5000)  # the platform's answer times
        self.stats = {"received": 0, "repeats": 0, "callbacks_ok": 0, "callbacks_failed": 0, "duplicates_sent": 0,
                      "unknown_to_platform": 0, "cancelled": 0, "polls": 0, "restored": 0}
        for row in self.db.execute("SELECT * FROM held WHERE state = 'open'"):
            held = Held.from_row(row)
            if held.due is None:  # a sender had it when the process died: its event goes (again) now
                held.due = time.time()
            self.open[held.order_id] = held
            self._schedule(held)
        self.stats["restored"] = len(self.open)

    # --- persistence -----------------------------------------------------------------
    def _save(self, held: Held, *, now: bool = False) -> None:
        self.dirty[held.order_id] = held
        if now:
            self._flush()

    def _flush(self) -> None:
        if not self.dirty:
            return
        rows = [h.row() for h in self.dirty.values()]
        self.dirty.clear()
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO held VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        self.db.execute("COMMIT")

    def _load(self, order_id: int) -> Held | None:
        held = self.open.get(order_id)
        if held is not None:
            return held
        row = self.db.execute("SELECT * FROM held WHERE order_id = ?", (order_id,)).fetchone()
        return Held.from_row(row) if row else None

    # --- timers ----------------------------------------------------------------------
    def _schedule(self, held: Held) -> None:
        if held.state == "open" and held.due is not None:
            heapq.heappush(self.heap, (held.due, held.order_id))
            self.wake.set()

    async def scheduler(self) -> None:
        while True:
            now = time.time()
            while self.heap and self.heap[0][0] <= now:
                due, order_id = heapq.heappop(self.heap)
                held = self.open.get(order_id)
                if held is not None and held.due == due:  # else a stale timer (rescheduled or finished)
                    held.due = None  # taken: a sender owns it until it sets the next due time
                    self.queue.put_nowait(order_id)
            self._flush()
            self.wake.clear()
            timeout = max(0.0, self.heap[0][0] - time.time()) if self.heap else 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=min(timeout, 1.0))

    # --- the order's life ------------------------------------------------------------
    def take(self, order_id: int) -> tuple[Held, bool]:
        """A submitted order: the same one again for a known id (idempotency key), else a new plan."""
        known = self._load(order_id)
        if known is not None:
            self.stats["repeats"] += 1
            return known, False
        now = time.time()
        b, rng = self.behaviour, self.rng
        answer_at = now + rng.uniform(*b.accept)
        if rng.random() < b.reject_rate:
            steps = [["rejected", answer_at]]
        else:
            deliver = rng.uniform(*b.deliver)
            steps = [["accepted", answer_at], ["dispatched", answer_at + deliver / 2], ["delivered", answer_at + deliver]]
        held = Held(order_id=order_id, ref=f"SIM-{order_id}-{rng.randrange(16**6):06x}", received=now, steps=steps,
                    due=answer_at)
        self.open[order_id] = held
        self.stats["received"] += 1
        self._save(held, now=True)  # written before we answer: an acknowledged order survives a kill
        self._schedule(held)
        return held, True

    def cancel(self, order_id: int) -> bool:
        held = self.open.pop(order_id, None)
        if held is None:
            return False
        held.state, held.due, held.unacked = "cancelled", None, None
        self.stats["cancelled"] += 1
        self._save(held, now=True)
        return True

    def _happen(self, held: Held) -> dict:
        kind, _planned = held.steps[held.step]
        event = {"id": f"{held.ref}-{kind}", "type": kind, "order": held.order_id, "ref": held.ref,
                 "reason": "门店太忙，暂不接单（模拟）" if kind == "rejected" else "", "occurred_at": _iso(time.time())}
        held.history.append(event)
        held.step += 1
        return event

    def _advance(self, held: Held) -> None:
        """The platform has the last event: schedule the next step, or finish."""
        held.unacked, held.attempts = None, 0
        if held.step >= len(held.steps):
            held.state, held.due = "done", None
            self.open.pop(held.order_id, None)
        else:
            held.due = max(held.steps[held.step][1], time.time())
        self._save(held)
        self._schedule(held)

    async def sender(self, session: ClientSession) -> None:
        while True:
            order_id = await self.queue.get()
            held = self.open.get(order_id)
            if held is None or held.state != "open":
                continue
            if held.unacked is None:
                held.unacked = self._happen(held)
                self._save(held)
            if not self.behaviour.callbacks:
                self._advance(held)  # nobody to tell: the platform finds out by polling
                continue
            body = json.dumps(held.unacked, ensure_ascii=False, separators=(",", ":")).encode()
            status = await self._post(session, body)
            if held.state != "open":
                continue  # cancelled meanwhile
            if 200 <= status < 300:
                self.stats["callbacks_ok"] += 1
                self._advance(held)
                if self.rng.random() < self.behaviour.duplicate_rate:
                    asyncio.get_running_loop().call_later(self.rng.uniform(0, 0.5), self._send_duplicate, session, body)
            elif status == 404:
                # The platform does not know the order (or this merchant): nothing more to tell it.
                self.stats["unknown_to_platform"] += 1
                held.state, held.due, held.unacked = "done", None, None
                self.open.pop(order_id, None)
                self._save(held)
            else:
                self.stats["callbacks_failed"] += 1
                held.attempts += 1
                held.due = time.time() + min(30.0, 0.5 * 2 ** min(held.attempts, 6)) * self.rng.uniform(0.8, 1.2)
                self._save(held)
                self._schedule(held)

    async def _post(self, session: ClientSession, body: bytes) -> int:
        headers = {"Content-Type": "application/json", **sign(body, secret=self.secret)}
        started = time.monotonic()
        try:
            async with session.post(self.callback_url, data=body, headers=headers) as response:
                await response.read()
                self.answer_ms.append((time.monotonic() - started) * 1000)
                return response.status
        except (TimeoutError, OSError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            return 0
        except Exception as exc:  # aiohttp.ClientError and friends: the platform is unreachable now
            logger.debug("callback failed: %s", exc)
            return 0

    def _send_duplicate(self, session: ClientSession, body: bytes) -> None:
        self.stats["duplicates_sent"] += 1
        asyncio.ensure_future(self._post(session, body))  # a second copy of an event: its answer does not matter

    # --- HTTP ------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> tuple[bytes, dict]:
        body = await request.read()
        try:
            verify_signature(request.headers, body, secret=self.secret)
        except (BadSignature, StaleEvent) as exc:
            raise web.HTTPUnauthorized(text=json.dumps({"code": exc.code, "detail": str(exc.detail)}),
                                       content_type="application/json") from exc
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text=json.dumps({"code": "invalid", "detail": "not a JSON object"}),
                                     content_type="application/json")
        return body, data

    async def submit(self, request: web.Request) -> web.Response:
        _, data = await self._body(request)
        order_id = data.get("order")
        if isinstance(order_id, bool) or not isinstance(order_id, int) or order_id < 1:
            return web.json_response({"code": "invalid", "detail": "order must be a positive integer"}, status=400)
        if request.headers.get("Idempotency-Key", str(order_id)) != str(order_id):
            return web.json_response({"code": "invalid", "detail": "Idempotency-Key must be the order id"}, status=400)
        held, new = self.take(order_id)
        return web.json_response({"ref": held.ref, "state": held.state}, status=201 if new else 200)

    async def query(self, request: web.Request) -> web.Response:
        _, data = await self._body(request)
        ids = [i for i in data.get("orders", []) if isinstance(i, int) and not isinstance(i, bool)][:1000]
        self.stats["polls"] += 1
        events, unknown = [], []
        for order_id in ids:
            held = self._load(order_id)
            if held is None:
                unknown.append(order_id)
            else:
                events += held.history
        body = json.dumps({"events": events, "unknown": unknown}, ensure_ascii=False).encode()
        # Signed like a callback: the platform acts on this answer as it does on events.
        return web.Response(body=body, content_type="application/json", headers=sign(body, secret=self.secret))

    async def cancel_view(self, request: web.Request) -> web.Response:
        await self._body(request)
        try:
            order_id = int(request.match_info["order_id"])
        except ValueError:
            return web.json_response({"code": "invalid", "detail": "bad order id"}, status=400)
        return web.json_response({"cancelled": self.cancel(order_id)})

    async def health(self, request: web.Request) -> web.Response:
        answers = sorted(self.answer_ms)
        pick = lambda q: round(answers[min(len(answers) - 1, int(q * len(answers)))], 1) if answers else None  # noqa: E731
        return web.json_response({"status": "ok", "held": len(self.open), **self.stats,
                                  "callback_answer_ms": {"p50": pick(0.5), "p99": pick(0.99), "n": len(answers)}})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/orders", self.submit)
        app.router.add_post("/orders/query", self.query)
        app.router.add_post("/orders/{order_id}/cancel", self.cancel_view)
        app.router.add_get("/healthz", self.health)
        return app


async def serve(merchant: Merchant, host: str, port: int, *, ready=None) -> None:
    """Run until SIGTERM/SIGINT; state is flushed on the way out."""
    runner = web.AppRunner(merchant.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    connector = TCPConnector(limit=merchant.senders, keepalive_timeout=30)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=10, connect=2)) as session:
        tasks = [asyncio.ensure_future(merchant.scheduler())]
        tasks += [asyncio.ensure_future(merchant.sender(session)) for _ in range(merchant.senders)]
        if ready is not None:
            ready(len(merchant.open))
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    merchant._flush()
    await runner.cleanup()
