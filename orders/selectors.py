"""Reads for stores and orders."""

from __future__ import annotations

from django.db.models import Count, F, Prefetch, QuerySet, Sum

from . import geo
from .models import BrandDaySubsidy, MerchantEvent, Order, OrderEvent, OrderItem, StoreDaySubsidy

IN_FLIGHT_STATES = ("placed", "sent_to_store", "accepted", "delivering")
LAG_SAMPLE = 1000  # the callback lag is measured over the most recent events


def stores_nearby(*, lat: float, lng: float, radius_m: int = 3000, limit: int = 50) -> list[geo.Hit]:
    return geo.stores_nearby(lat=lat, lng=lng, radius_m=radius_m, limit=limit)


def _with_details(qs: QuerySet[Order]) -> QuerySet[Order]:
    return qs.select_related("store__brand", "campaign", "voucher").prefetch_related(
        Prefetch("items", queryset=OrderItem.objects.select_related("product__brand").order_by("id")),
        Prefetch("events", queryset=OrderEvent.objects.order_by("id")),
    )


def order_list(*, user, status: str | None = None) -> QuerySet[Order]:
    qs = Order.objects.filter(user=user)
    if status:
        qs = qs.filter(status=status)
    return _with_details(qs).order_by("-id")


def order_get(*, user, order_id: int) -> Order | None:
    return _with_details(Order.objects.filter(user=user, pk=order_id)).first()


def order_gauges() -> list:
    """/metrics: orders by state (registered in OrdersConfig.ready)."""
    from miandan.api.metrics import StateGauge

    rows = Order.objects.values_list("status").annotate(n=Count("id"))
    return [StateGauge("miandan_orders", "Orders by state", ("state",), [((status,), float(n)) for status, n in rows])]


def orders_in_flight(*, campaign=None) -> dict[str, int]:
    """Orders not yet final, by state (optionally of one campaign: tagged with it or paid with its card)."""
    from django.db.models import Q

    qs = Order.objects.filter(status__in=IN_FLIGHT_STATES)
    if campaign is not None:
        qs = qs.filter(Q(campaign=campaign) | Q(voucher__campaign=campaign))
    counts = dict.fromkeys(IN_FLIGHT_STATES, 0)
    for status, n in qs.order_by().values_list("status").annotate(n=Count("id")):
        counts[status] = n
    return counts


def callback_lag(*, sample: int = LAG_SAMPLE) -> dict[str, float | int | None]:
    """Seconds from the merchant's event (its clock) to our recording it, over the last `sample` events.

    Includes the merchant's own retry delays, so a platform that answered slowly or not at all shows here.
    """
    rows = list(MerchantEvent.objects.order_by("-id").values_list("received_at", "occurred_at")[:sample])
    lags = sorted(max(0.0, (received - occurred).total_seconds()) for received, occurred in rows)
    if not lags:
        return {"events": 0, "p50": None, "p99": None, "max": None}

    def pct(q: float) -> float:
        return round(lags[min(len(lags) - 1, int(q * len(lags)))], 3)

    return {"events": len(lags), "p50": pct(0.5), "p99": pct(0.99), "max": round(lags[-1], 3)}


def fulfilment_gauges() -> list:
    """/metrics: orders in flight by state, the oldest one's age, and the merchant callback lag
    (registered in OrdersConfig.ready)."""
    from django.utils import timezone

    from miandan.api.metrics import StateGauge

    in_flight = orders_in_flight()
    oldest = Order.objects.filter(status__in=IN_FLIGHT_STATES).order_by("created_at").values_list(
        "created_at", flat=True).first()
    lag = callback_lag()
    quantiles = [((q,), float(lag[key])) for q, key in (("0.5", "p50"), ("0.99", "p99"), ("1", "max"))
                 if lag[key] is not None]
    return [
        StateGauge("miandan_orders_in_flight", "Orders placed and not yet final, by state", ("state",),
                   [((state,), float(n)) for state, n in in_flight.items()]),
        StateGauge("miandan_orders_oldest_in_flight_seconds", "Age of the oldest order not yet final", (),
                   [((), (timezone.now() - oldest).total_seconds() if oldest else 0.0)]),
        StateGauge("miandan_merchant_callback_lag_seconds",
                   f"Merchant event time to recording, over the last {LAG_SAMPLE} events", ("quantile",), quantiles),
    ]


def store_cap_differences(*, campaign, using: str = "default") -> list[str]:
    """Each store / brand daily subsidy counter equals the subsidy of the live orders counted in it (issue 20).

    Registered with `vouchers.selectors.reconcile`, so it reads the same snapshot as the money.
    """
    counted = (Order.objects.using(using).filter(campaign=campaign, capped_on__isnull=False)
               .exclude(status__in=(Order.Status.FAILED, Order.Status.CANCELLED)).order_by())
    diffs: list[str] = []
    for label, model, key, path in (("门店", StoreDaySubsidy, "store_id", "store_id"),
                                    ("品牌", BrandDaySubsidy, "brand_id", "store__brand_id")):
        counters = {(row[key], row["day"]): row["subsidy"]
                    for row in model.objects.using(using).filter(campaign=campaign).values(key, "day", "subsidy")}
        sums = {(row["k"], row["capped_on"]): row["t"]
                for row in counted.annotate(k=F(path)).values("k", "capped_on").annotate(t=Sum("subsidy"))}
        for k in sorted(set(counters) | set(sums), key=lambda x: (x[1], x[0])):
            have, want = counters.get(k, 0) or 0, sums.get(k, 0) or 0
            if have != want:
                diffs.append(f"{k[1]} {label} #{k[0]} 每日补贴计数 {have} ≠ 当日计入订单补贴合计 {want}")
    return diffs
