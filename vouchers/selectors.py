"""Reads over cards, and the reconciliation proof finance relies on."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connections, transaction
from django.db.models import Case, Count, DecimalField, QuerySet, Sum, Value, When
from django.utils import timezone

from campaign.models import BudgetBucket, Campaign, LedgerEntry
from campaign.selectors import campaign_get_cached, campaign_slugs

from .models import Voucher

ZERO = Decimal("0.00")
OPEN = (Voucher.Status.ISSUED, Voucher.Status.LOCKED)
CLOSED = (Voucher.Status.EXPIRED, Voucher.Status.VOID)


class CardRows:
    """The caller's cards for the list endpoint as plain row tuples, the one that expires first first
    (expiry, then id).

    Hand-written SQL on purpose: measured in-process, compiling the ORM's `select_related` query and building
    the model instances took longer than PostgreSQL took to answer (issue 14: ~1.3 of the list's ~3.3 ms).
    It slices and counts like a queryset, so Django's paginator and `miandan.api.pagination` take it as one.
    Columns: `CARD_COLUMNS`.
    """

    ordered = True  # Paginator warns about unordered object lists; this one is ordered by (expires_at, id)

    def __init__(self, *, user_id: int, campaign_slug: str | None = None, status: str | None = None) -> None:
        where, params = ["user_id = %s"], [user_id]
        if campaign_slug:
            campaign = campaign_get_cached(slug=campaign_slug)
            # An unknown slug lists nothing; the id (not a join on the slug) keeps the statement on one table.
            where.append("campaign_id = %s")
            params.append(campaign.pk if campaign is not None else 0)
        if status:
            where.append("status = %s")
            params.append(status)
        self._from = f" FROM {Voucher._meta.db_table} WHERE {' AND '.join(where)}"
        self._params = params

    def count(self) -> int:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT count(*)" + self._from, self._params)
            return cursor.fetchone()[0]

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index: slice) -> list[tuple]:
        if not isinstance(index, slice) or index.step is not None:
            raise TypeError("CardRows takes a slice without a step")
        start = max(index.start or 0, 0)
        sql = f"SELECT {CARD_COLUMNS}{self._from} ORDER BY expires_at, id"
        params = list(self._params)
        if index.stop is not None:
            sql += " LIMIT %s"
            params.append(max(index.stop - start, 0))
        if start:
            sql += " OFFSET %s"
            params.append(start)
        with connections["default"].cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        # The campaign's slug from the per-process copy, in the column the campaign id was read into.
        slugs = campaign_slugs({row[1] for row in rows})
        return [(row[0], slugs[row[1]], *row[2:]) for row in rows if row[1] in slugs]


# The list endpoint's columns, in the order `CardRows` returns them.
# (The statement reads the campaign id where the slug goes; `CardRows` puts the slug in its place.)
CARD_COLUMNS = "code, campaign_id, status, source, face_value, subsidy, slot, order_id, issued_at, expires_at"


def voucher_get(*, user, code: str) -> Voucher | None:
    return Voucher.objects.select_related("campaign").filter(user=user, code=code.strip().upper()).first()


def voucher_usable(*, user, campaign: Campaign | None = None, code: str | None = None, now=None) -> QuerySet[Voucher]:
    """The caller's cards an order can use now, the one that expires first first (one definition for quote and lock)."""
    qs = Voucher.objects.filter(user=user, status=Voucher.Status.ISSUED, expires_at__gt=now or timezone.now())
    if campaign is not None:
        qs = qs.filter(campaign=campaign)
    if code:
        qs = qs.filter(code=code.strip().upper())
    return qs.order_by("expires_at", "id")


def card_gauges() -> list:
    """/metrics: cards by campaign and status (registered in VouchersConfig.ready)."""
    from miandan.api.metrics import StateGauge

    rows = Voucher.objects.values_list("campaign__slug", "status").annotate(n=Count("id"))
    return [StateGauge("miandan_cards", "Cards by campaign and status", ("campaign", "status"),
                       [((slug, status), float(n)) for slug, status, n in rows])]


@dataclass
class ReconcileReport:
    campaign: str
    totals: dict[str, Decimal] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)
    as_of: dt.datetime | None = None  # the snapshot's moment (PostgreSQL: its transaction start)

    @property
    def ok(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict:
        return {
            "campaign": self.campaign,
            "result": "PASS" if self.ok else "FAIL",
            # Money always with two decimals (a database may sum 3000000000.00 to "3000000000"); the card count is a count.
            "totals": {k: (str(int(v)) if k == "cards" else f"{Decimal(v):.2f}") for k, v in self.totals.items()},
            "differences": list(self.differences),
        }


def _money(value) -> Decimal:
    return value if value is not None else ZERO


@contextmanager
def read_snapshot(using: str = "default") -> Iterator[None]:
    """Run the reads inside in one consistent snapshot: a read-only REPEATABLE READ transaction.

    Reconciliation compares three things that live traffic moves together (bucket counters, ledger rows,
    card states); read at different moments they disagree by whatever committed in between. In one
    snapshot every query sees the same committed state. Transaction-scoped only (SET TRANSACTION, SET
    LOCAL), so it is safe behind PgBouncer in transaction pooling mode. Inside an existing transaction
    (an outer snapshot, or a test's) the reads simply join it: SET TRANSACTION must be its first statement.
    """
    conn = connections[using]
    if conn.in_atomic_block:
        yield
        return
    with transaction.atomic(using=using):
        if conn.vendor == "postgresql":
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # The per-card check hashes millions of ids; more sort/hash memory for this one transaction
                # keeps it off disk. Server-side memory, bounded per query node.
                cur.execute("SET LOCAL work_mem = '64MB'")
        yield


def cents_sql(column: str, vendor: str) -> str:
    # Compare money as integer cents: exact on PostgreSQL and on SQLite (which stores decimals as REAL).
    if vendor == "postgresql":
        return f"(({column}) * 100)::bigint"
    return f"CAST(ROUND(({column}) * 100) AS INTEGER)"


def _card_ledger_sql(vendor: str) -> str:
    """Cards FULL JOIN their ledger sums, only the rows that disagree, in the database (nothing per card in Python).

    Per card: one reserve of the face value; a closed card released all of it; a redeemed card spent its
    subsidy and released the rest; an open card has nothing but its reservation.
    """
    amount, face = cents_sql("amount", vendor), cents_sql("face_value", vendor)
    subsidy = cents_sql("COALESCE(subsidy, 0)", vendor)
    return f"""
    WITH l AS (
        SELECT voucher_id AS vid,
               COALESCE(SUM(CASE WHEN kind = 'reserve' THEN c END), 0) AS reserve,
               COUNT(CASE WHEN kind = 'reserve' THEN 1 END) AS reserves,
               COALESCE(SUM(CASE WHEN kind = 'spend' THEN c END), 0) AS spend,
               COALESCE(SUM(CASE WHEN kind = 'release' THEN c END), 0) AS rel
        FROM (SELECT voucher_id, kind, {amount} AS c FROM campaign_ledgerentry
              WHERE campaign_id = %(cid)s AND voucher_id IS NOT NULL) AS x
        GROUP BY voucher_id
    ), v AS (
        SELECT id, status, {face} AS face,
               CASE WHEN status = 'redeemed' THEN {subsidy} ELSE 0 END AS sub
        FROM vouchers_voucher WHERE campaign_id = %(cid)s
    ), d AS (
        SELECT v.id AS card, v.status, v.face, v.sub, l.vid, l.reserve, l.reserves, l.spend, l.rel,
               CASE WHEN v.status = 'redeemed' THEN v.face - v.sub
                    WHEN v.status IN ('expired', 'void') THEN v.face ELSE 0 END AS want_rel
        FROM v FULL JOIN l ON l.vid = v.id
    )
    SELECT COALESCE(card, vid) AS id, status, face, sub, vid, reserve, reserves, spend, rel, want_rel,
           COUNT(*) OVER () AS bad
    FROM d
    WHERE card IS NULL OR vid IS NULL OR reserves <> 1 OR reserve <> face OR spend <> sub OR rel <> want_rel
    ORDER BY 1
    LIMIT 50
    """


def _yuan(cents) -> Decimal:
    return (Decimal(int(cents or 0)) / 100).quantize(Decimal("0.01"))


def reconcile(*, campaign: Campaign, using: str = "default") -> ReconcileReport:
    """Prove ledger sums == bucket counters == card states, per bucket and per card, in one snapshot.

    Memory is bounded whatever the campaign's size: per-bucket sums come back as one row per bucket, and
    the per-card proof runs in the database, which returns only the cards that disagree (at most 50, with
    their total count). On PostgreSQL every query reads the same read-only REPEATABLE READ snapshot, so a
    reconcile run during live traffic never reports a difference that is only a race between its queries.
    """
    with read_snapshot(using):
        return _reconcile(campaign=campaign, using=using)


def _reconcile(*, campaign: Campaign, using: str) -> ReconcileReport:
    report = ReconcileReport(campaign=campaign.slug)
    diffs = report.differences
    conn = connections[using]
    campaign = Campaign.objects.using(using).get(pk=campaign.pk)  # its budget as of this snapshot
    if conn.vendor == "postgresql":
        with conn.cursor() as cur:
            cur.execute("SELECT now()")
            report.as_of = cur.fetchone()[0]

    ledger: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in (LedgerEntry.objects.using(using).filter(campaign=campaign).order_by()
                .values("bucket_id", "kind").annotate(t=Sum("amount"))):
        ledger[row["bucket_id"]][row["kind"]] = row["t"]

    money = DecimalField(max_digits=16, decimal_places=2)
    cards = {
        row["bucket_id"]: row
        for row in Voucher.objects.using(using).filter(campaign=campaign).order_by()
        .values("bucket_id")
        .annotate(
            n=Count("id"),
            open_face=Sum(Case(When(status__in=OPEN, then="face_value"), default=Value(ZERO), output_field=money)),
            subsidy=Sum(Case(When(status=Voucher.Status.REDEEMED, then="subsidy"), default=Value(ZERO),
                             output_field=money)),
        )
    }

    totals = defaultdict(Decimal)
    buckets = list(BudgetBucket.objects.using(using).filter(campaign=campaign).order_by("index"))
    for bucket in buckets:
        led = ledger.get(bucket.pk, {})
        adjust, reserve = led.get("adjust", ZERO), led.get("reserve", ZERO)
        spend, release = led.get("spend", ZERO), led.get("release", ZERO)
        card = cards.get(bucket.pk, {})
        open_face, subsidy = _money(card.get("open_face")), _money(card.get("subsidy"))
        name = f"桶 #{bucket.index}"
        if adjust != bucket.allotment:
            diffs.append(f"{name}: 调整流水合计 {adjust} ≠ 额度 {bucket.allotment}")
        if reserve - spend - release != bucket.reserved:
            diffs.append(f"{name}: 预留−花费−释放流水 {reserve - spend - release} ≠ 已预留 {bucket.reserved}")
        if spend != bucket.spent:
            diffs.append(f"{name}: 花费流水 {spend} ≠ 已花费 {bucket.spent}")
        if open_face != bucket.reserved:
            diffs.append(f"{name}: 未使用卡面额合计 {open_face} ≠ 已预留 {bucket.reserved}")
        if subsidy != bucket.spent:
            diffs.append(f"{name}: 已使用卡补贴合计 {subsidy} ≠ 已花费 {bucket.spent}")
        if bucket.reserved + bucket.spent > bucket.allotment:
            diffs.append(f"{name}: 超支（已预留+已花费 > 额度）")
        totals["allotment"] += bucket.allotment
        totals["reserved"] += bucket.reserved
        totals["spent"] += bucket.spent
        totals["released"] += release
        totals["ledger_adjust"] += adjust
        totals["ledger_reserve"] += reserve
        totals["ledger_spend"] += spend
        totals["ledger_release"] += release
    orphan = set(ledger) - {b.pk for b in buckets}
    if orphan:
        diffs.append(f"流水引用了不属于本活动的预算桶：{sorted(orphan)}")
    stray_cards = set(cards) - {b.pk for b in buckets}
    if stray_cards:
        diffs.append(f"卡引用了不属于本活动的预算桶：{sorted(stray_cards)}")
    if totals["allotment"] != campaign.total_budget:
        diffs.append(f"总预算 {campaign.total_budget} ≠ 各桶额度合计 {totals['allotment']}")
    totals["total_budget"] = campaign.total_budget
    totals["remaining"] = totals["allotment"] - totals["reserved"] - totals["spent"]

    bad: list[str] = []
    total_bad = 0
    with conn.cursor() as cur:
        if conn.vendor == "postgresql":
            # Two ordered streams merged (ledger_card_rows index-only, cards by primary key): constant memory
            # whatever the size. Left to itself the planner hashes millions of cards and groups, spilling to disk.
            cur.execute("SET LOCAL enable_hashagg = off")
            cur.execute("SET LOCAL enable_hashjoin = off")
        cur.execute(_card_ledger_sql(conn.vendor), {"cid": campaign.pk})
        rows = cur.fetchall()
        if conn.vendor == "postgresql":
            cur.execute("SET LOCAL enable_hashagg TO DEFAULT")
            cur.execute("SET LOCAL enable_hashjoin TO DEFAULT")
        for vid, status, face, sub, ledger_vid, reserve, reserves, spend, rel, want_rel, count in rows:
            total_bad = count
            if status is None:
                bad.append(f"流水引用了不存在的卡 #{vid}")
                continue
            if ledger_vid is None:
                bad.append(f"卡 #{vid}（{status}）: 没有预留流水")
                continue
            actual = {"reserve": _yuan(reserve), "spend": _yuan(spend), "release": _yuan(rel)}
            expected = {"reserve": _yuan(face), "spend": _yuan(sub), "release": _yuan(want_rel)}
            extra = f"（预留流水 {reserves} 笔）" if reserves != 1 else ""
            bad.append(f"卡 #{vid}（{status}）: 流水 {actual} ≠ 应有 {expected}{extra}")
    if total_bad:
        diffs.append(f"{total_bad} 处卡与流水不一致")
        diffs.extend(bad)
    report.totals = dict(totals)
    report.totals["cards"] = Decimal(sum(row["n"] for row in cards.values()))
    _reconcile_daily_cards(campaign=campaign, using=using, diffs=diffs)
    for check in RECONCILE_CHECKS:
        # Counters of the layers above (orders: store / brand daily subsidy), same snapshot.
        diffs.extend(check(campaign=campaign, using=using))
    return report


# Callables (campaign=, using=) -> list of differences, registered by higher layers in AppConfig.ready
# (vouchers must not import them): their counters are proven in the same snapshot as the money.
RECONCILE_CHECKS: list = []


def _reconcile_daily_cards(*, campaign: Campaign, using: str, diffs: list[str]) -> None:
    """Each bucket's daily card count equals the cards counted on its day in that bucket (issue 20)."""
    buckets = list(BudgetBucket.objects.using(using).filter(campaign=campaign, day_on__isnull=False)
                   .values_list("pk", "index", "day_on", "day_cards"))
    if not buckets:
        return
    counted = {
        (bucket_id, day): n
        for bucket_id, day, n in Voucher.objects.using(using).filter(campaign=campaign, counted_on__isnull=False)
        .order_by().values_list("bucket_id", "counted_on").annotate(n=Count("id"))
    }
    for pk, index, day, cards in buckets:
        if counted.get((pk, day), 0) != cards:
            diffs.append(f"桶 #{index}: {day} 每日发卡计数 {cards} ≠ 当日计入该桶的卡 {counted.get((pk, day), 0)} 张")
