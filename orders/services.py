"""Orders: placement (store choice, capacity, card lock, price) and the fulfilment state machine.

Placement is an outbox: the order row, its items, the locked card and the first OrderEvent are
written in one transaction and the submit task is sent on commit. Every later state change is a
conditional transition (lock the row, check the expected state, write, add the OrderEvent that
is unique per state), so a redelivered task, a repeated merchant event or a racing cancel can never
apply a step twice.

Fulfilment never waits on a store: submitting is one short task (`order_submit`); the merchant's
acceptance, rejection, dispatch and delivery arrive later as events (`merchant_event_apply`, from the
callback endpoint or from the poller), each one conditional transition. Orders nobody has heard about
for a while are due (`Order.next_check_at`) and `order_poll_due` asks the merchant about them in batches.
Merchant calls (network) happen between transactions, never inside one.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from prometheus_client import Counter

from campaign import pacing
from campaign.errors import CampaignNotLive
from campaign.gate import campaign_is_live, campaign_paused, campaign_require_visible
from campaign.models import Campaign
from campaign.selectors import campaign_get_cached
from campaign.services import audit
from events.models import EventType
from events.services import event_record
from miandan.api.errors import InvalidInput, NotFound
from miandan.db import retry_on_conflict
from miandan.tasks import enqueue, enqueue_on_commit
from vouchers.errors import NoVoucher
from vouchers.models import Voucher
from vouchers.selectors import voucher_get, voucher_usable
from vouchers.services import voucher_lock_for_order, voucher_redeem, voucher_release

from . import capacity, geo
from .errors import (
    CannotCancel,
    EventIdReused,
    NoStoreAvailable,
    NotUnderstood,
    OptionNotOffered,
    OrderNotFound,
    StoreCapReached,
    UnknownOrder,
)
from .merchant import InboundEvent, MerchantRejected, MerchantUnavailable, events_sorted, get_merchant
from .models import (
    BrandDaySubsidy,
    MerchantEvent,
    Order,
    OrderEvent,
    OrderItem,
    Product,
    Store,
    StoreDaySubsidy,
    StoreMinute,
)
from .parser import MAX_CUPS, Intent, Refusal, Wish, parse
from .recommend import Choice, NothingFits, confirm_text, recommend

logger = logging.getLogger(__name__)
# Enqueued by name: services never import tasks (tasks import services).
SUBMIT_TASK = "orders.submit"
CANCEL_TASK = "orders.merchant_cancel"
S = Order.Status
CANCELLABLE = (S.PLACED, S.SENT_TO_STORE)
ACTIVE = (S.PLACED, S.SENT_TO_STORE, S.ACCEPTED, S.DELIVERING)
IN_FLIGHT = (S.SENT_TO_STORE, S.ACCEPTED, S.DELIVERING)  # the merchant has it
EVENT_RETENTION = dt.timedelta(days=7)  # merchants retry a callback for hours, never for days


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
        campaign = campaign_require_visible(campaign_get_cached(slug=slug))
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


class _StoreCapped(Exception):
    """This store (or its brand) has no subsidy left today: the attempt rolls back, the next store is tried."""


def _take_day_subsidy(model, key: str, *, campaign_id: int, key_id: int, day: dt.date, amount: Decimal,
                      cap: Decimal | None) -> bool:
    """+amount on the (campaign, store|brand, day) counter unless it would pass `cap`: one conditional upsert.

    The row stays locked until commit, so concurrent placements at one store queue on it and each sees the
    others' subsidy: the cap can never be passed. With no cap the counter still moves (the other cap of the
    pair is set), unconditionally.
    """
    table = connection.ops.quote_name(model._meta.db_table)
    first, again, cond_params = "true", "true", []
    if cap is not None:
        first, again, cond_params = "%s <= %s", "t.subsidy + EXCLUDED.subsidy <= %s", [amount, cap, cap]
    sql = (
        f"INSERT INTO {table} AS t (campaign_id, {key}, day, subsidy) SELECT %s, %s, %s, %s WHERE {first} "
        f"ON CONFLICT (campaign_id, {key}, day) DO UPDATE SET subsidy = t.subsidy + EXCLUDED.subsidy "
        f"WHERE {again} RETURNING 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [campaign_id, key_id, day, amount, *cond_params])
        return cursor.fetchone() is not None


def _take_store_caps(*, campaign: Campaign | None, store: Store, subsidy: Decimal, placed_at: dt.datetime,
                     ) -> dt.date | None:
    """Count the order's subsidy against the campaign's daily store and brand caps; the day it counted in.

    None (no query at all) when the campaign sets neither cap. Raises _StoreCapped when either is full.
    """
    if campaign is None or subsidy <= 0 or (
        campaign.store_daily_subsidy_cap is None and campaign.brand_daily_subsidy_cap is None
    ):
        return None
    day = pacing.local_day(placed_at)
    if not _take_day_subsidy(StoreDaySubsidy, "store_id", campaign_id=campaign.pk, key_id=store.pk, day=day,
                             amount=subsidy, cap=campaign.store_daily_subsidy_cap):
        raise _StoreCapped()
    if not _take_day_subsidy(BrandDaySubsidy, "brand_id", campaign_id=campaign.pk, key_id=store.brand_id, day=day,
                             amount=subsidy, cap=campaign.brand_daily_subsidy_cap):
        raise _StoreCapped()
    return day


def _release_store_caps(order: Order) -> None:
    """Give a cancelled / failed order's subsidy back to its day's store and brand counters (caller's tx)."""
    brand_id = Store.objects.filter(pk=order.store_id).values_list("brand_id", flat=True).get()
    for model, filters in ((StoreDaySubsidy, {"store_id": order.store_id}), (BrandDaySubsidy, {"brand_id": brand_id})):
        # The CHECK (subsidy >= 0) refuses a double release; the state machine makes it impossible anyway.
        model.objects.filter(campaign_id=order.campaign_id, day=order.capped_on, **filters).update(
            subsidy=F("subsidy") - order.subsidy)


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


def _order_event(order: Order, *, previous: str, to_status: str, note: str) -> None:
    """The `order.status_changed` event of the stream, in the transition's transaction (docs/events.md)."""
    event_record(type=EventType.ORDER_STATUS_CHANGED, campaign_id=order.campaign_id, data={
        "order_id": order.pk, "from": previous, "to": to_status, "user_id": order.user_id, "store_id": order.store_id,
        "voucher_id": order.voucher_id, "total_price": order.total_price, "subsidy": order.subsidy, "note": note[:255],
    })


@retry_on_conflict()
@transaction.atomic(durable=True)
def _place_tx(*, user, campaign: Campaign | None, quote: Quote, request: OrderRequest, db_capacity: bool) -> Order:
    if db_capacity and capacity.take_db(quote.store) is None:
        raise _StoreFull()
    order = Order.objects.create(
        user=user, campaign=campaign, store=quote.store, status=S.PLACED, total_price=quote.total,
        subsidy=Decimal("0.00"), amount_to_pay=quote.total, source_text=request.source_text[:200],
        # The merchant it goes to is fixed now, so its events are recognised even before the submit task ran;
        # if that task is lost, the poller re-sends the order once it is due.
        merchant=get_merchant().name,
        next_check_at=timezone.now() + dt.timedelta(seconds=settings.MIANDAN_ORDER_STUCK_SECONDS),
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
        capped_on = _take_store_caps(campaign=campaign, store=quote.store, subsidy=subsidy, placed_at=order.created_at)
        Order.objects.filter(pk=order.pk).update(voucher=card, subsidy=subsidy, amount_to_pay=quote.total - subsidy,
                                                 capped_on=capped_on)
        order.voucher, order.subsidy, order.amount_to_pay = card, subsidy, quote.total - subsidy
        order.capped_on = capped_on
    _order_event(order, previous="", to_status=S.PLACED, note="")
    event = OrderEvent.objects.create(order=order, from_status="", to_status=S.PLACED,
                                      note=f"下单：{quote.store.name}" + (f"，使用免单卡 {card.code}" if card else "，原价"))
    # The caller renders the order from memory (what was just written) instead of reading it back.
    for item in items:
        item.product.brand = quote.store.brand
    order.store, order.campaign = quote.store, campaign
    order._prefetched_objects_cache = {"items": items, "events": [event]}
    enqueue_on_commit(SUBMIT_TASK, order.pk)  # broker down: the poller re-sends it when it is due
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
    A store whose daily subsidy cap (or its brand's) is used up is skipped for the next nearest one; when
    that was the only reason nothing fitted, the answer is 409 `store_cap_reached`.
    """
    plan = _plan(user=user, request=request)
    capped = False
    for quote in plan.quotes:
        slot = capacity.take_redis(quote.store)
        if slot is None:
            continue  # full this minute
        try:
            order = _place_tx(user=user, campaign=plan.campaign, quote=quote, request=request,
                              db_capacity=slot is False)
        except _StoreFull:
            continue
        except _StoreCapped:
            capped = True
            if slot:
                capacity.give_back(slot)
            continue
        except BaseException:
            if slot:
                capacity.give_back(slot)
            raise
        return Placement(quote=quote, subsidy=order.subsidy, amount_to_pay=order.amount_to_pay, voucher=order.voucher,
                         campaign=plan.campaign, order=order)
    if capped:
        raise StoreCapReached()
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

def _transition_locked(order: Order, *, to_status: str, note: str = "", **fields) -> Order | None:
    """Move `order` (locked by the caller, status as read under that lock) to `to_status`. Caller's transaction.

    Completion redeems the card (spend + release of the rest); failure and cancellation release it.
    A final state clears `next_check_at`, so the order leaves the poller's index.
    """
    previous = order.status
    now = timezone.now()
    if to_status in Order.FINAL:
        fields["next_check_at"] = None
    updated = Order.objects.filter(pk=order.pk, status=previous).update(status=to_status, state_changed_at=now, **fields)
    if updated != 1:
        return None
    OrderEvent.objects.create(order_id=order.pk, from_status=previous, to_status=to_status, note=note[:255])
    _order_event(order, previous=previous, to_status=to_status, note=note)
    if order.voucher_id is not None:
        if to_status == S.COMPLETED:
            voucher_redeem(voucher_id=order.voucher_id, order_id=order.pk, order_amount=order.total_price)
        elif to_status in (S.FAILED, S.CANCELLED):
            voucher_release(voucher_id=order.voucher_id, order_id=order.pk)
            if order.capped_on is not None:
                _release_store_caps(order)
    if any(hasattr(value, "resolve_expression") for value in fields.values()):
        order.refresh_from_db()  # an F() expression: read what the database made of it
    else:
        # Everything written is known: no read-back (one round trip less on every event).
        order.status, order.state_changed_at = to_status, now
        for name, value in fields.items():
            setattr(order, name, value)
    return order


@retry_on_conflict()
@transaction.atomic(durable=True)
def order_transition(*, order_id: int, from_statuses: Iterable[str], to_status: str, note: str = "",
                     **fields) -> Order | None:
    """Move an order from one of `from_statuses` to `to_status`, or do nothing (returns None)."""
    order = Order.objects.select_for_update().filter(pk=order_id).first()
    if order is None or order.status not in set(from_statuses):
        return None
    return _transition_locked(order, to_status=to_status, note=note, **fields)


def _tell_merchant_cancelled(order: Order | None, previous: str) -> None:
    """After commit: a merchant that already has the order hears that we gave up on it (best effort)."""
    if order is not None and previous != S.PLACED:
        enqueue(CANCEL_TASK, order.pk)


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
    _tell_merchant_cancelled(moved, order.status)
    return moved


def order_fail(*, order_id: int, reason: str) -> Order | None:
    return order_transition(order_id=order_id, from_statuses=ACTIVE, to_status=S.FAILED, note=reason,
                            failure_reason=reason[:255])


def _poll_later() -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=settings.MIANDAN_MERCHANT_POLL_SECONDS)


@retry_on_conflict()
@transaction.atomic(durable=True)
def _record_sent(*, order_id: int, merchant: str, ref: str) -> Order | None:
    """placed -> sent_to_store with the merchant's reference, the attempt counted under the row lock."""
    order = Order.objects.select_for_update().filter(pk=order_id).first()
    if order is None or order.status != S.PLACED:
        return None
    return _transition_locked(order, to_status=S.SENT_TO_STORE, note=f"已发送门店（单号 {ref}）", merchant=merchant,
                              merchant_ref=ref, attempts=order.attempts + 1, next_check_at=_poll_later())


def order_submit(*, order_id: int) -> str | None:
    """Hand one order to its merchant: one request (our order id is the idempotency key), then one transition.

    `placed -> sent_to_store` with the merchant's reference. Called again for an order the merchant already
    has (a redelivered task, or a re-send because the merchant said it does not know the order), it sends
    again (the merchant treats it as the same order) and only records the attempt.
    MerchantUnavailable propagates (the task retries with backoff); a refusal fails the order.
    """
    order = Order.objects.select_related("store").filter(pk=order_id).first()
    if order is None or order.status in Order.FINAL:
        return order.status if order is not None else None
    # The items with their products in one query (the merchant needs names and options).
    order._prefetched_objects_cache = {"items": list(OrderItem.objects.filter(order_id=order_id)
                                                     .select_related("product").order_by("id"))}
    merchant = get_merchant()
    try:
        ref = merchant.submit(order)
    except MerchantRejected as exc:
        failed = order_fail(order_id=order_id, reason=f"门店拒单：{exc}" if str(exc) else "门店拒单")
        return failed.status if failed is not None else None
    if order.status == S.PLACED:
        moved = _record_sent(order_id=order_id, merchant=merchant.name, ref=ref)
        if moved is not None:
            return moved.status
    # Sent again, or an event overtook the transition above: record the attempt and the reference only.
    Order.objects.filter(pk=order_id, status__in=IN_FLIGHT).update(
        merchant=merchant.name, merchant_ref=ref, attempts=F("attempts") + 1, next_check_at=_poll_later())
    status = Order.objects.filter(pk=order_id).values_list("status", flat=True).first()
    if status in (S.CANCELLED, S.FAILED):
        enqueue(CANCEL_TASK, order_id)  # cancelled while we were sending it: the merchant must not make it
    return status


def sweep_overdue(now) -> QuerySet:
    """The sweeper's scan: (id, status) of orders no store accepted by the deadline, oldest first.

    Along the partial index order_unaccepted_age, which holds only orders not yet accepted: a batch is an
    index range whatever the number of finished orders.
    """
    deadline = now - dt.timedelta(seconds=settings.MIANDAN_ORDER_ACCEPT_DEADLINE_SECONDS)
    overdue = Order.objects.filter(status__in=CANCELLABLE, created_at__lt=deadline).order_by("created_at")
    return overdue.values_list("pk", "status")


# What each merchant event moves an order to, and from where. Events may come late, twice or out of order:
# one for a state the order already reached or passed is recorded and ignored, and an event may skip states
# (a delivery reported before the acceptance completes the order; the late acceptance then changes nothing).
EVENT_TRANSITIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "accepted": (S.ACCEPTED, (S.PLACED, S.SENT_TO_STORE), "门店已接单"),
    "rejected": (S.FAILED, (S.PLACED, S.SENT_TO_STORE, S.ACCEPTED), "门店拒单"),
    "dispatched": (S.DELIVERING, (S.PLACED, S.SENT_TO_STORE, S.ACCEPTED), "已出餐，配送中"),
    "delivered": (S.COMPLETED, (S.PLACED, S.SENT_TO_STORE, S.ACCEPTED, S.DELIVERING), "已送达"),
}


MERCHANT_EVENTS = Counter("miandan_merchant_events_total", "Merchant events received, by type and outcome",
                          ["type", "outcome"])


@dataclass(frozen=True)
class EventResult:
    outcome: str  # "applied" | "ignored" | "duplicate"
    order_id: int
    status: str  # the order's status afterwards


def merchant_event_apply(*, merchant: str, event: InboundEvent) -> EventResult:
    """Record one merchant event (once per merchant event id) and apply it as one conditional transition.

    See `_event_apply_tx`; a collision on the event id with another order's event is EventIdReused.
    """
    try:
        return _event_apply_tx(merchant=merchant, event=event)
    except IntegrityError as exc:
        if "merchant_event_once" not in str(exc):
            raise
        raise EventIdReused() from exc


@retry_on_conflict()
@transaction.atomic(durable=True)
def _event_apply_tx(*, merchant: str, event: InboundEvent) -> EventResult:
    """Record one merchant event (once per merchant event id) and apply it as one conditional transition.

    The order row is locked first, so every event of one order (and every copy of one event) queues on it:
    a copy that arrives while the first is being applied finds it recorded and changes nothing.
    UnknownOrder when we have no such order for this merchant (nothing recorded); EventIdReused when the
    id was already used for a different event.
    """
    order = Order.objects.select_for_update().filter(pk=event.order_id).first()
    if order is None or order.merchant not in ("", merchant):
        raise UnknownOrder()
    seen = MerchantEvent.objects.filter(merchant=merchant, event_id=event.event_id).first()
    if seen is not None:
        if seen.digest != event.digest:
            raise EventIdReused()
        return EventResult("duplicate", order.pk, order.status)
    to_status, from_statuses, note = EVENT_TRANSITIONS[event.kind]
    applies = order.status in from_statuses
    # The unique (merchant, event_id) index is the backstop: the same id recorded meanwhile for another order
    # (the lock above only serialises events of one order) aborts this transaction, see merchant_event_apply.
    MerchantEvent.objects.create(
        merchant=merchant, event_id=event.event_id, order=order, kind=event.kind, digest=event.digest,
        outcome=MerchantEvent.Outcome.APPLIED if applies else MerchantEvent.Outcome.IGNORED,
        occurred_at=event.occurred_at,
    )
    if not applies:
        if order.status not in Order.FINAL:
            Order.objects.filter(pk=order.pk).update(next_check_at=_poll_later())  # we did hear from the merchant
        return EventResult("ignored", order.pk, order.status)
    fields: dict = {}
    if event.merchant_ref and not order.merchant_ref:
        fields["merchant_ref"] = event.merchant_ref[:64]
    if to_status == S.FAILED:
        reason = f"{note}：{event.reason}" if event.reason else note
        note, fields["failure_reason"] = reason, reason[:255]
    else:
        fields["next_check_at"] = _poll_later()
    moved = _transition_locked(order, to_status=to_status, note=f"{note}（门店事件 {event.event_id}）", **fields)
    return EventResult("applied", order.pk, moved.status if moved is not None else order.status)


def merchant_callback(*, merchant: str, headers, body: bytes) -> EventResult:
    """A merchant's callback request: authenticate it (before reading it), parse it, apply its one event.

    NotFound for a merchant name that is not the configured adapter's; the adapter raises BadSignature,
    StaleEvent or InvalidEvent; `merchant_event_apply` raises UnknownOrder or EventIdReused.
    """
    adapter = get_merchant()
    if merchant != adapter.name:
        raise NotFound("没有这个门店系统")
    adapter.verify(headers=headers, body=body)
    event = adapter.parse(body)
    result = merchant_event_apply(merchant=adapter.name, event=event)
    MERCHANT_EVENTS.labels(event.kind, result.outcome).inc()
    return result


@transaction.atomic(durable=True)
def _claim_due(*, now: dt.datetime, limit: int) -> list[tuple[int, str]]:
    """Take up to `limit` due orders (oldest check first) and push their next check out, so a second poller
    running at the same time takes other orders (SKIP LOCKED) and a crash only delays them."""
    rows = list(Order.objects.select_for_update(skip_locked=True).filter(next_check_at__lte=now)
                .order_by("next_check_at").values_list("pk", "status", "created_at")[:limit])
    due = [(pk, status) for pk, status, _ in rows]
    others = [pk for pk, status in due if status != S.PLACED]
    stuck = dt.timedelta(seconds=settings.MIANDAN_ORDER_STUCK_SECONDS)
    for pk, status, created in rows:
        if status == S.PLACED:
            # Backs off with the order's age (60 s, 120 s, 240 s, ...): when the queue itself is what is slow,
            # re-sending every minute would only pile more copies onto it.
            Order.objects.filter(pk=pk).update(next_check_at=now + max(stuck, now - created))
    if others:
        Order.objects.filter(pk__in=others).update(
            next_check_at=now + dt.timedelta(seconds=settings.MIANDAN_MERCHANT_POLL_SECONDS))
    return due


def order_poll_due(*, now: dt.datetime | None = None, limit: int = 1000, batch: int = 100) -> dict:
    """Beat job: orders due for a check. Never sent -> re-send; with the merchant -> ask it, a batch per request.

    The answers are events, applied exactly like callbacks (idempotent by event id); orders the merchant
    does not know are re-sent (the submit is idempotent on its side). No task waits for a store.
    """
    now = now or timezone.now()
    due = _claim_due(now=now, limit=limit)
    counts = {"due": len(due), "resent": 0, "asked": 0, "applied": 0, "ignored": 0, "duplicate": 0, "unavailable": 0}
    resend = [pk for pk, status in due if status == S.PLACED]
    in_flight = [pk for pk, status in due if status in IN_FLIGHT]
    merchant = get_merchant()
    for start in range(0, len(in_flight), batch):
        orders = list(Order.objects.filter(pk__in=in_flight[start:start + batch]))
        try:
            answer = merchant.poll(orders)
        except MerchantUnavailable as exc:
            logger.warning("merchant poll failed for %d orders: %s", len(orders), exc)
            counts["unavailable"] += len(orders)
            continue
        counts["asked"] += len(orders)
        for event in events_sorted(answer.events):
            try:
                outcome = merchant_event_apply(merchant=merchant.name, event=event).outcome
                MERCHANT_EVENTS.labels(event.kind, outcome).inc()
                counts[outcome] += 1
            except (UnknownOrder, EventIdReused) as exc:
                logger.warning("poll answer event %s skipped: %s", event.event_id, exc)
        resend += answer.unknown
    for order_id in resend:
        if not enqueue(SUBMIT_TASK, order_id):
            break  # broker down: they are due again later
        counts["resent"] += 1
    return counts


INTERVENE_PERMISSION = "orders.can_intervene"


class InterventionDenied(PermissionError):
    """A staff action on orders by someone without orders.can_intervene (admin hides the actions too)."""


def _require_intervene(actor) -> None:
    if not (actor is not None and actor.is_active and actor.has_perm(INTERVENE_PERMISSION)):
        logger.warning("order intervention refused", extra={"actor": getattr(actor, "pk", None)})
        raise InterventionDenied(INTERVENE_PERMISSION)


def order_staff_cancel(*, actor, order_ids: Iterable[int], reason: str = "") -> int:
    """Support cancels orders a store has not accepted yet (card back, merchant told). Audited: one AuditLog row
    and one log line per cancelled order. Returns how many were cancelled."""
    _require_intervene(actor)
    done = 0
    for order_id in order_ids:
        previous = Order.objects.filter(pk=order_id).values_list("status", flat=True).first()
        # order_transition is its own durable transaction (retried on conflicts); the audit row follows it.
        moved = order_transition(order_id=order_id, from_statuses=CANCELLABLE, to_status=S.CANCELLED,
                                 note=f"客服取消（{actor}）")
        if moved is None:
            continue
        audit(actor=actor, action="order.cancel", obj=moved, campaign=moved.campaign,
              before={"status": previous}, after={"status": S.CANCELLED}, reason=reason or "客服取消")
        _tell_merchant_cancelled(moved, previous)
        logger.info("staff cancelled order %s", order_id, extra={"actor": actor.pk, "order_id": order_id})
        done += 1
    return done


def order_staff_resend(*, actor, order_ids: Iterable[int]) -> int:
    """`order_resend` for support, audited (one AuditLog row per order, a log line)."""
    _require_intervene(actor)
    ids = list(Order.objects.filter(pk__in=list(order_ids), status__in=ACTIVE).values_list("pk", flat=True))
    done = order_resend(order_ids=ids)
    for order in Order.objects.filter(pk__in=ids).select_related("campaign"):
        audit(actor=actor, action="order.resend", obj=order, campaign=order.campaign, reason="客服重发")
    logger.info("staff re-sent %d order(s)", done, extra={"actor": actor.pk, "order_ids": ids[:100]})
    return done


def order_resend(*, order_ids: Iterable[int]) -> int:
    """Staff "re-send": an order never sent is sent now; one with the merchant is asked about at the next poll
    (and re-sent if the merchant lost it). Returns how many orders were taken care of."""
    ids = list(order_ids)
    placed = list(Order.objects.filter(pk__in=ids, status=S.PLACED).values_list("pk", flat=True))
    done = sum(1 for order_id in placed if enqueue(SUBMIT_TASK, order_id))
    done += Order.objects.filter(pk__in=ids, status__in=IN_FLIGHT).update(next_check_at=timezone.now())
    return done


def order_sweep(*, now=None, limit: int = 500) -> dict:
    """Beat job: fail orders no store accepted in time (card back, merchant told), trim counters and old events."""
    now = now or timezone.now()
    failed = 0
    for order_id, status in sweep_overdue(now)[:limit]:
        moved = order_transition(order_id=order_id, from_statuses=CANCELLABLE, to_status=S.FAILED,
                                 note="门店超时未接单", failure_reason="门店超时未接单")
        if moved is not None:
            failed += 1
            _tell_merchant_cancelled(moved, status)
    trimmed, _ = StoreMinute.objects.filter(minute__lt=capacity.current_minute() - 10).delete()
    old = list(MerchantEvent.objects.filter(received_at__lt=now - EVENT_RETENTION).values_list("pk", flat=True)[:5000])
    purged = MerchantEvent.objects.filter(pk__in=old).delete()[0] if old else 0
    return {"failed": failed, "trimmed": trimmed, "events_purged": purged}
