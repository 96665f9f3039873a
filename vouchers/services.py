"""The voucher engine: every write to a card and the budget money behind it.

Money moves only through `campaign.services.budget_*` with a ledger row in the same
transaction. Card state changes are conditional UPDATEs from the expected state, so a
repeated call (a redelivered task, a double click) changes nothing twice.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal

from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone
from packaging.version import InvalidVersion, Version

from campaign import pacing
from campaign.errors import BudgetExhausted, BudgetPaced, CampaignNotLive, DailyCapReached
from campaign.gate import campaign_is_live, campaign_require_open
from campaign.models import Campaign, LedgerEntry
from campaign.services import (
    DayCap,
    audit,
    budget_record,
    budget_record_sql,
    budget_release,
    budget_reserve,
    budget_reserve_sql,
    budget_spend,
)
from events.models import EventType
from events.services import event_record, event_record_many, event_record_sql
from miandan.api.errors import InvalidInput
from miandan.api.metrics import CARDS_ISSUED
from miandan.db import advisory_key, advisory_lock, is_postgres, retry_on_conflict, sqlstate

from . import admission
from .errors import AppUpgradeRequired, CardLimitReached, DeviceLimitReached, NoVoucher, VoucherStateConflict
from .models import DeviceClaim, Voucher
from .selectors import voucher_usable

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O/1/I/L
CODE_LENGTH = 12


def new_voucher_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def parse_app_version(value: object) -> Version:
    if not isinstance(value, str) or not value.strip() or len(value) > 32:
        raise InvalidInput("App 版本号格式不正确", extra={"fields": {"app_version": ["请提供形如 1.2.3 的版本号"]}})
    try:
        return Version(value.strip())
    except InvalidVersion as exc:
        raise InvalidInput(
            "App 版本号格式不正确", extra={"fields": {"app_version": ["请提供形如 1.2.3 的版本号"]}}
        ) from exc


@dataclass(frozen=True)
class Controls:
    """What the campaign's spend plan and daily cap say about one claim, decided once per claim.

    `share`: the plan's bound per bucket (None: no limit); `day_cap`: the local day and the daily cap when one
    is set (counted on the bucket the card reserves in). Staff cards are outside both (a person decided them,
    with a reason).
    """

    now: dt.datetime
    share: Decimal | None = None
    day_cap: DayCap | None = None

    @property
    def day(self) -> dt.date | None:
        return self.day_cap.day if self.day_cap else None


def claim_controls(campaign: Campaign, source: str, now: dt.datetime | None = None) -> Controls:
    now = now or timezone.now()
    # The hot path without a plan or cap: two attribute reads, no query.
    if source == Voucher.Source.STAFF or (
        campaign.pace_mode not in pacing.ENFORCING and campaign.daily_card_cap is None
    ):
        return Controls(now=now)
    cap = campaign.daily_card_cap
    return Controls(now=now, share=pacing.claim_share(campaign, now),
                    day_cap=DayCap(day=pacing.local_day(now), cap=cap) if cap else None)


def _after_commit_user(campaign_id: int, user_id: int) -> None:
    transaction.on_commit(lambda: admission.forget_user(campaign_id, user_id))


def _issue_locked(
    *, user, campaign: Campaign, source: str, actor=None, reason: str = "", used: int | None = None,
    joined_app_version: str = "", controls: Controls | None = None,
) -> Voucher:
    """Issue one card. Caller holds the (campaign, user) advisory lock inside its transaction.

    `used` is the number of cards the user already holds here, when the caller has just counted them.
    `joined_app_version` (welcome cards) is recorded on the user if none is yet.
    `controls`: the claim's plan / daily cap decision when the caller already made it (one throttle draw
    per claim).
    """
    controls = controls or claim_controls(campaign, source)
    if used is None:
        used = Voucher.objects.filter(campaign=campaign, user=user).aggregate(m=Max("slot"))["m"] or 0
    slot = used + 1
    if slot > campaign.card_cap:
        raise CardLimitReached()
    reason = reason or f"发卡：{Voucher.Source(source).label}"
    voucher = None
    if is_postgres():
        voucher = _insert_reserved_pg(
            user=user, campaign=campaign, source=source, slot=slot, actor=actor, reason=reason,
            joined_app_version=joined_app_version, controls=controls)
    if voucher is None:
        voucher = _insert_reserved_orm(user=user, campaign=campaign, source=source, slot=slot, actor=actor,
                                       reason=reason, joined_app_version=joined_app_version, controls=controls)
    if source == Voucher.Source.WELCOME:
        # Under the slot lock the count is exact; a card issued right after us forgets this on its own commit.
        transaction.on_commit(
            lambda: admission.remember_user(campaign.pk, user.pk, count=slot, welcome_code=voucher.code)
        )
    else:
        _after_commit_user(campaign.pk, user.pk)
    # Counted here, where every card is issued (the PostgreSQL hot path inserts with raw SQL: no post_save).
    transaction.on_commit(lambda: CARDS_ISSUED.labels(source).inc())
    return voucher


def _new_card(*, user, campaign: Campaign, source: str, slot: int, bucket_id: int | None = None,
              controls: Controls | None = None) -> Voucher:
    now = controls.now if controls else timezone.now()
    return Voucher(
        code=new_voucher_code(), campaign=campaign, user=user, bucket_id=bucket_id, slot=slot, cap=campaign.card_cap,
        source=source, status=Voucher.Status.ISSUED, face_value=campaign.face_value, issued_at=now,
        expires_at=now + campaign.card_validity, counted_on=controls.day if controls else None,
    )


def _card_data(card: Voucher, **extra) -> dict:
    """The payload of a card event (docs/events.md)."""
    return {"voucher_id": card.pk, "code": card.code, "user_id": card.user_id, "source": card.source,
            "face_value": card.face_value, **extra}


def _issued_event_sql(card: Voucher, *, source: str = "v") -> tuple[str, list] | None:
    """The `card.issued` event as an INSERT ... SELECT over the statement's new card row (no extra round trip)."""
    return event_record_sql(
        type=EventType.CARD_ISSUED, campaign_id=card.campaign_id, source=source,
        data_sql=("jsonb_build_object('voucher_id', v.id, 'code', %s::text, 'user_id', %s::bigint, 'source', %s::text, "
                  "'face_value', %s::text, 'bucket_id', v.bucket_id, 'expires_at', %s::text)"),
        data_params=[card.code, card.user_id, card.source, str(card.face_value), card.expires_at.isoformat()],
    )


