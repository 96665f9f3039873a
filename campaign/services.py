"""Writes for campaigns and their budget.

Public services own a durable transaction. `budget_*` helpers without a leading
`campaign_` run inside their caller's transaction (the voucher services call them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from events.models import EventType
from events.services import event_record
from miandan.db import advisory_lock, retry_on_conflict

from .errors import BudgetBelowCommitted, BudgetExhausted, BudgetPaced, DailyCapReached, InvalidCampaign
from .models import AuditLog, BudgetBucket, Campaign, LedgerEntry

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def _split(total: Decimal, parts: int, unit: Decimal = CENT) -> list[Decimal]:
    """Split money into `parts` shares that add up to `total`, in whole `unit`s where possible.

    Splitting in whole cards (unit = face value) keeps every bucket able to pay a full card;
    the sub-unit remainder goes to the first bucket.
    """
    units = int(total // unit)
    base, extra = divmod(units, parts)
    shares = [unit * (base + (1 if i < extra else 0)) for i in range(parts)]
    shares[0] += total - unit * units
    return shares


def audit(
    *,
    actor: Any,
    action: str,
    obj: Any,
    campaign: Campaign | None = None,
    before: dict | None = None,
    after: dict | None = None,
    reason: str = "",
) -> AuditLog:
    """Record a staff-visible change in the caller's transaction."""
    return AuditLog.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        campaign=campaign,
        before=before,
        after=after,
        reason=reason[:255],
    )


def _ledger(
    *, bucket: BudgetBucket | int, campaign_id: int, kind: str, amount: Decimal, voucher_id=None, order_id=None,
    actor=None, reason: str = "",
) -> LedgerEntry:
    bucket_id = bucket if isinstance(bucket, int) else bucket.pk
    return LedgerEntry.objects.create(
        campaign_id=campaign_id, bucket_id=bucket_id, kind=kind, amount=amount, voucher_id=voucher_id,
        order_id=order_id, actor=actor if getattr(actor, "pk", None) else None, reason=reason[:255],
    )


@dataclass(frozen=True)
class CampaignSpec:
    slug: str
    name: str
    total_budget: Decimal
    starts_at: datetime
    ends_at: datetime
    face_value: Decimal = Decimal("25.00")
    card_cap: int = 21
    min_app_version: str = "1.0.0"
    card_validity: timedelta = timedelta(days=30)
    status: str = Campaign.Status.DRAFT
    bucket_count: int | None = None  # None: settings.MIANDAN_BUDGET_BUCKETS

    @property
    def buckets(self) -> int:
        return self.bucket_count if self.bucket_count is not None else settings.MIANDAN_BUDGET_BUCKETS


def validate_spec(spec: CampaignSpec) -> None:
    from packaging.version import InvalidVersion, Version

    errors: dict[str, str] = {}
    if spec.total_budget < 0 or spec.total_budget != spec.total_budget.quantize(CENT):
        errors["budget"] = "预算必须是不小于 0 的金额，最多两位小数"
    if spec.face_value <= 0 or spec.face_value != spec.face_value.quantize(CENT):
        errors["face"] = "面额必须大于 0，最多两位小数"
    if not 1 <= spec.card_cap <= 100:
        errors["cap"] = "每人卡数上限必须在 1 到 100 之间"
    if spec.ends_at <= spec.starts_at:
        errors["ends_at"] = "结束时间必须晚于开始时间"
    if not 1 <= spec.buckets <= 1024:
        errors["bucket_count"] = "分桶数必须在 1 到 1024 之间"
    try:
        Version(spec.min_app_version)
    except InvalidVersion:
        errors["min_app_version"] = "最低版本号格式不正确，例如 1.0.0"
    if Campaign.objects.filter(slug=spec.slug).exists():
        errors["slug"] = "该标识已被使用"
    if errors:
        raise InvalidCampaign("活动参数有误：" + "；".join(errors.values()), extra={"fields": errors})


