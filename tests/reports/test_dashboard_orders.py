"""The dashboard counts the campaign's orders once per (state, store) and derives the states, the orders in flight
and the busiest stores from those rows (issue 14). Each must equal what its own query answers."""

from __future__ import annotations

import pytest
from django.db.models import Count

from orders.models import Order
from orders.selectors import orders_in_flight
from reports.selectors import campaign_orders, dashboard
from tests.factories import CampaignFactory, OrderFactory, StoreFactory, UserFactory
from vouchers.models import Voucher
from vouchers.services import voucher_issue

pytestmark = pytest.mark.django_db


def test_states_in_flight_and_busiest_stores_match_their_own_queries():
    campaign, other = CampaignFactory(), CampaignFactory()
    stores = [StoreFactory() for _ in range(12)]
    statuses = ["placed", "sent_to_store", "accepted", "delivering", "completed", "failed", "cancelled"]
    for i in range(60):  # many ties (the order among equals is by store id) and one store with twice as many
        store = stores[min(i % 13, 11)]
        OrderFactory(campaign=campaign, store=store, status=statuses[(i * 5) % len(statuses)])
    for _ in range(9):  # another campaign's orders count for nothing here
        OrderFactory(campaign=other, store=stores[11], status="placed")
    # An untagged order paid with one of the campaign's cards belongs to it too.
    card = voucher_issue(user=UserFactory(), campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    OrderFactory(campaign=None, voucher=card, user=card.user, store=stores[11], status="accepted")

    data = dashboard(campaign=campaign)

    expected_states = dict.fromkeys(Order.Status.values, 0)
    for row in campaign_orders(campaign=campaign).values("status").annotate(n=Count("id")):
        expected_states[row["status"]] = row["n"]
    assert data.orders_by_state == expected_states and sum(expected_states.values()) == 61
    assert data.orders_in_flight == orders_in_flight(campaign=campaign)
    busiest = list(campaign_orders(campaign=campaign).order_by().values("store_id").annotate(orders=Count("*"))
                   .order_by("-orders", "store_id")[:10])
    assert [(s["store_id"], s["orders"]) for s in data.top_stores] == [(b["store_id"], b["orders"]) for b in busiest]
    named = {s.pk: s for s in stores}
    assert all(s["store__name"] == named[s["store_id"]].name and s["store__city"] == named[s["store_id"]].city
               for s in data.top_stores)
