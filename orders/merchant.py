"""Merchant adapters: how an order reaches a store and how the store's progress comes back.

No Celery worker ever waits on a store. The platform talks to a merchant (a delivery platform or a
chain's POS) in three short exchanges, and an adapter implements exactly these:

1. **submit** (`MerchantAdapter.submit`): one request that hands the order over, with our order id as the
   idempotency key, and returns the merchant's reference. Sending the same order twice (a redelivered task,
   a re-send after a lost answer) must be the same order on the merchant's side. Raise `MerchantRejected`
   when the merchant refuses it for good (the order fails, the card goes back), `MerchantUnavailable` when
   it could not be asked (the task retries with backoff; the poller re-sends later).
2. **events** (`verify` + `parse`): the merchant calls us back at
   `POST /api/v1/merchants/<name>/events` when the store accepts, rejects, dispatches or delivers.
   `verify` authenticates the request (here: HMAC-SHA256 over timestamp + body with the shared
   `MIANDAN_MERCHANT_SECRET`, constant-time compare, timestamps older than 5 minutes refused) and `parse`
   turns the body into `InboundEvent`s. Each event carries the merchant's own event id; the platform keeps it
   once (a unique constraint), so a repeated callback changes nothing.
3. **poll** (`poll`): for merchants without callbacks, or when we have not heard about an order for
   `MIANDAN_MERCHANT_POLL_SECONDS`, the `orders.poll` beat task asks about a batch of due orders at once. The
   answer is events again (applied exactly like callbacks) plus the orders the merchant does not know, which
   are re-sent.

`cancel` tells the merchant we gave up on an order (no acceptance before the deadline); it is best effort.

`HttpMerchant` implements this protocol over HTTP/JSON with signatures both ways; `SimulatedMerchant` is it
pointed at `manage.py simulated_merchant` (`orders/simulated_merchant.py`), the reference implementation of
the merchant's side. A real integration (say, a delivery platform's open API) subclasses `MerchantAdapter`,
maps its status names onto `InboundEvent.kind` and its signature scheme onto `verify`, and is selected with
`MIANDAN_MERCHANT_ADAPTER=<dotted path>` (docs/operations.md, "Adding a merchant").
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .errors import BadSignature, InvalidEvent, StaleEvent

TIMESTAMP_HEADER = "X-Miandan-Timestamp"
SIGNATURE_HEADER = "X-Miandan-Signature"
MAX_SKEW_SECONDS = 300  # a signed request older (or newer) than this is refused: a captured one cannot be replayed later
EVENT_KINDS = ("accepted", "rejected", "dispatched", "delivered")
HTTP_TIMEOUT = (2.0, 5.0)  # connect, read (seconds): a store system slower than this is "unavailable", retried later


class MerchantError(Exception):
    pass


class MerchantRejected(MerchantError):
    """The merchant refused the order for good (closed, sold out, unknown store): the order fails."""


class MerchantUnavailable(MerchantError):
    """The merchant could not be asked (connection refused, timeout, 5xx): worth retrying later."""


# --- signatures (both directions use the same scheme) ---------------------------------------

def sign(body: bytes, *, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers that authenticate `body`: HMAC-SHA256 over "<timestamp>." + body."""
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: f"v1={mac}"}


def verify_signature(headers: Mapping[str, str], body: bytes, *, secret: str, now: float | None = None) -> None:
    """Raises BadSignature (missing/forged) or StaleEvent (timestamp off by more than 5 minutes)."""
    ts = headers.get(TIMESTAMP_HEADER) or ""
    given = headers.get(SIGNATURE_HEADER) or ""
    if not ts.isdigit() or not given.startswith("v1="):
        raise BadSignature()
    expected = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given[3:].encode()):
        raise BadSignature()
    if abs((time.time() if now is None else now) - int(ts)) > MAX_SKEW_SECONDS:
        raise StaleEvent()


# --- what comes back from a merchant ---------------------------------------------------------

@dataclass(frozen=True)
class InboundEvent:
    """One thing that happened to one order at the merchant, in the platform's words."""

    event_id: str
    kind: str  # one of EVENT_KINDS
    order_id: int
    occurred_at: dt.datetime
    merchant_ref: str = ""
    reason: str = ""

    @property
    def digest(self) -> str:
        """Fingerprint of what the event says: the same id saying something else is a conflict, not a repeat."""
        canonical = json.dumps([self.event_id, self.kind, self.order_id, self.merchant_ref, self.reason])
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class PollResult:
    events: list[InboundEvent] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)  # order ids the merchant has never seen: re-send them