@transaction.atomic(durable=True)
def campaign_create(*, spec: CampaignSpec, actor=None) -> Campaign:
    """Create a campaign, its budget buckets and the opening `adjust` ledger entries."""
    validate_spec(spec)
    campaign = Campaign.objects.create(
        slug=spec.slug, name=spec.name, status=spec.status, starts_at=spec.starts_at, ends_at=spec.ends_at,
        face_value=spec.face_value, card_cap=spec.card_cap, min_app_version=spec.min_app_version,
        card_validity=spec.card_validity, total_budget=spec.total_budget, bucket_count=spec.buckets,
    )
    shares = _split(spec.total_budget, spec.buckets, unit=spec.face_value)
    buckets = BudgetBucket.objects.bulk_create(
        BudgetBucket(campaign=campaign, index=i, allotment=share) for i, share in enumerate(shares)
    )
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            campaign=campaign, bucket=b, kind=LedgerEntry.Kind.ADJUST, amount=b.allotment,
            actor=actor if getattr(actor, "pk", None) else None, reason="活动创建：初始预算",
        )
        for b in buckets
        if b.allotment != 0
    )
    audit(actor=actor, action="campaign.create", obj=campaign, campaign=campaign,
          after={"total_budget": str(spec.total_budget), "face_value": str(spec.face_value),
                 "card_cap": spec.card_cap})
    return campaign


# --- helpers for the voucher engine (caller's transaction) ---------------------------

@dataclass(frozen=True)
class DayCap:
    """The daily card cap for one claim: the local day and the campaign's cap, split over its buckets."""

    day: date
    cap: int

    def bucket_cap(self, index: int, n: int) -> int:
        base, rest = divmod(self.cap, n)
        return base + (1 if index < rest else 0)


def budget_reserve_sql(*, campaign: Campaign, amount: Decimal, hint: int | None = None, only_if: str = "",
                       only_if_params: list | None = None, share: Decimal | None = None,
                       day_cap: DayCap | None = None) -> tuple[str, list]:
    """PostgreSQL: the reserve as one `UPDATE ... RETURNING id` statement, for use alone or as a CTE.

    Reserves in the first bucket, in ring order from the hinted one, that has room and is not locked.
    SKIP LOCKED means the hot path never waits for another transaction's bucket and never holds a
    bucket it did not reserve in: waiting there (and READ COMMITTED keeping a row locked after a
    failed recheck) is what deadlocked plain conditional UPDATEs against each other and the slow path.
    No row returned: no free bucket has room; call `budget_reserve_slow`.
    `only_if`: an extra SQL condition (with `only_if_params`) that must hold for anything to be reserved,
    for a caller that composes the reserve into a statement with its own precondition.
    `share` (campaign.pacing.claim_share): the spend plan, as a bound on each bucket's committed money
    (reserved + spent <= allotment * share), checked in this same statement on the row it updates.
    `day_cap`: the daily card cap, counted on the same row (`day_cards` of `day_on`; bucket i may count
    cap // n cards, +1 for the first cap % n buckets, so the buckets together never pass the cap).
    """
    n = campaign.bucket_count
    start = (hint if hint is not None else random.randrange(n)) % n
    table = connection.ops.quote_name(BudgetBucket._meta.db_table)
    index = connection.ops.quote_name("index")
    plan, plan_params = ("", [])
    if share is not None:
        plan, plan_params = " AND allotment * %s >= reserved + spent + %s", [share, amount]
    count, count_params = ("", [])
    if day_cap is not None:
        base, rest = divmod(day_cap.cap, n)
        plan += (f" AND (CASE WHEN day_on = %s THEN day_cards ELSE 0 END) "
                 f"< %s + (CASE WHEN {index} < %s THEN 1 ELSE 0 END)")
        plan_params = [*plan_params, day_cap.day, base, rest]
        count = ", day_cards = (CASE WHEN day_on = %s THEN day_cards + 1 ELSE 1 END), day_on = %s"
        count_params = [day_cap.day, day_cap.day]
    sql = (
        f"UPDATE {table} SET reserved = reserved + %s{count} "
        f"WHERE id = (SELECT id FROM {table} WHERE campaign_id = %s AND allotment >= reserved + spent + %s{plan} "
        f"ORDER BY ({index} - %s + %s) %% %s LIMIT 1 FOR UPDATE SKIP LOCKED) "
        f"AND allotment >= reserved + spent + %s{plan}" + (f" AND ({only_if})" if only_if else "") + " RETURNING id"
    )
    return sql, [amount, *count_params, campaign.pk, amount, *plan_params, start, n, n, amount, *plan_params,
                 *(only_if_params or [])]


