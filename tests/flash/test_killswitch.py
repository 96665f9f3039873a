"""Kill switches: answered 503 `paused` by the guard, and effective on other processes within a second."""

import multiprocessing
import time

import pytest
from django.db import connections

from campaign.selectors import campaign_cache_clear
from campaign.services import campaign_set_switches
from tests.factories import StaffFactory
from vouchers.models import Voucher

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
        campaign_set_switches(campaign=campaign, actor=staff, claims_enabled=False)  # what the admin switch calls
        flipped.set()
        assert out.get(timeout=30) == ("result", "paused")
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