def _insert_reserved_pg(*, user, campaign: Campaign, source: str, slot: int, actor, reason: str,
                        joined_app_version: str, controls: Controls) -> Voucher | None:
    """The hot path in ONE statement: reserve in a free bucket (plan bound and day count on the same row),
    insert the card, write its ledger row.

    The money SQL comes from campaign.services (it owns the budget tables); this only composes it.
    Returns None when no free bucket had room (nothing was written): the caller takes the slow path.
    """
    card = _new_card(user=user, campaign=campaign, source=source, slot=slot, controls=controls)
    reserve_sql, reserve_params = budget_reserve_sql(
        campaign=campaign, amount=campaign.face_value, hint=user.pk, share=controls.share, day_cap=controls.day_cap)
    ledger_sql, ledger_params = budget_record_sql(
        campaign_id=campaign.pk, kind=LedgerEntry.Kind.RESERVE, amount=campaign.face_value, source="v",
        bucket_expr="v.bucket_id", voucher_expr="v.id", actor=actor, reason=reason,
    )
    qn = connection.ops.quote_name
    sql = (
        f"WITH b AS ({reserve_sql}), "
        f"v AS (INSERT INTO {qn(Voucher._meta.db_table)} (code, slot, cap, source, status, face_value, issued_at, "
        "expires_at, void_reason, counted_on, bucket_id, campaign_id, user_id) "
        "SELECT %s, %s, %s, %s, %s, %s, %s, %s, '', %s, b.id, %s, %s FROM b RETURNING id, bucket_id), "
        f"l AS ({ledger_sql}) "
    )
    params = [
        *reserve_params,
        card.code, card.slot, card.cap, card.source, card.status, card.face_value, card.issued_at, card.expires_at,
        card.counted_on, campaign.pk, user.pk,
        *ledger_params,
    ]
    event = _issued_event_sql(card)
    if event is not None:
        sql += f", e AS ({event[0]}) "
        params += event[1]
    record_version = bool(joined_app_version) and not user.joined_app_version
    if record_version:
        # Only if a card was issued (FROM v): the first app version the user joined with.
        sql += (f", u AS (UPDATE {qn(type(user)._meta.db_table)} SET joined_app_version = %s "
                "WHERE id = %s AND joined_app_version = '' AND EXISTS (SELECT 1 FROM v)) ")
        params += [joined_app_version[:32], user.pk]
    sql += "SELECT id, bucket_id FROM v"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    card.pk, card.bucket_id = row
    card._state.adding = False
    card._state.db = connection.alias
    return card


