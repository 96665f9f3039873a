"""Budget changes go through `campaign_budget_change`: adjust ledger rows, buckets, audit, never below committed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from campaign.errors import BudgetBelowCommitted, BudgetExhausted, InvalidCampaign
from campaign.models import AuditLog, BudgetBucket, Campaign, LedgerEntry
from campaign.services import campaign_budget_change, campaign_set_switches
from tests.concurrency import run_threads
from tests.factories import CampaignFactory, StaffFactory, UserFactory, VoucherFactory
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import voucher_issue

D = Decimal


def _allotments(campaign) -> list[Decimal]:
    return list(BudgetBucket.objects.filter(campaign=campaign).order_by("index").values_list("allotment", flat=True))


@pytest.mark.django_db
def test_lowering_below_committed_is_refused_and_changes_nothing():
    campaign = CampaignFactory(total_budget=D("100.00"), bucket_count=4)
    for _ in range(3):
        VoucherFactory(campaign=campaign)
    before = _allotments(campaign)
    ledger_before = LedgerEntry.objects.count()
    with pytest.raises(BudgetBelowCommitted) as exc:
        campaign_budget_change(campaign=campaign, new_total=D("74.99"), actor=StaffFactory(), reason="压缩")
    assert exc.value.detail == "预算不能低于已预留与已花费之和（75.00 元）"
    assert exc.value.status == 409
    campaign.refresh_from_db()
    assert campaign.total_budget == D("100.00")
    assert _allotments(campaign) == before
    assert LedgerEntry.objects.count() == ledger_before
    assert not AuditLog.objects.filter(action="campaign.budget_change").exists()


@pytest.mark.django_db
def test_lowering_to_exactly_committed_takes_only_free_room():
    campaign = CampaignFactory(total_budget=D("100.00"), bucket_count=4)
    for _ in range(3):
        VoucherFactory(campaign=campaign)
    actor = StaffFactory()
    campaign_budget_change(campaign=campaign, new_total=D("75.00"), actor=actor, reason="收紧")
    buckets = list(BudgetBucket.objects.filter(campaign=campaign))
    assert sum(b.allotment for b in buckets) == D("75.00")
    assert all(b.available == 0 for b in buckets)
    cut = LedgerEntry.objects.filter(campaign=campaign, kind="adjust", reason="收紧")
    assert sum(e.amount for e in cut) == D("-25.00") and all(e.actor == actor for e in cut)
    campaign.refresh_from_db()
    assert reconcile(campaign=campaign).ok
    with pytest.raises(BudgetExhausted):
        VoucherFactory(campaign=campaign)


@pytest.mark.django_db
def test_raising_writes_adjust_entries_updates_buckets_and_audits():
    campaign = CampaignFactory(total_budget=D("100.00"), bucket_count=4)
    actor = StaffFactory()
    campaign_budget_change(campaign=campaign, new_total=D("300.50"), actor=actor, reason="加预算")
    campaign.refresh_from_db()
    assert campaign.total_budget == D("300.50")
    assert sum(_allotments(campaign)) == D("300.50")
    added = LedgerEntry.objects.filter(campaign=campaign, kind="adjust", reason="加预算")
    assert sum(e.amount for e in added) == D("200.50")
    log = AuditLog.objects.get(action="campaign.budget_change")
    assert (log.actor, log.before, log.after, log.reason) == (actor, {"total_budget": "100.00"},
                                                              {"total_budget": "300.50"}, "加预算")
    assert reconcile(campaign=campaign).ok


@pytest.mark.django_db
@pytest.mark.parametrize(("value", "reason"), [(D("-1.00"), "x"), (D("1.001"), "x"), (D("10.00"), "  ")])
def test_bad_budget_values_are_refused(value, reason):
    campaign = CampaignFactory(total_budget=D("100.00"), bucket_count=4)
    with pytest.raises(InvalidCampaign):
        campaign_budget_change(campaign=campaign, new_total=value, actor=None, reason=reason)


@pytest.mark.django_db
def test_switches_are_audited_with_before_and_after():
    campaign = CampaignFactory()
    actor = StaffFactory()
    campaign_set_switches(campaign=campaign, actor=actor, referrals_enabled=False)
    log = AuditLog.objects.get(action="campaign.switches")
    assert (log.actor, log.before, log.after) == (actor, {"referrals_enabled": True}, {"referrals_enabled": False})
    with pytest.raises(InvalidCampaign):
        campaign_set_switches(campaign=campaign, actor=actor, budget_enabled=False)


def _claim_or_change(role: str, campaign_id: int, user_id: int | None, new_total: str | None):
    campaign = Campaign.objects.get(pk=campaign_id)
    if role == "change":
        return campaign_budget_change(campaign=campaign, new_total=D(new_total), actor=None, reason="高峰期调整").total_budget
    user = UserFactory._meta.model.objects.get(pk=user_id)
    return voucher_issue(user=user, campaign=campaign, source=Voucher.Source.WELCOME).pk


def _assert_never_overspent(campaign: Campaign) -> None:
    campaign.refresh_from_db()
    buckets = list(BudgetBucket.objects.filter(campaign=campaign))
    assert sum(b.allotment for b in buckets) == campaign.total_budget
    assert all(b.reserved + b.spent <= b.allotment for b in buckets)
    issued = Voucher.objects.filter(campaign=campaign).count()
    assert issued * campaign.face_value <= campaign.total_budget
    report = reconcile(campaign=campaign)
    assert report.ok, report.differences


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("start", "new_total"), [("100.00", "300.00"), ("500.00", "150.00")])
def test_concurrent_claims_during_a_budget_change_never_overspend(start, new_total):
    campaign = CampaignFactory(total_budget=D(start), bucket_count=4)
    users = [UserFactory() for _ in range(24)]
    args = [("claim", campaign.pk, u.pk, None) for u in users]
    args.insert(12, ("change", campaign.pk, None, new_total))
    results = run_threads(_claim_or_change, len(args), args=args)
    change = results[12]
    claims = results[:12] + results[13:]
    for outcome in claims:
        assert outcome.ok or isinstance(outcome.error, BudgetExhausted), outcome.trace
    # Lowering may lose the race against claims that already committed more than the new total.
    assert change.ok or isinstance(change.error, BudgetBelowCommitted), change.trace
    campaign.refresh_from_db()
    expected_total = D(new_total) if change.ok else D(start)
    assert campaign.total_budget == expected_total
    issued = sum(1 for o in claims if o.ok)
    assert issued == Voucher.objects.filter(campaign=campaign).count()
    if issued < len(claims):  # somebody was refused: the budget must really be (nearly) full
        assert campaign.total_budget - issued * campaign.face_value < campaign.face_value
    _assert_never_overspent(campaign)
