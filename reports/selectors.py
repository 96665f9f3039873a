"""Reads behind the budget report, the ledger export and the live dashboard.

`reports` sits above campaign/vouchers/orders/referrals, so it may read all of them.
Everything that can grow with the campaign (ledger, orders) is aggregated in the database
or streamed with `.iterator(chunk_size=...)`; nothing loads a whole table into memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from itertools import islice
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.db.models import Count, DecimalField, Q, QuerySet, Sum
from django.db.models.functions import TruncDate, TruncDay, TruncHour, TruncMinute
from django.utils import timezone

from accounts.models import User
from campaign import pacing
from campaign.models import BudgetBucket, Campaign, LedgerEntry
from campaign.selectors import budget_totals, pace_overview
from orders.models import Order, Store
from orders.selectors import IN_FLIGHT_STATES, callback_lag
from referrals.models import InviteCode, Referral
from vouchers.models import Voucher
from vouchers.selectors import ReconcileReport, cents_sql, read_snapshot, reconcile

from .models import LedgerMinute, LedgerRollup

SHANGHAI = ZoneInfo("Asia/Shanghai")
ZERO = Decimal("0.00")
CENT = Decimal("0.01")
CHUNK = 5000
GROUP_BY = ("day", "brand", "city")
FORMATS = ("json", "csv", "xlsx")
MONEY_FIELD = DecimalField(max_digits=16, decimal_places=2)


def money(value) -> Decimal:
    return (value if value is not None else ZERO).quantize(CENT)


def average(total: Decimal, count: int) -> Decimal:
    return (total / count).quantize(CENT, rounding=ROUND_HALF_UP) if count else ZERO


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "str"  # "str" | "int" | "money"


SUMMARY_LABELS = {
    "total_budget": "总预算",
    "reserved": "已预留",
    "spent": "已花费",
    "released": "已释放",
    "remaining": "剩余",
    "cards_issued": "发卡总数",
    "redeemed_cards": "已使用卡数",
    "subsidy_spent": "补贴合计",
    "average_subsidy": "平均补贴",
}
SUMMARY_MONEY = {"total_budget", "reserved", "spent", "released", "remaining", "subsidy_spent", "average_subsidy"}

def _order_group_columns(key: str, label: str) -> list[Column]:
    """Columns of a report grouped through order -> store (brand or city)."""
    return [
        Column(key, label),
        Column("orders", "订单数", "int"),
        Column("completed_orders", "已完成订单数", "int"),
        Column("subsidised_orders", "享受补贴订单数", "int"),
        Column("subsidy", "补贴合计", "money"),
        Column("average_subsidy", "平均补贴", "money"),
    ]


GROUP_COLUMNS: dict[str, list[Column]] = {
    "day": [
        Column("day", "日期"),
        Column("reserved", "预留", "money"),
        Column("spent", "花费", "money"),
        Column("released", "释放", "money"),
        Column("adjusted", "预算调整", "money"),
        Column("entries", "流水笔数", "int"),
    ],
    "brand": _order_group_columns("brand", "品牌"),
    "city": _order_group_columns("city", "城市"),
}


@dataclass
class BudgetReport:
    campaign: Campaign
    group_by: str
    generated_at: dt.datetime
    summary: dict[str, Decimal | int]
    cards_by_source: dict[str, int]
    cards_by_state: dict[str, int]
    orders_by_state: dict[str, int]
    reconciliation: ReconcileReport
    columns: list[Column] = field(default_factory=list)
    grouped: list[dict] = field(default_factory=list)

    def rows(self) -> Iterator[dict]:
        """Grouped rows (one per day, brand or city: a few hundred at most), read in the report's snapshot."""
        return iter(self.grouped)


def campaign_orders(*, campaign: Campaign) -> QuerySet[Order]:
    """Orders that belong to the campaign: tagged with it, or paid with one of its cards.

    Placement tags every order that locks a card with that card's campaign, so the second half only
    looks at untagged orders: no join of every order to every card.
    """
    # Untagged orders are anomalies (none by construction): found through the campaign index's NULLs and
    # named by id, so the filter stays `campaign_id = …` (an EXISTS in the OR made PostgreSQL hash every card).
    stray = list(Order.objects.filter(campaign__isnull=True, voucher__campaign=campaign).values_list("pk", flat=True))
    return Order.objects.filter(Q(campaign=campaign) | Q(pk__in=stray))


