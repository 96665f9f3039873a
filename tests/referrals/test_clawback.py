"""Clawback: a referral rejected after the fact voids its unused reward cards (budget back) and reports used ones."""

from decimal import Decimal

import pytest
from django.db import transaction

from campaign.models import AuditLog, BudgetBucket, Campaign, LedgerEntry
from events.models import Event
from referrals.errors import ReferralNotPending, ReviewForbidden
from referrals.models import Clawback, Referral
from referrals.services import invite_code_get_or_create, referral_accept, referral_revoke
from tests.factories import StaffFactory, UserFactory
from tests.referrals.conftest import relax
from tests.referrals.test_admin import CHANGELIST, staff_client
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import voucher_lock_for_order, voucher_redeem

pytestmark = pytest.mark.django_db


def accept(invitee, inviter, campaign, **kwargs):
    code = invite_code_get_or_create(user=inviter, campaign=campaign).code
    return referral_accept(user=invitee, campaign=campaign, code=code, **kwargs)


def use(card: Voucher, order_id: int, amount: str | None) -> None:
    """Lock the card for an order; with an amount, complete the order (the card is redeemed)."""
    with transaction.atomic():
        voucher_lock_for_order(user=card.user, campaign=card.campaign, order_id=order_id, voucher_code=card.code)
        if amount is not None:
            voucher_redeem(voucher_id=card.pk, order_id=order_id, order_amount=Decimal(amount))


def available(campaign) -> Decimal:
    return sum((b.available for b in BudgetBucket.objects.filter(campaign=campaign)), Decimal("0.00"))


def test_unused_reward_is_voided_with_budget_returned_and_used_reward_is_reported(campaign, reviewer):
    ref = accept(UserFactory(), UserFactory(), campaign)
    inviter_card, invitee_card = ref.inviter_voucher, ref.invitee_voucher
    use(invitee_card, order_id=7001, amount="18.00")  # the invitee already drank the free tea
    before = available(campaign)

    revoked, clawbacks = referral_revoke(referral=ref, actor=reviewer, note="事后查实：同一人多号")

    assert revoked.status == Referral.Status.REJECTED and revoked.reviewed_by == reviewer
    inviter_card.refresh_from_db()
    invitee_card.refresh_from_db()
    assert inviter_card.status == Voucher.Status.VOID and invitee_card.status == Voucher.Status.REDEEMED
    assert available(campaign) == before + Decimal("25.00")  # the face value is back in the budget
    release = LedgerEntry.objects.get(voucher_id=inviter_card.pk, kind=LedgerEntry.Kind.RELEASE)
    assert release.amount == Decimal("25.00") and release.reason.startswith("收回奖励：")
    assert release.actor == reviewer
    rows = {c.side: c for c in Clawback.objects.filter(referral=ref)}
    assert (rows["inviter"].action, rows["inviter"].amount, rows["inviter"].order_id) == ("voided", Decimal("25.00"),
                                                                                          None)
    assert (rows["invitee"].action, rows["invitee"].amount, rows["invitee"].order_id) == ("used", Decimal("18.00"),
                                                                                          7001)
    assert [c.pk for c in clawbacks] == [rows["inviter"].pk, rows["invitee"].pk]
    log = AuditLog.objects.get(action="referral.revoke")
    assert log.actor == reviewer and log.reason == "事后查实：同一人多号"
    assert {(c["side"], c["action"]) for c in log.after["clawback"]} == {("inviter", "voided"), ("invitee", "used")}
    event = Event.objects.filter(type="referral.rejected").get()
    assert event.data["after_the_fact"] is True and len(event.data["clawback"]) == 2
    assert Event.objects.filter(type="card.voided", data__voucher_id=inviter_card.pk).exists()
    report = reconcile(campaign=campaign)
    assert report.ok, report


def test_a_card_in_an_order_in_flight_is_reported_not_voided(campaign, reviewer):
    ref = accept(UserFactory(), UserFactory(), campaign)
    use(ref.inviter_voucher, order_id=7002, amount=None)
    referral_revoke(referral=ref, actor=reviewer, note="作弊")
    inviter = Clawback.objects.get(referral=ref, side="inviter")
    assert (inviter.action, inviter.amount, inviter.order_id) == ("in_use", Decimal("25.00"), 7002)
    assert Voucher.objects.get(pk=ref.inviter_voucher_id).status == Voucher.Status.LOCKED
    assert Clawback.objects.get(referral=ref, side="invitee").action == "voided"
    assert reconcile(campaign=campaign).ok


def test_with_clawback_off_the_cards_are_kept_and_listed(campaign, reviewer):
    Campaign.objects.filter(pk=campaign.pk).update(referral_clawback=False)
    ref = accept(UserFactory(), UserFactory(), campaign)
    before = available(campaign)
    referral_revoke(referral=ref, actor=reviewer, note="作弊")
    assert set(Voucher.objects.filter(pk__in=[ref.inviter_voucher_id, ref.invitee_voucher_id])
               .values_list("status", flat=True)) == {"issued"}
    assert set(Clawback.objects.filter(referral=ref).values_list("action", flat=True)) == {"kept"}
    assert available(campaign) == before
    assert Referral.objects.get(pk=ref.pk).status == "rejected"


def test_only_accepted_referrals_by_a_reviewer_with_a_note(campaign, reviewer):
    ref = accept(UserFactory(), UserFactory(), campaign)
    with pytest.raises(ReviewForbidden):
        referral_revoke(referral=ref, actor=StaffFactory(), note="作弊")
    referral_revoke(referral=ref, actor=reviewer, note="作弊")
    with pytest.raises(ReferralNotPending):  # twice: nothing more to claw back
        referral_revoke(referral=ref, actor=reviewer, note="再来一次")
    assert Clawback.objects.filter(referral=ref).count() == 2
    assert reconcile(campaign=campaign).ok


def test_admin_revokes_from_the_list_and_shows_the_clawback_on_the_detail_page(campaign):
    relax(campaign)
    ref = accept(UserFactory(), UserFactory(), campaign)
    use(ref.invitee_voucher, order_id=7003, amount="30.00")
    client = staff_client("view_referral", "review_referral")
    page = client.get(f"{CHANGELIST}{ref.pk}/change/").content.decode()
    assert "事后拒绝（收回未使用的奖励卡）" in page
    confirm = client.post(CHANGELIST, {"action": "revoke_selected", "_selected_action": [ref.pk]})
    assert "事后拒绝" in confirm.content.decode() and "确认事后拒绝并收回" in confirm.content.decode()
    done = client.post(CHANGELIST, {"action": "revoke_selected", "_selected_action": [ref.pk], "confirm": "yes",
                                    "note": "风控复核：作弊"}, follow=True)
    text = done.content.decode()
    assert "作废未使用的奖励卡 1 张" in text and "订单 #7003" in text and "25.00 元" in text
    detail = client.get(f"{CHANGELIST}{ref.pk}/change/").content.decode()
    assert "奖励收回记录（事后拒绝）" in detail
    assert "已作废，预算已退回" in detail and "已使用，待跟进" in detail
    assert Referral.objects.get(pk=ref.pk).status == "rejected"
    assert reconcile(campaign=campaign).ok
