"""Writes of the event stream: record events in the caller's transaction, sequence them, deliver them.

Recording (`event_record`, `event_record_many`, `event_record_sql`) runs INSIDE the caller's transaction,
never on its own: the event and the change it describes commit or roll back together (the outbox pattern).

Delivery (`events_deliver`) runs in short transactions and makes HTTP calls outside any transaction:
1. sequence: committed events without a `seq` get the next numbers, in id order (one sequencer at a time);
2. claim: due cursors (endpoint x campaign) with work, taken with SELECT ... FOR UPDATE SKIP LOCKED and leased;
3. per cursor, events after `last_seq` are POSTed one at a time, in order; the cursor moves past an event
   only after its outcome is recorded (delivered, or dead after the retry window). A worker killed at any
   point loses nothing: its lease runs out and the current event is sent again (at least once; receivers
   deduplicate by event id).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from .models import Cursor, Delivery, Endpoint, Event

logger = logging.getLogger("miandan.events")

SIGNATURE_HEADER = "X-Miandan-Signature"
TIMESTAMP_HEADER = "X-Miandan-Timestamp"
EVENT_ID_HEADER = "X-Miandan-Event-Id"
EVENT_TYPE_HEADER = "X-Miandan-Event-Type"


def events_enabled() -> bool:
    return settings.MIANDAN_EVENTS_ENABLED


def _require_transaction() -> None:
    # An event written outside the change's transaction could outlive a rolled-back change.
    if not connection.in_atomic_block:
        raise RuntimeError("events are recorded inside the transaction of the change they describe")


def event_record(*, type: str, campaign_id: int | None, data: dict[str, Any]) -> None:
    """Append one event to the outbox, in the caller's transaction."""
    if not events_enabled():
        return
    _require_transaction()
    Event.objects.create(type=type, campaign_id=campaign_id or 0, data=_jsonable(data))


def event_record_many(events: Iterable[tuple[str, int | None, dict[str, Any]]]) -> None:
    """Append (type, campaign_id, data) events in one INSERT, in the caller's transaction."""
    if not events_enabled():
        return
    _require_transaction()
    now = timezone.now()
    Event.objects.bulk_create(
        [Event(type=t, campaign_id=c or 0, data=_jsonable(d), created_at=now) for t, c, d in events], batch_size=1000)


def event_record_sql(*, type: str, campaign_id: int, source: str, data_sql: str,
                     data_params: list | None = None) -> tuple[str, list] | None:
    """PostgreSQL: an `INSERT ... SELECT ... FROM <source>` writing one event per source row, to compose into the
    statement that made the change (the voucher hot path), so it costs no extra round trip.

    `data_sql` is a jsonb expression over `source`'s columns (e.g. jsonb_build_object('voucher_id', v.id)).
    None when the stream is switched off (MIANDAN_EVENTS_ENABLED=0): the caller leaves the CTE out.
    """
    if not events_enabled():
        return None
    table = connection.ops.quote_name(Event._meta.db_table)
    sql = (f"INSERT INTO {table} (type, campaign_id, data, created_at) "
           f"SELECT %s, %s, {data_sql}, %s FROM {source}")
    return sql, [type, campaign_id, *(data_params or []), timezone.now()]


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    # Decimals as strings ("25.00"), datetimes in ISO 8601: the same text the API uses.
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


# --- the wire format and its signature ----------------------------------------------------

