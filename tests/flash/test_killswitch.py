"""Kill switches: answered 503 `paused` by the guard, and effective on other processes within a second."""

import multiprocessing
import time

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from campaign.selectors import campaign_cache_clear
from campaign.services import campaign_set_switches
from tests.factories import StaffFactory
from vouchers.models import Voucher

# Every test runs on a single Redis and on a three-master Redis Cluster (tests/conftest.py `redis_backend`).
pytestmark = pytest.mark.usefixtures("redis_backend")
JOIN = "/api/v1/campaigns/{}/join"


@pytest.mark.django_db
def test_paused_claims_answer_503_paused_before_the_view(auth_client, campaign):
    campaign_set_switches(campaign=campaign, actor=None, claims_enabled=False)
    campaign_cache_clear()
    response = auth_client.post(JOIN.format(campaign.slug), {"app_version": "1.0.0"}, format="json")
    assert response.status_code == 503
    assert response.json()["code"] == "paused"
    assert "暂停" in response.json()["detail"]
    assert int(response["Retry-After"]) >= 1
    assert Voucher.objects.count() == 0
    # Reads keep working while a feature is paused.
    assert auth_client.get(f"/api/v1/campaigns/{campaign.slug}/").json()["switches"]["claims"] is False
    campaign_set_switches(campaign=campaign, actor=None, claims_enabled=True)
    campaign_cache_clear()
    assert auth_client.post(JOIN.format(campaign.slug), {"app_version": "1.0.0"}, format="json").status_code == 201


def _other_process(token, slug, ready, flipped, out):
    """A separate server process: warm its own campaign cache, then poll until claims are refused."""
    from rest_framework.test import APIClient

    connections.close_all()
    campaign_cache_clear()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    first = client.post(JOIN.format(slug), {"app_version": "1.0.0"}, format="json")
    out.put(("warm", first.status_code))
    ready.set()
    if not flipped.wait(60):
        out.put(("result", "never flipped"))
        return
    deadline = time.monotonic() + 1.0
    seen = None
    while time.monotonic() < deadline:
        response = client.post(JOIN.format(slug), {"app_version": "1.0.0"}, format="json")
        if response.status_code == 503 and response.json().get("code") == "paused":
            seen = "paused"
            break
        time.sleep(0.02)
    out.put(("result", seen or "still claiming after 1 s"))
    connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_switch_flipped_in_admin_stops_claims_on_another_process_within_a_second(campaign, user):
    from accounts.services import token_create

    token = token_create(user=user, device_id="other-process")
    staff = StaffFactory(is_superuser=True)
    ctx = multiprocessing.get_context("fork")
    ready, flipped, out = ctx.Event(), ctx.Event(), ctx.Queue()
    connections.close_all()
    proc = ctx.Process(target=_other_process, args=(token, campaign.slug, ready, flipped, out))
    proc.start()
    try:
        assert ready.wait(60)
        assert out.get(timeout=10) == ("warm", 201)  # the other process cached the campaign with claims on
        admin = Client()
        admin.force_login(staff)
        # The admin's switches page: claims unticked, the other two left on.
        page = admin.post(reverse("admin:campaign_campaign_switches", args=[campaign.pk]),
                          {"referrals_enabled": "on", "orders_enabled": "on"})
        assert page.status_code == 302, page.content[:500]
        flipped.set()
        assert out.get(timeout=30) == ("result", "paused")
        campaign.refresh_from_db()
        assert (campaign.claims_enabled, campaign.referrals_enabled, campaign.orders_enabled) == (False, True, True)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()


@pytest.mark.django_db
def test_referral_and_order_switches_pause_their_endpoints_only(auth_client, campaign):
    campaign_set_switches(campaign=campaign, actor=None, referrals_enabled=False, orders_enabled=False)
    campaign_cache_clear()
    referral = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/referrals", {"code": "ABCDEFGH"}, format="json")
    assert referral.status_code == 503
    assert referral.json()["code"] == "paused"
    assert "邀请" in referral.json()["detail"]
    named = auth_client.post("/api/v1/orders/chat", {"text": "帮我点一杯奶茶", "lat": 30.27, "lng": 120.15,
                                                     "campaign": campaign.slug}, format="json")
    assert named.status_code == 503
    assert named.json()["code"] == "paused"
    # No campaign named: the guard cannot tell, the order service finds the campaign and pauses too.
    unnamed = auth_client.post("/api/v1/orders/chat", {"text": "帮我点一杯奶茶", "lat": 30.27, "lng": 120.15},
                               format="json")
    assert unnamed.status_code == 503
    assert unnamed.json()["code"] == "paused"
    # Claims are still on, and reads are untouched.
    assert auth_client.post(JOIN.format(campaign.slug), {"app_version": "1.0.0"}, format="json").status_code == 201
    assert auth_client.get(f"/api/v1/campaigns/{campaign.slug}/referrals").status_code == 200
    assert auth_client.get("/api/v1/orders/").status_code == 200