def _insert_reserved_orm(*, user, campaign: Campaign, source: str, slot: int, actor, reason: str,
                         joined_app_version: str, controls: Controls) -> Voucher:
    """Any database, and PostgreSQL's slow path: reserve (or raise BudgetExhausted / BudgetPaced /
    DailyCapReached), insert, ledger."""
    try:
        bucket = budget_reserve(campaign=campaign, amount=campaign.face_value, hint=user.pk, share=controls.share,
                                day_cap=controls.day_cap, now=controls.now)
    except (BudgetPaced, DailyCapReached):
        raise  # the plan's "not now", not an empty budget: nothing to remember
    except BudgetExhausted:
        # Runs before the rollback on purpose: "exhausted" is only a hint that expires in seconds.
        admission.mark_exhausted(campaign.pk)
        raise
    card = _new_card(user=user, campaign=campaign, source=source, slot=slot, bucket_id=bucket.pk, controls=controls)
    card.save(force_insert=True)
    budget_record(bucket=bucket.pk, campaign_id=campaign.pk, kind=LedgerEntry.Kind.RESERVE, amount=card.face_value,
                  voucher_id=card.pk, actor=actor, reason=reason)
    event_record(type=EventType.CARD_ISSUED, campaign_id=campaign.pk,
                 data=_card_data(card, bucket_id=card.bucket_id, expires_at=card.expires_at))
    _record_joined_version(user, joined_app_version)
    return card


def _record_joined_version(user, version: str) -> None:
    if version and not user.joined_app_version:
        type(user).objects.filter(pk=user.pk, joined_app_version="").update(joined_app_version=version[:32])


def voucher_issue_in_tx(*, user, campaign: Campaign, source: str, actor=None, reason: str = "") -> Voucher:
    """Issue a card inside the caller's transaction (referrals issue two at once).

    Runs in a savepoint so a refusal (cap, budget) leaves the caller's transaction usable.
    """
    if not campaign_is_live(campaign):
        raise CampaignNotLive()
    with transaction.atomic():
        advisory_lock("slot", campaign.pk, user.pk)
        return _issue_locked(user=user, campaign=campaign, source=source, actor=actor, reason=reason)


@retry_on_conflict()
@transaction.atomic(durable=True)
def voucher_issue(*, user, campaign: Campaign, source: str, actor=None, reason: str = "") -> Voucher:
    """Issue one card of any source: next slot, face value reserved from a bucket, ledger row."""
    if source == Voucher.Source.STAFF and not reason.strip():
        raise InvalidInput("人工发卡必须填写原因", extra={"fields": {"reason": ["必填"]}})
    voucher = voucher_issue_in_tx(user=user, campaign=campaign, source=source, actor=actor, reason=reason)
    if source == Voucher.Source.STAFF:
        audit(actor=actor, action="voucher.issue", obj=voucher, campaign=campaign, after={"code": voucher.code},
              reason=reason)
    return voucher


def _device_claim_sql(*, campaign: Campaign, device_id: str, kind: str, source: str = "",
                      ) -> tuple[str, list] | None:
    """device_claim's conditional upsert (PostgreSQL): a row back iff the device was counted. None when
    nothing is counted (no device, cap 0). `source`: a CTE name; the upsert then runs only for its rows."""
    cap = campaign.device_welcome_cap if kind == DeviceClaim.Kind.WELCOME else campaign.device_reward_cap
    if not device_id or cap <= 0:
        return None
    table = connection.ops.quote_name(DeviceClaim._meta.db_table)
    values = f"SELECT %s, %s, %s, 1, now() FROM {source}" if source else "VALUES (%s, %s, %s, 1, now())"
    return (f"INSERT INTO {table} AS d (campaign_id, device_id, kind, count, updated_at) {values} "
            "ON CONFLICT (campaign_id, device_id, kind) "
            "DO UPDATE SET count = d.count + 1, updated_at = now() WHERE d.count < %s RETURNING d.count",
            [campaign.pk, device_id[:128], kind, cap])


