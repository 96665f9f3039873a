"""The Redis fast path in front of join: the hopeless never reach PostgreSQL, Redis never decides a success."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaign.errors import BudgetExhausted
from tests.factories import CampaignFactory, UserFactory
from vouchers import admission
from vouchers.errors import CardLimitReached
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import campaign_join, voucher_issue

# Every test runs on a single Redis and on a three-master Redis Cluster (tests/conftest.py `redis_backend`).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_backend")]


@pytest.fixture(autouse=True)
def _needs_redis(settings):
    if not settings.REDIS_URL:
        pytest.skip("the fast path needs Redis (make test sets REDIS_URL)")


def fill(user, campaign, n):
    for _ in range(n):
        voucher_issue(user=user, campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)


def test_capped_user_is_rejected_without_touching_the_database(user):
    campaign = CampaignFactory(card_cap=3)
    fill(user, campaign, 3)
    with pytest.raises(CardLimitReached):
        campaign_join(user=user, campaign=campaign, app_version="1.0.0")  # learns from PostgreSQL
    assert admission.user_state(campaign.pk, user.pk).count == 3
    with CaptureQueriesContext(connection) as queries, pytest.raises(CardLimitReached):
        campaign_join(user=user, campaign=campaign, app_version="1.0.0")
    assert len(queries) == 0, [q["sql"] for q in queries]


def test_welcome_card_comes_back_from_the_fast_path(user, campaign, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        card, created = campaign_join(user=user, campaign=campaign, app_version="1.0.0")
    assert created
    assert admission.user_state(campaign.pk, user.pk).welcome_code == card.code
    with CaptureQueriesContext(connection) as queries:
        again, created = campaign_join(user=user, campaign=campaign, app_version="1.0.0")
    assert not created and again.pk == card.pk
    assert len(queries) == 1  # the card itself; no lock, no transaction


def test_new_card_of_another_source_invalidates_the_remembered_count(user, django_capture_on_commit_callbacks):
    campaign = CampaignFactory(card_cap=3)
    fill(user, campaign, 1)
    with django_capture_on_commit_callbacks(execute=True):
        card, _ = campaign_join(user=user, campaign=campaign, app_version="1.0.0")
    assert admission.user_state(campaign.pk, user.pk).count == 2
    with django_capture_on_commit_callbacks(execute=True):
        fill(user, campaign, 1)  # a referral card arrives: the remembered state is dropped
    assert admission.user_state(campaign.pk, user.pk) is None
    # Even a stale, too-low count cannot create a card: the slot constraint and the lock decide.
    admission.remember_user(campaign.pk, user.pk, count=0, welcome_code="")
    again, created = campaign_join(user=user, campaign=campaign, app_version="1.0.0")
    assert not created and again.pk == card.pk
    assert Voucher.objects.filter(user=user).count() == 3


def test_known_exhausted_budget_rejects_new_users_but_returns_existing_cards():
    campaign = CampaignFactory(total_budget=Decimal("25.00"), bucket_count=2)
    first = UserFactory()
    card, _ = campaign_join(user=first, campaign=campaign, app_version="1.0.0")
    with pytest.raises(BudgetExhausted):
        campaign_join(user=UserFactory(), campaign=campaign, app_version="1.0.0")
    assert admission.budget_known_exhausted(campaign.pk)
    late = UserFactory()
    with CaptureQueriesContext(connection) as queries, pytest.raises(BudgetExhausted):
        campaign_join(user=late, campaign=campaign, app_version="1.0.0")
    assert len(queries) == 1  # only "does this user already have a welcome card?"
    admission.forget_user(campaign.pk, first.pk)
    again, created = campaign_join(user=first, campaign=campaign, app_version="1.0.0")
    assert again.pk == card.pk and not created
    assert reconcile(campaign=campaign).ok


def test_lost_or_garbled_redis_state_falls_back_to_postgres(user):
    campaign = CampaignFactory(card_cap=2)
    fill(user, campaign, 2)
    from miandan.redis import get_redis

    get_redis().hset(admission._user_key(campaign.pk, user.pk), mapping={"n": "garbage"})
    with pytest.raises(CardLimitReached):
        campaign_join(user=user, campaign=campaign, app_version="1.0.0")
    assert admission.user_state(campaign.pk, user.pk).count == 2  # rebuilt from PostgreSQL


def test_redis_down_means_the_database_decides(user, campaign, settings):
    import miandan.redis

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    miandan.redis._client.cache_clear()
    try:
        card, created = campaign_join(user=user, campaign=campaign, app_version="1.0.0")
        again, created_again = campaign_join(user=user, campaign=campaign, app_version="1.0.0")
    finally:
        miandan.redis._client.cache_clear()
    assert created and not created_again and again.pk == card.pk
    assert reconcile(campaign=campaign).ok