def event_from_json(data: object) -> InboundEvent:
    """The JSON shape of one event (callbacks and poll answers): raises InvalidEvent with per-field messages."""
    if not isinstance(data, dict):
        raise InvalidEvent({"non_field_errors": ["事件必须是 JSON 对象"]})
    problems: dict[str, list[str]] = {}
    event_id, kind, order, occurred = data.get("id"), data.get("type"), data.get("order"), data.get("occurred_at")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 64:
        problems["id"] = ["必须是 1 到 64 个字符的字符串"]
    if kind not in EVENT_KINDS:
        problems["type"] = [f"必须是 {'/'.join(EVENT_KINDS)} 之一"]
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order < 2**63:
        problems["order"] = ["必须是平台订单号（正整数）"]
    when = None
    if isinstance(occurred, str):
        try:
            when = dt.datetime.fromisoformat(occurred)
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        problems["occurred_at"] = ["必须是带时区的 ISO 8601 时间"]
    ref, reason = data.get("ref", ""), data.get("reason", "")
    if not isinstance(ref, str) or len(ref) > 64:
        problems["ref"] = ["最长 64 个字符"]
    if not isinstance(reason, str) or len(reason) > 255:
        problems["reason"] = ["最长 255 个字符"]
    if problems:
        raise InvalidEvent(problems)
    return InboundEvent(event_id=event_id, kind=kind, order_id=order, occurred_at=when, merchant_ref=ref,
                        reason=reason)


def event_to_json(event: InboundEvent) -> dict:
    return {"id": event.event_id, "type": event.kind, "order": event.order_id, "ref": event.merchant_ref,
            "reason": event.reason, "occurred_at": event.occurred_at.isoformat()}


# --- the adapter interface --------------------------------------------------------------------

class MerchantAdapter:
    """What a merchant integration implements (see the module docstring for the protocol and its rules)."""

    #: The `<name>` in /api/v1/merchants/<name>/events, stored on each order it received (Order.merchant).
    name = "merchant"
    #: False for merchants that never call back: the poller then asks about every in-flight order on schedule.
    callbacks = True

    def submit(self, order) -> str:
        """Hand the order over (idempotency key: order.pk); returns the merchant's reference."""
        raise NotImplementedError

    def verify(self, *, headers: Mapping[str, str], body: bytes) -> None:
        """Authenticate a callback request; raise BadSignature / StaleEvent."""
        raise NotImplementedError

    def parse(self, body: bytes) -> InboundEvent:
        """The event in an authenticated callback body; raise InvalidEvent when it is malformed."""
        raise NotImplementedError

    def poll(self, orders: Sequence) -> PollResult:
        """What happened to these orders (a batch of Order rows) since we sent them."""
        raise NotImplementedError

    def cancel(self, order) -> None:
        """Best effort: tell the merchant we gave up on the order (it failed on our side)."""


