"""Issue 20 for marketing: the plan and caps in admin (Chinese), the pace alert (log, metric, banner), the dashboard."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.urls import reverse
from prometheus_client import REGISTRY

from campaign.models import Campaign, PaceMode
from campaign.selectors import pace_gauges
from reports.services import pace_check
from tests.factories import CampaignFactory, StaffFactory, UserFactory
from vouchers.services import campaign_join

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_off")]


@pytest.fixture
def guard_off(settings):
    settings.MIANDAN_SHED_ENABLED = False
    settings.RATELIMIT_ENABLE = False
    return settings


@pytest.fixture
def marketing():
    return StaffFactory(username="marketing", groups=["marketing"])


def ahead_of_plan() -> Campaign:
    """Alert-only mode, a plan of 0.5 % (50 yuan) now: three cards (75 yuan) run 50 % ahead (margin 5 %)."""
    campaign = CampaignFactory(bucket_count=2)
    Campaign.objects.filter(pk=campaign.pk).update(
        pace_mode=PaceMode.ALERT, pace_points=[[campaign.starts_at.isoformat(), "0.5%"]])
    campaign.refresh_from_db()
    for _ in range(3):
        campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    return campaign


def test_alert_fires_with_a_log_line_and_metrics_when_spend_runs_ahead_of_plan(caplog):
    campaign = ahead_of_plan()
    before = REGISTRY.get_sample_value("miandan_budget_pace_alerts_total", {"campaign": campaign.slug}) or 0
    with caplog.at_level(logging.WARNING, logger="reports.services"):
        assert pace_check() == [campaign.slug]
    assert any("budget ahead of plan" in r.getMessage() and campaign.slug in r.getMessage() for r in caplog.records)
    assert REGISTRY.get_sample_value("miandan_budget_pace_alerts_total", {"campaign": campaign.slug}) == before + 1
    gauges = {g.name: dict(g.samples) for g in pace_gauges()}
    assert gauges["miandan_budget_pace_alert"][(campaign.slug,)] == 1.0
    assert gauges["miandan_budget_planned_yuan"][(campaign.slug,)] == 50.0


def test_no_alert_within_the_margin():
    campaign = CampaignFactory(bucket_count=2)
    Campaign.objects.filter(pk=campaign.pk).update(
        pace_mode=PaceMode.ALERT, pace_points=[[campaign.starts_at.isoformat(), "0.5%"]])
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    assert pace_check() == []


def test_admin_banner_and_dashboard_show_plan_vs_actual(client, marketing):
    campaign = ahead_of_plan()
    client.force_login(marketing)
    page = client.get(reverse("admin:campaign_campaign_change", args=[campaign.pk])).content.decode()
    assert "投放超计划" in page and "投放计划曲线" in page and "每日发卡上限（张）" in page
    listing = client.get(reverse("admin:campaign_campaign_changelist")).content.decode()
    assert "投放超计划" in listing
    board = client.get(reverse("admin:campaign_campaign_dashboard", args=[campaign.pk])).content.decode()
    assert 'id="md-pace-alert"' in board and "投放计划" in board and 'id="md-runout"' in board
    data = client.get(reverse("admin:campaign_campaign_dashboard_json", args=[campaign.pk])).json()
    assert data["pace"]["alert"] is True and data["pace"]["planned"] == "50.00"


def test_marketing_sets_a_plan_and_caps_in_admin(client, marketing):
    campaign = CampaignFactory(bucket_count=2)
    client.force_login(marketing)
    url = reverse("admin:campaign_campaign_change", args=[campaign.pk])
    form = client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update({
        "starts_at_0": campaign.starts_at.astimezone().strftime("%Y-%m-%d"),
        "starts_at_1": campaign.starts_at.astimezone().strftime("%H:%M:%S"),
        "ends_at_0": campaign.ends_at.astimezone().strftime("%Y-%m-%d"),
        "ends_at_1": campaign.ends_at.astimezone().strftime("%H:%M:%S"),
        "card_validity": 30,
        "pace_mode": PaceMode.REFUSE, "pace_points": "2026-02-01 10:00, 20%\n2026-02-03 00:00, 1500",
        "pace_throttle_from": "0.9", "pace_alert_margin": "0.05", "daily_card_cap": "1000",
        "store_daily_subsidy_cap": "500.00", "brand_daily_subsidy_cap": "",
    })
    data.pop("starts_at", None)
    data.pop("ends_at", None)
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    campaign.refresh_from_db()
    assert campaign.pace_points == [["2026-02-01T10:00:00+08:00", "20%"], ["2026-02-03T00:00:00+08:00", "1500"]]
    assert campaign.daily_card_cap == 1000 and campaign.store_daily_subsidy_cap == Decimal("500.00")
    data["pace_points"] = "明天, 很多"
    bad = client.post(url, data)
    assert bad.status_code == 200 and "第 1 行无法识别" in bad.content.decode()