def device_claim(*, campaign: Campaign, device_id: str, kind: str) -> bool:
    """Count one welcome card / referral reward for the device; False when the campaign's cap is reached.

    Call inside the transaction that issues the card: the row lock of the upsert serialises accounts sharing the
    device, the count only moves while under the cap (conditional update), and a rollback undoes it. No device
    (an old token) or cap 0: not counted.
    """
    cap = campaign.device_welcome_cap if kind == DeviceClaim.Kind.WELCOME else campaign.device_reward_cap
    if not device_id or cap <= 0:
        return True
    if is_postgres():
        sql, params = _device_claim_sql(campaign=campaign, device_id=device_id, kind=kind)
        with connection.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone() is not None
    key = {"campaign": campaign, "device_id": device_id[:128], "kind": kind}
    claim = DeviceClaim.objects.select_for_update().filter(**key).first()
    if claim is None:
        try:
            with transaction.atomic():
                DeviceClaim.objects.create(**key, count=1)
            return True
        except IntegrityError:  # another account on the device made the row first
            claim = DeviceClaim.objects.select_for_update().get(**key)
    if claim.count >= cap:
        return False
    DeviceClaim.objects.filter(pk=claim.pk, count=claim.count).update(count=claim.count + 1)
    return True


def _check_join(*, campaign: Campaign, app_version: object) -> None:
    version = parse_app_version(app_version)
    campaign_require_open(campaign=campaign, feature="claims")
    if version < Version(campaign.min_app_version):
        raise AppUpgradeRequired(extra={"min_app_version": campaign.min_app_version})


def campaign_join(*, user, campaign: Campaign, app_version: object, device_id: str = "",
                  known: tuple[admission.UserState | None, bool] | None = None) -> tuple[Voucher, bool]:
    """Give the user their welcome card. Returns (card, created); a repeat returns the same card.

    Redis (one round trip) answers the hopeless and the repeats; PostgreSQL decides every success.
    `device_id` (the one the login bound to the token) counts against the campaign's device_welcome_cap
    in the card's own transaction (DeviceLimitReached past it). `known`: what `admission.precheck` would
    answer, when the caller already read it in an earlier round trip of this request.
    """
    _check_join(campaign=campaign, app_version=app_version)
    state, exhausted = known if known is not None else admission.precheck(campaign.pk, user.pk)
    if state is not None:
        if state.welcome_code:
            existing = Voucher.objects.filter(code=state.welcome_code, user=user, campaign=campaign).first()
            if existing is not None:
                return existing, False
        elif state.count >= campaign.card_cap:
            raise CardLimitReached()
    if exhausted:
        # Answered without PostgreSQL when Redis knows the user (no welcome card: refused); otherwise one
        # read of the user's cards, remembered for the next try.
        if state is None:
            cards = list(Voucher.objects.filter(campaign=campaign, user=user).values_list("source", "code"))
            welcome = next((code for source, code in cards if source == Voucher.Source.WELCOME), "")
            admission.remember_user_if_absent(campaign.pk, user.pk, count=len(cards), welcome_code=welcome)
            if welcome:
                return Voucher.objects.get(code=welcome), False
        raise BudgetExhausted()
    try:
        voucher, created, cards, welcome = _join_db(user=user, campaign=campaign, app_version=str(app_version).strip(),
                                                    device_id=device_id)
    except IntegrityError:
        # The partial unique index caught a concurrent join that slipped past the lock.
        existing = _welcome_card(campaign, user)
        if existing is None:
            raise
        return existing, False
    if voucher is None:
        # Capped without a welcome card: remember it (counts only grow), so the next try costs no query.
        admission.remember_user(campaign.pk, user.pk, count=cards, welcome_code=welcome)
        raise CardLimitReached()
    if not created:
        admission.remember_user(campaign.pk, user.pk, count=cards, welcome_code=welcome)
    return voucher, created


