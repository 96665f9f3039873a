"""The order services' less travelled paths, in-process on PostgreSQL: refusals, a merchant that says no or is
away, an order cancelled while it is being sent, the poller's skips and a broker outage, staff re-sends.

The merchant here is a scripted adapter (the merchant is an outside system; PostgreSQL, Redis and the broker
are the real ones). Its `script` says what each call does.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from campaign.errors import CampaignNotLive
from campaign.models import Campaign
from campaign.selectors import campaign_cache_clear
from orders.errors import NoStoreAvailable
from orders.merchant import InboundEvent, MerchantRejected, MerchantUnavailable, PollResult
from orders.models import Order
from orders.services import (
    Line,
    OrderRequest,
    order_cancel,
    order_place,
    order_poll_due,
    order_resend,
    order_submit,
    order_transition,
)
from tests.factories import ProductFactory, StoreFactory, UserFactory, VoucherFactory
from tests.fulfilment import broker_down
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db
S = Order.Status


class ScriptedMerchant:
    name = "scripted"
    script: dict = {}

    def submit(self, order) -> str:
        action = self.script.get("submit", "ok")
        if action == "reject":
            raise MerchantRejected("门店已打烊")
        if action == "cancel-meanwhile":  # the user cancels while the request is on the wire
            order_cancel(user=order.user, order_id=order.pk)
        return f"SCR-{order.pk}"

    def poll(self, orders) -> PollResult:
        action = self.script.get("poll", "nothing")
        if action == "away":
            raise MerchantUnavailable("timeout")
        events = [InboundEvent(event_id=f"ghost-{o.pk}", kind="accepted", order_id=10**9 + o.pk,
                               occurred_at=timezone.now()) for o in orders] if action == "ghosts" else []
        return PollResult(events=events, unknown=[o.pk for o in orders] if action == "lost" else [])

    def cancel(self, order) -> None:
        pass


@pytest.fixture
def merchant(settings):
    settings.MIANDAN_MERCHANT_ADAPTER = "tests.orders.test_service_edges.ScriptedMerchant"
    ScriptedMerchant.script = {}
    yield ScriptedMerchant
    ScriptedMerchant.script = {}


@pytest.fixture
def shop(db):
    store = StoreFactory(capacity_per_minute=1000)
    return store, ProductFactory(brand=store.brand, price=Decimal("18.00"))


def _place(shop, campaign, **request):
    store, product = shop
    user = UserFactory()
    card = VoucherFactory(user=user, campaign=campaign)
    req = OrderRequest(lines=(Line(quantity=1, product_id=product.pk),), store_id=store.pk, campaign_slug=campaign.slug,
                       **request)
    return order_place(user=user, request=req).order, card


def test_a_merchant_refusal_fails_the_order_and_gives_the_card_back(merchant, shop, campaign):
    merchant.script["submit"] = "reject"
    order, card = _place(shop, campaign)
    assert order_submit(order_id=order.pk) == S.FAILED
    order.refresh_from_db()
    card.refresh_from_db()
    assert order.failure_reason == "门店拒单：门店已打烊"
    assert card.status == Voucher.Status.ISSUED and card.order_id is None
    # A final order is never sent again (a redelivered submit task): the merchant is not asked.
    merchant.script["submit"] = "explode"
    assert order_submit(order_id=order.pk) == S.FAILED
    assert order_submit(order_id=10**9) is None  # gone: quiet


def test_an_order_cancelled_while_being_sent_is_not_recorded_as_sent(merchant, shop, campaign, django_capture_on_commit_callbacks):
    merchant.script["submit"] = "cancel-meanwhile"
    order, card = _place(shop, campaign)
    assert order_submit(order_id=order.pk) == S.CANCELLED
    order.refresh_from_db()
    assert order.status == S.CANCELLED and order.merchant_ref == "" and order.attempts == 0
    card.refresh_from_db()
    assert card.status == Voucher.Status.ISSUED


def test_a_resend_of_an_order_in_flight_records_the_attempt_only(merchant, shop, campaign):
    order, _ = _place(shop, campaign)
    assert order_submit(order_id=order.pk) == S.SENT_TO_STORE
    assert order_submit(order_id=order.pk) == S.SENT_TO_STORE  # the task redelivered
    order.refresh_from_db()
    assert order.attempts == 2 and order.merchant_ref == f"SCR-{order.pk}"
    assert list(order.events.values_list("to_status", flat=True)) == [S.PLACED, S.SENT_TO_STORE]


def _due(*orders):
    Order.objects.filter(pk__in=[o.pk for o in orders]).update(next_check_at=timezone.now() - dt.timedelta(seconds=1))


def test_the_poller_counts_an_absent_merchant_and_skips_events_for_orders_it_does_not_have(merchant, shop, campaign):
    order, _ = _place(shop, campaign)
    order_submit(order_id=order.pk)
    _due(order)
    merchant.script["poll"] = "away"
    counts = order_poll_due()
    assert (counts["due"], counts["unavailable"], counts["asked"]) == (1, 1, 0)
    _due(order)
    merchant.script["poll"] = "ghosts"
    counts = order_poll_due()
    assert (counts["asked"], counts["applied"], counts["ignored"]) == (1, 0, 0)  # the ghost event was skipped
    assert Order.objects.get(pk=order.pk).status == S.SENT_TO_STORE


def test_the_poller_stops_resending_while_the_broker_is_down(merchant, shop, campaign):
    first, _ = _place(shop, campaign)
    second, _ = _place(shop, campaign)
    _due(first, second)
    with broker_down():
        counts = order_poll_due()
    assert (counts["due"], counts["resent"]) == (2, 0)
    # Both stay placed and due again later (pushed out by the claim, not dropped).
    assert set(Order.objects.filter(pk__in=[first.pk, second.pk]).values_list("status", flat=True)) == {S.PLACED}
    assert not Order.objects.filter(pk__in=[first.pk, second.pk], next_check_at__isnull=True).exists()


def test_staff_resend_sends_unsent_orders_and_makes_the_others_due(merchant, shop, campaign):
    unsent, _ = _place(shop, campaign)
    sent, _ = _place(shop, campaign)
    order_submit(order_id=sent.pk)
    done, _ = _place(shop, campaign)
    order_transition(order_id=done.pk, from_statuses=(S.PLACED,), to_status=S.CANCELLED)
    before = timezone.now()
    assert order_resend(order_ids=[unsent.pk, sent.pk, done.pk]) == 2
    sent.refresh_from_db()
    assert sent.next_check_at <= timezone.now() and sent.next_check_at >= before - dt.timedelta(seconds=1)
    assert Order.objects.get(pk=done.pk).next_check_at is None


def test_placement_refusals(shop, campaign):
    store, product = shop
    user = UserFactory()
    VoucherFactory(user=user, campaign=campaign)
    line = Line(quantity=1, product_id=product.pk)
    # A store that is closed for the day.
    closed = StoreFactory(brand=store.brand, active=False)
    with pytest.raises(NoStoreAvailable):
        order_place(user=user, request=OrderRequest(lines=(line,), store_id=closed.pk, campaign_slug=campaign.slug))
    # Drinks of two brands in one order.
    other = ProductFactory()
    two = (Line(quantity=1, candidates=((store.brand_id, product.name),)),
           Line(quantity=1, candidates=((other.brand_id, other.name),)))
    with pytest.raises(NoStoreAvailable, match="不在同一个品牌"):
        order_place(user=user, request=OrderRequest(lines=two, lat=store.lat, lng=store.lng, campaign_slug=campaign.slug))
    # A generic drink of another brand at the named store is not sold there.
    assert Line(quantity=1, brand_id=other.brand_id).generic
    with pytest.raises(Exception, match="没有这款商品"):
        order_place(user=user, request=OrderRequest(lines=(Line(quantity=1, brand_id=other.brand_id),), store_id=store.pk,
                                                     campaign_slug=campaign.slug))
    # A campaign that has ended takes no orders.
    Campaign.objects.filter(pk=campaign.pk).update(ends_at=timezone.now() - dt.timedelta(seconds=1),
                                                   starts_at=timezone.now() - dt.timedelta(days=1))
    campaign_cache_clear()
    with pytest.raises(CampaignNotLive):
        order_place(user=user, request=OrderRequest(lines=(line,), store_id=store.pk, campaign_slug=campaign.slug))
    assert not Order.objects.filter(user=user).exists()  # no refusal left a half-written order
