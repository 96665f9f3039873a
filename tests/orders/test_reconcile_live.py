"""Issue 18: `reconcile` under live traffic reads one snapshot, so it never cries wolf, and still catches real damage.

A storm of real threads on PostgreSQL joins fresh users (reserve), places chat orders on their cards (lock) and
completes or cancels them (spend + release / unlock), while another thread runs `reconcile` in a loop. Every run
must PASS. In the second test a ledger row is altered mid-storm (the append-only trigger is switched off for
that one transaction only, with `SET LOCAL session_replication_role = replica`, so the storm keeps running):
every run that started after the tamper committed must FAIL and name the card, every run that ended before
it must PASS. Breaking `vouchers.selectors.read_snapshot` (reads outside one transaction) makes the first test
fail with differences like "桶 #3: 未使用卡面额合计 … ≠ 已预留 …".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction

from campaign.models import LedgerEntry
from orders.models import Order, Store
from orders.services import order_chat, order_transition
from reports.selectors import budget_report
from tests.concurrency import require_postgres
from tests.factories import CampaignFactory, UserFactory
from tests.orders.conftest import LAT, LNG
from vouchers.selectors import reconcile
from vouchers.services import campaign_join

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("roomy_stores")]
STORM_THREADS = 6
STORM_SECONDS = 6.0


@pytest.fixture
def roomy_stores(catalogue):
    """The storm measures reconcile, not store capacity: no order is refused for a busy store."""
    Store.objects.update(capacity_per_minute=1_000_000)


@dataclass
class Run:
    started: float
    ended: float
    ok: bool
    differences: list[str]


def _storm(campaign, stop: threading.Event, errors: list, counts: dict, lock: threading.Lock, worker: int) -> None:
    """Join, order with the new card, then complete (spend + release) or cancel (unlock) it; until told to stop."""
    try:
        i = 0
        while not stop.is_set():
            user = UserFactory()
            campaign_join(user=user, campaign=campaign, app_version="2.0.0")
            order = order_chat(user=user, text="一杯伯牙绝弦", lat=LAT, lng=LNG).order
            final = Order.Status.COMPLETED if i % 3 else Order.Status.CANCELLED
            order_transition(order_id=order.pk, from_statuses=[Order.Status.PLACED], to_status=final)
            with lock:
                counts["cycles"] += 1
            i += 1
    except Exception as exc:  # surfaced by the test
        errors.append(f"storm worker {worker}: {exc!r}")
    finally:
        connections.close_all()


def _reconcile_loop(campaign, stop: threading.Event, runs: list[Run], check) -> None:
    try:
        while not stop.is_set():
            started = time.monotonic()
            report = check(campaign)
            runs.append(Run(started, time.monotonic(), report.ok, list(report.differences)))
    finally:
        connections.close_all()


def _live(campaign, *, check=lambda c: reconcile(campaign=c), during=None) -> tuple[list[Run], dict, float | None]:
    """Run the storm and the reconcile loop together; `during` (if given) runs mid-storm and returns a time."""
    require_postgres()
    stop, lock = threading.Event(), threading.Lock()
    errors: list[str] = []
    counts = {"cycles": 0}
    runs: list[Run] = []
    threads = [threading.Thread(target=_storm, args=(campaign, stop, errors, counts, lock, i), daemon=True)
               for i in range(STORM_THREADS)]
    checker = threading.Thread(target=_reconcile_loop, args=(campaign, stop, runs, check), daemon=True)
    for t in threads:
        t.start()
    checker.start()
    marker = None
    try:
        time.sleep(STORM_SECONDS / 2)
        if during is not None:
            marker = during()
        time.sleep(STORM_SECONDS / 2)
    finally:
        stop.set()
        for t in [*threads, checker]:
            t.join(60)
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in [*threads, checker]), "a storm or reconcile thread did not stop"
    return runs, counts, marker


def test_reconcile_in_a_loop_during_a_claim_and_order_storm_never_reports_a_false_difference():
    campaign = CampaignFactory(bucket_count=8, total_budget=Decimal("1000000.00"))
    runs, counts, _ = _live(campaign)
    assert counts["cycles"] >= 30, counts  # the storm really moved money while reconcile ran
    assert len(runs) >= 5, len(runs)
    false_alarms = [r.differences[:3] for r in runs if not r.ok]
    assert not false_alarms, f"{len(false_alarms)} of {len(runs)} runs reported differences: {false_alarms[:2]}"
    # And the figures finance reads in the budget report come from one snapshot too.
    report = budget_report(campaign=campaign)
    assert report.reconciliation.ok, report.reconciliation.differences


def test_budget_report_in_a_loop_during_the_storm_reconciles():
    campaign = CampaignFactory(bucket_count=8, total_budget=Decimal("1000000.00"))
    runs, counts, _ = _live(campaign, check=lambda c: budget_report(campaign=c).reconciliation)
    assert counts["cycles"] >= 20 and len(runs) >= 3, (counts, len(runs))
    assert all(r.ok for r in runs), [r.differences[:3] for r in runs if not r.ok][:2]


def _tamper_with_a_spend_row(campaign) -> tuple[float, int]:
    """Add 1.00 to the newest spend row. The append-only trigger refuses UPDATE, so it is switched off for this
    transaction only (superuser: SET LOCAL session_replication_role = replica; no table lock, the storm goes on)."""
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SET LOCAL session_replication_role = replica")
        row = LedgerEntry.objects.filter(campaign=campaign, kind=LedgerEntry.Kind.SPEND).order_by("-id").first()
        assert row is not None, "no order completed yet: the storm did not run"
        LedgerEntry.objects.filter(pk=row.pk).update(amount=row.amount + 1)
    committed = time.monotonic()
    connection.close()
    return committed, row.voucher_id


def test_a_ledger_row_tampered_with_during_the_storm_is_caught_by_the_next_run():
    campaign = CampaignFactory(bucket_count=8, total_budget=Decimal("1000000.00"))
    runs, counts, marker = _live(campaign, during=lambda: _tamper_with_a_spend_row(campaign))
    committed, card_id = marker
    before = [r for r in runs if r.ended < committed]
    after = [r for r in runs if r.started > committed]
    assert before and after, (len(before), len(after), len(runs))
    assert all(r.ok for r in before), [r.differences[:3] for r in before if not r.ok][:2]
    for r in after:
        assert not r.ok
        assert any(f"卡 #{card_id}（redeemed）" in d for d in r.differences), r.differences[:5]
        assert any("花费流水" in d and "≠ 已花费" in d for d in r.differences), r.differences[:5]
    # The trigger is back for everyone else: a plain UPDATE is still refused.
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.filter(campaign=campaign).update(reason="x")