def _welcome_card(campaign: Campaign, user) -> Voucher | None:
    return Voucher.objects.filter(campaign=campaign, user=user, source=Voucher.Source.WELCOME).first()


def _join_db(*, user, campaign: Campaign, app_version: str, device_id: str = "") -> tuple[Voucher | None, bool, int, str]:
    """(card, created, cards held, welcome code). card is None when the user is at the cap without a welcome card.

    Refusals are returned, not raised, so the caller can still cache what it learned. A device over its cap
    raises DeviceLimitReached, which rolls the new card, its reservation and its ledger row back.
    On PostgreSQL the usual join is one message (`_join_folded`); the rest, and other databases, take
    `_join_db_locked`.
    """
    if is_postgres():
        folded = _join_folded(user=user, campaign=campaign, app_version=app_version, device_id=device_id)
        if folded is not None:
            return folded
    return _join_db_locked(user=user, campaign=campaign, app_version=app_version, device_id=device_id)


# PostgreSQL's division_by_zero: how the join's statement refuses a device over its cap (see `_join_insert_pg`).
_DEVICE_OVER_CAP = "22012"


@retry_on_conflict()
def _join_folded(*, user, campaign: Campaign, app_version: str, device_id: str) -> tuple[Voucher | None, bool, int, str] | None:
    """The slot lock and the join's statement sent as ONE message (issue 14: BEGIN, the lock and COMMIT were
    three of a fresh join's six round trips). Outside a transaction (production: autocommit) PostgreSQL runs the
    message's statements as one implicit transaction, the lock's statement first, so the join's snapshot sees every
    committed card of the user; inside one (a caller's atomic block, the test suite) a savepoint stands in for it.
    """
    controls = claim_controls(campaign, Voucher.Source.WELCOME)
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            return _join_insert_pg(user=user, campaign=campaign, app_version=app_version, controls=controls,
                                   device_id=device_id, lock_key=advisory_key("slot", campaign.pk, user.pk))
    except DataError as exc:
        if sqlstate(exc) == _DEVICE_OVER_CAP:
            raise DeviceLimitReached() from None
        raise


@retry_on_conflict()
@transaction.atomic(durable=True)
def _join_db_locked(*, user, campaign: Campaign, app_version: str, device_id: str = "",
                    ) -> tuple[Voucher | None, bool, int, str]:
    """`_join_db` step by step in one transaction under the slot lock: other databases, and a join whose
    statement found no free bucket (consolidation, BudgetPaced, DailyCapReached or BudgetExhausted decide)."""
    advisory_lock("slot", campaign.pk, user.pk)
    controls = claim_controls(campaign, Voucher.Source.WELCOME)
    cards = list(Voucher.objects.filter(campaign=campaign, user=user).values_list("source", "code"))
    welcome = next((code for source, code in cards if source == Voucher.Source.WELCOME), "")
    if welcome:
        return Voucher.objects.get(code=welcome), False, len(cards), welcome
    if len(cards) >= campaign.card_cap:
        return None, False, len(cards), ""
    voucher = _issue_locked(user=user, campaign=campaign, source=Voucher.Source.WELCOME, used=len(cards),
                            joined_app_version=app_version, controls=controls)
    if not device_claim(campaign=campaign, device_id=device_id, kind=DeviceClaim.Kind.WELCOME):
        raise DeviceLimitReached()
    return voucher, True, len(cards) + 1, voucher.code


