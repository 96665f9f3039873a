"""The admin flows marketing, finance and support use, in Chromium at 1366 x 900, with screenshots.

Marketing: the campaign list fits, the buckets are summarised, a budget change is shown as
"from, to, Δ, reason" before it applies, the audit log reads in Chinese, the switches say what users
see, a held referral is approved from its own page. Support: no 设置密码 button. Finance: the budget
report on screen and its downloads, the ledger with card codes. Screenshots: test-artifacts/admin-*.png.
"""

from __future__ import annotations

import io
from decimal import Decimal

import openpyxl
import pytest

from campaign.models import AuditLog, Campaign
from referrals.models import Referral
from referrals.services import invite_code_get_or_create, referral_accept
from tests.factories import CampaignFactory, StaffFactory, UserFactory, VoucherFactory
from tests.referrals.conftest import relax
from tests.web.conftest import DESKTOP, launch, shot, watch
from vouchers.selectors import reconcile

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-for-tests-123"  # StaffFactory's


@pytest.fixture
def scene(settings):
    settings.RATELIMIT_ENABLE = False
    campaign = CampaignFactory(slug="spring-tea", name="春节请你喝奶茶", total_budget=Decimal("3000000000.00"),
                               bucket_count=64)
    for _ in range(3):
        VoucherFactory(campaign=campaign)
    relax(campaign, referral_device_max_accounts=1)
    inviter = UserFactory(phone="13911112222", username="13911112222")
    code = invite_code_get_or_create(user=inviter, campaign=campaign).code
    referral_accept(user=UserFactory(), campaign=campaign, code=code, device_id="farm")
    held = referral_accept(user=UserFactory(phone="13933334444", username="13933334444"), campaign=campaign, code=code,
                           device_id="farm")
    assert held.status == Referral.Status.UNDER_REVIEW
    return {
        "campaign": campaign, "held": held,
        "marketing": StaffFactory(username="marketing-b", first_name="市场", groups=["marketing"]),
        "finance": StaffFactory(username="finance-b", first_name="财务", groups=["finance"]),
        "support": StaffFactory(username="support-b", first_name="客服", groups=["support"]),
    }


def _login(browser, base: str, username: str):
    context = browser.new_context(**DESKTOP, accept_downloads=True)
    seen = watch(context, base)
    page = context.new_page()
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
    return context, page, seen


def _fits(page) -> None:
    """The change list's table is not wider than its box (nothing hidden behind a scroll bar at 1366 px)."""
    overflow = page.evaluate("(() => { const r = document.querySelector('.results');"
                             " return r ? r.scrollWidth - r.clientWidth : 0; })()")
    assert overflow <= 0, f"{page.url}: the list is {overflow} px wider than the page"


