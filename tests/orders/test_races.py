"""Races nobody had tested (issue 18), each on PostgreSQL with real threads released by one barrier.

- expiry vs locking a card for an order;
- void vs lock;
- the sweeper failing an order while the merchant accepts it;
- two (sixteen) reviewers approving / rejecting the same held referral;
- the same card redeemed in parallel (directly, and through parallel "delivered" events of one order).

Each ends with the exact accounting: every card in exactly one state consistent with its order, every
reservation / spend written once (reconcile), the losers refused with the documented error.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from campaign.models import LedgerEntry
from orders.merchant import InboundEvent
from orders.models import Order, OrderEvent
from orders.services import Line, OrderRequest, merchant_event_apply, order_place, order_sweep
from referrals.errors import ReferralNotPending
from referrals.models import Referral
from referrals.services import invite_code_get_or_create, referral_accept, referral_approve, referral_reject
from tests.concurrency import run_threads
from tests.factories import CampaignFactory, ProductFactory, StaffFactory, StoreFactory, UserFactory, VoucherFactory
from tests.referrals.conftest import relax
from vouchers.errors import NoVoucher, VoucherStateConflict
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import voucher_expire_batch, voucher_lock_for_order, voucher_redeem, voucher_void

pytestmark = pytest.mark.django_db(transaction=True)
PAIRS = 32  # 64 threads per race: 32 on each side


def _lock(user, campaign, order_id):
    with transaction.atomic():
        return voucher_lock_for_order(user=user, campaign=campaign, order_id=order_id).pk


def _cards(campaign, n):
    users = [UserFactory() for _ in range(n)]
    return users, [VoucherFactory(user=u, campaign=campaign) for u in users]


def _assert_books(campaign):
    report = reconcile(campaign=campaign)
    assert report.ok, report.differences
    # Each card was reserved once and released at most once.
    releases = Counter(LedgerEntry.objects.filter(campaign=campaign, kind="release").values_list("voucher_id", flat=True))
    assert all(n == 1 for n in releases.values()), releases


def test_expiry_sweep_vs_locking_cards_for_orders():
    """The sweep expires (time travel: `now` a year ahead) while each owner locks their card for an order:
    a card ends either locked by its order (never expired under it) or expired (and the lock said NoVoucher)."""
    campaign = CampaignFactory()
    users, cards = _cards(campaign, PAIRS)
    later = timezone.now() + dt.timedelta(days=365)

    def work(i):
        if i % 2:
            return ("expired", voucher_expire_batch(limit=5, now=later))
        return ("locked", _lock(users[i // 2], campaign, 10_000 + i // 2))

    results = run_threads(work, 2 * PAIRS, args=[(i,) for i in range(2 * PAIRS)])
    for r in results:
        assert r.ok or isinstance(r.error, NoVoucher), r.trace
    locked = {r.value[1] for r in results if r.ok and r.value[0] == "locked"}
    voucher_expire_batch(limit=1000, now=later)  # whatever the racing sweeps skipped (SKIP LOCKED)
    for card in Voucher.objects.filter(pk__in=[c.pk for c in cards]):
        if card.pk in locked:
            assert card.status == Voucher.Status.LOCKED and card.order_id is not None, card.__dict__
        else:
            assert card.status == Voucher.Status.EXPIRED and card.order_id is None, card.__dict__
    assert 0 < len(locked) < PAIRS or len(locked) in (0, PAIRS)  # both sides may win; the books decide
    _assert_books(campaign)
    assert LedgerEntry.objects.filter(campaign=campaign, kind="release").count() == PAIRS - len(locked)


def test_void_vs_lock_for_an_order():
    """Staff void each card while its owner locks it: void wins (card void, lock NoVoucher) or the lock wins
    (card locked, void refused with a state conflict); never a void card attached to an order."""
    campaign = CampaignFactory()
    staff = StaffFactory()
    users, cards = _cards(campaign, PAIRS)

    def work(i):
        card = cards[i // 2]
        if i % 2:
            return ("void", voucher_void(voucher=card, actor=staff, reason="竞态测试作废").pk)
        return ("locked", _lock(users[i // 2], campaign, 20_000 + i // 2))

    results = run_threads(work, 2 * PAIRS, args=[(i,) for i in range(2 * PAIRS)])
    for i, r in enumerate(results):
        assert r.ok or isinstance(r.error, VoucherStateConflict if i % 2 else NoVoucher), r.trace
    for i, card in enumerate(cards):
        card.refresh_from_db()
        lock, void = results[2 * i], results[2 * i + 1]
        assert lock.ok != void.ok, (card.pk, lock, void)  # exactly one side won
        if void.ok:
            assert card.status == Voucher.Status.VOID and card.order_id is None
        else:
            assert card.status == Voucher.Status.LOCKED and card.order_id == 20_000 + i
    _assert_books(campaign)


def test_the_same_card_redeemed_sixteen_times_in_parallel_spends_once():
    campaign = CampaignFactory()
    users, cards = _cards(campaign, 4)
    for user, card in zip(users, cards, strict=True):
        _lock(user, campaign, 30_000 + card.pk)

    def redeem(card):
        with transaction.atomic():
            return voucher_redeem(voucher_id=card.pk, order_id=30_000 + card.pk, order_amount=Decimal("18.00")).subsidy

    results = run_threads(redeem, 64, args=[(cards[i % 4],) for i in range(64)])
    assert all(r.ok and r.value == Decimal("18.00") for r in results), [r.trace for r in results if not r.ok][:1]
    spends = Counter(LedgerEntry.objects.filter(campaign=campaign, kind="spend").values_list("voucher_id", flat=True))
    assert spends == {c.pk: 1 for c in cards}
    assert sum(LedgerEntry.objects.filter(campaign=campaign, kind="spend").values_list("amount", flat=True)) == \
        Decimal("72.00")
    _assert_books(campaign)


# --- orders: sweeper vs merchant, parallel deliveries -------------------------------------------------------

@pytest.fixture
def shop(settings):
    settings.MIANDAN_ORDER_ACCEPT_DEADLINE_SECONDS = 60
    store = StoreFactory(capacity_per_minute=100_000)
    return store, ProductFactory(brand=store.brand, price=Decimal("18.00"))


def _orders(shop, campaign, n):
    store, product = shop
    placed = []
    for _ in range(n):
        user = UserFactory()
        VoucherFactory(user=user, campaign=campaign)
        request = OrderRequest(lines=(Line(quantity=1, product_id=product.pk),), store_id=store.pk,
                               campaign_slug=campaign.slug)
        placed.append(order_place(user=user, request=request).order)
    return placed


def _event(order, kind, event_id):
    return InboundEvent(event_id=event_id, kind=kind, order_id=order.pk, occurred_at=timezone.now(),
                        merchant_ref=f"SIM-{order.pk}")


def test_sweeper_fails_overdue_orders_while_the_merchant_accepts_them(shop):
    """Sweepers (time travel: `now` past the accept deadline) race the merchant's acceptances, order by order.
    Each order is either failed (card back to its owner, merchant told) or accepted (card still locked for
    it): one transition out of `placed`, never both, never an accepted order with its card released."""
    campaign = CampaignFactory()
    orders = _orders(shop, campaign, PAIRS)
    later = timezone.now() + dt.timedelta(minutes=5)

    def work(i):
        if i % 2:
            return order_sweep(now=later, limit=4)["failed"]
        order = orders[i // 2]
        return merchant_event_apply(merchant=order.merchant, event=_event(order, "accepted", f"acc-{order.pk}")).outcome

    results = run_threads(work, 2 * PAIRS, args=[(i,) for i in range(2 * PAIRS)])
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok][:1]
    failed_by_sweep = sum(r.value for i, r in enumerate(results) if i % 2)
    statuses = Counter()
    for order in Order.objects.filter(pk__in=[o.pk for o in orders]).select_related("voucher"):
        statuses[order.status] += 1
        moves = list(OrderEvent.objects.filter(order=order, from_status=Order.Status.PLACED).values_list("to_status", flat=True))
        assert moves == [order.status], (order.pk, moves)  # exactly one transition out of placed
        if order.status == Order.Status.ACCEPTED:
            assert order.voucher.status == Voucher.Status.LOCKED and order.voucher.order_id == order.pk
        else:
            assert order.status == Order.Status.FAILED and order.failure_reason == "门店超时未接单"
            assert order.voucher.status == Voucher.Status.ISSUED and order.voucher.order_id is None
    assert statuses[Order.Status.FAILED] == failed_by_sweep
    assert statuses[Order.Status.ACCEPTED] + statuses[Order.Status.FAILED] == PAIRS
    _assert_books(campaign)


def test_parallel_deliveries_of_one_order_redeem_its_card_once(shop):
    """Sixteen 'delivered' events (distinct ids: a merchant retrying with new ids) for each of four orders."""
    campaign = CampaignFactory()
    orders = _orders(shop, campaign, 4)

    def deliver(i):
        order = orders[i % 4]
        return merchant_event_apply(merchant=order.merchant, event=_event(order, "delivered", f"dlv-{i}")).outcome

    results = run_threads(deliver, 64, args=[(i,) for i in range(64)])
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok][:1]
    assert Counter(r.value for r in results) == {"applied": 4, "ignored": 60}
    for order in orders:
        order.refresh_from_db()
        assert order.status == Order.Status.COMPLETED and order.voucher.status == Voucher.Status.REDEEMED
    assert LedgerEntry.objects.filter(campaign=campaign, kind="spend").count() == 4
    _assert_books(campaign)


# --- referrals: reviewers racing on one held referral --------------------------------------------------------

def test_sixteen_reviewers_approve_and_reject_the_same_held_referral():
    """One decision wins; the others get ReferralNotPending; the cards are issued once (approve) or never."""
    campaign = relax(CampaignFactory(), referral_inviter_daily_limit=0)  # every accept is held for review
    reviewers = [StaffFactory(is_superuser=True) for _ in range(2)]
    held = []
    for _ in range(4):
        inviter, invitee = UserFactory(), UserFactory()
        code = invite_code_get_or_create(user=inviter, campaign=campaign).code
        referral = referral_accept(user=invitee, campaign=campaign, code=code)
        assert referral.status == Referral.Status.UNDER_REVIEW
        held.append(referral)

    def review(i):
        referral, actor = held[i % 4], reviewers[i % 2]
        decide = referral_approve if (i // 4) % 2 else referral_reject
        return decide(referral=referral, actor=actor, note=f"审核 {i}").status

    results = run_threads(review, 64, args=[(i,) for i in range(64)])
    for r in results:
        assert r.ok or isinstance(r.error, ReferralNotPending), r.trace
    for k, referral in enumerate(held):
        mine = [results[i] for i in range(64) if i % 4 == k]
        winners = [r.value for r in mine if r.ok]
        assert len(winners) == 1, winners
        referral.refresh_from_db()
        assert referral.status == winners[0]
        cards = Voucher.objects.filter(user__in=[referral.inviter_id, referral.invitee_id], campaign=campaign)
        assert cards.count() == (2 if referral.status == Referral.Status.ACCEPTED else 0)
    _assert_books(campaign)
