"""Changelists built for millions of rows (miandan/api/admin_scale.py): what staff see stays right.

Bounded counts fall back to the planner's estimate only past EXACT_COUNT_UP_TO; searches use indexed
lookups (exact card code in any case, phone prefixes, ids) and still find what they used to; the date
hierarchy offers the periods between the table's first and last row, clamped to the drilled-into period.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from campaign.models import LedgerEntry
from miandan.api import admin_scale
from orders.models import Order
from tests import factories as f
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser(username="root", password="pw-for-tests-123", email="r@x.cn")
    client.force_login(user)
    return client


def _rows(response) -> int:
    return len(response.context["cl"].result_list)


def test_card_search_by_code_in_lower_case_and_by_phone_prefix(staff_client):
    campaign = f.CampaignFactory()
    card = f.VoucherFactory(campaign=campaign)
    other = f.VoucherFactory(campaign=campaign)
    url = "/admin/vouchers/voucher/"
    assert [c.pk for c in staff_client.get(url, {"q": card.code.lower()}).context["cl"].result_list] == [card.pk]
    phone = card.user.phone
    assert card.pk in [c.pk for c in staff_client.get(url, {"q": phone}).context["cl"].result_list]
    assert other.pk not in [c.pk for c in staff_client.get(url, {"q": phone}).context["cl"].result_list]
    assert _rows(staff_client.get(url, {"q": phone[:5]})) == 2  # both test phones start alike
    assert _rows(staff_client.get(url, {"q": phone[:3]})) == 0  # too short a prefix: it would match millions
    assert _rows(staff_client.get(url, {"q": "NOSUCHCODE"})) == 0


def test_order_and_ledger_search_by_id_and_card_code(staff_client):
    campaign = f.CampaignFactory()
    card = f.VoucherFactory(campaign=campaign)
    order = f.OrderFactory(user=card.user, campaign=campaign)
    Order.objects.filter(pk=order.pk).update(voucher=card, merchant_ref="MR-42")
    for term in (str(order.pk), card.code.lower(), "MR-42", card.user.phone):
        assert order.pk in [o.pk for o in staff_client.get("/admin/orders/order/", {"q": term}).context["cl"].result_list], term
    rows = staff_client.get("/admin/campaign/ledgerentry/", {"q": str(card.pk)}).context["cl"].result_list
    assert {r.voucher_id for r in rows} == {card.pk} and {r.kind for r in rows} == {"reserve"}


def test_ledger_text_search_finds_what_staff_wrote(staff_client):
    campaign = f.CampaignFactory()
    staff = f.StaffFactory()
    from vouchers.services import voucher_issue

    voucher_issue(user=f.UserFactory(), campaign=campaign, source="staff", actor=staff, reason="客诉补偿")
    rows = staff_client.get("/admin/campaign/ledgerentry/", {"q": "客诉"}).context["cl"].result_list
    assert [r.reason for r in rows] == ["客诉补偿"]


def test_counts_are_exact_up_to_the_bound_then_estimated(staff_client, monkeypatch):
    campaign = f.CampaignFactory()
    for _ in range(4):
        f.VoucherFactory(campaign=campaign)
    response = staff_client.get("/admin/vouchers/voucher/")
    assert response.context["cl"].result_count == 4
    monkeypatch.setattr(admin_scale, "EXACT_COUNT_UP_TO", 2)
    monkeypatch.setattr(admin_scale, "estimated_count", lambda qs: 1_000_000)
    cl = staff_client.get("/admin/vouchers/voucher/").context["cl"]
    assert cl.result_count == 1_000_000  # past the bound: the estimate, no COUNT(*) of every row
    assert cl.paginator.num_pages == admin_scale.MAX_PAGES


def test_estimated_count_reads_the_planner():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("planner estimates are PostgreSQL's")
    campaign = f.CampaignFactory()
    f.VoucherFactory(campaign=campaign)
    assert admin_scale.estimated_count(Voucher.objects.filter(status="issued")) >= 1
    assert admin_scale.estimated_count(LedgerEntry.objects.all()) is not None


def test_date_hierarchy_offers_the_days_between_first_and_last_row_within_the_drilled_period(staff_client):
    campaign = f.CampaignFactory()
    card = f.VoucherFactory(campaign=campaign)
    day = timezone.localtime(card.issued_at)
    response = staff_client.get("/admin/vouchers/voucher/", {"issued_at__year": day.year,
                                                             "issued_at__month": day.month})
    assert response.status_code == 200
    assert _rows(response) == 1
    html = response.content.decode()
    assert f"issued_at__day={day.day}" in html
    other_year = staff_client.get("/admin/vouchers/voucher/", {"issued_at__year": day.year - 1})
    assert other_year.status_code == 200 and _rows(other_year) == 0
    assert "issued_at__month=" not in other_year.content.decode()  # nothing before the first card