def event_body(event: Event) -> bytes:
    """The JSON body POSTed for one event (docs/events.md). Keys sorted: the same event, the same bytes."""
    doc = {
        "id": event.pk, "type": event.type, "campaign_id": event.campaign_id or None, "seq": event.seq,
        "occurred_at": event.created_at.isoformat(), "data": event.data,
    }
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def sign(*, secret: str, timestamp: int | str, body: bytes) -> str:
    """v1=<hex HMAC-SHA256 of f"{timestamp}.{body}" keyed with the endpoint's secret>."""
    message = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(*, secret: str, timestamp: str, body: bytes, signature: str, tolerance: int = 300,
           now: float | None = None) -> bool:
    """The receiver's check (docs/events.md has the same in a standalone snippet)."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except (TypeError, ValueError):
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret=secret, timestamp=timestamp, body=body), signature)


@dataclass(frozen=True)
class PostResult:
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str


def post_event(endpoint: Endpoint, event: Event) -> PostResult:
    """One signed POST, outside any transaction. 2xx is success; anything else (or no answer) a failure."""
    body = event_body(event)
    timestamp = int(time.time())
    request = urllib.request.Request(endpoint.url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "miandan-events/1",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret=endpoint.secret, timestamp=timestamp, body=body),
        EVENT_ID_HEADER: str(event.pk),
        EVENT_TYPE_HEADER: event.type,
    })
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=settings.MIANDAN_EVENTS_HTTP_TIMEOUT) as response:
            response.read(1024)
            code = response.status
        error = ""
    except urllib.error.HTTPError as exc:
        code, error = exc.code, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, timeout, DNS, bad URL
        code, error = None, f"{type(exc).__name__}: {exc}"[:500]
    latency = int((time.monotonic() - started) * 1000)
    return PostResult(ok=code is not None and 200 <= code < 300, status_code=code, latency_ms=latency, error=error)


def backoff_seconds(attempts: int) -> float:
    """Exponential: base, 2x base, 4x base ... capped at MIANDAN_EVENTS_BACKOFF_MAX_SECONDS."""
    base = settings.MIANDAN_EVENTS_BACKOFF_BASE_SECONDS
    return min(base * 2 ** max(attempts - 1, 0), settings.MIANDAN_EVENTS_BACKOFF_MAX_SECONDS)


# --- sequencing --------------------------------------------------------------------------

@transaction.atomic(durable=True)
def events_sequence(*, limit: int = 5000) -> int:
    """Number committed events that have no seq yet, in id order, and open cursors for their campaigns.

    One sequencer at a time (a transaction-level advisory lock; a second one returns 0 at once). Rows of
    transactions still open are invisible here and get their number when they commit, after the rows
    already numbered: delivery order is the order the stream became visible, which for two events of one
    card or order (the second's transaction waited for the first's row lock) is the order they happened.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [hash_key("events-sequencer")])
            if not cursor.fetchone()[0]:
                return 0
    rows = list(Event.objects.filter(seq__isnull=True).order_by("id").values_list("pk", "campaign_id")[:limit])
    if not rows:
        return 0
    top = Event.objects.aggregate(m=Max("seq"))["m"] or 0
    table = connection.ops.quote_name(Event._meta.db_table)
    ids = [pk for pk, _ in rows]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} e SET seq = %s + n.rn FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn "
                f"FROM unnest(%s::bigint[]) AS id) n WHERE e.id = n.id", [top, ids])
    else:
        for offset, pk in enumerate(ids, start=1):
            Event.objects.filter(pk=pk).update(seq=top + offset)
    _open_cursors({campaign_id for _, campaign_id in rows})
    return len(rows)


def hash_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _open_cursors(campaign_ids: set[int]) -> None:
    endpoints = list(Endpoint.objects.filter(active=True))
    wanted = [Cursor(endpoint=e, campaign_id=c, last_seq=e.start_seq) for e in endpoints for c in sorted(campaign_ids)
              if e.wants_campaign(c)]
    if wanted:
        Cursor.objects.bulk_create(wanted, ignore_conflicts=True)


def endpoint_start_seq() -> int:
    """Where a new endpoint starts: after every event already numbered."""
    return Event.objects.aggregate(m=Max("seq"))["m"] or 0


# --- delivery ----------------------------------------------------------------------------

@transaction.atomic(durable=True)
def _claim(*, limit: int, now: dt.datetime) -> list[int]:
    """Lease up to `limit` due cursors that have events to send (SKIP LOCKED: parallel workers take others)."""
    lease = now + dt.timedelta(seconds=settings.MIANDAN_EVENTS_LEASE_SECONDS)
    # Only cursors with an event after their position (one probe of event_campaign_seq each): idle campaigns'
    # cursors never crowd out the ones with work.
    has_work = Event.objects.filter(campaign_id=OuterRef("campaign_id"), seq__gt=OuterRef("last_seq"))
    ids = list(
        Cursor.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(Exists(has_work), endpoint__active=True, next_attempt_at__lte=now)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    )
    if ids:
        Cursor.objects.filter(pk__in=ids).update(leased_until=lease)
    return ids


@transaction.atomic(durable=True)
def _record(*, cursor_id: int, expected_seq: int, event: Event, endpoint: Endpoint, result: PostResult | None,
            skipped_to: int | None = None) -> str:
    """Write one outcome and move the cursor, only if the cursor is still where this worker left it
    (a worker whose lease ran out and was overtaken writes nothing). Returns the outcome, or "lost"."""
    cursor = Cursor.objects.select_for_update().filter(pk=cursor_id, last_seq=expected_seq).first()
    if cursor is None:
        return "lost"
    now = timezone.now()
    if result is None:  # only events this endpoint does not subscribe to: move past them
        cursor.last_seq = skipped_to
        cursor.save(update_fields=["last_seq"])
        return "skipped"
    attempt = cursor.attempts + 1
    if result.ok:
        outcome = Delivery.Outcome.DELIVERED
    elif cursor.first_failed_at is not None and now - cursor.first_failed_at >= dt.timedelta(
            seconds=settings.MIANDAN_EVENTS_RETRY_SECONDS):
        outcome = Delivery.Outcome.DEAD
    else:
        outcome = Delivery.Outcome.FAILED
    Delivery.objects.create(endpoint=endpoint, event=event, attempt=attempt, outcome=outcome,
                            status_code=result.status_code, latency_ms=result.latency_ms, error=result.error)
    if outcome == Delivery.Outcome.FAILED:
        cursor.attempts = attempt
        cursor.first_failed_at = cursor.first_failed_at or now
        cursor.next_attempt_at = now + dt.timedelta(seconds=backoff_seconds(attempt))
        cursor.leased_until = None
    else:
        if outcome == Delivery.Outcome.DEAD:
            logger.warning("event %s dead-lettered for endpoint %s after %d attempts", event.pk, endpoint.pk, attempt)
        cursor.last_seq, cursor.attempts, cursor.first_failed_at = event.seq, 0, None
    cursor.save(update_fields=["last_seq", "attempts", "first_failed_at", "next_attempt_at", "leased_until"])
    return outcome