def budget_record_sql(
    *, campaign_id: int, kind: str, amount: Decimal, source: str, bucket_expr: str, voucher_expr: str = "NULL",
    actor=None, reason: str = "",
) -> tuple[str, list]:
    """PostgreSQL: a ledger `INSERT ... SELECT ... FROM <source>` to compose with the statement that moved the money.

    `bucket_expr` / `voucher_expr` are column expressions of `source` (e.g. a CTE's RETURNING columns).
    """
    if kind != LedgerEntry.Kind.ADJUST and amount <= 0:
        raise ValueError("ledger movements are positive")
    table = connection.ops.quote_name(LedgerEntry._meta.db_table)
    sql = (
        f"INSERT INTO {table} (kind, amount, voucher_id, order_id, reason, created_at, actor_id, bucket_id, campaign_id) "
        f"SELECT %s, %s, {voucher_expr}, NULL, %s, %s, %s, {bucket_expr}, %s FROM {source}"
    )
    actor_id = actor.pk if getattr(actor, "pk", None) else None
    return sql, [kind, amount, reason[:255], timezone.now(), actor_id, campaign_id]


def _reserve_skip_locked(*, campaign: Campaign, amount: Decimal, hint: int | None,
                         share: Decimal | None = None, day_cap: DayCap | None = None) -> int | None:
    sql, params = budget_reserve_sql(campaign=campaign, amount=amount, hint=hint, share=share, day_cap=day_cap)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


def _room(amount: Decimal, share: Decimal | None, day_cap: DayCap | None = None, n: int = 1) -> Q:
    """Room for `amount` in a bucket: under its allotment, with a plan under allotment * share, with a daily
    cap under the bucket's share of it (the ORM twin of budget_reserve_sql's conditions)."""
    room = Q(allotment__gte=F("reserved") + F("spent") + amount)
    if share is not None:
        room &= Q(reserved__lte=F("allotment") * share - F("spent") - amount)
    if day_cap is not None:
        base, rest = divmod(day_cap.cap, n)
        cap_here = Case(When(index__lt=rest, then=Value(base + 1)), default=Value(base))
        fresh = Q(day_on__isnull=True) | ~Q(day_on=day_cap.day)
        room &= Q(day_on=day_cap.day, day_cards__lt=cap_here) | (fresh & (Q(index__lt=rest) if base == 0 else Q()))
    return room


def _reserve_update(amount: Decimal, day_cap: DayCap | None) -> dict:
    """The UPDATE's assignments: the reservation and, with a daily cap, the bucket's count for the day."""
    changes = {"reserved": F("reserved") + amount}
    if day_cap is not None:
        changes["day_cards"] = Case(When(day_on=day_cap.day, then=F("day_cards") + 1), default=Value(1))
        changes["day_on"] = day_cap.day
    return changes


def _reserve_serialised(*, campaign_id: int, n: int, start: int, amount: Decimal,
                        share: Decimal | None = None, day_cap: DayCap | None = None) -> int | None:
    """Other databases (the SQLite demo serialises writers anyway): conditional UPDATEs in ring order."""
    room = _room(amount, share, day_cap, n)
    qs = BudgetBucket.objects.filter(campaign_id=campaign_id)
    candidates = sorted(qs.filter(room).values_list("index", "pk"), key=lambda row: (row[0] - start) % n)
    for _, pk in candidates:
        if qs.filter(room, pk=pk).update(**_reserve_update(amount, day_cap)) == 1:
            return pk
    return None


def budget_reserve(*, campaign: Campaign, amount: Decimal, hint: int | None = None, share: Decimal | None = None,
                   day_cap: DayCap | None = None, now: datetime | None = None) -> BudgetBucket:
    """Reserve `amount` from one bucket with a conditional UPDATE; no read-modify-write, no global lock.

    Prefers the bucket chosen by `hint` (e.g. the user id) or at random, then the next ones in ring
    order, skipping buckets other transactions hold right now. Only when none is free and roomy does it
    take the serialised slow path (wait for the buckets, gather scattered room). Raises BudgetExhausted.
    The returned bucket is not re-read: only its `pk` and `campaign_id` are meant to be used.
    `share` (campaign.pacing.claim_share): the spend plan's bound; refusals raise BudgetPaced.
    `day_cap`: the daily card cap, counted on the bucket; refusals raise DailyCapReached.
    """
    if amount <= 0:
        raise ValueError("reserve amount must be positive")
    if connection.vendor == "postgresql":
        bucket_id = _reserve_skip_locked(campaign=campaign, amount=amount, hint=hint, share=share, day_cap=day_cap)
    else:
        n = campaign.bucket_count
        start = (hint if hint is not None else random.randrange(n)) % n
        bucket_id = _reserve_serialised(campaign_id=campaign.pk, n=n, start=start, amount=amount, share=share,
                                        day_cap=day_cap)
    if bucket_id is not None:
        return BudgetBucket(pk=bucket_id, campaign_id=campaign.pk)
    if share is not None or day_cap is not None:
        _refuse_if_controlled(campaign=campaign, amount=amount, share=share, day_cap=day_cap,
                              now=now or timezone.now())
    return budget_reserve_slow(campaign=campaign, amount=amount, share=share, day_cap=day_cap, now=now)


