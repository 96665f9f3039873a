"""The budget report against a hand-computed scenario, in JSON, CSV and XLSX.

Campaign: budget 1000.00, face 25.00, 8 buckets. Cards, in order:
  A  welcome          redeemed on a 18.00 order (杭州, brand X): spend 18.00, release 7.00
  B  welcome          redeemed on a 30.00 order (上海, brand Y): spend 25.00
  C  welcome          locked for an order (上海, brand X) that was cancelled, then voided: release 25.00
  A2 referral_inviter expired: release 25.00
  D  welcome          expired: release 25.00
  E  staff            expired: release 25.00
  F  welcome          issued after the expiry run: reserved 25.00
  G  referral_invitee locked on a placed order (杭州, brand X): reserved 25.00
Expected: reserved 50.00, spent 43.00, released 107.00, remaining 907.00, 8 cards,
2 redeemed, average subsidy 21.50; ledger: 8 opening adjusts + 8 reserves + 2 spends + 5 releases.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import openpyxl
import pytest
from django.db import connection, transaction
from django.utils import timezone

from campaign.models import LedgerEntry
from orders.models import Order
from tests.factories import (
    BrandFactory,
    CampaignFactory,
    LedgerEntryFactory,
    OrderFactory,
    StaffFactory,
    StoreFactory,
    UserFactory,
    VoucherFactory,
)
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import voucher_expire_batch, voucher_lock_for_order, voucher_redeem, voucher_release, voucher_void

pytestmark = pytest.mark.django_db

D = Decimal
EXPECTED_SUMMARY = {
    "total_budget": "1000.00",
    "reserved": "50.00",
    "spent": "43.00",
    "released": "107.00",
    "remaining": "907.00",
    "cards_issued": 8,
    "redeemed_cards": 2,
    "subsidy_spent": "43.00",
    "average_subsidy": "21.50",
}
EXPECTED_SOURCES = {"welcome": 5, "referral_inviter": 1, "referral_invitee": 1, "staff": 1}
EXPECTED_STATES = {"issued": 1, "locked": 1, "redeemed": 2, "expired": 3, "void": 1}
EXPECTED_ORDERS = {"placed": 1, "sent_to_store": 0, "accepted": 0, "delivering": 0, "completed": 2, "failed": 0,
                   "cancelled": 1}
EXPECTED_BRAND = [
    {"brand": "品牌X", "orders": 3, "completed_orders": 1, "subsidised_orders": 1, "subsidy": "18.00",
     "average_subsidy": "18.00"},
    {"brand": "品牌Y", "orders": 1, "completed_orders": 1, "subsidised_orders": 1, "subsidy": "25.00",
     "average_subsidy": "25.00"},
]
EXPECTED_CITY = [
    {"city": "上海", "orders": 2, "completed_orders": 1, "subsidised_orders": 1, "subsidy": "25.00",
     "average_subsidy": "25.00"},
    {"city": "杭州", "orders": 2, "completed_orders": 1, "subsidised_orders": 1, "subsidy": "18.00",
     "average_subsidy": "18.00"},
]
# Chinese labels used in CSV/XLSX for the same figures.
SUMMARY_LABELS = {"总预算": "total_budget", "已预留": "reserved", "已花费": "spent", "已释放": "released",
                  "剩余": "remaining", "发卡总数": "cards_issued", "已使用卡数": "redeemed_cards",
                  "补贴合计": "subsidy_spent", "平均补贴": "average_subsidy"}
SOURCE_LABELS = {"新人卡": "welcome", "邀请奖励": "referral_inviter", "受邀奖励": "referral_invitee", "人工发放": "staff"}
STATE_LABELS = {"可使用": "issued", "下单中": "locked", "已使用": "redeemed", "已过期": "expired", "已作废": "void"}


def _order(*, user, store, campaign, price: str, status=Order.Status.PLACED) -> Order:
    return OrderFactory(user=user, store=store, campaign=campaign, total_price=D(price), subsidy=D("0.00"),
                        amount_to_pay=D(price), status=status)


def _redeem(*, user, campaign, order: Order) -> Voucher:
    with transaction.atomic():
        card = voucher_lock_for_order(user=user, campaign=campaign, order_id=order.pk)
        card = voucher_redeem(voucher_id=card.pk, order_id=order.pk, order_amount=order.total_price)
    Order.objects.filter(pk=order.pk).update(voucher=card, subsidy=card.subsidy,
                                             amount_to_pay=order.total_price - card.subsidy,
                                             status=Order.Status.COMPLETED)
    return card


@pytest.fixture
def scenario():
    campaign = CampaignFactory(total_budget=D("1000.00"), bucket_count=8, name="对账活动")
    brand_x, brand_y = BrandFactory(name="品牌X"), BrandFactory(name="品牌Y")
    x_hz = StoreFactory(brand=brand_x, city="杭州")
    x_sh = StoreFactory(brand=brand_x, city="上海")
    y_sh = StoreFactory(brand=brand_y, city="上海")
    staff = StaffFactory(groups=["support"])
    users = {name: UserFactory() for name in "ABCDEFG"}
    VoucherFactory(user=users["A"], campaign=campaign, source=Voucher.Source.WELCOME)
    VoucherFactory(user=users["B"], campaign=campaign, source=Voucher.Source.WELCOME)
    card_c = VoucherFactory(user=users["C"], campaign=campaign, source=Voucher.Source.WELCOME)
    VoucherFactory(user=users["D"], campaign=campaign, source=Voucher.Source.WELCOME)
    VoucherFactory(user=users["E"], campaign=campaign, source=Voucher.Source.STAFF, reason="客服补发")

    # A redeems for less than the face value; B for more.
    _redeem(user=users["A"], campaign=campaign, order=_order(user=users["A"], store=x_hz, campaign=campaign, price="18.00"))
    _redeem(user=users["B"], campaign=campaign, order=_order(user=users["B"], store=y_sh, campaign=campaign, price="30.00"))
    # A's second card arrives after the first was used (the slot rule allows it).
    VoucherFactory(user=users["A"], campaign=campaign, source=Voucher.Source.REFERRAL_INVITER)
    # C: order cancelled -> card back to the user -> voided by staff.
    cancelled = _order(user=users["C"], store=x_sh, campaign=campaign, price="20.00")
    with transaction.atomic():
        voucher_lock_for_order(user=users["C"], campaign=campaign, order_id=cancelled.pk)
        assert voucher_release(voucher_id=card_c.pk, order_id=cancelled.pk)
    Order.objects.filter(pk=cancelled.pk).update(status=Order.Status.CANCELLED)
    voucher_void(voucher=card_c, actor=staff, reason="用户申请作废")
    # Every issued card expires (A2, D, E).
    assert voucher_expire_batch(now=timezone.now() + dt.timedelta(days=31)) == 3
    VoucherFactory(user=users["F"], campaign=campaign, source=Voucher.Source.WELCOME)
    VoucherFactory(user=users["G"], campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    placed = _order(user=users["G"], store=x_hz, campaign=campaign, price="16.00")
    with transaction.atomic():
        card_g = voucher_lock_for_order(user=users["G"], campaign=campaign, order_id=placed.pk)
    Order.objects.filter(pk=placed.pk).update(voucher=card_g)
    finance = StaffFactory(groups=["finance"])
    return campaign, finance


def _client(client, user):
    client.force_login(user)
    return client


def _expected_day_row() -> dict:
    return {"day": timezone.localtime(timezone.now()).date().isoformat(), "reserved": "200.00", "spent": "43.00",
            "released": "107.00", "adjusted": "1000.00", "entries": 23}


def test_report_json_matches_hand_computed_figures(client, scenario):
    campaign, finance = scenario
    assert reconcile(campaign=campaign).ok
    assert LedgerEntry.objects.filter(campaign=campaign).count() == 23
    response = _client(client, finance).get(f"/api/v1/reports/campaigns/{campaign.slug}/budget")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["summary"] == EXPECTED_SUMMARY
    assert body["cards_by_source"] == EXPECTED_SOURCES
    assert body["cards_by_state"] == EXPECTED_STATES
    assert body["orders_by_state"] == EXPECTED_ORDERS
    assert body["group_by"] == "day"
    assert body["rows"] == [_expected_day_row()]
    assert body["reconciliation"]["result"] == "PASS"
    assert body["reconciliation"]["differences"] == []

    brand = client.get(f"/api/v1/reports/campaigns/{campaign.slug}/budget?group_by=brand").json()
    assert brand["rows"] == EXPECTED_BRAND
    city = client.get(f"/api/v1/reports/campaigns/{campaign.slug}/budget?format=json&group_by=city").json()
    assert city["rows"] == EXPECTED_CITY


def _sections(rows: list[list[str]]) -> dict[str, dict[str, str]]:
    """Key/value blocks: a row [title, '数值'] opens a block that runs to the next blank row."""
    out: dict[str, dict[str, str]] = {}
    current = None
    for row in rows:
        if not row or not any(row):
            current = None
        elif len(row) >= 2 and row[1] == "数值":
            current = out.setdefault(row[0], {})
        elif current is not None:
            current[row[0]] = row[1]
    return out


def _table_after(rows: list[list], title_prefix: str) -> list[list]:
    start = next(i for i, row in enumerate(rows) if row and str(row[0]).startswith(title_prefix))
    table = []
    for row in rows[start + 1:]:
        if not row or not any(v not in (None, "") for v in row):
            break
        table.append(list(row))
    return table


def test_report_csv_matches_hand_computed_figures(client, scenario):
    campaign, finance = scenario
    response = _client(client, finance).get(f"/api/v1/reports/campaigns/{campaign.slug}/budget?format=csv&group_by=brand")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert response.streaming
    raw = b"".join(response.streaming_content)
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    sections = _sections(rows)
    summary = {SUMMARY_LABELS[k]: v for k, v in sections["指标"].items()}
    assert summary == {k: str(v) for k, v in EXPECTED_SUMMARY.items()}
    assert {SOURCE_LABELS[k]: int(v) for k, v in sections["发卡来源"].items()} == EXPECTED_SOURCES
    assert {STATE_LABELS[k]: int(v) for k, v in sections["卡状态"].items()} == EXPECTED_STATES
    assert sum(int(v) for v in sections["订单状态"].values()) == 4
    assert sections["订单状态"]["已完成"] == "2" and sections["订单状态"]["已取消"] == "1"
    table = _table_after(rows, "分组明细")
    assert table[0] == ["品牌", "订单数", "已完成订单数", "享受补贴订单数", "补贴合计", "平均补贴"]
    assert table[1:] == [[str(v) for v in row.values()] for row in EXPECTED_BRAND]
    assert ["对账结果", "PASS"] in rows

    day = client.get(f"/api/v1/reports/campaigns/{campaign.slug}/budget?format=csv")
    day_rows = list(csv.reader(io.StringIO(b"".join(day.streaming_content).decode("utf-8-sig"))))
    assert _table_after(day_rows, "分组明细")[1:] == [[str(v) for v in _expected_day_row().values()]]


def test_report_xlsx_matches_hand_computed_figures(client, scenario):
    campaign, finance = scenario
    response = _client(client, finance).get(f"/api/v1/reports/campaigns/{campaign.slug}/budget?format=xlsx&group_by=city")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    wb = openpyxl.load_workbook(io.BytesIO(b"".join(response.streaming_content)))
    assert wb.sheetnames == ["汇总", "明细"]
    summary_rows = [[v for v in r if v is not None] for r in wb["汇总"].iter_rows(values_only=True)]
    money_cells = {row[0].value: row[1] for row in wb["汇总"].iter_rows() if row[0].value in SUMMARY_LABELS}
    for label, key in SUMMARY_LABELS.items():
        cell = money_cells[label]
        expected = EXPECTED_SUMMARY[key]
        if isinstance(expected, str):
            assert Decimal(str(cell.value)).quantize(Decimal("0.01")) == Decimal(expected), label
            assert cell.number_format == "#,##0.00", label
        else:
            assert cell.value == expected, label
    sections = _sections(summary_rows)
    assert {SOURCE_LABELS[k]: v for k, v in sections["发卡来源"].items()} == EXPECTED_SOURCES
    assert {STATE_LABELS[k]: v for k, v in sections["卡状态"].items()} == EXPECTED_STATES
    assert ["对账结果", "PASS"] in summary_rows
    detail = [list(r) for r in wb["明细"].iter_rows(values_only=True)]
    assert detail[0] == ["城市", "订单数", "已完成订单数", "享受补贴订单数", "补贴合计", "平均补贴"]
    got = [[r[0], r[1], r[2], r[3], f"{Decimal(str(r[4])):.2f}", f"{Decimal(str(r[5])):.2f}"] for r in detail[1:]]
    assert got == [list(row.values()) for row in EXPECTED_CITY]
    assert next(wb["明细"].iter_rows(min_row=2))[4].number_format == "#,##0.00"


def test_tampered_ledger_makes_reconciliation_fail_with_the_difference(client, scenario):
    campaign, finance = scenario
    bucket = campaign.buckets.order_by("index").first()
    # The ledger refuses UPDATE/DELETE, so a forger can only append: a spend that no bucket or card shows.
    LedgerEntryFactory(campaign=campaign, bucket=bucket, kind=LedgerEntry.Kind.SPEND, amount=D("5.00"))
    body = _client(client, finance).get(f"/api/v1/reports/campaigns/{campaign.slug}/budget").json()
    rec = body["reconciliation"]
    assert rec["result"] == "FAIL"
    assert any(f"桶 #{bucket.index}: 花费流水" in d and "≠ 已花费" in d for d in rec["differences"]), rec
    csv_rows = list(csv.reader(io.StringIO(
        b"".join(client.get(f"/api/v1/reports/campaigns/{campaign.slug}/budget?format=csv").streaming_content)
        .decode("utf-8-sig"))))
    assert ["对账结果", "FAIL"] in csv_rows
    assert any(row[:1] == ["差异"] and "花费流水" in row[1] for row in csv_rows)


def test_tampering_by_disabling_the_trigger_is_caught(client, scenario):
    campaign, finance = scenario
    if connection.vendor != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's")
    entry = LedgerEntry.objects.filter(campaign=campaign, kind=LedgerEntry.Kind.SPEND).order_by("id").first()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE refuses while FK checks are pending
        cursor.execute("ALTER TABLE campaign_ledgerentry DISABLE TRIGGER USER")
        cursor.execute("UPDATE campaign_ledgerentry SET amount = amount + 1 WHERE id = %s", [entry.pk])
        cursor.execute("ALTER TABLE campaign_ledgerentry ENABLE TRIGGER USER")
    rec = _client(client, finance).get(f"/api/v1/reports/campaigns/{campaign.slug}/budget").json()["reconciliation"]
    assert rec["result"] == "FAIL"
    assert any("花费流水" in d for d in rec["differences"])
    assert any(f"卡 #{entry.voucher_id}" in d for d in rec["differences"])


@pytest.mark.parametrize("query", ["format=pdf", "group_by=store", "format=csv&group_by=DAY", "format=json,csv"])
def test_invalid_parameters_are_400(client, scenario, query):
    campaign, finance = scenario
    response = _client(client, finance).get(f"/api/v1/reports/campaigns/{campaign.slug}/budget?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_unknown_campaign_is_404(client, scenario):
    _, finance = scenario
    response = _client(client, finance).get("/api/v1/reports/campaigns/nope/budget")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_openapi_schema_documents_the_report(client):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    body = schema.json() if schema["Content-Type"].startswith("application/json") else None
    text = schema.content.decode()
    assert "/api/v1/reports/campaigns/{slug}/budget" in text
    if body is not None:
        params = {p["name"] for p in body["paths"]["/api/v1/reports/campaigns/{slug}/budget"]["get"]["parameters"]}
        assert {"format", "group_by", "slug"} <= params


def test_day_rows_use_the_shanghai_calendar(client):
    """23:30 and 00:30 Beijing time are different days even though both are 1 January in UTC."""
    campaign = CampaignFactory(total_budget=D("100.00"), bucket_count=1)
    bucket = campaign.buckets.get()
    with connection.cursor() as cursor:
        # The ledger is append-only, so history is written by INSERT with an explicit time (net zero).
        for when, amount in (("2026-01-01 15:30:00+00", "1.00"), ("2026-01-01 16:30:00+00", "-1.00")):
            cursor.execute(
                "INSERT INTO campaign_ledgerentry (campaign_id, bucket_id, kind, amount, reason, created_at) "
                "VALUES (%s, %s, 'adjust', %s, 'tz', %s)", [campaign.pk, bucket.pk, amount, when])
    assert reconcile(campaign=campaign).ok
    client.force_login(StaffFactory(groups=["finance"]))
    rows = client.get(f"/api/v1/reports/campaigns/{campaign.slug}/budget?group_by=day").json()["rows"]
    by_day = {r["day"]: r for r in rows}
    assert by_day["2026-01-01"]["adjusted"] == "1.00" and by_day["2026-01-01"]["entries"] == 1
    assert by_day["2026-01-02"]["adjusted"] == "-1.00" and by_day["2026-01-02"]["entries"] == 1