LEDGER_SUMS = ("reserve", "spend", "release", "adjust")


def ledger_bins(*, campaign: Campaign, trunc) -> list[dict]:
    """Ledger sums and row counts per time bin (`trunc` in Shanghai time), oldest first, exact.

    Rows up to the rollup watermark come from LedgerMinute (a few thousand rows), the rows after it
    from the ledger itself through its primary key; call inside one snapshot to get one moment's picture.
    """
    upto = LedgerRollup.objects.filter(campaign=campaign).values_list("upto_id", flat=True).first() or 0
    sums = {k: Sum(k) for k in LEDGER_SUMS}
    rolled = (LedgerMinute.objects.filter(campaign=campaign).order_by()
              .annotate(t=trunc("minute", tzinfo=SHANGHAI)).values("t").annotate(entries=Sum("entries"), **sums))
    live = (LedgerEntry.objects.filter(campaign=campaign, pk__gt=upto).order_by()
            .annotate(t=trunc("created_at", tzinfo=SHANGHAI)).values("t")
            .annotate(entries=Count("id"), **{k: Sum("amount", filter=Q(kind=k)) for k in LEDGER_SUMS}))
    bins: dict = {}
    for row in [*rolled, *live]:
        acc = bins.setdefault(row["t"], {"t": row["t"], "entries": 0, **{k: ZERO for k in LEDGER_SUMS}})
        acc["entries"] += row["entries"] or 0
        for k in LEDGER_SUMS:
            acc[k] += row[k] or ZERO
    return [bins[t] for t in sorted(bins)]


def _counts(qs: QuerySet, key: str, choices) -> dict[str, int]:
    counts = {value: 0 for value in choices.values}
    # COUNT(*), not COUNT(id): the (campaign, status, ...) indexes answer it without reading the rows.
    for row in qs.order_by().values(key).annotate(n=Count("*")):
        counts[row[key]] = row["n"]
    return counts


def budget_report(*, campaign: Campaign, group_by: str = "day") -> BudgetReport:
    """Every figure finance checks, from the bucket counters, the ledger and the card states.

    All of it, the reconciliation and the grouped rows included, is read in one read-only REPEATABLE READ
    snapshot, so the summary, the rows and the proof agree with each other even during live traffic.
    """
    if group_by not in GROUP_BY:
        raise ValueError(group_by)
    with read_snapshot():
        campaign = Campaign.objects.get(pk=campaign.pk)
        return _budget_report(campaign=campaign, group_by=group_by)


def budget_report_cached(*, campaign: Campaign, group_by: str = "day") -> BudgetReport:
    """`budget_report`, reused for MIANDAN_REPORT_CACHE_SECONDS per campaign and grouping.

    The report (its reconcile included) reads every bucket, card and ledger day of the campaign: repeated GETs
    (a finance page left refreshing, a script) must not each pay for that on the primary. The report says when
    it was generated, so a copy a few seconds old is honest. 0 turns the copy off.
    """
    from django.core.cache import cache

    seconds = settings.MIANDAN_REPORT_CACHE_SECONDS
    if seconds <= 0:
        return budget_report(campaign=campaign, group_by=group_by)
    cache_key = f"budget-report:{campaign.pk}:{group_by}"
    try:
        report = cache.get(cache_key)
    except Exception:  # a cache outage costs a fresh report, never an error
        report = None
    if report is None:
        report = budget_report(campaign=campaign, group_by=group_by)
        try:
            cache.set(cache_key, report, seconds)
        except Exception:
            pass
    return report


