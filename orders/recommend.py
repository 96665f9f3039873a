"""Choosing a drink for an "anything" request ("随便来一杯", "热乎的奶茶", "喜茶随便来杯果茶").

The choice is made where the order would go: the nearest open store (of the named brand, if
one was named) that has a drink fitting every wish, not sold out there. Inside that store the
brand's signature drink wins when it fits (it is what most people order), otherwise the first
fitting drink of the menu. Wishes are kept as said: a size, sugar or ice word must be on the
drink's menu; "热乎的"/"暖和的" needs a hot (or else warm) drink; "不要太甜" gets the sweetest
level below full sugar that the drink offers (七分糖, the canonical "少糖").

Read-only (a selector): the service turns the choice into an order preview that the user
confirms, and says why it was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from . import geo
from .models import Product, Store
from .parser import Wish

LESS_SWEET_ORDER = ("七分糖", "半糖", "三分糖", "微糖", "无糖")
HOT_ORDER = ("热", "温")
# A cup was asked for: ice cream is a menu item, but never a guess for "随便来一杯".
NOT_A_DRINK = {"冰淇淋"}


@dataclass(frozen=True)
class Choice:
    store: Store
    distance_m: int
    product: Product
    quantity: int
    size: str | None
    sugar: str | None
    ice: str | None
    because: tuple[str, ...] = field(default_factory=tuple)


class NothingFits(Exception):
    """Open stores are near, but none has a drink that fits every wish."""


def _fit(product: Product, wish: Wish) -> tuple[str | None, str | None] | None:
    """(sugar, ice) to make `product` with for this wish, or None when it cannot fit."""
    if wish.category is not None:
        if product.category != wish.category:
            return None
    elif product.category in NOT_A_DRINK:
        return None
    if wish.size is not None and wish.size not in (product.sizes or {}):
        return None
    sugars = product.sugar_options or []
    ices = product.ice_options or []
    sugar = wish.sugar
    if sugar is not None and sugar not in sugars:
        return None
    if sugar is None and wish.less_sweet:
        sugar = next((s for s in LESS_SWEET_ORDER if s in sugars), None)
        if sugar is None:
            return None
    ice = wish.ice
    if ice is not None and ice not in ices:
        return None
    if ice is None and wish.hot:
        ice = next((i for i in HOT_ORDER if i in ices), None)
        if ice is None:
            return None
    return sugar, ice


def recommend(*, wish: Wish, lat: float, lng: float) -> Choice | None:
    """The drink to suggest, or None when no open store is near. Raises NothingFits when stores are
    near but none of their drinks fits the wish."""
    hits = geo.stores_nearby(lat=lat, lng=lng, radius_m=settings.MIANDAN_ORDER_RADIUS_M,
                             brand_ids=[wish.brand_id] if wish.brand_id is not None else None,
                             limit=settings.MIANDAN_ORDER_CANDIDATE_STORES)
    hits = [h for h in hits if h.store.brand.participating]
    if not hits:
        return None
    menu: dict[int, list[Product]] = {}
    for p in Product.objects.filter(brand_id__in={h.store.brand_id for h in hits}, active=True).order_by("id"):
        menu.setdefault(p.brand_id, []).append(p)
    sold: dict[int, set[int]] = {}
    for store_id, product_id in Store.sold_out.through.objects.filter(
        store_id__in=[h.store.pk for h in hits]
    ).values_list("store_id", "product_id"):
        sold.setdefault(store_id, set()).add(product_id)
    for hit in hits:
        fitting = []
        for p in menu.get(hit.store.brand_id, []):
            if p.pk in sold.get(hit.store.pk, set()):
                continue
            made = _fit(p, wish)
            if made is not None:
                fitting.append((p, made))
        if not fitting:
            continue
        # The signature drink first, then menu order.
        product, (sugar, ice) = min(fitting, key=lambda pm: (not pm[0].is_default, pm[0].pk))
        because = []
        if product.is_default:
            because.append(f"是{hit.store.brand.name}的招牌")
        if wish.category:
            because.append(f"是{wish.category}")
        if wish.hot and ice in HOT_ORDER and wish.ice is None:
            because.append(f"可以做{ice}的")
        if wish.less_sweet and wish.sugar is None and sugar:
            because.append(f"不要太甜，按{sugar}做")
        return Choice(store=hit.store, distance_m=hit.distance_m, product=product, quantity=wish.quantity,
                      size=wish.size, sugar=sugar, ice=ice, because=tuple(because))
    raise NothingFits()


def confirm_text(choice: Choice) -> str:
    """A sentence that orders exactly this choice (the app can send it back to confirm)."""
    cups = "一" if choice.quantity == 1 else str(choice.quantity)
    options = "，".join(o for o in (choice.size, choice.sugar, choice.ice) if o)
    return f"来{cups}杯{choice.product.brand.name}的{choice.product.name}" + (f"，{options}" if options else "")
