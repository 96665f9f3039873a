"""The voucher engine services: issue, lock, redeem, release, expire, void. Every movement reconciles."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from campaign.errors import BudgetExhausted, CampaignNotLive
from campaign.models import AuditLog, BudgetBucket, Campaign, LedgerEntry
from miandan.api.errors import InvalidInput
from tests.factories import CampaignFactory, StaffFactory, UserFactory
from vouchers.errors import CardLimitReached, NoVoucher, VoucherStateConflict
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import (
    voucher_expire_batch,
    voucher_issue,
    voucher_lock_for_order,
    voucher_redeem,
    voucher_release,
    voucher_void,
)

pytestmark = pytest.mark.django_db
S = Voucher.Source


def totals(campaign):
    buckets = BudgetBucket.objects.filter(campaign=campaign)
    return (sum(b.reserved for b in buckets), sum(b.spent for b in buckets), sum(b.allotment for b in buckets))


def lock(user, order_id, campaign=None):
    with transaction.atomic():
        return voucher_lock_for_order(user=user, campaign=campaign, order_id=order_id)


def redeem(card, order_id, amount):
    with transaction.atomic():
        return voucher_redeem(voucher_id=card.pk, order_id=order_id, order_amount=Decimal(amount))


def test_issue_reserves_face_value_takes_next_slot_and_writes_ledger(user, campaign):
    first = voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITEE)
    second = voucher_issue(user=user, campaign=campaign, source=S.STAFF, reason="客服补偿")
    assert (first.slot, second.slot) == (1, 2)
    assert totals(campaign) == (Decimal("50.00"), Decimal("0.00"), Decimal("10000.00"))
    reserves = LedgerEntry.objects.filter(campaign=campaign, kind="reserve")
    assert sorted(reserves.values_list("voucher_id", flat=True)) == sorted([first.pk, second.pk])
    assert AuditLog.objects.filter(action="voucher.issue", object_id=str(second.pk)).exists()
    assert reconcile(campaign=campaign).ok


def test_staff_issue_needs_a_reason(user, campaign):
    with pytest.raises(InvalidInput):
        voucher_issue(user=user, campaign=campaign, source=S.STAFF, reason="  ")
    assert Voucher.objects.count() == 0


def test_cap_is_enforced_and_writes_nothing(user):
    campaign = CampaignFactory(card_cap=3)
    for _ in range(3):
        voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITER)
    ledger = LedgerEntry.objects.count()
    with pytest.raises(CardLimitReached):
        voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITER)
    assert Voucher.objects.filter(user=user).count() == 3
    assert LedgerEntry.objects.count() == ledger
    assert reconcile(campaign=campaign).ok


def test_not_live_campaign_issues_nothing(user):
    campaign = CampaignFactory(status=Campaign.Status.PAUSED)
    with pytest.raises(CampaignNotLive):
        voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITEE)
    assert Voucher.objects.count() == 0


@pytest.mark.parametrize(
    ("amount", "spent", "released"),
    [("18.00", "18.00", "7.00"), ("25.00", "25.00", "0.00"), ("30.00", "25.00", "0.00"), ("0", "0.00", "25.00"),
     ("24.99", "24.99", "0.01")],
)
def test_redeem_spends_min_of_order_and_face_and_releases_the_rest(user, campaign, amount, spent, released):
    card = voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITEE)
    locked = lock(user, order_id=7001)
    assert locked.pk == card.pk and locked.status == Voucher.Status.LOCKED
    done = redeem(card, 7001, amount)
    assert done.status == Voucher.Status.REDEEMED and done.subsidy == Decimal(spent)
    assert totals(campaign)[:2] == (Decimal("0.00"), Decimal(spent))
    release = LedgerEntry.objects.filter(voucher_id=card.pk, kind="release")
    assert sum(e.amount for e in release) == Decimal(released)
    # Idempotent: a redelivered task changes nothing.
    redeem(card, 7001, amount)
    assert totals(campaign)[:2] == (Decimal("0.00"), Decimal(spent))
    assert reconcile(campaign=campaign).ok


def test_redeem_refuses_wrong_order_and_bad_amounts(user, campaign):
    card = voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITEE)
    lock(user, order_id=1)
    with pytest.raises(VoucherStateConflict):
        redeem(card, 2, "10")
    for bad in (Decimal("-1"), Decimal("NaN"), 1.5, "10"):
        with pytest.raises(InvalidInput):
            with transaction.atomic():
                voucher_redeem(voucher_id=card.pk, order_id=1, order_amount=bad)
    assert Voucher.objects.get(pk=card.pk).status == Voucher.Status.LOCKED
    assert reconcile(campaign=campaign).ok


def test_lock_takes_the_card_expiring_first_and_release_gives_it_back(user, campaign):
    a = voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITEE)
    b = voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITEE)
    Voucher.objects.filter(pk=b.pk).update(expires_at=timezone.now() + dt.timedelta(days=1))
    assert lock(user, order_id=11).pk == b.pk
    assert lock(user, order_id=12).pk == a.pk
    with pytest.raises(NoVoucher):
        lock(user, order_id=13)
    with transaction.atomic():
        assert voucher_release(voucher_id=b.pk, order_id=11) is True
        assert voucher_release(voucher_id=b.pk, order_id=11) is False  # second time: nothing
    card = Voucher.objects.get(pk=b.pk)
    assert card.status == Voucher.Status.ISSUED and card.order_id is None
    assert totals(campaign)[0] == Decimal("50.00")  # the reservation stays with the card
    assert reconcile(campaign=campaign).ok


def test_expiry_returns_the_reservation(user, campaign):
    cards = [voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITEE) for _ in range(3)]
    lock(user, order_id=5)  # a card in an order does not expire under it
    Voucher.objects.filter(pk__in=[c.pk for c in cards]).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert voucher_expire_batch(limit=1) == 1
    assert voucher_expire_batch(limit=10) == 1
    assert voucher_expire_batch(limit=10) == 0
    assert Voucher.objects.filter(status=Voucher.Status.EXPIRED).count() == 2
    assert totals(campaign)[0] == Decimal("25.00")
    assert LedgerEntry.objects.filter(campaign=campaign, kind="release").count() == 2
    assert reconcile(campaign=campaign).ok


def test_void_returns_the_reservation_with_audit(user, campaign):
    staff = StaffFactory()
    card = voucher_issue(user=user, campaign=campaign, source=S.REFERRAL_INVITEE)
    with pytest.raises(InvalidInput):
        voucher_void(voucher=card, actor=staff, reason="")
    voided = voucher_void(voucher=card, actor=staff, reason="刷单")
    assert voided.status == Voucher.Status.VOID and voided.void_reason == "刷单"
    assert totals(campaign)[0] == Decimal("0.00")
    assert AuditLog.objects.filter(action="voucher.void", object_id=str(card.pk)).exists()
    with pytest.raises(VoucherStateConflict):
        voucher_void(voucher=card, actor=staff, reason="again")
    assert reconcile(campaign=campaign).ok


def test_released_budget_can_be_claimed_again(campaign):
    small = CampaignFactory(total_budget=Decimal("25.00"), bucket_count=4)
    a, b = UserFactory(), UserFactory()
    card = voucher_issue(user=a, campaign=small, source=S.REFERRAL_INVITEE)
    with pytest.raises(BudgetExhausted):
        voucher_issue(user=b, campaign=small, source=S.REFERRAL_INVITEE)
    voucher_void(voucher=card, actor=StaffFactory(), reason="作废")
    assert voucher_issue(user=b, campaign=small, source=S.REFERRAL_INVITEE).slot == 1
    assert reconcile(campaign=small).ok


def test_scattered_room_is_consolidated_into_one_card():
    campaign = CampaignFactory(total_budget=Decimal("75.00"), bucket_count=3)
    users = [UserFactory() for _ in range(3)]
    cards = [voucher_issue(user=u, campaign=campaign, source=S.REFERRAL_INVITEE) for u in users]
    assert len({c.bucket_id for c in cards}) == 3
    for i, (u, c) in enumerate(zip(users[:2], cards[:2], strict=True)):
        lock(u, order_id=100 + i)
        redeem(c, 100 + i, "10.00")  # 15.00 back in two different buckets: no bucket holds a card
    assert max(b.available for b in BudgetBucket.objects.filter(campaign=campaign)) < Decimal("25.00")
    extra = voucher_issue(user=users[2], campaign=campaign, source=S.REFERRAL_INVITEE)
    assert extra.slot == 2
    assert LedgerEntry.objects.filter(campaign=campaign, kind="adjust", reason__startswith="预算归集").exists()
    with pytest.raises(BudgetExhausted):
        voucher_issue(user=users[0], campaign=campaign, source=S.REFERRAL_INVITEE)
    report = reconcile(campaign=campaign)
    assert report.ok, report.differences
    assert report.totals["remaining"] == Decimal("5.00")