def _paced(campaign: Campaign, committed: Decimal, amount: Decimal, now: datetime) -> BudgetPaced:
    from . import pacing

    when = pacing.plan_allows_at(campaign, committed + amount, now)
    return BudgetPaced(retry_after=pacing.seconds_until(when, now))


def _daily_cap_reached(now: datetime) -> DailyCapReached:
    from . import pacing

    return DailyCapReached(retry_after=pacing.seconds_until(None, now))


def _refuse_if_controlled(*, campaign: Campaign, amount: Decimal, share: Decimal | None, day_cap: DayCap | None,
                          now: datetime) -> None:
    """Refuse a claim over the plan or the daily cap without the serialised slow path (a plain read).

    Refusing is always safe for the plan and the cap, so an unlocked read may decide it. Only when some
    bucket does have room (it was locked by a claim in flight) or the budget itself runs out does the slow
    path decide.
    """
    n = campaign.bucket_count
    rows = list(BudgetBucket.objects.filter(campaign_id=campaign.pk).values_list(
        "index", "allotment", "reserved", "spent", "day_on", "day_cards"))
    if sum((a - r - s for _, a, r, s, _, _ in rows), ZERO) < amount:
        return  # exhausted, not paced: the slow path says so (and may gather scattered room)

    def day_room(i: int, on, cards: int) -> bool:
        return day_cap is None or (cards if on == day_cap.day else 0) < day_cap.bucket_cap(i, n)

    if day_cap is not None and not any(day_room(i, on, c) for i, _, _, _, on, c in rows):
        raise _daily_cap_reached(now)
    if any(a >= r + s + amount and (share is None or a * share >= r + s + amount) and day_room(i, on, c)
           for i, a, r, s, on, c in rows):
        return
    if share is not None:
        raise _paced(campaign, sum((r + s for _, _, r, s, _, _ in rows), ZERO), amount, now)


def budget_reserve_slow(*, campaign: Campaign, amount: Decimal, share: Decimal | None = None,
                        day_cap: DayCap | None = None, now: datetime | None = None) -> BudgetBucket:
    """Slow path near the end of a budget: free room is scattered in pieces smaller than a card.

    One transaction at a time per campaign (advisory lock), then every bucket locked in primary-key
    order (waiting for in-flight fast-path reservations, which never wait themselves). If one bucket
    has room, reserve there; otherwise gather room into the roomiest bucket with paired `adjust`
    entries (net zero) and reserve there. Rare by construction.

    With a spend plan (`share`), every bucket must keep committed <= allotment * share: room is gathered
    only from what a donor can give without crossing its own plan bound, and a bucket is filled only up
    to its bound, so the sum over buckets never passes total * share. Refusals then raise BudgetPaced.
    """
    advisory_lock("budget-slow-path", campaign.pk)
    # NO KEY UPDATE: claims in flight take KEY SHARE on their bucket (foreign keys of card and ledger rows).
    buckets = list(
        BudgetBucket.objects.select_for_update(no_key=True).filter(campaign_id=campaign.pk).order_by("pk")
    )
    if sum((b.available for b in buckets), ZERO) < amount:
        raise BudgetExhausted()

    n = len(buckets)

    def plan_room(b: BudgetBucket) -> Decimal:
        if day_cap is not None and (b.day_cards if b.day_on == day_cap.day else 0) >= day_cap.bucket_cap(b.index, n):
            return Decimal("-1")  # no count left today: never the target
        return b.available if share is None else min(b.available, b.allotment * share - b.reserved - b.spent)

    def giveable(b: BudgetBucket) -> Decimal:
        if share is None:
            return b.available
        if share <= 0:
            return ZERO
        # Allotment a donor can lose and still hold committed <= allotment * share.
        keep = ((b.reserved + b.spent) / share).quantize(CENT, rounding="ROUND_CEILING")
        return max(ZERO, min(b.available, b.allotment - keep))

    target = max(buckets, key=plan_room)
    # Allotment the target needs so that both its free room and its plan room cover the amount.
    need = amount - target.available
    if share is not None and share > 0:
        plan_need = ((amount - (target.allotment * share - target.reserved - target.spent)) / share).quantize(
            CENT, rounding="ROUND_CEILING")
        need = max(need, plan_need)
    elif share is not None:
        need = amount  # share 0: nothing may be committed
    for donor in sorted((b for b in buckets if b.pk != target.pk), key=giveable, reverse=True):
        if need <= 0:
            break
        take = min(need, giveable(donor))
        if take <= 0:
            continue
        BudgetBucket.objects.filter(pk=donor.pk).update(allotment=F("allotment") - take)
        BudgetBucket.objects.filter(pk=target.pk).update(allotment=F("allotment") + take)
        _ledger(bucket=donor, campaign_id=campaign.pk, kind=LedgerEntry.Kind.ADJUST, amount=-take,
                reason=f"预算归集：移往桶 #{target.index}")
        _ledger(bucket=target, campaign_id=campaign.pk, kind=LedgerEntry.Kind.ADJUST, amount=take,
                reason=f"预算归集：来自桶 #{donor.index}")
        need -= take
    updated = BudgetBucket.objects.filter(_room(amount, share, day_cap, n), pk=target.pk).update(
        **_reserve_update(amount, day_cap))
    if updated != 1:
        if day_cap is not None and plan_room(target) < 0:
            raise _daily_cap_reached(now or timezone.now())
        if share is not None:
            raise _paced(campaign, sum((b.reserved + b.spent for b in buckets), ZERO), amount, now or timezone.now())
        raise BudgetExhausted()
    target.refresh_from_db()
    return target


def budget_record(
    *, bucket: BudgetBucket | int, campaign_id: int, kind: str, amount: Decimal, voucher_id=None, order_id=None,
    actor=None, reason: str = "",
) -> LedgerEntry:
    return _ledger(bucket=bucket, campaign_id=campaign_id, kind=kind, amount=amount, voucher_id=voucher_id,
                   order_id=order_id, actor=actor, reason=reason)


def budget_release(*, bucket_id: int, amount: Decimal) -> None:
    """Return a reservation to its bucket. The CHECK constraints stop it going negative."""
    updated = BudgetBucket.objects.filter(pk=bucket_id, reserved__gte=amount).update(reserved=F("reserved") - amount)
    if updated != 1:
        raise RuntimeError(f"bucket {bucket_id} holds less than {amount} reserved")


def budget_spend(*, bucket_id: int, reserved: Decimal, spend: Decimal) -> None:
    """Turn a reservation into spending: `spend` becomes spent, the rest of `reserved` goes back."""
    updated = BudgetBucket.objects.filter(pk=bucket_id, reserved__gte=reserved).update(
        reserved=F("reserved") - reserved, spent=F("spent") + spend
    )
    if updated != 1:
        raise RuntimeError(f"bucket {bucket_id} holds less than {reserved} reserved")


# --- budget changes and rebalancing (staff) ----------------------------------------

def _committed(buckets: list[BudgetBucket]) -> Decimal:
    return sum((b.reserved + b.spent for b in buckets), ZERO)


