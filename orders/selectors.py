"""Reads for stores and orders."""

from __future__ import annotations

from django.db.models import Count, Prefetch, QuerySet

from . import geo
from .models import Order, OrderEvent, OrderItem


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
