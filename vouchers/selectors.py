"""Reads over cards, and the reconciliation proof finance relies on."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Case, Count, DecimalField, Q, QuerySet, Sum, Value, When
from django.utils import timezone

from campaign.models import BudgetBucket, Campaign, LedgerEntry

from .models import Voucher

ZERO = Decimal("0.00")
OPEN = (Voucher.Status.ISSUED, Voucher.Status.LOCKED)
CLOSED = (Voucher.Status.EXPIRED, Voucher.Status.VOID)


def voucher_list(*, user, campaign_slug: str | None = None, status: str | None = None) -> QuerySet[Voucher]:
    qs = Voucher.objects.filter(user=user).select_related("campaign")
    if campaign_slug:
        qs = qs.filter(campaign__slug=campaign_slug)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("expires_at", "id")


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


def reconcile(*, campaign: Campaign) -> ReconcileReport:
    """Prove ledger sums == bucket counters == card states, per bucket and per card."""
    report = ReconcileReport(campaign=campaign.slug)
    diffs = report.differences

    ledger: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in LedgerEntry.objects.filter(campaign=campaign).values("bucket_id", "kind").annotate(t=Sum("amount")):
        ledger[row["bucket_id"]][row["kind"]] = row["t"]

    money = DecimalField(max_digits=16, decimal_places=2)
    cards = {
        row["bucket_id"]: row
        for row in Voucher.objects.filter(campaign=campaign)
        .values("bucket_id")
        .annotate(
            open_face=Sum(Case(When(status__in=OPEN, then="face_value"), default=Value(ZERO), output_field=money)),
            subsidy=Sum(Case(When(status=Voucher.Status.REDEEMED, then="subsidy"), default=Value(ZERO),
                             output_field=money)),
        )
    }

    totals = defaultdict(Decimal)
    for bucket in BudgetBucket.objects.filter(campaign=campaign).order_by("index"):
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
    orphan = set(ledger) - set(BudgetBucket.objects.filter(campaign=campaign).values_list("pk", flat=True))
    if orphan:
        diffs.append(f"流水引用了不属于本活动的预算桶：{sorted(orphan)}")
    if totals["allotment"] != campaign.total_budget:
        diffs.append(f"总预算 {campaign.total_budget} ≠ 各桶额度合计 {totals['allotment']}")
    totals["total_budget"] = campaign.total_budget
    totals["remaining"] = totals["allotment"] - totals["reserved"] - totals["spent"]

    # Per card: one reserve of the face value; a closed card released all of it; a redeemed card
    # spent its subsidy and released the rest; an open card has nothing but its reservation.
    per_card = (
        LedgerEntry.objects.filter(campaign=campaign, voucher_id__isnull=False)
        .values("voucher_id")
        .annotate(
            reserve=Sum("amount", filter=Q(kind="reserve")),
            reserves=Count("id", filter=Q(kind="reserve")),
            spend=Sum("amount", filter=Q(kind="spend")),
            release=Sum("amount", filter=Q(kind="release")),
        )
    )
    seen = 0
    states = dict(Voucher.objects.filter(campaign=campaign).values_list("pk", "status"))
    faces = dict(Voucher.objects.filter(campaign=campaign).values_list("pk", "face_value"))
    subsidies = dict(
        Voucher.objects.filter(campaign=campaign, status=Voucher.Status.REDEEMED).values_list("pk", "subsidy")
    )
    bad: list[str] = []
    for row in per_card.iterator(chunk_size=5000):
        vid = row["voucher_id"]
        seen += 1
        status = states.get(vid)
        if status is None:
            bad.append(f"流水引用了不存在的卡 #{vid}")
            continue
        face = faces[vid]
        reserve, spend, release = _money(row["reserve"]), _money(row["spend"]), _money(row["release"])
        expected = {
            "reserve": face,
            "spend": subsidies.get(vid, ZERO) if status == Voucher.Status.REDEEMED else ZERO,
            "release": (face - subsidies.get(vid, ZERO)) if status == Voucher.Status.REDEEMED
            else (face if status in CLOSED else ZERO),
        }
        actual = {"reserve": reserve, "spend": spend, "release": release}
        if row["reserves"] != 1 or actual != expected:
            bad.append(f"卡 #{vid}（{status}）: 流水 {actual} ≠ 应有 {expected}")
    if seen != len(states):
        bad.append(f"{len(states) - seen} 张卡没有预留流水")
    if bad:
        diffs.append(f"{len(bad)} 处卡与流水不一致")
        diffs.extend(bad[:50])
    report.totals = dict(totals)
    report.totals["cards"] = Decimal(len(states))
    return report