@retry_on_conflict()
@transaction.atomic(durable=True)
def campaign_budget_change(*, campaign: Campaign, new_total: Decimal, actor, reason: str) -> Campaign:
    """Raise or lower a campaign's budget through `adjust` ledger entries.

    All buckets are locked in primary-key order, so concurrent claims either finish before
    (and count as committed) or wait and see the new allotments.
    """
    if not reason or not reason.strip():
        raise InvalidCampaign("调整预算必须填写原因", extra={"fields": {"reason": "必填"}})
    if new_total < 0 or new_total != new_total.quantize(CENT):
        raise InvalidCampaign("预算必须是不小于 0 的金额，最多两位小数", extra={"fields": {"total_budget": "格式错误"}})
    # FOR NO KEY UPDATE: a claim in flight holds its bucket row and then takes KEY SHARE on the
    # campaign and bucket rows (foreign keys of its card and ledger rows). A plain FOR UPDATE here
    # conflicts with those KEY SHARE locks and deadlocks against the claims; NO KEY UPDATE does not.
    campaign = Campaign.objects.select_for_update(no_key=True).get(pk=campaign.pk)
    buckets = list(BudgetBucket.objects.select_for_update(no_key=True).filter(campaign=campaign).order_by("pk"))
    committed = _committed(buckets)
    if new_total < committed:
        raise BudgetBelowCommitted(
            f"预算不能低于已预留与已花费之和（{committed} 元）", extra={"committed": str(committed)}
        )
    old_total = campaign.total_budget
    delta = new_total - old_total
    if delta == 0:
        return campaign
    if delta > 0:
        changes = _split(delta, len(buckets), unit=campaign.face_value)
    else:
        # Take the cut from each bucket's free room, largest room first.
        need = -delta
        changes = [ZERO] * len(buckets)
        for i in sorted(range(len(buckets)), key=lambda i: buckets[i].available, reverse=True):
            take = min(need, buckets[i].available)
            changes[i] = -take
            need -= take
            if need == 0:
                break
    for bucket, change in zip(buckets, changes, strict=True):
        if change == 0:
            continue
        BudgetBucket.objects.filter(pk=bucket.pk).update(allotment=F("allotment") + change)
        _ledger(bucket=bucket, campaign_id=campaign.pk, kind=LedgerEntry.Kind.ADJUST, amount=change, actor=actor,
                reason=reason)
    campaign.total_budget = new_total
    campaign.save(update_fields=["total_budget", "updated_at"])
    audit(actor=actor, action="campaign.budget_change", obj=campaign, campaign=campaign,
          before={"total_budget": str(old_total)}, after={"total_budget": str(new_total)}, reason=reason)
    event_record(type=EventType.BUDGET_CHANGED, campaign_id=campaign.pk,
                 data={"old_total": old_total, "new_total": new_total, "delta": delta, "reason": reason,
                       "actor": getattr(actor, "username", None)})
    transaction.on_commit(lambda: _budget_changed(campaign.pk))
    return campaign


@retry_on_conflict()
@transaction.atomic(durable=True)
def campaign_budget_rebalance(*, campaign: Campaign, actor=None) -> int:
    """Even out free room across buckets so the hot path rarely falls back. Returns rows moved."""
    # NO KEY UPDATE, for the same reason as in campaign_budget_change (claims hold KEY SHARE on buckets).
    buckets = list(BudgetBucket.objects.select_for_update(no_key=True).filter(campaign=campaign).order_by("pk"))
    if not buckets:
        return 0
    free = sum((b.available for b in buckets), ZERO)
    targets = _split(free, len(buckets), unit=campaign.face_value)
    moved = 0
    for bucket, target in zip(buckets, targets, strict=True):
        change = target - bucket.available
        if change == 0:
            continue
        BudgetBucket.objects.filter(pk=bucket.pk).update(allotment=F("allotment") + change)
        _ledger(bucket=bucket, campaign_id=campaign.pk, kind=LedgerEntry.Kind.ADJUST, amount=change, actor=actor,
                reason="预算桶再平衡")
        moved += 1
    if moved:
        audit(actor=actor, action="campaign.budget_rebalance", obj=campaign, campaign=campaign,
              before={"available": [str(b.available) for b in buckets]},
              after={"available": [str(t) for t in targets]}, reason="预算桶再平衡")
    return moved


@transaction.atomic(durable=True)
def campaign_set_switches(*, campaign: Campaign, actor, **switches: bool) -> Campaign:
    """Flip kill switches (claims / referrals / orders) with an audit row."""
    allowed = {"claims_enabled", "referrals_enabled", "orders_enabled"}
    unknown = set(switches) - allowed
    if unknown:
        raise InvalidCampaign(f"未知开关：{', '.join(sorted(unknown))}")
    # NO KEY UPDATE: flipping a switch must not queue behind (or block) claims holding KEY SHARE on the row.
    campaign = Campaign.objects.select_for_update(no_key=True).get(pk=campaign.pk)
    before = {k: getattr(campaign, k) for k in switches}
    for key, value in switches.items():
        setattr(campaign, key, bool(value))
    campaign.save(update_fields=[*switches, "updated_at"])
    audit(actor=actor, action="campaign.switches", obj=campaign, campaign=campaign, before=before,
          after={k: getattr(campaign, k) for k in switches})
    event_record(type=EventType.SWITCHES_CHANGED, campaign_id=campaign.pk,
                 data={"before": before, "after": {k: getattr(campaign, k) for k in switches},
                       "actor": getattr(actor, "username", None)})
    transaction.on_commit(lambda: _budget_changed(campaign.pk))
    return campaign


def _budget_changed(campaign_id: int) -> None:
    """Hook for caches in front of the budget (the admission layer registers itself here)."""
    for listener in list(BUDGET_LISTENERS):
        listener(campaign_id)


BUDGET_LISTENERS: list = []
