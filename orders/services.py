"""Orders: placement (store choice, capacity, card lock, price) and the fulfilment state machine.

Placement is an outbox: the order row, its items, the locked card and the first OrderEvent are
written in one transaction and the Celery task is sent on commit. Every later state change is a
conditional transition (lock the row, check the expected state, write, add the OrderEvent that
is unique per state), so a redelivered task or a racing cancel can never apply a step twice.
Merchant calls (network) happen between transactions, never inside one.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from campaign.errors import CampaignNotFound, CampaignNotLive
from campaign.gate import campaign_is_live, campaign_paused
from campaign.models import Campaign
from campaign.selectors import campaign_get_cached
from miandan.api.errors import InvalidInput
from miandan.db import retry_on_conflict
from miandan.tasks import enqueue, enqueue_on_commit
from vouchers.errors import NoVoucher
from vouchers.models import Voucher
from vouchers.selectors import voucher_get, voucher_usable
from vouchers.services import voucher_lock_for_order, voucher_redeem, voucher_release

from . import capacity, geo
from .errors import CannotCancel, NoStoreAvailable, NotUnderstood, OptionNotOffered, OrderNotFound
from .merchant import MerchantRejected, get_merchant
from .models import Order, OrderEvent, OrderItem, Product, Store, StoreMinute
from .parser import MAX_CUPS, Intent, Refusal, Wish, parse
from .recommend import Choice, NothingFits, confirm_text, recommend

logger = logging.getLogger(__name__)
ADVANCE_TASK = "orders.advance"  # enqueued by name: services never import tasks (tasks import services)
S = Order.Status
CANCELLABLE = (S.PLACED, S.SENT_TO_STORE)
ACTIVE = (S.PLACED, S.SENT_TO_STORE, S.ACCEPTED, S.DELIVERING)


# --- what to order -------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """One requested item before a store is chosen."""

    quantity: int
    size: str | None = None
    sugar: str | None = None
    ice: str | None = None
    candidates: tuple[tuple[int, str], ...] = ()  # (brand_id, product name) from the parser
    product_id: int | None = None  # explicit product (plain order API)
    brand_id: int | None = None  # generic drink of this brand

    @property
    def generic(self) -> bool:
        return not self.candidates and self.product_id is None


@dataclass
class QuotedItem:
    product: Product
    quantity: int
    size: str | None
    sugar: str | None
    ice: str | None
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass
class Quote:
    store: Store
    distance_m: int | None
    items: list[QuotedItem]
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        self.total = sum((i.line_total for i in self.items), Decimal("0.00"))


class _NotSold(Exception):
    pass


def _quote_at(store: Store, lines: tuple[Line, ...], products: dict[tuple[int, str], Product],
              defaults: dict[int, Product], by_id: dict[int, Product], sold_out: set[int]) -> list[QuotedItem]:
    items = []
    for line in lines:
        if line.product_id is not None:
            product = by_id.get(line.product_id)
            if product is None or product.brand_id != store.brand_id:
                raise _NotSold()
        elif line.candidates:
            name = next((n for b, n in line.candidates if b == store.brand_id), None)
            product = products.get((store.brand_id, name)) if name else None
        else:
            if line.brand_id is not None and line.brand_id != store.brand_id:
                raise _NotSold()
            product = defaults.get(store.brand_id)
        if product is None or not product.active or product.pk in sold_out:
            raise _NotSold()
        size_key = line.size or product.default_size or next(iter(product.sizes or {}), "")
        if line.size and line.size not in (product.sizes or {}):
            raise OptionNotOffered(f"{product.name}没有{line.size}", list(product.sizes))
        if line.sugar and line.sugar not in product.sugar_options:
            raise OptionNotOffered(f"{product.name}不能做{line.sugar}", list(product.sugar_options))
        if line.ice and line.ice not in product.ice_options:
            raise OptionNotOffered(f"{product.name}不能做{line.ice}", list(product.ice_options))
        surcharge = Decimal(str((product.sizes or {}).get(size_key, "0")))
        items.append(QuotedItem(product=product, quantity=line.quantity, size=line.size, sugar=line.sugar, ice=line.ice,
                                unit_price=(product.price + surcharge).quantize(Decimal("0.01"))))
    return items


def _quotes(lines: tuple[Line, ...], stores: list[tuple[Store, int | None]]
            ) -> tuple[list[Quote], OptionNotOffered | None]:
    """Every candidate store (nearest first) that sells all lines with the asked options."""
    brand_ids = {s.brand_id for s, _ in stores}
    products: dict[tuple[int, str], Product] = {}
    defaults: dict[int, Product] = {}
    by_id: dict[int, Product] = {}
    explicit = [line.product_id for line in lines if line.product_id is not None]
    qs = Product.objects.filter(brand_id__in=brand_ids)
    for p in qs if not explicit else qs | Product.objects.filter(pk__in=explicit):
        products[(p.brand_id, p.name)] = p
        by_id[p.pk] = p
        if p.is_default and p.active:
            defaults[p.brand_id] = p
    sold: dict[int, set[int]] = {}
    for store_id, product_id in Store.sold_out.through.objects.filter(
        store_id__in=[s.pk for s, _ in stores]
    ).values_list("store_id", "product_id"):
        sold.setdefault(store_id, set()).add(product_id)
    quotes, problem = [], None
    for store, distance in stores:
        try:
            quotes.append(Quote(store=store, distance_m=distance,
                                items=_quote_at(store, lines, products, defaults, by_id, sold.get(store.pk, set()))))
        except OptionNotOffered as exc:
            problem = problem or exc
        except _NotSold:
            continue
    return quotes, problem


# --- which campaign and card -----------------------------------------------------------

def _campaign_for(*, user, slug: str | None, voucher_code: str | None = None) -> Campaign | None:
    """The campaign an order belongs to: named, or the one of the card it would use, or the only live one."""
    now = timezone.now()
    if voucher_code and not slug:
        # A named card decides the campaign; someone else's code is simply "no such card".
        card = voucher_get(user=user, code=voucher_code)
        if card is None:
            raise NoVoucher("找不到这张免单卡")
        slug = card.campaign.slug
    if slug:
        # perf (issue 14): the 0.5 s per-process copy the join and the guard use, not a query per order;
        # the card lock and the budget are still decided under locks in the placement transaction.
        campaign = campaign_get_cached(slug=slug)
        if campaign is None:
            raise CampaignNotFound()
        if not campaign_is_live(campaign, now):
            raise CampaignNotLive()
        return campaign
    live = Campaign.objects.live(now)
    card = voucher_usable(user=user, now=now).filter(campaign__in=live).select_related("campaign").first()
    if card is not None:
        return card.campaign
    only = list(live[:2])
    return only[0] if len(only) == 1 else None


# --- quote and placement ------------------------------------------------------------------

@dataclass(frozen=True)
class OrderRequest:
    """What the user asked for, before a store is chosen (filled by the chat parser or the plain order API)."""

    lines: tuple[Line, ...]
    lat: float | None = None
    lng: float | None = None
    store_id: int | None = None  # the plain order API names the store; chat orders look for the nearest
    campaign_slug: str | None = None
    voucher_code: str | None = None
    pay_full_price: bool = False
    source_text: str = ""


@dataclass
class Placement:
    """What `order_quote` found or `order_place` did; `order` is None for a quote (the preview)."""

    quote: Quote
    subsidy: Decimal
    amount_to_pay: Decimal
    voucher: Voucher | None
    campaign: Campaign | None
    order: Order | None = None
    chat: dict = field(default_factory=dict)  # chat answers only: recommendation, corrections


@dataclass
class _Plan:
    campaign: Campaign | None
    quotes: list[Quote]  # every store that can make it, nearest first
    card: Voucher | None


class _StoreFull(Exception):
    pass


def _candidate_stores(*, request: OrderRequest) -> list[tuple[Store, int | None]]:
    lat, lng = request.lat, request.lng
    if request.store_id is not None:
        store = Store.objects.select_related("brand").filter(pk=request.store_id).first()
        if store is None:
            raise InvalidInput("门店不存在", extra={"fields": {"store": ["门店不存在"]}})
        if not store.active or not store.brand.participating or not geo.is_open(store):
            raise NoStoreAvailable("该门店现在不营业")
        distance = round(geo.haversine_m(lat, lng, store.lat, store.lng)) if lat is not None and lng is not None else None
        return [(store, distance)]
    brand_ids = None
    wanted = [{b for b, _ in line.candidates} if line.candidates else ({line.brand_id} if line.brand_id else None)
              for line in request.lines]
    for w in wanted:
        if w is not None:
            brand_ids = w if brand_ids is None else brand_ids & w
    if brand_ids is not None and not brand_ids:
        raise NoStoreAvailable("这几款饮品不在同一个品牌，请分开下单")
    hits = geo.stores_nearby(lat=lat, lng=lng, radius_m=settings.MIANDAN_ORDER_RADIUS_M, brand_ids=brand_ids,
                             limit=settings.MIANDAN_ORDER_CANDIDATE_STORES)
    return [(h.store, h.distance_m) for h in hits if h.store.brand.participating]


def _plan(*, user, request: OrderRequest) -> _Plan:
    """Reads only: campaign, open switch, the stores that can make it, the card it would use."""
    total_cups = sum(line.quantity for line in request.lines)
    if total_cups > MAX_CUPS:
        raise InvalidInput(f"每单最多 {MAX_CUPS} 杯", extra={"fields": {"items": [f"每单最多 {MAX_CUPS} 杯"]}})
    campaign = _campaign_for(user=user, slug=request.campaign_slug, voucher_code=request.voucher_code)
    if campaign is not None:
        paused = campaign_paused(campaign, "orders")
        if paused is not None:
            raise paused
    stores = _candidate_stores(request=request)
    quotes, problem = _quotes(request.lines, stores)
    if not quotes:
        if problem is not None:
            raise problem
        if request.store_id is not None:
            raise InvalidInput("该门店没有这款商品", extra={"fields": {"items": ["该门店没有这款商品或已售罄"]}})
        raise NoStoreAvailable("附近没有营业中的门店有这款饮品")
    card = None
    if campaign is not None:
        card = voucher_usable(user=user, campaign=campaign, code=request.voucher_code).first()
    if card is None and not request.pay_full_price:
        raise NoVoucher("您没有可用的免单卡；如需原价购买，请确认按原价下单")
    return _Plan(campaign=campaign, quotes=quotes, card=card)


def _pricing(quote: Quote, card: Voucher | None) -> tuple[Decimal, Decimal]:
    subsidy = min(quote.total, card.face_value) if card is not None else Decimal("0.00")
    return subsidy, quote.total - subsidy


@retry_on_conflict()
@transaction.atomic(durable=True)
def _place_tx(*, user, campaign: Campaign | None, quote: Quote, request: OrderRequest, db_capacity: bool) -> Order:
    if db_capacity and capacity.take_db(quote.store) is None:
        raise _StoreFull()
    order = Order.objects.create(
        user=user, campaign=campaign, store=quote.store, status=S.PLACED, total_price=quote.total,
        subsidy=Decimal("0.00"), amount_to_pay=quote.total, source_text=request.source_text[:200],
    )
    items = OrderItem.objects.bulk_create(
        OrderItem(order=order, product=i.product, quantity=i.quantity, size=i.size or "", sugar=i.sugar or "",
                  ice=i.ice or "", unit_price=i.unit_price, line_total=i.line_total)
        for i in quote.items
    )
    card = None
    if campaign is not None:
        try:
            card = voucher_lock_for_order(user=user, campaign=campaign, order_id=order.pk,
                                          voucher_code=request.voucher_code)
        except NoVoucher:
            if not request.pay_full_price:
                raise
    if card is not None:
        subsidy = min(quote.total, card.face_value)
        Order.objects.filter(pk=order.pk).update(voucher=card, subsidy=subsidy, amount_to_pay=quote.total - subsidy)
        order.voucher, order.subsidy, order.amount_to_pay = card, subsidy, quote.total - subsidy
    event = OrderEvent.objects.create(order=order, from_status="", to_status=S.PLACED,
                                      note=f"下单：{quote.store.name}" + (f"，使用免单卡 {card.code}" if card else "，原价"))
    # The caller renders the order from memory (what was just written) instead of reading it back.
    for item in items:
        item.product.brand = quote.store.brand
    order.store, order.campaign = quote.store, campaign
    order._prefetched_objects_cache = {"items": items, "events": [event]}
    enqueue_on_commit(ADVANCE_TASK, order.pk)  # broker down: the sweeper re-sends placed orders
    return order


def order_quote(*, user, request: OrderRequest) -> Placement:
    """What `order_place` would do right now, with no side effect: the chat preview.

    The store is the nearest one that can make it and is not yet full this minute.
    """
    plan = _plan(user=user, request=request)
    quote = next((q for q in plan.quotes if capacity.used(q.store) < q.store.capacity_per_minute), None)
    if quote is None:
        raise NoStoreAvailable()
    subsidy, to_pay = _pricing(quote, plan.card)
    return Placement(quote=quote, subsidy=subsidy, amount_to_pay=to_pay, voucher=plan.card, campaign=plan.campaign)


def order_place(*, user, request: OrderRequest) -> Placement:
    """Place an order at the nearest open store that sells it and has capacity this minute.

    Each store attempt is its own durable transaction: a full store is skipped for the next one.
    A Redis capacity slot of an attempt that did not commit is given back.
    """
    plan = _plan(user=user, request=request)
    for quote in plan.quotes:
        slot = capacity.take_redis(quote.store)
        if slot is None:
            continue  # full this minute
        try:
            order = _place_tx(user=user, campaign=plan.campaign, quote=quote, request=request,
                              db_capacity=slot is False)
        except _StoreFull:
            continue
        except BaseException:
            if slot:
                capacity.give_back(slot)
            raise
        return Placement(quote=quote, subsidy=order.subsidy, amount_to_pay=order.amount_to_pay, voucher=order.voucher,
                         campaign=plan.campaign, order=order)
    raise NoStoreAvailable()


def _lines_from_intent(*, user, intent: Intent) -> tuple[tuple[Line, ...], int | None]:
    if not intent.repeat_last:
        return tuple(Line(quantity=i.quantity, size=i.size, sugar=i.sugar, ice=i.ice, candidates=i.candidates,
                          brand_id=i.brand_id if i.generic else None) for i in intent.items), None
    last = Order.objects.filter(user=user).exclude(status=S.CANCELLED).order_by("-id").first()
    if last is None:
        raise NotUnderstood("您还没有下过单，说说想喝什么吧", why="no_product")
    ov = intent.overrides
    items = list(last.items.all())
    quantity = ov.get("quantity")
    if quantity is not None and len(items) != 1:
        raise NotUnderstood("上次点了好几款，“老样子”要几杯请分别说", suggestions=["老样子"], why="ambiguous")
    lines = tuple(Line(quantity=quantity or i.quantity, size=ov.get("size") or i.size or None,
                       sugar=ov.get("sugar") or i.sugar or None, ice=ov.get("ice") or i.ice or None,
                       product_id=i.product_id) for i in items)
    return lines, last.store_id


def _lines_from_wish(*, wish: Wish, lat: float, lng: float) -> tuple[list[Line], Choice]:
    """An "anything" request: the recommended drink, as the one line to preview."""
    try:
        choice = recommend(wish=wish, lat=lat, lng=lng)
    except NothingFits:
        raise NotUnderstood("附近营业的门店没有完全符合要求的饮品，换个说法试试？",
                            suggestions=["随便来一杯", "来杯热的奶茶", "来杯少冰的果茶"], why="option_not_offered") from None
    if choice is None:
        raise NoStoreAvailable("附近没有营业中的门店")
    line = Line(quantity=choice.quantity, size=choice.size, sugar=choice.sugar, ice=choice.ice,
                candidates=((choice.product.brand_id, choice.product.name),))
    return [line], choice


def _chat_notes(intent: Intent, choice: Choice | None, placement: Placement) -> dict:
    """What the chat answer adds to a preview: why a drink was recommended, which typed words were corrected."""
    notes: dict = {}
    if choice is not None:
        store = placement.quote.store
        where = f"离您最近、现在营业的是{store.brand.name}（{store.name}" + (
            f"，约 {placement.quote.distance_m} 米）" if placement.quote.distance_m is not None else "）")
        because = "，".join(choice.because)
        notes["recommendation"] = {
            "reason": f"{where}，推荐{choice.product.name}" + (f"：{because}" if because else ""),
            "confirm_text": confirm_text(choice),
        }
    if intent.corrections:
        notes["corrections"] = [{"typed": typed, "product": product} for typed, product in intent.corrections]
    return notes


def order_chat(*, user, text: object, lat: float, lng: float, campaign_slug: str | None = None,
               pay_full_price: bool = False, preview: bool = False) -> Placement:
    """One sentence -> an order (or, with `preview`, a quote). Refusals are 422 `not_understood` with suggestions.

    An "anything" request is always answered with a quote (a recommendation the user confirms).
    """
    intent = parse(text, user)
    if isinstance(intent, Refusal):
        raise NotUnderstood(intent.detail, suggestions=intent.suggestions, why=intent.why)
    choice = None
    if intent.wish is not None:
        # The campaign and its orders switch are checked before the recommendation, as placement does.
        campaign = _campaign_for(user=user, slug=campaign_slug)
        if campaign is not None:
            paused = campaign_paused(campaign, "orders")
            if paused is not None:
                raise paused
        lines, choice = _lines_from_wish(wish=intent.wish, lat=lat, lng=lng)
        preview = True
    else:
        lines, last_store = _lines_from_intent(user=user, intent=intent)
        if last_store is not None:
            # "老样子": the same products, so the same brand; nearest store of that brand that sells them.
            brand_id = Store.objects.filter(pk=last_store).values_list("brand_id", flat=True).first()
            names = dict(Product.objects.filter(pk__in=[line.product_id for line in lines]).values_list("pk", "name"))
            lines = tuple(Line(quantity=line.quantity, size=line.size, sugar=line.sugar, ice=line.ice,
                               candidates=((brand_id, names[line.product_id]),)) for line in lines)
    request = OrderRequest(lines=tuple(lines), lat=lat, lng=lng, campaign_slug=campaign_slug,
                           pay_full_price=pay_full_price, source_text=str(text)[:200])
    try:
        placement = order_quote(user=user, request=request) if preview else order_place(user=user, request=request)
    except OptionNotOffered as exc:
        # In a chat the app shows the store's choices as buttons.
        raise NotUnderstood(exc.hint, suggestions=[f"要{o}的" for o in exc.options], why="option_not_offered") from exc
    placement.chat = _chat_notes(intent, choice, placement)
    return placement


# --- the state machine -------------------------------------------------------------------

@retry_on_conflict()
@transaction.atomic(durable=True)
def order_transition(*, order_id: int, from_statuses: Iterable[str], to_status: str, note: str = "",
                     **fields) -> Order | None:
    """Move an order from one of `from_statuses` to `to_status`, or do nothing (returns None).

    Completion redeems the card (spend + release of the rest); failure and cancellation release it.
    """
    order = Order.objects.select_for_update().filter(pk=order_id).first()
    if order is None or order.status not in set(from_statuses):
        return None
    previous = order.status
    now = timezone.now()
    updated = Order.objects.filter(pk=order_id, status=previous).update(status=to_status, state_changed_at=now, **fields)
    if updated != 1:
        return None
    OrderEvent.objects.create(order_id=order_id, from_status=previous, to_status=to_status, note=note[:255])
    if order.voucher_id is not None:
        if to_status == S.COMPLETED:
            voucher_redeem(voucher_id=order.voucher_id, order_id=order_id, order_amount=order.total_price)
        elif to_status in (S.FAILED, S.CANCELLED):
            voucher_release(voucher_id=order.voucher_id, order_id=order_id)
    order.refresh_from_db()
    return order


def order_cancel(*, user, order_id: int) -> Order:
    order = Order.objects.filter(pk=order_id, user=user).first()
    if order is None:
        raise OrderNotFound()
    if order.status == S.CANCELLED:
        return order
    moved = order_transition(order_id=order_id, from_statuses=CANCELLABLE, to_status=S.CANCELLED, note="用户取消")
    if moved is None:
        order.refresh_from_db()
        if order.status == S.CANCELLED:
            return order
        raise CannotCancel(f"订单当前状态为“{order.get_status_display()}”，不能取消了")
    return moved


def order_fail(*, order_id: int, reason: str) -> Order | None:
    return order_transition(order_id=order_id, from_statuses=ACTIVE, to_status=S.FAILED, note=reason,
                            failure_reason=reason[:255])


def order_advance(*, order_id: int, max_steps: int = 8) -> str | None:
    """Drive one order forward as far as it goes: each step one merchant call, then one transition.

    Safe to run twice at once or again after a crash: a step whose transition finds the order
    already moved on does nothing, and the loop continues from wherever the order really is.
    MerchantTimeout propagates (the task retries with backoff); a rejection fails the order.
    """
    merchant = get_merchant()
    status = None
    for _ in range(max_steps):
        order = Order.objects.select_related("store").filter(pk=order_id).first()
        if order is None:
            return None
        status = order.status
        if status in Order.FINAL:
            return status
        try:
            if status == S.PLACED:
                ref = merchant.submit(order)
                order_transition(order_id=order_id, from_statuses=[S.PLACED], to_status=S.SENT_TO_STORE,
                                 note="已发送门店", merchant_ref=ref[:64], attempts=F("attempts") + 1)
            elif status == S.SENT_TO_STORE:
                merchant.await_acceptance(order)
                order_transition(order_id=order_id, from_statuses=[S.SENT_TO_STORE], to_status=S.ACCEPTED, note="门店已接单")
            elif status == S.ACCEPTED:
                merchant.dispatch(order)
                order_transition(order_id=order_id, from_statuses=[S.ACCEPTED], to_status=S.DELIVERING, note="配送中")
            elif status == S.DELIVERING:
                merchant.deliver(order)
                order_transition(order_id=order_id, from_statuses=[S.DELIVERING], to_status=S.COMPLETED, note="已送达")
        except MerchantRejected as exc:
            order_fail(order_id=order_id, reason=str(exc) or "门店拒单")
    return status


def sweep_queries(now) -> tuple[QuerySet, QuerySet]:
    """The sweeper's two scans: orders past the accept deadline, orders stuck in a state (ids, oldest first).

    Oldest first along the partial indexes order_unaccepted_age / order_active_since, which hold only
    orders in flight: a batch is an index range whatever the number of finished orders.
    """
    deadline = now - dt.timedelta(seconds=settings.MIANDAN_ORDER_ACCEPT_DEADLINE_SECONDS)
    stuck_before = now - dt.timedelta(seconds=settings.MIANDAN_ORDER_STUCK_SECONDS)
    overdue = Order.objects.filter(status__in=CANCELLABLE, created_at__lt=deadline).order_by("created_at")
    stuck = Order.objects.filter(status__in=ACTIVE, state_changed_at__lt=stuck_before).order_by("state_changed_at")
    return overdue.values_list("pk", flat=True), stuck.values_list("pk", flat=True)


def order_sweep(*, now=None, limit: int = 500) -> dict:
    """Beat job: fail orders no store accepted in time, re-send orders stuck in a state, trim counters."""
    now = now or timezone.now()
    overdue, stuck = sweep_queries(now)
    failed = 0
    for order_id in overdue[:limit]:
        if order_transition(order_id=order_id, from_statuses=CANCELLABLE, to_status=S.FAILED,
                            note="门店超时未接单", failure_reason="门店超时未接单"):
            failed += 1
    resent = 0
    for order_id in stuck[:limit]:
        if not enqueue(ADVANCE_TASK, order_id):
            break  # broker down: the next sweep tries again
        resent += 1
    trimmed, _ = StoreMinute.objects.filter(minute__lt=capacity.current_minute() - 10).delete()
    return {"failed": failed, "resent": resent, "trimmed": trimmed}
