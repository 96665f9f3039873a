"""The admin reads as a product: branding, Chinese roles, no buttons a role cannot use, money that reads."""

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from campaign.models import AuditLog
from miandan.display import duration_cn, money_html, yuan, yuan_cn
from tests.factories import CampaignFactory, StaffFactory

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests-123"


@pytest.fixture
def staff():
    return {name: StaffFactory(username=f"{name}-p", groups=[name]) for name in ("marketing", "finance", "support")}


def _client(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.mark.parametrize("value, exact, reading", [
    ("3000000000.00", "3,000,000,000.00", "30亿"), ("46875000.00", "46,875,000.00", "4,687.5万"),
    ("250.00", "250.00", "250"), ("12345.60", "12,345.60", "1.23万"), ("-50000", "-50,000.00", "-5万"),
])
def test_money_reads_with_separators_and_wan_yi(value, exact, reading):
    assert yuan(Decimal(value)) == exact and yuan_cn(Decimal(value)) == reading
    assert exact in money_html(Decimal(value))


def test_durations_in_chinese():
    import datetime as dt

    assert duration_cn(dt.timedelta(days=30)) == "30 天"
    assert duration_cn(dt.timedelta(days=1, hours=2, minutes=30)) == "1 天 2 小时 30 分"


def test_branded_header_and_home_link(client, staff):
    page = _client(client, staff["marketing"]).get("/admin/").content.decode()
    assert "免单运营后台" in page and "Django 管理" not in page and "Django administration" not in page
    assert 'href="/"' in page  # 查看站点: the demo's home page, which exists now


def test_support_sees_no_password_button_and_roles_in_chinese(client, staff):
    target = staff["finance"]
    page = _client(client, staff["support"]).get(reverse("admin:accounts_user_change", args=[target.pk])).content.decode()
    assert "设置密码" not in page and "重置密码" not in page and "/password/" not in page
    assert "财务（finance）" in page
    listing = client.get(reverse("admin:accounts_user_changelist")).content.decode()
    assert "市场运营（marketing）" in listing and "客服（support）" in listing


def test_a_user_who_may_change_users_keeps_the_password_button(client, staff):
    admin = StaffFactory(username="root-p", is_superuser=True)
    page = _client(client, admin).get(reverse("admin:accounts_user_change", args=[staff["finance"].pk])).content.decode()
    assert "/password/" in page


def test_campaign_pages_read_money_and_days(client, staff):
    live = CampaignFactory(total_budget=Decimal("3000000000.00"), bucket_count=64)
    listing = _client(client, staff["marketing"]).get(reverse("admin:campaign_campaign_changelist")).content.decode()
    assert "30亿" in listing and "3000000000.00" not in listing
    page = client.get(reverse("admin:campaign_campaign_change", args=[live.pk])).content.decode()
    assert "3,000,000,000.00" in page and "3000000000.00" not in page
    assert page.count('class="form-row field-total_budget_display"') == 1  # each money field shown once
    assert 'id="bucket-spread"' in page and "预算桶（64 个）" in page
    assert page.count('class="field-index"') == 0 and "buckets-TOTAL_FORMS" not in page  # no 64-row inline
    assert "30 days" not in page and 'name="card_validity" value="30"' in page
    buckets = client.get(reverse("admin:campaign_budgetbucket_changelist") + f"?campaign__id__exact={live.pk}")
    assert buckets.status_code == 200 and "46,875,000.00" in buckets.content.decode()


def test_audit_log_reads_in_chinese_with_links_and_a_diff(client, staff):
    live = CampaignFactory()
    AuditLog.objects.create(actor=staff["marketing"], action="campaign.switches", object_type="campaign.campaign",
                            object_id=str(live.pk), campaign=live, before={"orders_enabled": True},
                            after={"orders_enabled": False})
    AuditLog.objects.create(actor=staff["marketing"], action="referral.approve", object_type="referrals.referral",
                            object_id="7", campaign=live, before={"status": "under_review"}, after={"status": "accepted"})
    page = _client(client, staff["marketing"]).get(reverse("admin:campaign_auditlog_changelist")).content.decode()
    assert "切换功能开关" in page and "通过邀请审核" in page
    assert "referral.approve" not in page.split('id="changelist-filter"')[0]
    assert f'href="{reverse("admin:campaign_campaign_change", args=[live.pk])}"' in page
    assert 'href="/admin/referrals/referral/7/change/"' in page and "邀请记录 #7" in page
    assert re.search(r"<th>允许下单</th><td class=\"md-before\">开启</td><td>→</td><td class=\"md-after\">关闭</td>", page)
    assert "{'orders_enabled'" not in page and "referrals.referral" not in page
