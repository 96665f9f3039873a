"""A Hypothesis state machine over a whole campaign: safety AND liveness, checked after every step.

The machine keeps its own model of every card (owner, status, face value, subsidy, whether its date has
passed), of the referral graph and of the budget total. From the model alone it predicts each answer:

- safety: the books balance (reconcile), no bucket is overspent, cards sit in slots 1..n within the cap,
  the open cards are exactly the reservation, and every number the model predicts matches the database;
- liveness: a refusal must be deserved. BudgetExhausted only when the campaign's free budget (total minus
  reserved minus spent, in the model) is below one face value; CardLimitReached only when the user holds
  the cap; NoVoucher only when the user has no issued card whose date has not passed; BudgetBelowCommitted
  only when the new total is below what is reserved plus spent. A service that refuses what it owes (a
  stale "exhausted" hint, a scattered budget it fails to gather, an expired card counted as usable) fails.

Rules: join (welcome card), issue (staff / referral sources), referral accept, order place / cancel /
complete / fail (card locked, redeemed for min(price, face), released), budget raise / lower, time travel
(a card's date passes: it is no longer usable) and the expiry sweep.

Runs real commits (transactional_db), so the after-commit hooks the services rely on (the admission cache
in Redis, the "exhausted" hint) really run. The default profile is sized for CI (~20-30 s on 2 cores);
`pytest --hypothesis-profile=deep` (tests/conftest.py) runs many more and longer programs for nightly use.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from campaign.errors import BudgetBelowCommitted, BudgetExhausted
from campaign.models import BudgetBucket, Campaign, LedgerEntry
from campaign.services import campaign_budget_change
from orders.models import Order
from orders.services import Line, OrderRequest, order_cancel, order_fail, order_place, order_transition
from referrals.errors import AlreadyReferred, ReferralCycle
from referrals.models import Referral
from referrals.services import invite_code_get_or_create, referral_accept
from tests.factories import CampaignFactory, ProductFactory, StaffFactory, StoreFactory, UserFactory
from tests.referrals.conftest import relax
from vouchers.errors import CardLimitReached, NoVoucher
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import campaign_join, voucher_expire_batch, voucher_issue

pytestmark = pytest.mark.django_db(transaction=True)
_campaigns = itertools.count()
FACE = Decimal("25.00")
CAP = 3
USERS = 4
START_BUDGET = Decimal("100.00")  # 4 cards over 3 buckets: exhaustion and scattered room within a few steps
SOURCES = st.sampled_from([Voucher.Source.REFERRAL_INVITER, Voucher.Source.REFERRAL_INVITEE, Voucher.Source.STAFF])
S = Order.Status


@dataclass
class ModelCard:
    user: int
    face: Decimal
    status: str = Voucher.Status.ISSUED
    subsidy: Decimal = Decimal("0.00")
    past_date: bool = False  # time travel: its expires_at is behind us
    welcome: bool = False


class World:
    """What outlives an example: a store and two drinks (one far under face: scattered room; one over face)."""

    store = None
    products: list = []


class CampaignLife(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.campaign = relax(CampaignFactory(slug=f"sm-{next(_campaigns)}", total_budget=START_BUDGET, bucket_count=3,
                                              card_cap=CAP, face_value=FACE))
        self.users = [UserFactory() for _ in range(USERS)]
        self.staff = StaffFactory()
        self.total = START_BUDGET
        self.cards: dict[int, ModelCard] = {}
        self.orders: dict[int, tuple[int, int | None, Decimal]] = {}  # order id -> (user, card id, price)
        self.open_orders: list[int] = []
        self.edges: set[tuple[int, int]] = set()  # (inviter, invitee) user indexes

    # --- the model's predictions -------------------------------------------------------

    def free(self) -> Decimal:
        committed = sum((c.face for c in self.cards.values() if c.status in ("issued", "locked")), Decimal("0"))
        committed += sum((c.subsidy for c in self.cards.values() if c.status == "redeemed"), Decimal("0"))
        return self.total - committed

    def committed(self) -> Decimal:
        return self.total - self.free()

    def held(self, who: int) -> int:
        return sum(1 for c in self.cards.values() if c.user == who)

    def usable(self, who: int) -> list[int]:
        return [pk for pk, c in self.cards.items() if c.user == who and c.status == "issued" and not c.past_date]

    def deserved(self, who: int) -> set[type]:
        """The refusals issuing one card to `who` deserves now (empty: it must get a card).

        When both hold, either answer is true (the join answers a known-exhausted budget before it
        counts the user's cards); a refusal outside this set is a wrongful one.
        """
        refusals: set[type] = set()
        if self.held(who) >= CAP:
            refusals.add(CardLimitReached)
        if self.free() < FACE:
            refusals.add(BudgetExhausted)
        return refusals

    def take(self, who: int, card: Voucher, welcome: bool = False) -> None:
        assert card.pk not in self.cards and card.user_id == self.users[who].pk and card.face_value == FACE
        assert card.slot == self.held(who) + 1
        self.cards[card.pk] = ModelCard(user=who, face=card.face_value, welcome=welcome)

    # --- the start: often a budget already cut, its free room scattered over the buckets -----------------

    @initialize(cuts=st.lists(st.sampled_from(["10.00", "15.00", "20.00"]), max_size=4))
    def start(self, cuts):
        for cut in cuts:
            self.lower_budget(cut)

    # --- cards -------------------------------------------------------------------------

    @rule(who=st.integers(0, USERS - 1))
    def join(self, who):
        welcome = next((pk for pk, c in self.cards.items() if c.user == who and c.welcome), None)
        deserved = set() if welcome is not None else self.deserved(who)
        try:
            card, created = campaign_join(user=self.users[who], campaign=self.campaign, app_version="9.9.9")
        except (CardLimitReached, BudgetExhausted) as exc:
            assert type(exc) in deserved, f"join refused with {type(exc).__name__}, deserved: {deserved}"
            return
        assert not deserved, f"join succeeded but the model expected one of {deserved}"
        if welcome is not None:
            assert not created and card.pk == welcome
        else:
            assert created
            self.take(who, card, welcome=True)

    @rule(who=st.integers(0, USERS - 1), source=SOURCES)
    def issue(self, who, source):
        deserved = self.deserved(who)
        try:
            card = voucher_issue(user=self.users[who], campaign=self.campaign, source=source, actor=self.staff,
                                 reason="状态机发卡")
        except (CardLimitReached, BudgetExhausted) as exc:
            assert type(exc) in deserved, f"issue refused with {type(exc).__name__}, deserved: {deserved}"
            return
        assert not deserved, f"issued but the model expected one of {deserved}"
        self.take(who, card)

    @rule(inviter=st.integers(0, USERS - 1), invitee=st.integers(0, USERS - 1))
    def refer(self, inviter, invitee):
        if inviter == invitee:
            return
        code = invite_code_get_or_create(user=self.users[inviter], campaign=self.campaign).code
        in_graph = any(invitee in edge for edge in self.edges)
        try:
            referral = referral_accept(user=self.users[invitee], campaign=self.campaign, code=code)
        except (AlreadyReferred, ReferralCycle):
            assert in_graph, "a user with no referral edge was refused"
            return
        assert not in_graph, "a user already in the graph was accepted again"
        assert referral.status == Referral.Status.ACCEPTED
        self.edges.add((inviter, invitee))
        # Both sides are issued in ascending user id; each side capped and budgeted on its own.
        sides = sorted([("inviter", inviter), ("invitee", invitee)], key=lambda s: self.users[s[1]].pk)
        for side, who in sides:
            deserved = self.deserved(who)
            outcome = getattr(referral, f"{side}_outcome")
            allowed = {Referral.Outcome.CARD_LIMIT_REACHED: CardLimitReached,
                       Referral.Outcome.BUDGET_EXHAUSTED: BudgetExhausted}
            if outcome == Referral.Outcome.ISSUED:
                assert not deserved, f"{side} got a card but the model expected one of {deserved}"
                self.take(who, getattr(referral, f"{side}_voucher"))
            else:
                assert allowed.get(outcome) in deserved, f"{side} outcome {outcome}, deserved: {deserved}"

    # --- orders ------------------------------------------------------------------------

    @rule(who=st.integers(0, USERS - 1), dear=st.booleans())
    def place(self, who, dear):
        product = World.products[1 if dear else 0]
        usable = self.usable(who)
        request = OrderRequest(lines=(Line(quantity=1, product_id=product.pk),), store_id=World.store.pk,
                               campaign_slug=self.campaign.slug)
        try:
            placement = order_place(user=self.users[who], request=request)
        except NoVoucher:
            assert not usable, f"NoVoucher while the model holds usable cards {usable}"
            return
        assert usable, "an order took a card the model says is not usable"
        card = placement.order.voucher
        assert card is not None and card.pk in usable, (card, usable)
        # The card that expires first (all share one validity: the first issued of the usable ones).
        assert card.pk == min(usable), (card.pk, usable)
        self.cards[card.pk].status = "locked"
        price = placement.order.total_price
        assert placement.order.subsidy == min(price, FACE)
        self.orders[placement.order.pk] = (who, card.pk, price)
        self.open_orders.append(placement.order.pk)

    def _close(self, pick: int) -> int:
        return self.open_orders.pop(pick % len(self.open_orders))

    @precondition(lambda self: self.open_orders)
    @rule(pick=st.integers(0, 100))
    def cancel(self, pick):
        order_id = self._close(pick)
        who, card_id, _ = self.orders[order_id]
        assert order_cancel(user=self.users[who], order_id=order_id).status == S.CANCELLED
        self.cards[card_id].status = "issued"

    @precondition(lambda self: self.open_orders)
    @rule(pick=st.integers(0, 100))
    def fail(self, pick):
        order_id = self._close(pick)
        assert order_fail(order_id=order_id, reason="状态机：门店失败").status == S.FAILED
        self.cards[self.orders[order_id][1]].status = "issued"

    @precondition(lambda self: self.open_orders)
    @rule(pick=st.integers(0, 100))
    def complete(self, pick):
        order_id = self._close(pick)
        _, card_id, price = self.orders[order_id]
        done = order_transition(order_id=order_id, from_statuses=(S.PLACED, S.SENT_TO_STORE, S.ACCEPTED),
                                to_status=S.COMPLETED, note="状态机：送达")
        assert done is not None and done.status == S.COMPLETED
        card = self.cards[card_id]
        card.status, card.subsidy = "redeemed", min(price, card.face)

    # --- budget ------------------------------------------------------------------------

    @rule(cards=st.integers(1, 4), cents=st.sampled_from(["0.00", "0.01", "12.50"]))
    def raise_budget(self, cards, cents):
        new_total = self.total + FACE * cards + Decimal(cents)
        campaign_budget_change(campaign=self.campaign, new_total=new_total, actor=self.staff, reason="状态机加预算")
        self.total = new_total

    @rule(who=st.integers(0, USERS - 1))
    def raise_then_join(self, who):
        """Marketing adds budget while users are being refused: the very next join must see it (no stale
        "exhausted" hint answering for the old budget)."""
        self.raise_budget(1, "0.00")
        self.join(who)

    @rule(cut=st.sampled_from(["0.01", "10.00", "25.00", "60.00", "1000.00"]))
    def lower_budget(self, cut):
        new_total = max(self.total - Decimal(cut), Decimal("0.00"))
        try:
            campaign_budget_change(campaign=self.campaign, new_total=new_total, actor=self.staff, reason="状态机减预算")
        except BudgetBelowCommitted:
            assert new_total < self.committed(), f"refused to lower to {new_total}, committed {self.committed()}"
            return
        assert new_total >= self.committed()
        self.total = new_total

    # --- time --------------------------------------------------------------------------

    @precondition(lambda self: any(not c.past_date and c.status in ("issued", "locked") for c in self.cards.values()))
    @rule(pick=st.integers(0, 100))
    def date_passes(self, pick):
        """Time travel for one card: its expires_at moves behind now (it may be locked in an order)."""
        live = sorted(pk for pk, c in self.cards.items() if not c.past_date and c.status in ("issued", "locked"))
        pk = live[pick % len(live)]
        Voucher.objects.filter(pk=pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
        self.cards[pk].past_date = True

    @rule()
    def expiry_sweep(self):
        due = [pk for pk, c in self.cards.items() if c.past_date and c.status == "issued"]
        # Other examples' campaigns may have due cards too: the sweep's count covers at least ours.
        assert voucher_expire_batch(limit=10_000) >= len(due)
        for pk in due:
            self.cards[pk].status = "expired"

    # --- invariants (one method: a dozen queries after every step) ---------------------

    @invariant()
    def database_matches_the_model_and_the_books_balance(self):
        rows = list(Voucher.objects.filter(campaign=self.campaign).values_list("pk", "status", "subsidy", "user_id", "slot"))
        assert {pk: status for pk, status, *_ in rows} == {pk: c.status for pk, c in self.cards.items()}
        assert {pk: subsidy for pk, status, subsidy, *_ in rows if status == "redeemed"} == \
            {pk: c.subsidy for pk, c in self.cards.items() if c.status == "redeemed"}
        slots: dict[int, list[int]] = {}
        for _, _, _, user_id, slot in rows:
            slots.setdefault(user_id, []).append(slot)
        for held in slots.values():  # each user's cards sit in slots 1..n, within the cap
            assert sorted(held) == list(range(1, len(held) + 1)) and len(held) <= CAP
        assert Campaign.objects.get(pk=self.campaign.pk).total_budget == self.total
        report = reconcile(campaign=self.campaign)
        assert report.ok, report.differences
        buckets = list(BudgetBucket.objects.filter(campaign=self.campaign))
        for bucket in buckets:
            assert bucket.reserved >= 0 and bucket.spent >= 0
            assert bucket.reserved + bucket.spent <= bucket.allotment
        assert sum(b.allotment for b in buckets) == self.total
        assert self.total - sum(b.reserved + b.spent for b in buckets) == self.free()
        assert LedgerEntry.objects.filter(campaign=self.campaign, kind="reserve").count() == len(self.cards)


@pytest.fixture
def world(db):
    store = StoreFactory(capacity_per_minute=1_000_000)
    World.store = store
    World.products = [ProductFactory(brand=store.brand, price=Decimal("5.00")),
                      ProductFactory(brand=store.brand, price=Decimal("32.00"))]
    yield
    from django.conf import settings as django_settings

    from tests.celery_worker import _purge

    if django_settings.CELERY_BROKER_URL:
        _purge(django_settings.CELERY_TASK_DEFAULT_QUEUE)  # the submit tasks the orders sent on commit


def test_campaign_state_machine(world):
    # CI size: ~20-30 s on 2 cores. `--hypothesis-profile=deep` (tests/conftest.py) takes its size from the profile.
    size = {} if settings.get_current_profile_name() == "deep" else {"max_examples": 12, "stateful_step_count": 30}
    run_state_machine_as_test(CampaignLife, settings=settings(deadline=None, suppress_health_check=list(HealthCheck),
                                                              **size))