def _join_insert_pg(*, user, campaign: Campaign, app_version: str, controls: Controls, device_id: str = "",
                    lock_key: int) -> tuple[Voucher | None, bool, int, str] | None:
    """A join's count and its welcome card in ONE statement, after the slot lock's statement in the same message.

    The statement counts the user's cards, and only when they hold no welcome card and are under the cap
    reserves the face value in a free bucket, inserts the card (slot = count + 1) and its ledger row; the
    lock was taken by the statement before, so this one's snapshot sees every committed card of the user.
    A device over its cap fails the statement (division by zero, `_DEVICE_OVER_CAP`), which undoes all of it.
    Same answer as `_join_db`; None when no free bucket had room (nothing written: the slow path decides).
    With a plan or a daily cap, the reserve carries the plan's bound and counts the day on the same bucket
    row (campaign.services.budget_reserve_sql): no extra statement, no extra row.
    """
    vt = connection.ops.quote_name(Voucher._meta.db_table)
    card = _new_card(user=user, campaign=campaign, source=Voucher.Source.WELCOME, slot=0, controls=controls)
    reserve_sql, reserve_params = budget_reserve_sql(
        campaign=campaign, amount=campaign.face_value, hint=user.pk, share=controls.share, day_cap=controls.day_cap,
        only_if="(SELECT n FROM c) < %s AND (SELECT w FROM c) IS NULL", only_if_params=[campaign.card_cap])
    ledger_sql, ledger_params = budget_record_sql(
        campaign_id=campaign.pk, kind=LedgerEntry.Kind.RESERVE, amount=campaign.face_value, source="v",
        bucket_expr="v.bucket_id", voucher_expr="v.id", reason=f"发卡：{Voucher.Source.WELCOME.label}",
    )
    sql = (
        f"WITH c AS (SELECT count(*) AS n, max(code) FILTER (WHERE source = %s) AS w FROM {vt} "
        "WHERE campaign_id = %s AND user_id = %s), "
        f"b AS ({reserve_sql}), "
        f"v AS (INSERT INTO {vt} (code, slot, cap, source, status, face_value, issued_at, expires_at, void_reason, "
        "counted_on, bucket_id, campaign_id, user_id) "
        "SELECT %s, (SELECT n FROM c) + 1, %s, %s, %s, %s, %s, %s, '', %s, b.id, %s, %s "
        "FROM b RETURNING id, bucket_id, slot), "
        f"l AS ({ledger_sql}) "
    )
    params = [
        Voucher.Source.WELCOME, campaign.pk, user.pk,
        *reserve_params,
        card.code, card.cap, card.source, card.status, card.face_value, card.issued_at, card.expires_at,
        card.counted_on, campaign.pk, user.pk,
        *ledger_params,
    ]
    event = _issued_event_sql(card)
    if event is not None:
        # Same statement, same transaction: the event exists iff the card does.
        sql += f", e AS ({event[0]}) "
        params += event[1]
    if app_version and not user.joined_app_version:
        qn = connection.ops.quote_name
        sql += (f", u AS (UPDATE {qn(type(user)._meta.db_table)} SET joined_app_version = %s "
                "WHERE id = %s AND joined_app_version = '' AND EXISTS (SELECT 1 FROM v)) ")
        params += [app_version[:32], user.pk]
    device = _device_claim_sql(campaign=campaign, device_id=device_id, kind=DeviceClaim.Kind.WELCOME, source="v")
    if device is not None:
        # device_claim's upsert, only for a card issued here (FROM v): the device's count and the card in one
        # round trip; a device at its cap has no row in dc, and the division by zero below rolls the card back.
        sql += f", dc AS ({device[0]}) "
        params += device[1]
    # A card issued to a device the upsert did not count divides by zero: the error rolls the whole message
    # back (card, reservation, ledger row, event), as a raise in a transaction would. The divisor is computed
    # per row, so the planner cannot fold it into an error at plan time.
    refused = "v.id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dc)" if device is not None else "false"
    sql += f"SELECT c.n, c.w, v.id, v.bucket_id, v.slot, 1 / (CASE WHEN {refused} THEN 0 ELSE 1 END) " \
           "FROM c LEFT JOIN v ON true"
    if not connection.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
        # Django's default, client-side binding, sends the two statements as one simple-protocol message.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s); " + sql, [lock_key, *params])
            cursor.nextset()
            row = cursor.fetchone()
    else:
        # Server-side binding takes one statement per message: a transaction keeps the lock for the second.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key])
            cursor.execute(sql, params)
            row = cursor.fetchone()
    held, welcome, card_id, bucket_id, slot, _ = row
    if welcome:
        return Voucher.objects.get(code=welcome), False, held, welcome
    if held >= campaign.card_cap:
        return None, False, held, ""
    if card_id is None:
        # No free bucket had room, under the plan's bound or the day's count: the slow path (consolidation,
        # BudgetPaced, DailyCapReached or BudgetExhausted) decides.
        return None
    card.pk, card.bucket_id, card.slot = card_id, bucket_id, slot
    card._state.adding = False
    card._state.db = connection.alias
    transaction.on_commit(lambda: admission.remember_user(campaign.pk, user.pk, count=slot, welcome_code=card.code))
    transaction.on_commit(lambda: CARDS_ISSUED.labels(Voucher.Source.WELCOME).inc())
    return card, True, held + 1, card.code


