from decimal import Decimal

import pytest

from campaign.models import BudgetBucket
from tests.factories import CampaignFactory
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db


def test_join_issues_welcome_card_then_repeats_it(auth_client, campaign):
    first = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.2.0"}, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["face_value"] == "25.00"
    assert first.json()["source"] == "welcome"
    again = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.2.0"}, format="json")
    assert again.status_code == 200
    assert again.json()["code"] == first.json()["code"]
    assert Voucher.objects.count() == 1
    assert reconcile(campaign=campaign).ok


def test_join_compares_versions_as_versions(auth_client):
    campaign = CampaignFactory(min_app_version="1.10.0")
    old = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.9.9"}, format="json")
    assert old.status_code == 403
    assert old.json()["code"] == "app_upgrade_required"
    new = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.10.0"}, format="json")
    assert new.status_code == 201


def test_join_budget_exhausted(make_auth_client):
    campaign = CampaignFactory(total_budget=Decimal("25.00"), bucket_count=4)
    assert make_auth_client().post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}).status_code == 201
    second = make_auth_client().post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"})
    assert second.status_code == 409
    assert second.json()["code"] == "budget_exhausted"
    assert sum(b.available for b in BudgetBucket.objects.filter(campaign=campaign)) == 0
    assert reconcile(campaign=campaign).ok


def test_join_requires_auth(api_client, campaign):
    response = api_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