def _release(cursor_id: int) -> None:
    Cursor.objects.filter(pk=cursor_id).update(leased_until=None)


def _deliver_cursor(cursor_id: int, *, batch: int, deadline: float) -> dict[str, int]:
    counts = {"delivered": 0, "failed": 0, "dead": 0}
    cursor = Cursor.objects.select_related("endpoint").get(pk=cursor_id)
    endpoint = cursor.endpoint
    position = cursor.last_seq
    events = list(Event.objects.filter(campaign_id=cursor.campaign_id, seq__gt=position).order_by("seq")[:batch])
    try:
        for event in events:
            if time.monotonic() > deadline:
                break
            if not endpoint.wants_campaign(cursor.campaign_id) or not endpoint.wants_type(event.type):
                if _record(cursor_id=cursor_id, expected_seq=position, event=event, endpoint=endpoint, result=None,
                           skipped_to=event.seq) == "lost":
                    break
                position = event.seq
                continue
            result = post_event(endpoint, event)
            outcome = _record(cursor_id=cursor_id, expected_seq=position, event=event, endpoint=endpoint,
                              result=result)
            if outcome == "lost":
                break
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome == Delivery.Outcome.FAILED:
                return counts  # the lease was dropped with the backoff; order: nothing after it goes first
            position = event.seq
    finally:
        _release(cursor_id)
    return counts


def events_deliver(*, max_cursors: int = 50, batch: int = 100, seconds: float = 30.0) -> dict[str, int]:
    """One pass of the delivery worker (beat task `events.deliver`, or `manage.py deliver_events`)."""
    deadline = time.monotonic() + seconds
    totals = {"sequenced": events_sequence(), "cursors": 0, "delivered": 0, "failed": 0, "dead": 0}
    for cursor_id in _claim(limit=max_cursors, now=timezone.now()):
        totals["cursors"] += 1
        for key, value in _deliver_cursor(cursor_id, batch=batch, deadline=deadline).items():
            totals[key] = totals.get(key, 0) + value
    return totals


# --- staff: replay ----------------------------------------------------------------------

def delivery_replay(*, delivery: Delivery, actor) -> Delivery:
    """Send a dead-lettered event again, now (admin action). Records the attempt; a success marks it replayed.

    The HTTP call is made outside any transaction; the cursor is not touched (it moved on when the event died).
    """
    endpoint, event = delivery.endpoint, delivery.event
    result = post_event(endpoint, event)
    with transaction.atomic(durable=True):
        record = Delivery.objects.create(
            endpoint=endpoint, event=event, attempt=delivery.attempt + 1,
            outcome=Delivery.Outcome.REPLAYED if result.ok else Delivery.Outcome.REPLAY_FAILED,
            status_code=result.status_code, latency_ms=result.latency_ms, error=result.error)
        if result.ok:
            Delivery.objects.filter(pk=delivery.pk).update(replayed_at=timezone.now())
    logger.info("event %s replayed to endpoint %s by %s: %s", event.pk, endpoint.pk,
                getattr(actor, "username", actor), record.outcome)
    return record


def endpoint_rewind(*, endpoint: Endpoint, since: dt.datetime, actor) -> int:
    """Re-send every event of the endpoint's campaigns from `since` on (cursors moved back). Returns cursors moved."""
    with transaction.atomic(durable=True):
        first = (Event.objects.filter(created_at__gte=since, seq__isnull=False).order_by("seq")
                 .values_list("seq", flat=True).first())
        if first is None:
            return 0
        moved = Cursor.objects.filter(endpoint=endpoint, last_seq__gte=first).update(
            last_seq=first - 1, attempts=0, first_failed_at=None, next_attempt_at=timezone.now())
    logger.info("endpoint %s rewound to seq %s by %s", endpoint.pk, first, getattr(actor, "username", actor))
    return moved


# --- export ------------------------------------------------------------------------------

def export_lines(*, campaign_id: int | None = None, since: dt.datetime | None = None,
                 until: dt.datetime | None = None, chunk: int = 2000) -> Iterator[bytes]:
    """The stream as JSON Lines (one event per line, same document as the webhook body), in id order.

    Keyset pages (id > last), each its own short query: no long-lived server-side cursor, constant memory.
    """
    qs = Event.objects.all()
    if campaign_id is not None:
        qs = qs.filter(campaign_id=campaign_id)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    last = 0
    while True:
        page = list(qs.filter(pk__gt=last).order_by("pk")[:chunk])
        if not page:
            return
        yield b"".join(event_body(e) + b"\n" for e in page)
        last = page[-1].pk
