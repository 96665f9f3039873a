"""Races on PostgreSQL: one card vs many orders, store capacity, cancel vs accept."""

import uuid
from collections import Counter

import pytest

from orders.errors import CannotCancel, NoStoreAvailable
from orders.models import Order, Store
from orders.services import Line, OrderRequest, order_cancel, order_chat, order_place, order_transition
from tests.concurrency import run_threads
from tests.conftest import use_redis
from tests.factories import UserFactory, VoucherFactory
from tests.orders.conftest import LAT, LNG
from vouchers.errors import NoVoucher
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chagee(catalogue):
    store = Store.objects.get(brand__slug="chagee", open_24h=True)
    Store.objects.filter(pk=store.pk).update(capacity_per_minute=1000)
    return store


@pytest.mark.parametrize("pay_full_price", [False, True])
def test_one_card_fifty_parallel_orders(chagee, campaign, pay_full_price):
    user = UserFactory()
    card = VoucherFactory(user=user, campaign=campaign)

    def order():
        return order_chat(user=user, text="一杯伯牙绝弦", lat=LAT, lng=LNG, pay_full_price=pay_full_price).order.pk

    results = run_threads(order, 50)
    placed = [r.value for r in results if r.ok]
    errors = [r.error for r in results if not r.ok]
    assert all(isinstance(e, NoVoucher) for e in errors), [r.trace for r in results if not r.ok][:1]
    with_card = Order.objects.filter(pk__in=placed, voucher__isnull=False)
    assert with_card.count() == 1 and with_card.get().voucher_id == card.pk
    if pay_full_price:
        assert len(placed) == 50
        assert Order.objects.filter(pk__in=placed, voucher__isnull=True, subsidy=0).count() == 49
    else:
        assert len(placed) == 1 and len(errors) == 49
    card.refresh_from_db()
    assert card.status == Voucher.Status.LOCKED and card.order_id == with_card.get().pk
    assert reconcile(campaign=campaign).ok


@pytest.mark.parametrize("redis", ["single", "cluster", None], ids=["redis-counter", "cluster-counter", "db-counter"])
def test_store_capacity_never_exceeded(catalogue, campaign, settings, redis, request):
    if redis is None:
        settings.REDIS_URL = None
    elif redis == "cluster":
        # The cluster lives for the whole session of this pytest worker and the catalogue's stores keep their
        # ids: a prefix of its own keeps an earlier test's counters for this store and minute out of the race.
        settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-cap-{uuid.uuid4().hex[:8]}"
        use_redis(settings, request.getfixturevalue("redis_cluster").url)
    near = Store.objects.get(brand__slug="chagee", open_24h=True)
    Store.objects.filter(pk=near.pk).update(capacity_per_minute=5)
    nxt = Store.objects.create(brand=near.brand, name="次近店", city="杭州", lat=near.lat + 0.01, lng=near.lng,
                               open_24h=True, capacity_per_minute=10)
    users = [UserFactory() for _ in range(25)]
    product_lines = [Line(quantity=1, candidates=((near.brand_id, "伯牙绝弦"),))]

    def four_orders(user):
        out = []
        for _ in range(4):
            try:
                out.append(order_place(user=user, request=OrderRequest(lines=tuple(product_lines), lat=LAT, lng=LNG, pay_full_price=True)).order.store_id)
            except NoStoreAvailable:
                out.append(None)
        return out

    # 100 orders from 25 threads (4 each), so the race stays within PostgreSQL's connection limit.
    results = run_threads(four_orders, 25, args=[(u,) for u in users])
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok][:1]
    where = Counter(s for r in results for s in r.value)
    per_minute = Counter((o.store_id, int(o.created_at.timestamp() // 60)) for o in Order.objects.all())
    assert all(n <= 5 for (store, _), n in per_minute.items() if store == near.pk), per_minute
    assert all(n <= 10 for (store, _), n in per_minute.items() if store == nxt.pk), per_minute
    assert where[near.pk] >= 5 and where[nxt.pk] >= 10  # nearest first, then the next one
    assert where[None] == 100 - where[near.pk] - where[nxt.pk]
    assert Order.objects.count() == where[near.pk] + where[nxt.pk]


def test_full_store_does_not_leak_capacity_on_refused_orders(chagee, campaign):
    """An order refused after taking a slot (no card) gives the slot back."""
    Store.objects.filter(pk=chagee.pk).update(capacity_per_minute=2)
    lines = [Line(quantity=1, candidates=((chagee.brand_id, "伯牙绝弦"),))]
    nocard = UserFactory()
    for _ in range(5):
        with pytest.raises(NoVoucher):
            order_place(user=nocard, request=OrderRequest(lines=tuple(lines), lat=LAT, lng=LNG))
    buyers = [UserFactory() for _ in range(2)]
    assert [order_place(user=u, request=OrderRequest(lines=tuple(lines), lat=LAT, lng=LNG, pay_full_price=True)).order.store_id for u in buyers] == [
        chagee.pk, chagee.pk]


def test_cancel_racing_accept_exactly_one_wins(chagee, campaign):
    outcomes = Counter()
    for _ in range(8):
        user = UserFactory()
        card = VoucherFactory(user=user, campaign=campaign)
        order = order_chat(user=user, text="一杯伯牙绝弦", lat=LAT, lng=LNG).order
        order_transition(order_id=order.pk, from_statuses=["placed"], to_status="sent_to_store")

        def cancel(user=user, order_id=order.pk):
            try:
                return "cancelled" if order_cancel(user=user, order_id=order_id).status == "cancelled" else "?"
            except CannotCancel:
                return "refused"

        def accept(order_id=order.pk):
            return "accepted" if order_transition(order_id=order_id, from_statuses=["sent_to_store"],
                                                  to_status="accepted") else "lost"

        a, b = run_threads(lambda i: cancel() if i == 0 else accept(), 2, args=[(0,), (1,)])
        assert a.ok and b.ok, (a.trace, b.trace)
        assert (a.value, b.value) in {("cancelled", "lost"), ("refused", "accepted")}
        order.refresh_from_db()
        card.refresh_from_db()
        if a.value == "cancelled":
            assert order.status == "cancelled" and card.status == Voucher.Status.ISSUED and card.order_id is None
        else:
            assert order.status == "accepted" and card.status == Voucher.Status.LOCKED and card.order_id == order.pk
        assert sorted(order.events.values_list("to_status", flat=True)) == sorted(
            ["placed", "sent_to_store", order.status])
        outcomes[order.status] += 1
    assert reconcile(campaign=campaign).ok
    print("cancel vs accept outcomes:", dict(outcomes))
