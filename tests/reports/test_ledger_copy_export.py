"""The PostgreSQL ledger export (COPY ... TO STDOUT) writes exactly the rows the Python writer writes."""

import csv
import io
from decimal import Decimal

import pytest
from django.db import connection

from campaign.models import LedgerEntry
from campaign.services import campaign_budget_change
from reports.exports import ledger_csv, ledger_csv_copy
from reports.selectors import ledger_copy_sql, ledger_rows
from tests.factories import CampaignFactory, StaffFactory, UserFactory
from vouchers.services import campaign_join, voucher_issue

pytestmark = pytest.mark.django_db(transaction=True)


def test_copy_export_equals_the_python_export_row_for_row():
    if connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    campaign = CampaignFactory(total_budget=Decimal("1000.00"))
    staff = StaffFactory()
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    # Text that needs CSV quoting, a line break, Chinese, and a negative adjustment.
    voucher_issue(user=UserFactory(), campaign=campaign, source="staff", actor=staff, reason='补发, "客诉"\n第二行')
    campaign_budget_change(campaign=campaign, new_total=Decimal("975.00"), actor=staff, reason="下调")
    upto = LedgerEntry.objects.filter(campaign=campaign).latest("id").pk
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")  # after the bound: left out by both
    python_out, copy_out = io.StringIO(), io.StringIO()
    ledger_csv(ledger_rows(campaign=campaign, upto_id=upto), python_out)
    ledger_csv_copy(ledger_copy_sql(campaign=campaign, upto_id=upto), copy_out)
    a = list(csv.reader(io.StringIO(python_out.getvalue())))
    b = list(csv.reader(io.StringIO(copy_out.getvalue())))
    assert a == b
    assert len(a) == LedgerEntry.objects.filter(campaign=campaign, pk__lte=upto).count() + 1
    assert any(row[3].startswith("-") for row in a[1:]) and any("第二行" in row[-1] for row in a[1:])


def test_copy_export_inside_a_transaction_sees_that_transactions_rows():
    """An eager export job inside the caller's transaction (the demo, a test) exports its uncommitted rows too."""
    if connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    from django.db import transaction

    campaign = CampaignFactory(total_budget=Decimal("1000.00"))
    bucket = campaign.buckets.order_by("index").first()
    with transaction.atomic():
        row = LedgerEntry.objects.create(campaign=campaign, bucket=bucket, kind="adjust", amount=Decimal("5.00"),
                                         reason="未提交的调整")
        out, seen = io.StringIO(), []
        ledger_csv_copy(ledger_copy_sql(campaign=campaign, upto_id=row.pk), out, seen.append)
        rows = list(csv.reader(io.StringIO(out.getvalue())))
        assert rows[-1][-1] == "未提交的调整"
        assert len(rows) - 1 == LedgerEntry.objects.filter(campaign=campaign).count() == seen[-1]
        transaction.set_rollback(True)
