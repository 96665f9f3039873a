import itertools

import pytest
from rest_framework.test import APIClient

from campaign.models import Campaign
from campaign.selectors import campaign_cache_clear
from referrals.services import invite_code_get_or_create
from tests.factories import CampaignFactory, UserFactory

_devices = itertools.count(1)

# Generous abuse limits: tests that are not about abuse must not trip the review rules.
RELAXED = {
    "referral_inviter_hourly_limit": 10_000,
    "referral_inviter_daily_limit": 10_000,
    "referral_device_max_accounts": 10_000,
    "referral_ip_burst_limit": 10_000,
}


def relax(campaign: Campaign, **overrides) -> Campaign:
    Campaign.objects.filter(pk=campaign.pk).update(**{**RELAXED, **overrides})
    campaign.refresh_from_db()
    campaign_cache_clear()
    return campaign


@pytest.fixture(autouse=True)
def _fresh_campaign_cache():
    campaign_cache_clear()
    yield
    campaign_cache_clear()


@pytest.fixture
def campaign(db):
    return relax(CampaignFactory())


@pytest.fixture
def code_of():
    def make(user, campaign):
        return invite_code_get_or_create(user=user, campaign=campaign).code

    return make


@pytest.fixture
def client_for(db):
    """An APIClient with a real bearer token; each client gets its own device id unless given one."""

    def make(user=None, device_id=None):
        from accounts.services import token_create

        user = user or UserFactory()
        client = APIClient()
        device = device_id if device_id is not None else f"dev-{next(_devices)}"
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, device_id=device)}")
        client.user = user
        return client

    return make


@pytest.fixture
def reviewer(db):
    from django.contrib.auth.models import Permission

    from tests.factories import StaffFactory

    staff = StaffFactory()
    staff.user_permissions.add(Permission.objects.get(codename="review_referral"))
    # Drop the cached permission set so has_perm sees the new grant.
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(pk=staff.pk)