def test_marketing_finance_and_support_flows(live_server, scene):
    from playwright.sync_api import sync_playwright

    base, campaign, held = live_server.url, scene["campaign"], scene["held"]
    with sync_playwright() as p:
        browser = launch(p)

        # --- marketing -------------------------------------------------------------------------
        context, page, seen = _login(browser, base, "marketing-b")
        assert "免单运营后台" in page.inner_text("#site-name") and "Django" not in page.content()
        shot(page, "admin-01-index.png")

        page.goto(f"{base}/admin/campaign/campaign/")
        _fits(page)
        row = page.inner_text("#result_list tbody tr")
        assert "30亿" in row and "spring-tea" in row and "领卡" in row
        shot(page, "admin-02-campaign-list.png")

        page.click("text=春节请你喝奶茶")
        page.wait_for_selector("#budget-summary")
        assert "3,000,000,000.00" in page.inner_text("#sum-total") and "30亿" in page.inner_text("#sum-total")
        assert "预算桶（64 个）" in page.inner_text("#budget-summary")
        assert page.locator("#buckets-group").count() == 0  # no 64-row inline
        assert page.input_value("#id_card_validity") == "30"
        shot(page, "admin-03-campaign-change.png")
        page.click("#show-buckets")
        page.wait_for_selector("#result_list")
        assert page.locator("#result_list tbody tr").count() == 64
        assert "46,875,000.00" in page.inner_text("#result_list")
        _fits(page)
        shot(page, "admin-04-buckets.png")

        # Budget change in two steps.
        page.goto(f"{base}/admin/campaign/campaign/{campaign.pk}/budget/")
        page.fill("#id_new_total", "3200000000.00")
        page.fill("#id_reason", "春节加码")
        page.click("input[type=submit]")
        page.wait_for_selector("#budget-confirm")
        assert "3,000,000,000.00" in page.inner_text("#from") and "3,200,000,000.00" in page.inner_text("#to")
        assert "+200,000,000.00" in page.inner_text("#delta") and "2亿" in page.inner_text("#delta")
        assert page.inner_text("#reason") == "春节加码"
        shot(page, "admin-05-budget-confirm.png")
        page.click("input[value='确认调整']")
        page.wait_for_selector(".messagelist")
        assert "3,200,000,000.00" in page.inner_text(".messagelist")

        # Switches: the help says what users will see.
        page.goto(f"{base}/admin/campaign/campaign/{campaign.pk}/switches/")
        help_text = page.inner_text("#switch-help")
        assert "下单功能暂时暂停，请稍后再试" in help_text and "领卡功能暂时暂停，请稍后再试" in help_text
        assert "503" not in page.inner_text("#content")
        page.uncheck("#id_orders_enabled")
        shot(page, "admin-06-switches.png")
        page.click("input[value='保存开关']")
        page.wait_for_selector(".messagelist")

        # The audit log reads in Chinese, with links and a diff.
        page.goto(f"{base}/admin/campaign/auditlog/")
        _fits(page)
        log = page.inner_text("#result_list")
        assert "调整预算" in log and "切换功能开关" in log and "campaign.budget_change" not in log
        assert "3,200,000,000.00 元" in log and "关闭" in log
        assert page.locator("#result_list a", has_text="活动 #").count() >= 1
        shot(page, "admin-07-audit-log.png")

        # A held referral, decided from its own page; phones masked, no internal path.
        page.goto(f"{base}/admin/referrals/referral/{held.pk}/change/")
        body = page.inner_text("#content")
        assert "139****4444" in body and "13933334444" not in body and "13911112222" not in body
        assert held.path not in page.inner_text("#content-main .field-chain_col")
        shot(page, "admin-08-referral-review.png")
        page.click("#approve")
        page.wait_for_selector("#id_note")
        assert "13933334444" not in page.inner_text("#content")
        page.fill("#id_note", "同一家人的手机，放行")
        page.click("input[value='确认通过']")
        page.wait_for_selector(".messagelist")
        assert "已通过 1 条邀请" in page.inner_text(".messagelist")
        page.goto(f"{base}/admin/referrals/referral/")
        _fits(page)
        shot(page, "admin-09-referral-list.png")
        assert seen["outside"] == [] and seen["errors"] == []
        context.close()

        # --- support ---------------------------------------------------------------------------
        context, page, _ = _login(browser, base, "support-b")
        page.goto(f"{base}/admin/accounts/user/")
        _fits(page)
        assert "财务（finance）" in page.inner_text("#result_list")
        page.click("text=finance-b")
        page.wait_for_selector("#content-main")
        assert page.locator("text=设置密码").count() == 0 and page.locator("#content a[href*='password']").count() == 0
        shot(page, "admin-10-support-user.png")
        for path in ("/admin/orders/order/", "/admin/vouchers/voucher/"):
            page.goto(base + path)
            _fits(page)
        context.close()

        # --- finance ---------------------------------------------------------------------------
        context, page, _ = _login(browser, base, "finance-b")
        page.goto(f"{base}/admin/campaign/campaign/{campaign.pk}/change/")
        page.click("text=预算报表")
        page.wait_for_selector("#rec-status")
        assert "通过（PASS）" in page.inner_text("#rec-status")
        assert "3,200,000,000.00" in page.inner_text("#section-1")
        shot(page, "admin-11-finance-report.png")
        page.click("#group-brand")
        page.wait_for_selector("text=分组明细：按品牌")
        with page.expect_download() as info:
            page.click("#dl-2-xlsx")  # by brand, XLSX
        xlsx = info.value.path().read_bytes()
        page.goto(f"{base}/admin/campaign/ledgerentry/?campaign__id__exact={campaign.pk}")
        _fits(page)
        shot(page, "admin-12-ledger.png")
        context.close()
        browser.close()

    wb = openpyxl.load_workbook(io.BytesIO(xlsx))
    money = [c.value for row in wb["汇总"].iter_rows() for c in row if c.number_format == "#,##0.00"]
    assert Decimal("3200000000") in [Decimal(str(v)) for v in money]
    assert wb["明细"]["A1"].value == "品牌"
    campaign = Campaign.objects.get(pk=campaign.pk)
    assert campaign.total_budget == Decimal("3200000000.00") and not campaign.orders_enabled
    assert Referral.objects.get(pk=held.pk).status == Referral.Status.ACCEPTED
    assert AuditLog.objects.filter(action="campaign.budget_change", reason="春节加码").count() == 1
    assert reconcile(campaign=campaign).ok
