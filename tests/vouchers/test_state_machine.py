"""A Hypothesis state machine over the whole card life cycle; every invariant is checked after every step."""

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from campaign.errors import BudgetExhausted
from campaign.models import BudgetBucket, LedgerEntry
from tests.factories import CampaignFactory, StaffFactory, UserFactory
from vouchers.errors import CardLimitReached, NoVoucher
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
_orders = itertools.count(1_000_000)
_campaigns = itertools.count()
AMOUNTS = st.sampled_from(["0.00", "0.01", "7.50", "18.00", "24.99", "25.00", "25.01", "38.00", "120.00"])
SOURCES = st.sampled_from([Voucher.Source.REFERRAL_INVITER, Voucher.Source.REFERRAL_INVITEE, Voucher.Source.STAFF])


class CardLifecycle(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # A tight campaign: 10 cards of budget over 3 buckets, cap 4, three users; exhaustion and
        # scattered room (redeemed below face value) happen within a few steps.
        self.campaign = CampaignFactory(slug=f"sm-{next(_campaigns)}", total_budget=Decimal("250.00"),
                                        bucket_count=3, card_cap=4)
        self.users = [UserFactory() for _ in range(3)]
        self.staff = StaffFactory()
        self.expected_spent = Decimal("0.00")

    def cards(self, status):
        return list(Voucher.objects.filter(campaign=self.campaign, status=status).order_by("pk"))

    @rule(who=st.integers(0, 2), source=SOURCES)
    def issue(self, who, source):
        try:
            voucher_issue(user=self.users[who], campaign=self.campaign, source=source, reason="状态机")
        except (CardLimitReached, BudgetExhausted):
            pass

    @rule(who=st.integers(0, 2))
    def lock(self, who):
        try:
            with transaction.atomic():
                voucher_lock_for_order(user=self.users[who], campaign=self.campaign, order_id=next(_orders))
        except NoVoucher:
            pass

    @precondition(lambda self: Voucher.objects.filter(campaign=self.campaign, status="locked").exists())
    @rule(pick=st.integers(0, 100), amount=AMOUNTS)
    def redeem(self, pick, amount):
        locked = self.cards(Voucher.Status.LOCKED)
        card = locked[pick % len(locked)]
        with transaction.atomic():
            done = voucher_redeem(voucher_id=card.pk, order_id=card.order_id, order_amount=Decimal(amount))
        assert done.subsidy == min(Decimal(amount), card.face_value)
        self.expected_spent += done.subsidy

    @precondition(lambda self: Voucher.objects.filter(campaign=self.campaign, status="locked").exists())
    @rule(pick=st.integers(0, 100))
    def release(self, pick):
        locked = self.cards(Voucher.Status.LOCKED)
        card = locked[pick % len(locked)]
        with transaction.atomic():
            assert voucher_release(voucher_id=card.pk, order_id=card.order_id)

    @precondition(lambda self: Voucher.objects.filter(campaign=self.campaign, status="issued").exists())
    @rule(pick=st.integers(0, 100))
    def expire(self, pick):
        issued = self.cards(Voucher.Status.ISSUED)
        card = issued[pick % len(issued)]
        Voucher.objects.filter(pk=card.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
        assert voucher_expire_batch(limit=100) >= 1
        assert Voucher.objects.get(pk=card.pk).status == Voucher.Status.EXPIRED

    @precondition(lambda self: Voucher.objects.filter(campaign=self.campaign, status="issued").exists())
    @rule(pick=st.integers(0, 100))
    def void(self, pick):
        issued = self.cards(Voucher.Status.ISSUED)
        card = issued[pick % len(issued)]
        assert voucher_void(voucher=card, actor=self.staff, reason="状态机作废").status == Voucher.Status.VOID

    @invariant()
    def books_balance(self):
        report = reconcile(campaign=self.campaign)
        assert report.ok, report.differences
        assert report.totals["spent"] == self.expected_spent

    @invariant()
    def buckets_never_overspent(self):
        for bucket in BudgetBucket.objects.filter(campaign=self.campaign):
            assert bucket.reserved >= 0 and bucket.spent >= 0
            assert bucket.reserved + bucket.spent <= bucket.allotment
        assert sum(b.allotment for b in BudgetBucket.objects.filter(campaign=self.campaign)) == Decimal("250.00")

    @invariant()
    def cards_within_cap_in_slots(self):
        for user in self.users:
            slots = list(Voucher.objects.filter(campaign=self.campaign, user=user).order_by("slot")
                         .values_list("slot", flat=True))
            assert slots == list(range(1, len(slots) + 1)) and len(slots) <= 4

    @invariant()
    def open_cards_are_exactly_the_reservation(self):
        open_face = sum(c.face_value for c in Voucher.objects.filter(campaign=self.campaign,
                                                                      status__in=["issued", "locked"]))
        reserved = sum(b.reserved for b in BudgetBucket.objects.filter(campaign=self.campaign))
        assert open_face == reserved
        assert LedgerEntry.objects.filter(campaign=self.campaign, kind="reserve").count() == \
            Voucher.objects.filter(campaign=self.campaign).count()


def test_card_lifecycle_state_machine():
    run_state_machine_as_test(
        CardLifecycle,
        settings=settings(max_examples=30, stateful_step_count=25, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )
