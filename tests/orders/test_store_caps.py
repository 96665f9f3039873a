"""Issue 20: daily subsidy caps per store and per brand, under concurrency, with next-store fallback."""

from decimal import Decimal

import pytest

from campaign.models import Campaign
from orders.errors import StoreCapReached
from orders.models import BrandDaySubsidy, Order, Store, StoreDaySubsidy
from orders.services import Line, OrderRequest, order_cancel, order_place
from tests.concurrency import run_threads
from tests.factories import UserFactory, VoucherFactory
from tests.orders.conftest import LAT, LNG
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db(transaction=True)
SUBSIDY = Decimal("18.00")  # 伯牙绝弦, 中杯: under the 25-yuan face value


@pytest.fixture
def two_stores(catalogue):
    near = Store.objects.get(brand__slug="chagee", open_24h=True)
    Store.objects.filter(pk=near.pk).update(capacity_per_minute=1000)
    nxt = Store.objects.create(brand=near.brand, name="次近店", city="杭州", lat=near.lat + 0.01, lng=near.lng,
                               open_24h=True, capacity_per_minute=1000)
    return near, nxt


def caps(campaign, **fields):
    Campaign.objects.filter(pk=campaign.pk).update(**fields)
    campaign.refresh_from_db()


def place(user, brand_id):
    lines = (Line(quantity=1, candidates=((brand_id, "伯牙绝弦"),)),)
    return order_place(user=user, request=OrderRequest(lines=lines, lat=LAT, lng=LNG, campaign_slug=None))


def buyers(campaign, n):
    users = [UserFactory() for _ in range(n)]
    for user in users:
        VoucherFactory(user=user, campaign=campaign)
    return users


def test_store_cap_under_concurrency_is_never_exceeded_and_overflow_goes_to_the_next_store(two_stores, campaign):
    near, nxt = two_stores
    caps(campaign, store_daily_subsidy_cap=3 * SUBSIDY)
    users = buyers(campaign, 20)

    def one(user):
        try:
            return place(user, near.brand_id).order.store_id
        except StoreCapReached:
            return "capped"

    results = run_threads(one, 20, args=[(u,) for u in users])
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok][:1]
    where = [r.value for r in results]
    assert where.count(near.pk) == 3 and where.count(nxt.pk) == 3  # nearest first, then the next nearest
    assert where.count("capped") == 14
    for store in (near, nxt):
        counter = StoreDaySubsidy.objects.get(campaign=campaign, store=store)
        assert counter.subsidy == 3 * SUBSIDY <= campaign.store_daily_subsidy_cap
    assert BrandDaySubsidy.objects.get(campaign=campaign, brand_id=near.brand_id).subsidy == 6 * SUBSIDY
    report = reconcile(campaign=campaign)
    assert report.ok, report.differences


def test_brand_cap_under_concurrency_is_never_exceeded(two_stores, campaign):
    near, _ = two_stores
    caps(campaign, brand_daily_subsidy_cap=4 * SUBSIDY)
    users = buyers(campaign, 15)

    def one(user):
        try:
            return place(user, near.brand_id).order.store_id
        except StoreCapReached:
            return "capped"

    results = run_threads(one, 15, args=[(u,) for u in users])
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok][:1]
    assert sum(1 for r in results if r.value != "capped") == 4
    assert BrandDaySubsidy.objects.get(campaign=campaign).subsidy == 4 * SUBSIDY
    assert reconcile(campaign=campaign).ok


def test_cancel_gives_the_subsidy_back_and_reconcile_checks_the_counters(two_stores, campaign):
    near, nxt = two_stores
    caps(campaign, store_daily_subsidy_cap=SUBSIDY)
    first, second, third = buyers(campaign, 3)
    assert place(first, near.brand_id).order.store_id == near.pk
    assert place(second, near.brand_id).order.store_id == nxt.pk
    with pytest.raises(StoreCapReached) as refused:
        place(third, near.brand_id)
    assert refused.value.status == 409 and refused.value.code == "store_cap_reached"
    order = Order.objects.get(user=first)
    order_cancel(user=first, order_id=order.pk)
    assert StoreDaySubsidy.objects.get(campaign=campaign, store=near).subsidy == 0
    assert place(third, near.brand_id).order.store_id == near.pk
    assert reconcile(campaign=campaign).ok
    StoreDaySubsidy.objects.filter(campaign=campaign, store=near).update(subsidy=0)
    report = reconcile(campaign=campaign)
    assert not report.ok and "每日补贴计数" in report.differences[0]


def test_no_cap_no_counter(two_stores, campaign):
    near, _ = two_stores
    (user,) = buyers(campaign, 1)
    order = place(user, near.brand_id).order
    assert order.capped_on is None
    assert not StoreDaySubsidy.objects.exists() and not BrandDaySubsidy.objects.exists()
