"""The live dashboard's shared copy (reports/admin.py): viewers never wait for a recomputation once a copy
exists, exactly one refresh runs at a time across processes, and the refresh really brings newer figures."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.core.cache import cache

from reports import admin as reports_admin
from tests.concurrency import require_postgres
from tests.factories import CampaignFactory, UserFactory
from vouchers.services import campaign_join

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spawned(monkeypatch):
    """The refresh threads started, so a test can wait for them."""
    threads = []
    real = reports_admin._spawn_refresh

    def spawn(campaign_id):
        thread = real(campaign_id)
        threads.append(thread)
        return thread

    monkeypatch.setattr(reports_admin, "_spawn_refresh", spawn)
    return threads


def test_a_stale_copy_is_served_at_once_while_one_background_refresh_brings_the_news(monkeypatch, spawned):
    require_postgres()
    campaign = CampaignFactory(total_budget=Decimal("10000.00"))
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    first = reports_admin.cached_dashboard(campaign)  # no copy yet: computed for this viewer
    assert first.cards_issued == 1 and spawned == []
    assert reports_admin.cached_dashboard(campaign).generated_at == first.generated_at  # fresh: shared as is

    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    monkeypatch.setattr(reports_admin, "DASHBOARD_FRESH_SECONDS", 0)
    real_fresh = reports_admin._fresh_dashboard

    def slow_fresh(c):
        time.sleep(1.0)  # a 5-million-card computation, in miniature
        return real_fresh(c)

    monkeypatch.setattr(reports_admin, "_fresh_dashboard", slow_fresh)
    started = time.monotonic()
    served = [reports_admin.cached_dashboard(campaign) for _ in range(5)]
    assert time.monotonic() - started < 0.5  # nobody waited for the recomputation
    assert all(d.generated_at == first.generated_at and d.cards_issued == 1 for d in served)
    assert len(spawned) == 1  # five stale views, one refresh
    spawned[0].join(timeout=30)
    newer = cache.get(reports_admin._dashboard_key(campaign.pk))
    assert newer.cards_issued == 2 and newer.generated_at > first.generated_at
    assert cache.get(reports_admin._dashboard_key(campaign.pk) + ":refresh") is None  # the next one may start


def test_a_refresh_that_fails_keeps_the_old_copy_and_frees_the_flag(monkeypatch, spawned):
    require_postgres()
    campaign = CampaignFactory(total_budget=Decimal("10000.00"))
    first = reports_admin.cached_dashboard(campaign)
    monkeypatch.setattr(reports_admin, "DASHBOARD_FRESH_SECONDS", 0)

    def broken(c):
        raise RuntimeError("database went away")

    monkeypatch.setattr(reports_admin, "_fresh_dashboard", broken)
    assert reports_admin.cached_dashboard(campaign).generated_at == first.generated_at
    spawned[0].join(timeout=30)
    assert cache.get(reports_admin._dashboard_key(campaign.pk)).generated_at == first.generated_at
    assert cache.get(reports_admin._dashboard_key(campaign.pk) + ":refresh") is None
