"""Reads for campaigns and budgets."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, DecimalField, ExpressionWrapper, F, Max, Min, Q, Sum

from .models import BudgetBucket, Campaign

ZERO = Decimal("0.00")


def campaign_get(*, slug: str) -> Campaign | None:
    return Campaign.objects.filter(slug=slug).first()


def campaign_list_live(*, now=None) -> list[Campaign]:
    return list(Campaign.objects.live(now).order_by("starts_at"))


def budget_totals(*, campaign_id: int) -> dict[str, Decimal]:
    """Bucket counters summed: allotment, reserved, spent, available."""
    agg = BudgetBucket.objects.filter(campaign_id=campaign_id).aggregate(
        allotment=Sum("allotment"), reserved=Sum("reserved"), spent=Sum("spent")
    )
    totals = {k: (v if v is not None else ZERO) for k, v in agg.items()}
    totals["available"] = totals["allotment"] - totals["reserved"] - totals["spent"]
    return totals


def bucket_spread(*, campaign: Campaign) -> dict:
    """The buckets summarised for staff: totals, how evenly the free room is spread, how many are (nearly) empty."""
    free = ExpressionWrapper(F("allotment") - F("reserved") - F("spent"),
                             output_field=DecimalField(max_digits=16, decimal_places=2))
    agg = BudgetBucket.objects.filter(campaign=campaign).annotate(free=free).aggregate(
        count=Count("id"), allotment=Sum("allotment"), reserved=Sum("reserved"), spent=Sum("spent"),
        free_min=Min("free"), free_max=Max("free"),
        empty=Count("id", filter=Q(free__lt=campaign.face_value)),
    )
    out = {k: (v if v is not None else ZERO) for k, v in agg.items()}
    out["available"] = out["allotment"] - out["reserved"] - out["spent"]
    out["free_avg"] = (out["available"] / out["count"]).quantize(Decimal("0.01")) if out["count"] else ZERO
    return out


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


# id -> (when, slug): the card list names each card's campaign from here instead of joining the campaign
# table per request (issue 14: the join was ~60 % of the list statement's planning and execution time in
# PostgreSQL). A renamed slug shows within CACHE_SECONDS, like every other read of `_CACHE`.
_SLUGS: dict[int, tuple[float, str]] = {}


def campaign_slugs(ids) -> dict[int, str]:
    """id -> slug of the given campaigns, from a per-process copy at most CACHE_SECONDS old (one query for the
    ids it lacks). An id with no campaign is absent from the answer."""
    import time

    now = time.monotonic()
    out, missing = {}, []
    for campaign_id in ids:
        hit = _SLUGS.get(campaign_id)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            out[campaign_id] = hit[1]
        elif campaign_id not in missing:
            missing.append(campaign_id)
    if missing:
        if len(_SLUGS) > 1000:
            _SLUGS.clear()
        for campaign_id, slug in Campaign.objects.filter(pk__in=missing).values_list("pk", "slug"):
            _SLUGS[campaign_id] = (now, slug)
            out[campaign_id] = slug
    return out


# slug -> (when, rendered detail, ETag): the campaign detail every app open polls (campaign/api.py).
DETAIL_CACHE: dict[str, tuple[float, bytes, str]] = {}
# While the budget covers fewer cards than this, `has_budget` is computed per request instead of cached:
# the flag is then exact exactly when it is about to turn.
DETAIL_EXACT_BELOW_CARDS = 1000


def campaign_cache_clear() -> None:
    _CACHE.clear()
    _SLUGS.clear()
    DETAIL_CACHE.clear()


def budget_gauges() -> list:
    """/metrics: budget figures of every campaign in live status (registered in CampaignConfig.ready)."""
    from miandan.api.metrics import StateGauge

    names = {
        "remaining": ("miandan_budget_remaining_yuan", "Budget not reserved or spent"),
        "reserved": ("miandan_budget_reserved_yuan", "Budget reserved by open cards"),
        "spent": ("miandan_budget_spent_yuan", "Budget spent on orders"),
        "total": ("miandan_budget_total_yuan", "Campaign total budget"),
    }
    samples: dict[str, list] = {k: [] for k in names}
    for c in Campaign.objects.filter(status=Campaign.Status.LIVE).values("pk", "slug", "total_budget"):
        totals = budget_totals(campaign_id=c["pk"])
        samples["remaining"].append(((c["slug"],), float(totals["available"])))
        samples["reserved"].append(((c["slug"],), float(totals["reserved"])))
        samples["spent"].append(((c["slug"],), float(totals["spent"])))
        samples["total"].append(((c["slug"],), float(c["total_budget"])))
    return [StateGauge(name, doc, ("campaign",), samples[k]) for k, (name, doc) in names.items()]


# --- the spend plan (issue 20) ----------------------------------------------------------

def pace_overview(*, campaign: Campaign, now=None, committed: Decimal | None = None) -> dict | None:
    """Plan vs actual right now (planned, committed, ahead, ratio, alert); None without a plan."""
    from django.utils import timezone

    from . import pacing

    if not pacing.has_plan(campaign):
        return None
    now = now or timezone.now()
    if committed is None:
        totals = budget_totals(campaign_id=campaign.pk)
        committed = totals["reserved"] + totals["spent"]
    status = pacing.pace_status(campaign, committed, now)
    status["mode"] = campaign.get_pace_mode_display()
    return status


def pace_overviews(*, now=None) -> list[tuple[Campaign, dict]]:
    """Every live campaign with a plan, with its plan-vs-actual figures (the alert and /metrics read this)."""
    from .models import PaceMode

    rows = []
    for campaign in Campaign.objects.live(now).exclude(pace_mode=PaceMode.NONE):
        overview = pace_overview(campaign=campaign, now=now)
        if overview is not None:
            rows.append((campaign, overview))
    return rows


def pace_gauges() -> list:
    """/metrics: plan vs actual of live campaigns with a plan; `miandan_budget_pace_alert` is 1 while ahead."""
    from miandan.api.metrics import StateGauge

    planned, ratio, alert = [], [], []
    for campaign, o in pace_overviews():
        planned.append(((campaign.slug,), float(o["planned"])))
        ratio.append(((campaign.slug,), float(o["ratio"]) if o["ratio"].is_finite() else 1e9))
        alert.append(((campaign.slug,), 1.0 if o["alert"] else 0.0))
    return [
        StateGauge("miandan_budget_planned_yuan", "Budget the spend plan allows committed now", ("campaign",), planned),
        StateGauge("miandan_budget_pace_ratio", "Committed / planned (above 1: ahead of plan)", ("campaign",), ratio),
        StateGauge("miandan_budget_pace_alert", "1 while spend runs ahead of plan by more than the margin",
                   ("campaign",), alert),
    ]
