"""Staff screens: the permissions matrix, campaign creation through the service, budget and switch pages."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import token_create
from campaign.models import AuditLog, BudgetBucket, Campaign, LedgerEntry
from reports.models import ExportJob
from tests.factories import CampaignFactory, StaffFactory, UserFactory, VoucherFactory
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    users = {name: StaffFactory(username=name, groups=[name]) for name in ("marketing", "finance", "support")}
    users["superuser"] = StaffFactory(username="root", is_superuser=True)
    return users


@pytest.fixture
def live(db):
    campaign = CampaignFactory(total_budget=Decimal("500.00"), bucket_count=4)
    VoucherFactory(campaign=campaign)
    return campaign


def _login(client, user):
    client.force_login(user)
    return client


# (url name, args from campaign, who gets 200; everyone else among the three groups gets 403)
CHANGELISTS = [
    ("admin:campaign_campaign_changelist", {"marketing", "finance", "support"}),
    ("admin:campaign_ledgerentry_changelist", {"marketing", "finance"}),
    ("admin:campaign_auditlog_changelist", {"marketing", "finance"}),
    ("admin:campaign_budgetbucket_changelist", {"marketing", "finance"}),
    ("admin:reports_exportjob_changelist", {"finance"}),
    ("admin:campaign_campaign_add", {"marketing"}),
]
OTHER_APPS = [
    ("vouchers", "voucher", {"marketing", "finance", "support"}),
    ("orders", "order", {"marketing", "finance", "support"}),
    ("referrals", "referral", {"marketing", "finance", "support"}),
    ("accounts", "user", {"support"}),
]


@pytest.mark.parametrize("group", ["marketing", "finance", "support"])
def test_permissions_matrix_changelists(client, staff, live, group):
    _login(client, staff[group])
    for name, allowed in CHANGELISTS:
        response = client.get(reverse(name))
        assert response.status_code == (200 if group in allowed else 403), (group, name, response.status_code)
    # The campaign's own pages.
    expected = {
        "budget": group == "marketing",
        "switches": group == "marketing",
        "dashboard": True,
    }
    for page, ok in expected.items():
        response = client.get(reverse(f"admin:campaign_campaign_{page}", args=[live.pk]))
        assert response.status_code == (200 if ok else 403), (group, page)


@pytest.mark.parametrize("group", ["marketing", "finance", "support"])
def test_permissions_matrix_other_apps(client, staff, live, group):
    """Cards, orders, referrals and users: support looks users up; finance and marketing do not."""
    _login(client, staff[group])
    registered = {(m._meta.app_label, m._meta.model_name) for m in admin.site._registry}
    for app, model, allowed in OTHER_APPS:
        if (app, model) not in registered:
            continue  # those admins belong to the apps' own modules
        response = client.get(reverse(f"admin:{app}_{model}_changelist"))
        assert response.status_code == (200 if group in allowed else 403), (group, app, model, response.status_code)


def test_report_without_credentials_is_401(live):
    # api.md: 401 for no/invalid token; the 404 rule is for signed-in callers who may not see it.
    for fmt in ("json", "csv", "xlsx"):
        response = APIClient().get(f"/api/v1/reports/campaigns/{live.slug}/budget?format={fmt}")
        assert response.status_code == 401, fmt
        assert response.json()["code"] == "not_authenticated"
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert bad.get(f"/api/v1/reports/campaigns/{live.slug}/budget").status_code == 401


@pytest.mark.parametrize("who", ["marketing", "support", "app_user"])
def test_report_is_404_for_everyone_but_finance(staff, live, who):
    client = APIClient()
    if who == "app_user":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(user=UserFactory())}")
    else:
        client.force_login(staff[who])
    for fmt in ("json", "csv", "xlsx"):
        response = client.get(f"/api/v1/reports/campaigns/{live.slug}/budget?format={fmt}")
        assert response.status_code == 404, (who, fmt)
        assert response.json()["code"] == "not_found"
    # Not even a hint through the validation error.
    assert client.get(f"/api/v1/reports/campaigns/{live.slug}/budget?format=pdf").status_code == 404


@pytest.mark.parametrize("who", ["finance", "superuser"])
def test_report_for_finance_by_session_and_by_staff_token(staff, live, who):
    session = _login(APIClient(), staff[who])
    assert session.get(f"/api/v1/reports/campaigns/{live.slug}/budget").status_code == 200
    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(user=staff[who])}")
    response = token.get(f"/api/v1/reports/campaigns/{live.slug}/budget?format=json&group_by=brand")
    assert response.status_code == 200
    assert response.json()["summary"]["reserved"] == "25.00"


def test_campaign_page_shows_report_buttons_only_to_finance(client, staff, live):
    page = _login(client, staff["finance"]).get(reverse("admin:campaign_campaign_change", args=[live.pk])).content.decode()
    report_url = reverse("admin:campaign_campaign_report", args=[live.pk])
    assert report_url in page and "后台导出完整流水" in page
    report = client.get(report_url).content.decode()
    for group in ("day", "brand", "city"):
        for fmt in ("csv", "xlsx"):
            assert f"/api/v1/reports/campaigns/{live.slug}/budget?format={fmt}&amp;group_by={group}" in report
    client.logout()
    page = _login(client, staff["marketing"]).get(reverse("admin:campaign_campaign_change", args=[live.pk])).content.decode()
    assert "/api/v1/reports/" not in page and report_url not in page
    assert client.get(report_url).status_code == 404
    assert "调整预算" in page and "实时看板" in page


def _add_form(**overrides) -> dict:
    starts = timezone.localtime(timezone.now())
    ends = starts + dt.timedelta(days=10)
    data = {
        "slug": "new-tea", "name": "新活动", "status": "live",
        "starts_at_0": starts.strftime("%Y-%m-%d"), "starts_at_1": starts.strftime("%H:%M:%S"),
        "ends_at_0": ends.strftime("%Y-%m-%d"), "ends_at_1": ends.strftime("%H:%M:%S"),
        "face_value": "25.00", "card_cap": "21", "min_app_version": "1.0.0", "card_validity": "30 00:00:00",
        "total_budget": "1000.00", "bucket_count": "4",
    }
    data.update(overrides)
    return data


def test_marketing_creates_campaign_through_the_service(client, staff):
    response = _login(client, staff["marketing"]).post(reverse("admin:campaign_campaign_add"), _add_form())
    assert response.status_code == 302, response.content.decode()[:3000]
    campaign = Campaign.objects.get(slug="new-tea")
    assert BudgetBucket.objects.filter(campaign=campaign).count() == 4
    assert sum(b.allotment for b in campaign.buckets.all()) == Decimal("1000.00")
    opening = LedgerEntry.objects.filter(campaign=campaign, kind="adjust")
    assert opening.count() == 4 and all(e.actor == staff["marketing"] for e in opening)
    assert AuditLog.objects.filter(action="campaign.create", object_id=str(campaign.pk), actor=staff["marketing"]).exists()
    assert reconcile(campaign=campaign).ok


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ends_at_0": "2020-01-01", "ends_at_1": "00:00:00"}, "结束时间必须晚于开始时间"),
        ({"face_value": "0"}, "面额必须大于 0 元"),
        ({"card_cap": "101"}, "每人卡数上限必须在 1 到 100 之间"),
        ({"card_cap": "0"}, "每人卡数上限必须在 1 到 100 之间"),
        ({"total_budget": "-1.00"}, "预算不能低于已预留与已花费之和"),
    ],
)
def test_add_form_refuses_bad_values_with_chinese_messages(client, staff, overrides, message):
    response = _login(client, staff["marketing"]).post(reverse("admin:campaign_campaign_add"), _add_form(**overrides))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Campaign.objects.filter(slug="new-tea").exists()


def test_duplicate_slug_is_refused(client, staff, live):
    response = _login(client, staff["marketing"]).post(reverse("admin:campaign_campaign_add"), _add_form(slug=live.slug))
    assert response.status_code == 200
    assert "该标识已被使用" in response.content.decode()


def test_money_fields_are_read_only_on_the_change_form(client, staff, live):
    _login(client, staff["marketing"])
    url = reverse("admin:campaign_campaign_change", args=[live.pk])
    page = client.get(url).content.decode()
    for field in ("total_budget", "face_value", "card_cap", "bucket_count", "claims_enabled"):
        assert f'name="{field}"' not in page, field
    starts = timezone.localtime(live.starts_at)
    ends = timezone.localtime(live.ends_at)
    data = {
        "slug": live.slug, "name": "改名了", "status": "live",
        "starts_at_0": starts.strftime("%Y-%m-%d"), "starts_at_1": starts.strftime("%H:%M:%S"),
        "ends_at_0": ends.strftime("%Y-%m-%d"), "ends_at_1": ends.strftime("%H:%M:%S"),
        "min_app_version": "1.0.0", "card_validity": "30",
        "referral_inviter_hourly_limit": "20", "referral_inviter_daily_limit": "100",
        "referral_device_max_accounts": "1", "referral_ip_burst_limit": "5", "referral_clawback": "on",
        "total_budget": "999999.00", "face_value": "1.00", "claims_enabled": "",
        "buckets-TOTAL_FORMS": "4", "buckets-INITIAL_FORMS": "4", "buckets-MIN_NUM_FORMS": "0",
        "buckets-MAX_NUM_FORMS": "0",
    }
    for i, bucket in enumerate(live.buckets.order_by("index")):
        data[f"buckets-{i}-id"] = str(bucket.pk)
        data[f"buckets-{i}-campaign"] = str(live.pk)
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    live.refresh_from_db()
    assert live.name == "改名了"
    assert live.total_budget == Decimal("500.00") and live.face_value == Decimal("25.00") and live.claims_enabled
    log = AuditLog.objects.get(action="campaign.update")
    assert log.actor == staff["marketing"] and log.after == {"name": "改名了"} and log.before["name"] != "改名了"


def test_budget_page_lowering_below_committed_is_refused_with_message(client, staff, live):
    _login(client, staff["marketing"])
    url = reverse("admin:campaign_campaign_budget", args=[live.pk])
    response = client.post(url, {"new_total": "10.00", "reason": "压缩预算"})
    assert response.status_code == 200
    assert "预算不能低于已预留与已花费之和（25.00 元）" in response.content.decode()
    live.refresh_from_db()
    assert live.total_budget == Decimal("500.00")
    assert not AuditLog.objects.filter(action="campaign.budget_change").exists()
    # A reason is required.
    response = client.post(url, {"new_total": "600.00", "reason": ""})
    assert "调整预算必须填写原因" in response.content.decode()


def test_budget_page_raise_writes_ledger_audit_and_buckets(client, staff, live):
    _login(client, staff["marketing"])
    url = reverse("admin:campaign_campaign_budget", args=[live.pk])
    # Step 1 only shows what would change: from, to, the difference, the reason. Nothing is written yet.
    response = client.post(url, {"new_total": "600.00", "reason": "追加预算"})
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="budget-confirm"' in page and "500.00" in page and "600.00" in page and "+100.00" in page
    assert "追加预算" in page
    live.refresh_from_db()
    assert live.total_budget == Decimal("500.00") and not AuditLog.objects.filter(action="campaign.budget_change").exists()
    # Step 2 confirms.
    response = client.post(url, {"new_total": "600.00", "reason": "追加预算", "confirm": "yes"})
    assert response.status_code == 302
    live.refresh_from_db()
    assert live.total_budget == Decimal("600.00")
    assert sum(b.allotment for b in live.buckets.all()) == Decimal("600.00")
    entries = LedgerEntry.objects.filter(campaign=live, kind="adjust", reason="追加预算")
    assert sum(e.amount for e in entries) == Decimal("100.00")
    assert all(e.actor == staff["marketing"] for e in entries)
    log = AuditLog.objects.get(action="campaign.budget_change")
    assert (log.actor, log.before, log.after, log.reason) == (
        staff["marketing"], {"total_budget": "500.00"}, {"total_budget": "600.00"}, "追加预算")
    assert reconcile(campaign=live).ok


def test_switches_page_and_actions_are_audited(client, staff, live):
    _login(client, staff["marketing"])
    response = client.post(reverse("admin:campaign_campaign_switches", args=[live.pk]),
                           {"claims_enabled": "", "referrals_enabled": "on", "orders_enabled": "on"})
    assert response.status_code == 302
    live.refresh_from_db()
    assert not live.claims_enabled and live.referrals_enabled
    log = AuditLog.objects.get(action="campaign.switches")
    assert (log.actor, log.before, log.after) == (staff["marketing"], {"claims_enabled": True}, {"claims_enabled": False})
    # The changelist action flips one switch on many campaigns.
    response = client.post(reverse("admin:campaign_campaign_changelist"),
                           {"action": "disable_orders_enabled", "_selected_action": [str(live.pk)]})
    assert response.status_code == 302
    live.refresh_from_db()
    assert not live.orders_enabled
    assert AuditLog.objects.filter(action="campaign.switches").count() == 2


def test_finance_cannot_toggle_switches_or_change_budget(client, staff, live):
    _login(client, staff["finance"])
    assert client.post(reverse("admin:campaign_campaign_switches", args=[live.pk]), {}).status_code == 403
    assert client.post(reverse("admin:campaign_campaign_budget", args=[live.pk]),
                       {"new_total": "1.00", "reason": "x"}).status_code == 403
    response = client.post(reverse("admin:campaign_campaign_changelist"),
                           {"action": "disable_claims_enabled", "_selected_action": [str(live.pk)]})
    live.refresh_from_db()
    assert live.claims_enabled
    assert response.status_code in (200, 302)


def test_ledger_and_audit_log_are_read_only(client, staff, live):
    _login(client, staff["superuser"])
    entry = LedgerEntry.objects.filter(campaign=live).first()
    page = client.get(reverse("admin:campaign_ledgerentry_change", args=[entry.pk])).content.decode()
    assert 'name="amount"' not in page
    assert client.get(reverse("admin:campaign_ledgerentry_add")).status_code == 403
    assert client.get(reverse("admin:campaign_auditlog_add")).status_code == 403
    assert client.post(reverse("admin:campaign_ledgerentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403


def test_changelist_shows_budget_figures_from_buckets(client, staff, live):
    page = _login(client, staff["finance"]).get(reverse("admin:campaign_campaign_changelist")).content.decode()
    assert "500.00" in page and "25.00" in page and "475.00" in page and "5.0%" in page


def test_dashboard_shows_live_figures(client, staff, live):
    page = _login(client, staff["marketing"]).get(reverse("admin:campaign_campaign_dashboard", args=[live.pk]))
    html = page.content.decode()
    assert 'http-equiv="refresh"' in html
    assert '<div class="value" id="md-reserved">25.00</div>' in html
    assert '<div class="value" id="md-remaining">475.00</div>' in html
    assert '<div class="value" id="md-cards">1</div>' in html
    assert html.count('role="img"') == 5  # the five server-side charts
    data = client.get(reverse("admin:campaign_campaign_dashboard_json", args=[live.pk])).json()
    assert data["totals"]["reserved"] == "25.00" and data["cards_issued"] == 1
    assert data["switches"] == {"claims_enabled": True, "referrals_enabled": True, "orders_enabled": True}


def test_export_job_from_admin_runs_and_downloads(client, staff, live, settings, tmp_path):
    from reports.tasks import export_job_run_task

    settings.MIANDAN_EXPORT_ROOT = tmp_path
    _login(client, staff["finance"])
    response = client.post(reverse("admin:campaign_campaign_export", args=[live.pk]), {"kind": "ledger", "format": "csv"})
    assert response.status_code == 302
    job = ExportJob.objects.get()
    assert job.status == ExportJob.Status.PENDING and job.requested_by == staff["finance"]
    export_job_run_task.apply(args=[job.pk])  # what the worker runs
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE
    assert job.rows_total == job.rows_done == LedgerEntry.objects.filter(campaign=live).count()
    listing = client.get(reverse("admin:reports_exportjob_changelist")).content.decode()
    assert "下载" in listing and "100%" in listing
    download = client.get(reverse("admin:reports_exportjob_download", args=[job.pk]))
    body = b"".join(download.streaming_content).decode("utf-8-sig")
    assert body.splitlines()[0].startswith("流水号,时间（北京时间）,类型,金额")
    assert len(body.splitlines()) == job.rows_total + 1
    # Running it again (a redelivered task) changes nothing.
    export_job_run_task.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE
    # Marketing may neither request nor download.
    client.logout()
    _login(client, staff["marketing"])
    assert client.post(reverse("admin:campaign_campaign_export", args=[live.pk]), {"kind": "ledger"}).status_code == 403
    assert client.get(reverse("admin:reports_exportjob_download", args=[job.pk])).status_code == 404


def test_rebalance_action_evens_out_buckets_and_is_audited(client, staff, live):
    from campaign.services import campaign_budget_change

    # Lowering takes the cut from the roomiest bucket, which leaves the buckets uneven.
    campaign_budget_change(campaign=live, new_total=Decimal("400.00"), actor=staff["marketing"], reason="收紧")
    live.refresh_from_db()
    bucket = live.buckets.order_by("index").first()
    before = [b.available for b in live.buckets.order_by("index")]
    assert max(before) - min(before) > live.face_value
    _login(client, staff["marketing"])
    response = client.post(reverse("admin:campaign_campaign_changelist"),
                           {"action": "rebalance_buckets", "_selected_action": [str(live.pk)]})
    assert response.status_code == 302
    after = [b.available for b in live.buckets.order_by("index")]
    assert sum(after) == sum(before) and max(after) - min(after) <= live.face_value
    assert AuditLog.objects.filter(action="campaign.budget_rebalance", actor=staff["marketing"]).exists()
    assert LedgerEntry.objects.filter(campaign=live, reason="预算桶再平衡").exists()
    assert bucket.pk  # buckets are moved with adjust entries, never rewritten
    assert reconcile(campaign=live).ok
    # Finance cannot run it.
    client.logout()
    _login(client, staff["finance"])
    client.post(reverse("admin:campaign_campaign_changelist"),
                {"action": "rebalance_buckets", "_selected_action": [str(live.pk)]})
    assert AuditLog.objects.filter(action="campaign.budget_rebalance").count() == 1
