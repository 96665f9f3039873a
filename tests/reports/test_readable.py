"""Finance reads what it gets: ledger exports with card codes, holders and reasons; XLSX with widths and
number formats; money in the JSON always with two decimals; the report on screen."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import openpyxl
import pytest
from django.urls import reverse

from campaign.services import campaign_budget_change
from reports.exports import ledger_csv, ledger_xlsx
from reports.selectors import ledger_rows
from tests.factories import CampaignFactory, StaffFactory, UserFactory, VoucherFactory
from vouchers.services import voucher_void

pytestmark = pytest.mark.django_db


@pytest.fixture
def scene():
    campaign = CampaignFactory(total_budget=Decimal("3000000000.00"), bucket_count=4)
    holder = UserFactory(phone="13912345678", username="13912345678")
    card = VoucherFactory(campaign=campaign, user=holder)
    marketing = StaffFactory(username="mk-readable", groups=["marketing"])
    voucher_void(voucher=card, actor=marketing, reason="重复领取")
    campaign_budget_change(campaign=campaign, new_total=Decimal("3000000100.00"), actor=marketing, reason="追加预算")
    return {"campaign": campaign, "card": card, "finance": StaffFactory(username="fin-readable", groups=["finance"])}


def test_ledger_rows_carry_codes_names_and_reasons(scene):
    rows = list(ledger_rows(campaign=scene["campaign"]))
    card_rows = [r for r in rows if r[5]]
    assert {r[5] for r in card_rows} == {scene["card"].code}
    assert {r[6] for r in card_rows} == {"13912345678"}
    assert {r[2] for r in card_rows} == {"预留", "释放"}
    assert any(r[8] == "mk-readable" and r[9] == "追加预算" for r in rows)
    assert all(str(r[4]).startswith("#") for r in rows)


def test_ledger_csv_and_xlsx_are_readable(scene):
    text = io.StringIO()
    ledger_csv(ledger_rows(campaign=scene["campaign"]), text)
    parsed = list(csv.reader(io.StringIO(text.getvalue().lstrip("\ufeff"))))
    assert parsed[0] == ["流水号", "时间（北京时间）", "类型", "金额（元）", "预算桶", "卡号", "持卡人", "订单号", "操作人", "原因"]
    assert any(scene["card"].code in row for row in parsed)
    binary = io.BytesIO()
    ledger_xlsx(ledger_rows(campaign=scene["campaign"]), binary)
    ws = openpyxl.load_workbook(io.BytesIO(binary.getvalue()))["预算流水"]
    widths = {letter: ws.column_dimensions[letter].width for letter in "ABCDEFGHIJ"}
    assert widths["D"] >= 18 and widths["B"] >= 19 and widths["J"] >= 24, widths  # 3,000,000,000.00 and dates fit
    amounts = [row[3] for row in ws.iter_rows(min_row=2)]
    assert all(cell.number_format == "#,##0.00" for cell in amounts)
    assert max(cell.value for cell in amounts) >= Decimal("750000000")


def test_report_xlsx_detail_sheet_has_widths_and_formats(client, scene):
    client.force_login(scene["finance"])
    url = f"/api/v1/reports/campaigns/{scene['campaign'].slug}/budget?format=xlsx&group_by=brand"
    body = b"".join(client.get(url).streaming_content)
    wb = openpyxl.load_workbook(io.BytesIO(body))
    assert wb["汇总"].column_dimensions["B"].width >= 20
    detail = wb["明细"]
    assert all(detail.column_dimensions[c].width >= 10 for c in "ABCDEF")


def test_json_money_always_has_two_decimals(client, scene):
    client.force_login(scene["finance"])
    body = client.get(f"/api/v1/reports/campaigns/{scene['campaign'].slug}/budget?format=json").json()
    totals = body["reconciliation"]["totals"]
    assert totals["ledger_adjust"] == "3000000100.00"
    assert all(v.count(".") == 1 and len(v.split(".")[1]) == 2 for k, v in totals.items() if k != "cards")
    assert totals["cards"] == "1"


def test_report_page_on_screen(client, scene):
    campaign = scene["campaign"]
    client.force_login(scene["finance"])
    url = reverse("admin:campaign_campaign_report", args=[campaign.pk])
    page = client.get(url).content.decode()
    assert "通过（PASS）" in page and "3,000,000,100.00" in page and "30亿" in page
    assert 'id="group-day"' in page and 'id="group-brand"' in page and 'id="group-city"' in page
    assert "分组明细：按城市" in client.get(url, {"group_by": "city"}).content.decode()
    assert "分组明细：按日期" in client.get(url, {"group_by": "nonsense"}).content.decode()
    client.force_login(StaffFactory(username="mk-2", groups=["marketing"]))
    assert client.get(url).status_code == 404


def test_ledger_admin_list_shows_card_codes_and_holders(client, scene):
    client.force_login(scene["finance"])
    page = client.get(reverse("admin:campaign_ledgerentry_changelist") + f"?campaign__id__exact={scene['campaign'].pk}")
    html = page.content.decode()
    assert scene["card"].code in html and "13912345678" in html
    found = client.get(reverse("admin:campaign_ledgerentry_changelist"), {"q": scene["card"].code.lower()})
    assert found.context["cl"].result_count == 2  # its reserve and its release