class HttpMerchant(MerchantAdapter):
    """The HTTP/JSON protocol of `orders/simulated_merchant.py`, signed both ways with MIANDAN_MERCHANT_SECRET.

    Platform -> merchant (each body signed with the same headers as callbacks):
      POST /orders                {"order", "store", "items", "total"}   -> 200 {"ref"}; 4xx {"code","detail"} refuses
      POST /orders/query          {"orders": [id, ...]}                  -> 200 {"events": [...], "unknown": [id, ...]}
      POST /orders/<id>/cancel                                           -> 200
    Merchant -> platform:
      POST /api/v1/merchants/<name>/events   one event {"id", "type", "order", "ref", "reason", "occurred_at"}
    """

    name = "http"

    def __init__(self, base_url: str | None = None, secret: str | None = None) -> None:
        self.base_url = (base_url or settings.MIANDAN_MERCHANT_URL).rstrip("/")
        self.secret = secret or settings.MIANDAN_MERCHANT_SECRET
        parts = urlsplit(self.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()  # one keep-alive connection per thread (web threads, or a worker process)

    # -- transport
    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = self._local.conn = cls(self._host, self._port, timeout=HTTP_TIMEOUT[0])
        return conn

    def _post(self, path: str, payload: dict, *, idempotency_key: str | None = None) -> tuple[int, dict]:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **sign(body, secret=self.secret)}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        for attempt in (1, 2):
            conn = self._connection(fresh=attempt == 2)
            try:
                conn.request("POST", self._prefix + path, body=body, headers=headers)
                if conn.sock is not None:
                    conn.sock.settimeout(HTTP_TIMEOUT[1])
                response = conn.getresponse()
                data = response.read()
                status, answer_headers = response.status, response.msg  # case-insensitive
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # A kept-alive connection the merchant closed meanwhile: one fresh try (requests are idempotent).
                conn.close()
                if attempt == 2:
                    raise MerchantUnavailable(f"{path}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                raise MerchantUnavailable(f"{path}: {exc}") from exc
        if status >= 500 or status == 429:
            raise MerchantUnavailable(f"{path}: HTTP {status}")
        try:
            answer = json.loads(data or b"{}")
        except ValueError as exc:
            raise MerchantUnavailable(f"{path}: answer is not JSON") from exc
        if status < 300 and path.endswith("/query"):
            # The poll answer decides state like a callback does, so it is authenticated like one.
            try:
                verify_signature(answer_headers, data, secret=self.secret)
            except (BadSignature, StaleEvent) as exc:
                raise MerchantUnavailable(f"{path}: answer not signed by the merchant") from exc
        return status, answer if isinstance(answer, dict) else {}

    # -- the interface
    def submit(self, order) -> str:
        items = [{"product": i.product.name, "quantity": i.quantity, "size": i.size, "sugar": i.sugar, "ice": i.ice}
                 for i in order.items.all()]
        status, answer = self._post("/orders", {
            "order": order.pk, "store": {"id": order.store_id, "name": order.store.name},
            "items": items, "total": str(order.total_price),
        }, idempotency_key=str(order.pk))
        if status >= 400:
            raise MerchantRejected(str(answer.get("detail") or f"门店拒单（HTTP {status}）"))
        ref = answer.get("ref")
        if not isinstance(ref, str) or not ref:
            raise MerchantUnavailable("/orders: answer without a reference")
        return ref[:64]

    def verify(self, *, headers: Mapping[str, str], body: bytes) -> None:
        verify_signature(headers, body, secret=self.secret)

    def parse(self, body: bytes) -> InboundEvent:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise InvalidEvent({"non_field_errors": ["请求体不是合法的 JSON"]}) from exc
        return event_from_json(data)

    def poll(self, orders: Sequence) -> PollResult:
        ids = [o.pk for o in orders]
        status, answer = self._post("/orders/query", {"orders": ids})
        if status >= 400:
            raise MerchantUnavailable(f"/orders/query: HTTP {status}")
        result = PollResult(unknown=[i for i in answer.get("unknown", []) if i in set(ids)])
        asked = set(ids)
        for raw in answer.get("events", []):
            try:
                event = event_from_json(raw)
            except InvalidEvent:
                continue  # one malformed entry must not block the rest of the batch
            if event.order_id in asked:
                result.events.append(event)
        return result

    def cancel(self, order) -> None:
        self._post(f"/orders/{order.pk}/cancel", {"order": order.pk, "reason": order.failure_reason[:255]})


class SimulatedMerchant(HttpMerchant):
    """`manage.py simulated_merchant` at MIANDAN_MERCHANT_URL: delays, rejections and duplicates from settings."""

    name = "sim"


@functools.cache
def _adapter(path: str) -> MerchantAdapter:
    return import_string(path)()


@receiver(setting_changed)
def _forget_adapter(*, setting, **kwargs) -> None:
    if setting.startswith("MIANDAN_MERCHANT_"):
        _adapter.cache_clear()


def get_merchant() -> MerchantAdapter:
    """The configured adapter (one per process: it keeps its connections)."""
    return _adapter(settings.MIANDAN_MERCHANT_ADAPTER)


def events_sorted(events: Iterable[InboundEvent]) -> list[InboundEvent]:
    """Events in the order they happened (a poll answer may list several for one order)."""
    return sorted(events, key=lambda e: (e.occurred_at, EVENT_KINDS.index(e.kind)))