def _budget_report(*, campaign: Campaign, group_by: str) -> BudgetReport:
    buckets = budget_totals(campaign_id=campaign.pk)
    # Ledger totals by kind from the per-day sums (the rollup plus the live rows after it), not another scan.
    days = ledger_bins(campaign=campaign, trunc=TruncDate)
    ledger = {k: sum((d[k] for d in days), ZERO) for k in LEDGER_SUMS}
    # Cards by state and by source in one pass over the campaign's cards.
    cards_by_state = {value: 0 for value in Voucher.Status.values}
    cards_by_source = {value: 0 for value in Voucher.Source.values}
    for row in Voucher.objects.filter(campaign=campaign).order_by().values("status", "source").annotate(n=Count("*")):
        cards_by_state[row["status"]] = cards_by_state.get(row["status"], 0) + row["n"]
        cards_by_source[row["source"]] = cards_by_source.get(row["source"], 0) + row["n"]
    redeemed = cards_by_state[Voucher.Status.REDEEMED]
    subsidy = money(ledger["spend"])
    summary: dict[str, Decimal | int] = {
        "total_budget": money(campaign.total_budget),
        "reserved": money(buckets["reserved"]),
        "spent": money(buckets["spent"]),
        "released": money(ledger["release"]),
        "remaining": money(campaign.total_budget - buckets["reserved"] - buckets["spent"]),
        "cards_issued": sum(cards_by_state.values()),
        "redeemed_cards": redeemed,
        "subsidy_spent": subsidy,
        "average_subsidy": average(subsidy, redeemed),
    }
    return BudgetReport(
        campaign=campaign,
        group_by=group_by,
        generated_at=timezone.now(),
        summary=summary,
        cards_by_source=cards_by_source,
        cards_by_state=cards_by_state,
        orders_by_state=_counts(campaign_orders(campaign=campaign), "status", Order.Status),
        reconciliation=reconcile(campaign=campaign),
        columns=GROUP_COLUMNS[group_by],
        grouped=_day_rows(days) if group_by == "day" else list(report_rows(campaign=campaign, group_by=group_by)),
    )


def _day_rows(days: list[dict]) -> list[dict]:
    return [
        {"day": row["t"].isoformat(), "reserved": money(row["reserve"]), "spent": money(row["spend"]),
         "released": money(row["release"]), "adjusted": money(row["adjust"]), "entries": row["entries"]}
        for row in days
    ]


def report_rows(*, campaign: Campaign, group_by: str) -> Iterator[dict]:
    if group_by == "day":
        yield from _day_rows(ledger_bins(campaign=campaign, trunc=TruncDate))
        return
    key = {"brand": "b.name", "city": "st.city"}[group_by]
    vendor = connection.vendor
    # Per-order subsidy from the ledger's spend rows (the proof of money spent), summed once per order in
    # one pass and joined, instead of a correlated subquery per order.
    sql = f"""
        SELECT {key}, COUNT(*), COUNT(CASE WHEN o.status = 'completed' THEN 1 END),
               COUNT(CASE WHEN s.c > 0 THEN 1 END), COALESCE(SUM(s.c), 0)
        FROM orders_order o
        JOIN orders_store st ON st.id = o.store_id
        JOIN orders_brand b ON b.id = st.brand_id
        LEFT JOIN (SELECT order_id, SUM({cents_sql("amount", vendor)}) AS c FROM campaign_ledgerentry
                   WHERE campaign_id = %s AND kind = 'spend' AND order_id IS NOT NULL GROUP BY order_id) s
               ON s.order_id = o.id
        WHERE o.campaign_id = %s OR (o.campaign_id IS NULL AND o.voucher_id IS NOT NULL AND EXISTS (
              SELECT 1 FROM vouchers_voucher v WHERE v.id = o.voucher_id AND v.campaign_id = %s))
        GROUP BY {key} ORDER BY {key}
    """
    with connection.cursor() as cur:
        cur.execute(sql, [campaign.pk] * 3)
        rows = cur.fetchall()
    for name, orders, completed, subsidised, cents in rows:
        subsidy = money(Decimal(int(cents)) / 100)
        yield {
            group_by: name,
            "orders": orders,
            "completed_orders": completed,
            "subsidised_orders": subsidised,
            "subsidy": subsidy,
            "average_subsidy": average(subsidy, subsidised),
        }


# --- the full ledger (large exports) ---------------------------------------------------

LEDGER_COLUMNS = [
    Column("id", "流水号", "int"),
    Column("created_at", "时间（北京时间）"),
    Column("kind", "类型"),
    Column("amount", "金额（元）", "money"),
    Column("bucket", "预算桶"),
    Column("voucher", "卡号"),
    Column("holder", "持卡人"),
    Column("order_id", "订单号", "int"),
    Column("actor", "操作人"),
    Column("reason", "原因"),
]
KIND_LABELS = dict(LedgerEntry.Kind.choices)