# --- the order side: lock, redeem, release -------------------------------------------

def voucher_lock_for_order(*, user, campaign: Campaign | None, order_id: int, voucher_code: str | None = None) -> Voucher:
    """Attach the caller's card that expires first (or the one named) to an order. Caller's transaction.

    SKIP LOCKED lets parallel orders of one user take different cards instead of queueing.
    """
    now = timezone.now()
    usable = voucher_usable(user=user, campaign=campaign, code=voucher_code, now=now)
    for voucher in usable.select_for_update(skip_locked=True)[:5]:
        updated = Voucher.objects.filter(pk=voucher.pk, status=Voucher.Status.ISSUED).update(
            status=Voucher.Status.LOCKED, order_id=order_id, locked_at=now
        )
        if updated == 1:
            voucher.refresh_from_db()
            return voucher
    raise NoVoucher()


def voucher_redeem(*, voucher_id: int, order_id: int, order_amount: Decimal) -> Voucher:
    """Spend min(order, face) of the card's reservation and release the rest. Caller's transaction.

    Idempotent: a card already redeemed for this order is returned unchanged.
    """
    if isinstance(order_amount, int) and not isinstance(order_amount, bool):
        order_amount = Decimal(order_amount)
    if not isinstance(order_amount, Decimal) or not order_amount.is_finite() or order_amount < 0:
        raise InvalidInput("订单金额必须是不小于 0 的金额", extra={"fields": {"order_amount": ["格式错误"]}})
    order_amount = order_amount.quantize(Decimal("0.01"))
    voucher = Voucher.objects.select_for_update().get(pk=voucher_id)
    if voucher.status == Voucher.Status.REDEEMED and voucher.order_id == order_id:
        return voucher
    if voucher.status != Voucher.Status.LOCKED or voucher.order_id != order_id:
        raise VoucherStateConflict()
    subsidy = min(order_amount, voucher.face_value)
    now = timezone.now()
    Voucher.objects.filter(pk=voucher.pk, status=Voucher.Status.LOCKED, order_id=order_id).update(
        status=Voucher.Status.REDEEMED, subsidy=subsidy, redeemed_at=now
    )
    budget_spend(bucket_id=voucher.bucket_id, reserved=voucher.face_value, spend=subsidy)
    if subsidy > 0:
        budget_record(bucket=voucher.bucket_id, campaign_id=voucher.campaign_id, kind=LedgerEntry.Kind.SPEND,
                      amount=subsidy, voucher_id=voucher.pk, order_id=order_id, reason="订单完成：补贴")
    rest = voucher.face_value - subsidy
    if rest > 0:
        budget_record(bucket=voucher.bucket_id, campaign_id=voucher.campaign_id, kind=LedgerEntry.Kind.RELEASE,
                      amount=rest, voucher_id=voucher.pk, order_id=order_id, reason="订单完成：面额未用完部分退回")
        transaction.on_commit(lambda: admission.clear_exhausted(voucher.campaign_id))
    voucher.refresh_from_db()
    event_record(type=EventType.CARD_REDEEMED, campaign_id=voucher.campaign_id,
                 data=_card_data(voucher, order_id=order_id, order_amount=order_amount, subsidy=subsidy,
                                 released=rest))
    return voucher


def voucher_release(*, voucher_id: int, order_id: int) -> bool:
    """Give a locked card back to its owner after a failed or cancelled order. Caller's transaction.

    Nothing is spent and the reservation stays. Returns False if it was not locked by that order.
    """
    released = Voucher.objects.filter(pk=voucher_id, status=Voucher.Status.LOCKED, order_id=order_id).update(
        status=Voucher.Status.ISSUED, order_id=None, locked_at=None
    ) == 1
    if released:
        card = Voucher.objects.only("pk", "code", "user_id", "source", "face_value", "campaign_id").get(pk=voucher_id)
        event_record(type=EventType.CARD_RELEASED, campaign_id=card.campaign_id, data=_card_data(card, order_id=order_id))
    return released


