"""The ledger rollup behind the dashboard's burn line and the report's days: exact, and never ahead of a commit."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connections, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate, TruncMinute

from campaign.models import LedgerEntry
from reports.models import LedgerMinute, LedgerRollup
from reports.selectors import LEDGER_SUMS, SHANGHAI, budget_report, ledger_bins
from reports.services import ledger_rollup_advance
from tests.concurrency import require_postgres
from tests.factories import CampaignFactory, UserFactory
from vouchers.services import campaign_join, voucher_issue

pytestmark = pytest.mark.django_db(transaction=True)


def direct_bins(campaign, trunc) -> list[dict]:
    """The same figures straight from every ledger row (what the rollup must equal)."""
    rows = (LedgerEntry.objects.filter(campaign=campaign).order_by().annotate(t=trunc("created_at", tzinfo=SHANGHAI))
            .values("t").annotate(entries=Count("id"), **{k: Sum("amount", filter=Q(kind=k)) for k in LEDGER_SUMS})
            .order_by("t"))
    return [{"t": r["t"], "entries": r["entries"], **{k: r[k] or Decimal("0.00") for k in LEDGER_SUMS}} for r in rows]


def test_rollup_moves_in_two_steps_and_every_read_stays_exact():
    require_postgres()
    campaign = CampaignFactory(total_budget=Decimal("10000.00"))
    for _ in range(5):
        campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    assert ledger_rollup_advance(campaign=campaign) == 0  # step 1 only notes the newest id
    state = LedgerRollup.objects.get(campaign=campaign)
    assert state.candidate_id == LedgerEntry.objects.filter(campaign=campaign).latest("id").pk
    assert ledger_bins(campaign=campaign, trunc=TruncMinute) == direct_bins(campaign, TruncMinute)

    upto = ledger_rollup_advance(campaign=campaign)  # step 2: nothing older is open, so it sums them
    assert upto == state.candidate_id
    assert LedgerMinute.objects.filter(campaign=campaign).aggregate(n=Sum("entries"))["n"] == \
        LedgerEntry.objects.filter(campaign=campaign, pk__lte=upto).count()
    voucher_issue(user=UserFactory(), campaign=campaign, source="staff", reason="rollup test")  # a live row after it
    for trunc in (TruncMinute, TruncDate):
        assert ledger_bins(campaign=campaign, trunc=trunc) == direct_bins(campaign, trunc)
    ledger_rollup_advance(campaign=campaign)
    ledger_rollup_advance(campaign=campaign)
    assert ledger_bins(campaign=campaign, trunc=TruncDate) == direct_bins(campaign, TruncDate)
    report = budget_report(campaign=campaign, group_by="day")
    assert sum(r["entries"] for r in report.rows()) == LedgerEntry.objects.filter(campaign=campaign).count()
    assert report.summary["reserved"] == Decimal("150.00") and report.reconciliation.ok


def test_an_older_open_transaction_holds_the_watermark_until_it_commits():
    """A ledger row whose id is below the noted mark but is not committed yet must not be skipped."""
    require_postgres()
    campaign = CampaignFactory(total_budget=Decimal("10000.00"))
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    inserted, release = threading.Event(), threading.Event()
    user = UserFactory()

    def slow_claim():
        try:
            with transaction.atomic():
                campaign_join_in_tx(user)
                inserted.set()
                release.wait(30)
        finally:
            connections.close_all()

    def campaign_join_in_tx(u):
        # The service's own durable transaction cannot nest; write the same rows inside this one.
        from vouchers.services import voucher_issue_in_tx

        voucher_issue_in_tx(user=u, campaign=campaign, source="staff", reason="slow")

    worker = threading.Thread(target=slow_claim, daemon=True)
    worker.start()
    assert inserted.wait(30)
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")  # committed, id above the slow one
    ledger_rollup_advance(campaign=campaign)  # notes the newest committed id (above the uncommitted one)
    assert ledger_rollup_advance(campaign=campaign) == 0, "summed past a transaction that was still open"
    release.set()
    worker.join(30)
    ledger_rollup_advance(campaign=campaign)  # the older transaction is gone: now it is safe
    upto = LedgerRollup.objects.get(campaign=campaign).upto_id
    assert upto > 0
    rolled = LedgerMinute.objects.filter(campaign=campaign).aggregate(n=Sum("entries"))["n"]
    assert rolled == LedgerEntry.objects.filter(campaign=campaign, pk__lte=upto).count()
    assert ledger_bins(campaign=campaign, trunc=TruncMinute) == direct_bins(campaign, TruncMinute)