def ledger_export_queryset(*, campaign: Campaign, upto_id: int | None = None) -> QuerySet:
    qs = LedgerEntry.objects.filter(campaign=campaign)
    if upto_id is not None:
        # A snapshot bound: entries appended while the export runs belong to the next export.
        qs = qs.filter(pk__lte=upto_id)
    return qs


def _sql_text(expr: str) -> str:
    """exports.neutralise in SQL: text starting with = + - @ tab or CR gets a leading apostrophe (formula injection)."""
    return (f"CASE WHEN left({expr}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) "
            f"THEN '''' || {expr} ELSE {expr} END")


def ledger_copy_sql(*, campaign: Campaign, upto_id: int) -> str:
    """The ledger export as one `COPY (...) TO STDOUT` in CSV: PostgreSQL formats every row (time in Beijing
    time, kind label, money with two decimals, empty for NULL), the same readable columns as `ledger_rows`:
    bucket number, card code, its holder, the operator ("系统" for the system's own adjustments).

    One statement, one snapshot, no server-side cursor: safe behind PgBouncer in transaction pooling mode.
    Text columns go through `_sql_text`, the same formula-injection rule as exports.neutralise.
    """
    qn = connection.ops.quote_name
    ledger, bucket = qn(LedgerEntry._meta.db_table), qn(BudgetBucket._meta.db_table)
    card, user = qn(Voucher._meta.db_table), qn(User._meta.db_table)
    labels = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in KIND_LABELS.items())
    code = "COALESCE(v.code, CASE WHEN l.voucher_id IS NULL THEN '' ELSE '#' || l.voucher_id END)"
    holder = "COALESCE(h.username, '')"
    actor = "COALESCE(a.username, CASE WHEN l.kind = 'adjust' THEN '系统' ELSE '' END)"
    return (
        "COPY (SELECT l.id, to_char(l.created_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD HH24:MI:SS'), "
        f"CASE l.kind {labels} ELSE l.kind END, l.amount::text, '#' || b.{qn('index')}, "
        f"{_sql_text(code)}, {_sql_text(holder)}, l.order_id, {_sql_text(actor)}, {_sql_text('l.reason')} "
        f"FROM {ledger} l JOIN {bucket} b ON b.id = l.bucket_id "
        f"LEFT JOIN {card} v ON v.id = l.voucher_id LEFT JOIN {user} h ON h.id = v.user_id "
        f"LEFT JOIN {user} a ON a.id = l.actor_id "
        f"WHERE l.campaign_id = {int(campaign.pk)} AND l.id <= {int(upto_id)} ORDER BY l.id) "
        "TO STDOUT WITH (FORMAT csv)"
    )


def ledger_rows(*, campaign: Campaign, upto_id: int | None = None) -> Iterator[tuple]:
    """Ledger rows as tuples in LEDGER_COLUMNS order, oldest first, streamed in chunks.

    Readable for finance: the card's code and its holder's name instead of ids. They are looked up once per
    chunk of rows (one `id IN (...)` query per 5,000 rows), not per row: the ledger keeps plain card ids
    because campaign sits below vouchers, so there is no join to follow.
    """
    rows = (
        ledger_export_queryset(campaign=campaign, upto_id=upto_id)
        .order_by("id")
        .values_list("id", "created_at", "kind", "amount", "bucket__index", "voucher_id", "order_id", "actor__username",
                     "reason")
        .iterator(chunk_size=CHUNK)
    )
    while batch := list(islice(rows, CHUNK)):
        ids = {row[5] for row in batch if row[5]}
        cards = {pk: (code, holder) for pk, code, holder in
                 Voucher.objects.filter(pk__in=ids).values_list("pk", "code", "user__username")} if ids else {}
        for pk, created, kind, amount, bucket, voucher_id, order, actor, reason in batch:
            code, holder = cards.get(voucher_id, ("", ""))
            yield (
                pk, created.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"), KIND_LABELS.get(kind, kind), amount,
                f"#{bucket}", code or (f"#{voucher_id}" if voucher_id else ""), holder or "", order,
                actor or ("系统" if kind == LedgerEntry.Kind.ADJUST else ""), reason,
            )