# --- closing cards: expiry and void ------------------------------------------------

def _close_cards(cards: list[Voucher], *, status: str, actor=None, reason: str) -> None:
    """Mark cards expired/void and return their reservations, bucket rows in id order."""
    now = timezone.now()
    per_bucket: dict[int, Decimal] = defaultdict(Decimal)
    for card in cards:
        per_bucket[card.bucket_id] += card.face_value
    for bucket_id in sorted(per_bucket):
        budget_release(bucket_id=bucket_id, amount=per_bucket[bucket_id])
    Voucher.objects.filter(pk__in=[c.pk for c in cards]).update(status=status, closed_at=now)
    LedgerEntry.objects.bulk_create(
        LedgerEntry(campaign_id=c.campaign_id, bucket_id=c.bucket_id, kind=LedgerEntry.Kind.RELEASE,
                    amount=c.face_value, voucher_id=c.pk, actor=actor if getattr(actor, "pk", None) else None,
                    reason=reason[:255])
        for c in cards
    )
    event_type = EventType.CARD_EXPIRED if status == Voucher.Status.EXPIRED else EventType.CARD_VOIDED
    event_record_many((event_type, c.campaign_id, _card_data(c, bucket_id=c.bucket_id, reason=reason)) for c in cards)
    campaign_ids = {c.campaign_id for c in cards}
    transaction.on_commit(lambda: [admission.clear_exhausted(cid) for cid in campaign_ids])


# Oldest expiry first: the order of the (status, expires_at) index, so a batch reads `limit` index entries
# instead of every expired card (ORDER BY id made PostgreSQL walk the primary key or sort them all).
EXPIRY_ORDER = ("expires_at", "id")


@retry_on_conflict()
@transaction.atomic(durable=True)
def voucher_expire_batch(*, limit: int = 1000, now=None) -> int:
    """Expire up to `limit` issued cards past their date and return their reservations."""
    now = now or timezone.now()
    cards = list(
        Voucher.objects.select_for_update(skip_locked=True)
        .filter(status=Voucher.Status.ISSUED, expires_at__lte=now)
        .order_by(*EXPIRY_ORDER)[:limit]
    )
    if cards:
        _close_cards(cards, status=Voucher.Status.EXPIRED, reason="卡已过期，预留退回")
    return len(cards)


@transaction.atomic(durable=True)
def voucher_void(*, voucher: Voucher, actor, reason: str) -> Voucher:
    """Staff voids an unused card; its reservation returns to the budget."""
    if not reason or not reason.strip():
        raise InvalidInput("作废必须填写原因", extra={"fields": {"reason": ["必填"]}})
    card = Voucher.objects.select_for_update().get(pk=voucher.pk)
    if card.status != Voucher.Status.ISSUED:
        raise VoucherStateConflict(f"只有未使用的卡可以作废（当前状态：{card.get_status_display()}）")
    return voucher_void_in_tx(card=card, actor=actor, reason=reason)


def voucher_void_in_tx(*, card: Voucher, actor, reason: str, ledger_prefix: str = "作废") -> Voucher:
    """Void an issued card the caller has locked (SELECT ... FOR UPDATE) in its transaction: the one void path.

    The reservation goes back to its bucket with a `release` ledger row ("<ledger_prefix>：<reason>"), a
    `card.voided` event and an audit row are written. The referral clawback uses it with its own prefix.
    """
    if card.status != Voucher.Status.ISSUED:
        raise VoucherStateConflict(f"只有未使用的卡可以作废（当前状态：{card.get_status_display()}）")
    _close_cards([card], status=Voucher.Status.VOID, actor=actor, reason=f"{ledger_prefix}：{reason}")
    card.void_reason = reason[:255]
    card.save(update_fields=["void_reason"])
    audit(actor=actor, action="voucher.void", obj=card, campaign=card.campaign,
          before={"status": Voucher.Status.ISSUED}, after={"status": Voucher.Status.VOID}, reason=reason)
    card.refresh_from_db()
    return card


__all__ = [
    "campaign_join", "new_voucher_code", "voucher_expire_batch", "voucher_issue",
    "voucher_issue_in_tx", "voucher_lock_for_order", "voucher_redeem", "voucher_release", "voucher_void",
    "voucher_void_in_tx",
]
