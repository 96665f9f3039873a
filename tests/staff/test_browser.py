"""Drive the admin in Debian's chromium: marketing watches the dashboard, finance downloads the CSV."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import transaction

from orders.models import Order
from tests.factories import CampaignFactory, OrderFactory, StaffFactory, StoreFactory, VoucherFactory
from vouchers.services import voucher_lock_for_order, voucher_redeem

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "pw-for-tests-123"  # StaffFactory's


@pytest.fixture
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def scene():
    campaign = CampaignFactory(name="浏览器测试活动", total_budget=Decimal("1000.00"), bucket_count=4)
    cards = [VoucherFactory(campaign=campaign) for _ in range(3)]
    # One card redeemed on an 18-yuan order, so spending, orders and top stores have something to show.
    order = OrderFactory(user=cards[0].user, campaign=campaign, store=StoreFactory(name="西湖店"), total_price=Decimal("18.00"),
                         amount_to_pay=Decimal("18.00"), status=Order.Status.COMPLETED)
    with transaction.atomic():
        card = voucher_lock_for_order(user=cards[0].user, campaign=campaign, order_id=order.pk)
        voucher_redeem(voucher_id=card.pk, order_id=order.pk, order_amount=order.total_price)
    Order.objects.filter(pk=order.pk).update(voucher=card, subsidy=Decimal("18.00"), amount_to_pay=Decimal("0.00"))
    return {
        "campaign": campaign,
        "marketing": StaffFactory(username="mk-browser", groups=["marketing"]),
        "finance": StaffFactory(username="fin-browser", groups=["finance"]),
    }


def _login(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def test_marketing_watches_dashboard_and_finance_downloads_csv(live_server, scene, browser):
    # `scene` before `browser`: Playwright runs an event loop, and the ORM refuses to run inside one.
    campaign = scene["campaign"]
    ARTIFACTS.mkdir(exist_ok=True)

    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True, locale="zh-CN")
    page = context.new_page()
    _login(page, live_server.url, scene["marketing"].username)
    page.goto(f"{live_server.url}/admin/campaign/campaign/{campaign.pk}/change/")
    page.click("text=实时看板")
    page.wait_for_selector("#md-reserved")
    assert page.inner_text("#md-total") == "1,000.00"
    assert page.inner_text("#md-reserved") == "50.00"
    assert page.inner_text("#md-spent") == "18.00"
    assert page.inner_text("#md-remaining") == "932.00"
    assert page.inner_text("#md-percent") == "6.8%"
    assert page.inner_text("#md-cards") == "3"
    assert "领卡 开启" in page.inner_text("#md-switches")
    assert page.locator("svg[role=img]").count() == 5
    assert "西湖店" in page.inner_text("#md-stores")
    shot = ARTIFACTS / "staff-dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # Marketing has no report button and the report itself does not exist for them.
    page.goto(f"{live_server.url}/admin/campaign/campaign/{campaign.pk}/change/")
    assert page.locator("text=预算报表").count() == 0
    response = page.request.get(f"{live_server.url}/api/v1/reports/campaigns/{campaign.slug}/budget")
    assert response.status == 404
    context.close()

    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True, locale="zh-CN")
    page = context.new_page()
    _login(page, live_server.url, scene["finance"].username)
    page.goto(f"{live_server.url}/admin/campaign/campaign/{campaign.pk}/change/")
    page.screenshot(path=str(ARTIFACTS / "staff-campaign-finance.png"), full_page=True)
    page.click("text=预算报表")
    page.wait_for_selector("#rec-status")
    with page.expect_download() as info:
        page.click("#dl-1-csv")  # by day, CSV
    download = info.value
    target = ARTIFACTS / "staff-budget-report.csv"
    download.save_as(str(target))
    page.goto(f"{live_server.url}/admin/campaign/campaign/{campaign.pk}/change/")
    # The full ledger goes through a background job: the button queues it and lands on the job list.
    page.click("text=后台导出完整流水（CSV）")
    page.wait_for_url("**/admin/reports/exportjob/")
    assert page.locator("#result_list tbody tr").count() == 1
    context.close()

    raw = target.read_bytes()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    figures = {row[0]: row[1] for row in rows if len(row) >= 2}
    assert figures["总预算"] == "1000.00"
    assert figures["已预留"] == "50.00"
    assert figures["已花费"] == "18.00"
    assert figures["已释放"] == "7.00"
    assert figures["剩余"] == "932.00"
    assert figures["发卡总数"] == "3"
    assert figures["对账结果"] == "PASS"