# --- the live dashboard ----------------------------------------------------------------

@dataclass
class Dashboard:
    campaign: Campaign
    generated_at: dt.datetime
    totals: dict[str, Decimal]
    percent_used: Decimal
    cards_issued: int
    cards_by_state: dict[str, int]
    burn: list[tuple[dt.datetime, Decimal, Decimal]]  # (time, committed so far, spent so far)
    burn_unit: str
    cards_per_minute: list[tuple[dt.datetime, int]]
    orders_by_state: dict[str, int]
    orders_in_flight: dict[str, int]  # not yet final, by state
    callback_lag: dict  # merchant event -> recorded, seconds (p50/p99/max over recent events, all campaigns)
    top_stores: list[dict]
    referral_funnel: list[tuple[str, int]]
    switches: dict[str, bool]
    pace: dict | None = None  # plan vs actual now (campaign.selectors.pace_overview); None without a plan
    plan_line: list[Decimal] = field(default_factory=list)  # the plan at each burn point's time
    runout: dict = field(default_factory=dict)  # when the budget runs out at the current rate


def _runout(campaign: Campaign, burn: list, now: dt.datetime, remaining: Decimal) -> dict:
    """Predict when the budget runs out at the rate of the last hour of the burn line (committed money)."""
    if len(burn) < 2 or remaining <= 0:
        return {"at": now if remaining <= 0 else None, "rate_per_hour": ZERO, "before_end": remaining <= 0}
    last_t, last_c, _ = burn[-1]
    then = next(((t, c) for t, c, _ in reversed(burn) if t <= last_t - dt.timedelta(hours=1)), burn[0][:2])
    hours = Decimal(str(max((last_t - then[0]).total_seconds(), 60) / 3600))
    rate = (last_c - then[1]) / hours
    if rate <= 0:
        return {"at": None, "rate_per_hour": ZERO, "before_end": False}
    at = now + dt.timedelta(hours=float(remaining / rate))
    return {"at": at, "rate_per_hour": rate.quantize(Decimal("0.01")), "before_end": at < campaign.ends_at}


def _burn(campaign: Campaign, now: dt.datetime) -> tuple[list[tuple[dt.datetime, Decimal, Decimal]], str]:
    """Cumulative committed (reserve - release) and spent per time bin, bin size by campaign age."""
    first = LedgerEntry.objects.filter(campaign=campaign).order_by("id").values_list("created_at", flat=True).first()
    if first is None:
        return [], "minute"
    span = now - first
    if span <= dt.timedelta(hours=3):
        unit, trunc = "minute", TruncMinute
    elif span <= dt.timedelta(days=4):
        unit, trunc = "hour", TruncHour
    else:
        unit, trunc = "day", TruncDay
    step = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}[unit]
    points, committed, spent = [], ZERO, ZERO
    for row in ledger_bins(campaign=campaign, trunc=trunc):
        if not points:
            points.append((row["t"] - step, ZERO, ZERO))  # the line starts from nothing spent
        # reserved + spent == sum(reserve) - sum(release): spend only moves money from reserved to spent.
        committed += money(row["reserve"]) - money(row["release"])
        spent += money(row["spend"])
        points.append((row["t"], committed, spent))
    return points, unit


def dashboard(*, campaign: Campaign, now: dt.datetime | None = None, minutes: int = 60) -> Dashboard:
    """The live picture, read in one snapshot (totals, card states and the burn line agree with each other)."""
    with read_snapshot():
        return _dashboard(campaign=Campaign.objects.get(pk=campaign.pk), now=now, minutes=minutes)


