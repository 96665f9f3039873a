"""Reads for campaigns and budgets."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum

from .models import BudgetBucket, Campaign, LedgerEntry

ZERO = Decimal("0.00")


def campaign_get(*, slug: str) -> Campaign | None:
    return Campaign.objects.filter(slug=slug).first()


def campaign_list_live(*, now=None) -> list[Campaign]:
    from django.utils import timezone

    now = now or timezone.now()
    return list(
        Campaign.objects.filter(status=Campaign.Status.LIVE, starts_at__lte=now, ends_at__gt=now).order_by("starts_at")
    )


def budget_totals(*, campaign_id: int) -> dict[str, Decimal]:
    """Bucket counters summed: allotment, reserved, spent, available."""
    agg = BudgetBucket.objects.filter(campaign_id=campaign_id).aggregate(
        allotment=Sum("allotment"), reserved=Sum("reserved"), spent=Sum("spent")
    )
    totals = {k: (v if v is not None else ZERO) for k, v in agg.items()}
    totals["available"] = totals["allotment"] - totals["reserved"] - totals["spent"]
    return totals


def ledger_totals(campaign_id: int) -> dict[str, Decimal]:
    rows = LedgerEntry.objects.filter(campaign_id=campaign_id).values("kind").annotate(total=Sum("amount"))
    totals = {k: ZERO for k in LedgerEntry.Kind.values}
    totals.update({r["kind"]: r["total"] for r in rows})
    return totals


_CACHE: dict[str, tuple[float, Campaign | None]] = {}
CACHE_SECONDS = 0.5  # kill switches flipped in admin reach every process within this long


def campaign_get_cached(*, slug: str) -> Campaign | None:
    """Per-process, half-second cache of the campaign row for the hot path (join, accept, order)."""
    import time

    now = time.monotonic()
    hit = _CACHE.get(slug)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    campaign = Campaign.objects.filter(slug=slug).first()
    if len(_CACHE) > 1000:
        _CACHE.clear()
    _CACHE[slug] = (now, campaign)
    return campaign


def campaign_cache_clear() -> None:
    _CACHE.clear()
