"""What the hot paths no longer pay for (issue 14): each test fails if the saving is undone."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaign.selectors import campaign_cache_clear
from campaign.services import campaign_set_switches
from tests.factories import CampaignFactory, UserFactory, VoucherFactory
from vouchers import admission
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db


def test_campaign_detail_is_served_from_memory_with_an_etag(auth_client, settings):
    campaign = CampaignFactory(total_budget=Decimal("100000.00"), bucket_count=2)
    campaign_cache_clear()
    first = auth_client.get(f"/api/v1/campaigns/{campaign.slug}/")
    assert first.status_code == 200
    assert first["Cache-Control"] == "public, max-age=1"
    etag = first["ETag"]
    with CaptureQueriesContext(connection) as queries:
        again = auth_client.get(f"/api/v1/campaigns/{campaign.slug}/")
    assert again.content == first.content
    assert len(queries) <= 1  # the token, at most; the detail itself comes from memory
    not_modified = auth_client.get(f"/api/v1/campaigns/{campaign.slug}/", HTTP_IF_NONE_MATCH=etag)
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    # A switch flip shows once the per-process copy is refreshed (at most 0.5 s; cleared here).
    campaign_set_switches(campaign=campaign, actor=None, claims_enabled=False)
    campaign_cache_clear()
    flipped = auth_client.get(f"/api/v1/campaigns/{campaign.slug}/", HTTP_IF_NONE_MATCH=etag)
    assert flipped.status_code == 200
    assert flipped.json()["switches"]["claims"] is False
    assert flipped["ETag"] != etag


def test_near_the_end_of_the_budget_has_budget_is_exact(auth_client):
    campaign = CampaignFactory(total_budget=Decimal("25.00"), bucket_count=1)
    campaign_cache_clear()
    assert auth_client.get(f"/api/v1/campaigns/{campaign.slug}/").json()["has_budget"] is True
    from vouchers.models import Voucher
    from vouchers.services import voucher_issue

    voucher_issue(user=UserFactory(), campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    assert auth_client.get(f"/api/v1/campaigns/{campaign.slug}/").json()["has_budget"] is False


def test_a_join_refused_for_exhausted_budget_runs_no_query_once_redis_knows_the_user(settings, auth_client, guard_off):
    if not settings.REDIS_URL:
        pytest.skip("the exhausted hint lives in Redis")
    campaign = CampaignFactory(total_budget=Decimal("0.00"), bucket_count=1)
    url = f"/api/v1/campaigns/{campaign.slug}/join"
    auth_client.get("/api/v1/me")  # token copied to Redis
    first = auth_client.post(url, {"app_version": "1.0.0"}, format="json")
    assert first.status_code == 409 and first.json()["code"] == "budget_exhausted"
    assert admission.budget_known_exhausted(campaign.pk)
    auth_client.post(url, {"app_version": "1.0.0"}, format="json")  # learns the user (no welcome card)
    with CaptureQueriesContext(connection) as queries:
        again = auth_client.post(url, {"app_version": "1.0.0"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "budget_exhausted"
    assert len(queries) == 0, [q["sql"] for q in queries]
    assert reconcile(campaign=campaign).ok


def test_an_exhausted_campaign_still_returns_an_existing_welcome_card(settings, make_auth_client, guard_off):
    if not settings.REDIS_URL:
        pytest.skip("the exhausted hint lives in Redis")
    campaign = CampaignFactory(total_budget=Decimal("25.00"), bucket_count=1)
    url = f"/api/v1/campaigns/{campaign.slug}/join"
    holder, other = make_auth_client(), make_auth_client()
    assert holder.post(url, {"app_version": "1.0.0"}, format="json").status_code == 201
    assert other.post(url, {"app_version": "1.0.0"}, format="json").status_code == 409
    admission.forget_user(campaign.pk, holder.user.pk)  # Redis lost what it knew about the holder
    assert admission.budget_known_exhausted(campaign.pk)
    again = holder.post(url, {"app_version": "1.0.0"}, format="json")
    assert again.status_code == 200  # the same card, not "budget exhausted"
    assert reconcile(campaign=campaign).ok


def test_my_cards_first_page_is_one_query(settings, auth_client, campaign):
    for _ in range(3):
        VoucherFactory(user=auth_client.user, campaign=campaign)
    auth_client.get("/api/v1/vouchers/")  # the token copy and the process copy of campaign slugs
    with CaptureQueriesContext(connection) as queries:
        page = auth_client.get("/api/v1/vouchers/")
    body = page.json()
    assert body["count"] == 3 and len(body["results"]) == 3 and body["next"] is None
    assert len(queries) <= (1 if settings.REDIS_URL else 2), [q["sql"] for q in queries]  # (+ the token without Redis)
    # A full first page still counts the rest.
    for _ in range(18):
        VoucherFactory(user=auth_client.user, campaign=campaign)
    full = auth_client.get("/api/v1/vouchers/").json()
    assert full["count"] == 21 and len(full["results"]) == 20 and full["next"]
    second = auth_client.get(full["next"]).json()
    assert second["count"] == 21 and len(second["results"]) == 1


def test_a_fresh_join_is_the_lock_and_one_statement(settings, auth_client, make_auth_client, campaign, guard_off):
    """Slot lock, then count + reserve + card + ledger (+ the user's first app version) in one statement, and
    both sent in one message (one round trip, its own implicit transaction outside the test's)."""
    make_auth_client().post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
    auth_client.get("/api/v1/me")  # token copied to Redis (without Redis it is one more query)
    with CaptureQueriesContext(connection) as queries:
        joined = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
    assert joined.status_code == 201
    statements = [q["sql"] for q in queries  # transaction control is not a statement (the test runs in savepoints)
                  if q["sql"] not in ("BEGIN", "COMMIT") and "SAVEPOINT" not in q["sql"]]
    # Issue 16: the token's device is counted against the campaign's device cap (vouchers.DeviceClaim), one
    # upsert in the card's transaction; everything else is still the lock and one statement.
    device = [sql for sql in statements if "vouchers_deviceclaim" in sql]
    assert len(device) == 1, statements
    assert device[0].startswith("SELECT pg_advisory_xact_lock(") and "INSERT INTO" in device[0], device
    statements = [sql for sql in statements if sql not in device]
    assert len(statements) <= (0 if settings.REDIS_URL else 1), statements
    assert reconcile(campaign=campaign).ok
    assert auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"},
                            format="json").json()["code"] == joined.json()["code"]


def test_business_refusals_are_counted_not_logged(auth_client, guard_off, caplog):
    campaign = CampaignFactory(total_budget=Decimal("0.00"), bucket_count=1)
    with caplog.at_level("WARNING", logger="django.request"):
        refused = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
        missing = auth_client.get("/api/v1/no-such-thing")
    assert refused.status_code == 409 and refused.json()["code"] == "budget_exhausted"
    assert missing.status_code == 404
    logged = [r.getMessage() for r in caplog.records if r.name == "django.request"]
    assert not [m for m in logged if "/join" in m], logged  # the 409 is a business answer
    assert [m for m in logged if "no-such-thing" in m], logged  # a wrong URL is still logged