def _dashboard(*, campaign: Campaign, now: dt.datetime | None, minutes: int) -> Dashboard:
    now = now or timezone.now()
    totals = budget_totals(campaign_id=campaign.pk)
    committed = totals["reserved"] + totals["spent"]
    percent = (committed * 100 / campaign.total_budget).quantize(Decimal("0.1")) if campaign.total_budget else Decimal("0.0")
    cards = Voucher.objects.filter(campaign=campaign)
    cards_by_state = _counts(cards, "status", Voucher.Status)
    since = (now - dt.timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    per_minute = {
        row["m"]: row["n"]
        for row in cards.filter(issued_at__gte=since)
        .order_by()
        .annotate(m=TruncMinute("issued_at", tzinfo=SHANGHAI))
        .values("m")
        .annotate(n=Count("id"))
    }
    minutes_axis = [(since + dt.timedelta(minutes=i)).astimezone(SHANGHAI) for i in range(minutes)]
    cards_per_minute = [(m, per_minute.get(m, 0)) for m in minutes_axis]
    # The campaign's orders counted once per (state, store), index-only on order_campaign_state (campaign, status,
    # store): the states, the ones in flight and the busiest stores all come from these rows (issue 14: three
    # scans of the campaign's orders were ~0.3 s of the dashboard at 1 M orders).
    per_store_state = list(campaign_orders(campaign=campaign).order_by().values_list("status", "store_id")
                           .annotate(n=Count("*")))
    orders_by_state = dict.fromkeys(Order.Status.values, 0)
    per_store: dict[int, int] = {}
    for status, store_id, n in per_store_state:
        orders_by_state[status] = orders_by_state.get(status, 0) + n
        per_store[store_id] = per_store.get(store_id, 0) + n
    busiest = [{"store_id": store_id, "orders": n}
               for store_id, n in sorted(per_store.items(), key=lambda item: (-item[1], item[0]))[:10]]
    stores = Store.objects.select_related("brand").in_bulk([row["store_id"] for row in busiest])
    top_stores = [
        {"store_id": row["store_id"], "store__name": stores[row["store_id"]].name,
         "store__brand__name": stores[row["store_id"]].brand.name, "store__city": stores[row["store_id"]].city,
         "orders": row["orders"]}
        for row in busiest
    ]
    referrals = Referral.objects.filter(campaign=campaign)
    ref = referrals.aggregate(
        total=Count("*"),
        accepted=Count("status", filter=Q(status=Referral.Status.ACCEPTED)),
        review=Count("status", filter=Q(status=Referral.Status.UNDER_REVIEW)),
        rejected=Count("status", filter=Q(status=Referral.Status.REJECTED)),
        inviter_paid=Count("status", filter=Q(inviter_outcome=Referral.Outcome.ISSUED)),
        invitee_paid=Count("status", filter=Q(invitee_outcome=Referral.Outcome.ISSUED)),
    )
    funnel = [
        ("邀请码", InviteCode.objects.filter(campaign=campaign).count()),
        ("接受邀请", ref["total"]),
        ("已通过", ref["accepted"]),
        ("待审核", ref["review"]),
        ("已拒绝", ref["rejected"]),
        ("邀请人得卡", ref["inviter_paid"]),
        ("受邀人得卡", ref["invitee_paid"]),
    ]
    burn, unit = _burn(campaign, now)
    pace = pace_overview(campaign=campaign, now=now, committed=committed)
    plan_line = [pacing.planned_amount(campaign, t) or ZERO for t, _, _ in burn] if pace else []
    return Dashboard(
        campaign=campaign,
        generated_at=now,
        totals={
            "total_budget": money(campaign.total_budget),
            "reserved": money(totals["reserved"]),
            "spent": money(totals["spent"]),
            "remaining": money(campaign.total_budget - committed),
        },
        percent_used=percent,
        cards_issued=sum(cards_by_state.values()),
        cards_by_state=cards_by_state,
        burn=burn,
        burn_unit=unit,
        cards_per_minute=cards_per_minute,
        orders_by_state=orders_by_state,
        # orders_in_flight(campaign=...)'s definition (tagged with the campaign or paid with its card) is
        # campaign_orders': the same set, so the same counts (tests/reports/test_dashboard_orders.py).
        orders_in_flight={state: orders_by_state.get(state, 0) for state in IN_FLIGHT_STATES},
        callback_lag=callback_lag(),
        top_stores=top_stores,
        referral_funnel=funnel,
        switches={
            "claims_enabled": campaign.claims_enabled,
            "referrals_enabled": campaign.referrals_enabled,
            "orders_enabled": campaign.orders_enabled,
        },
        pace=pace,
        plan_line=plan_line,
        runout=_runout(campaign, burn, now, campaign.total_budget - committed),
    )
