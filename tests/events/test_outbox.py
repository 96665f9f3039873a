"""The outbox: every business change writes its event in the same transaction (it exists iff the change committed)."""

from decimal import Decimal

import pytest
from django.db import transaction

from campaign.services import campaign_budget_change, campaign_set_switches
from events.models import Event
from miandan.api.errors import InvalidInput
from tests.factories import CampaignFactory, StaffFactory, UserFactory, VoucherFactory
from vouchers.models import Voucher
from vouchers.services import (
    campaign_join,
    voucher_expire_batch,
    voucher_issue_in_tx,
    voucher_lock_for_order,
    voucher_redeem,
    voucher_release,
    voucher_void,
)

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


def types(campaign) -> list[str]:
    return list(Event.objects.filter(campaign_id=campaign.pk).order_by("id").values_list("type", flat=True))


def test_the_join_hot_path_writes_card_issued_in_its_one_statement(campaign):
    card, created = campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    assert created
    event = Event.objects.get(campaign_id=campaign.pk, type="card.issued")
    assert event.data["voucher_id"] == card.pk and event.data["code"] == card.code
    assert event.data["source"] == "welcome" and event.data["face_value"] == "25.00"
    assert event.data["bucket_id"] == card.bucket_id and event.data["user_id"] == card.user_id
    # A repeat join issues nothing and records nothing.
    campaign_join(user=card.user, campaign=campaign, app_version="2.0.0")
    assert Event.objects.filter(campaign_id=campaign.pk).count() == 1


def test_an_event_exists_iff_its_change_committed(campaign):
    user = UserFactory()
    # Rolled back after the raw-SQL issue statement ran: neither the card nor its event survive.
    with pytest.raises(Boom), transaction.atomic():
        voucher_issue_in_tx(user=user, campaign=campaign, source=Voucher.Source.STAFF, reason="回滚")
        assert Event.objects.filter(campaign_id=campaign.pk).count() == 1  # written, inside the transaction
        raise Boom
    assert not Voucher.objects.filter(campaign=campaign).exists()
    assert not Event.objects.filter(campaign_id=campaign.pk).exists()
    # A void refused half way (no reason) leaves no event either; a committed one has exactly one.
    card = VoucherFactory(campaign=campaign, user=user)
    with pytest.raises(InvalidInput):
        voucher_void(voucher=card, actor=StaffFactory(), reason="  ")
    assert types(campaign) == ["card.issued"]
    voucher_void(voucher=card, actor=StaffFactory(), reason="测试作废")
    assert types(campaign) == ["card.issued", "card.voided"]


def test_the_whole_card_life_and_the_budget_are_in_the_stream(campaign):
    staff = StaffFactory()
    user = UserFactory()
    a, b, c = (VoucherFactory(campaign=campaign, user=user) for _ in range(3))
    with transaction.atomic():
        voucher_lock_for_order(user=user, campaign=campaign, order_id=9001, voucher_code=a.code)
    voucher_release(voucher_id=a.pk, order_id=9001)  # in the test's transaction: a failed order gives it back
    with transaction.atomic():
        voucher_lock_for_order(user=user, campaign=campaign, order_id=9002, voucher_code=b.code)
        voucher_redeem(voucher_id=b.pk, order_id=9002, order_amount=Decimal("18.00"))
    Voucher.objects.filter(pk=c.pk).update(expires_at=c.issued_at)
    assert voucher_expire_batch() == 1
    campaign_budget_change(campaign=campaign, new_total=Decimal("20000.00"), actor=staff, reason="加预算")
    campaign_set_switches(campaign=campaign, actor=staff, claims_enabled=False)
    assert types(campaign) == ["card.issued"] * 3 + [
        "card.released", "card.redeemed", "card.expired", "budget.changed", "campaign.switches_changed"]
    redeemed = Event.objects.get(campaign_id=campaign.pk, type="card.redeemed").data
    assert (redeemed["order_id"], redeemed["subsidy"], redeemed["released"]) == (9002, "18.00", "7.00")
    budget = Event.objects.get(campaign_id=campaign.pk, type="budget.changed").data
    assert (budget["old_total"], budget["new_total"], budget["delta"]) == ("10000.00", "20000.00", "10000.00")
    switches = Event.objects.get(campaign_id=campaign.pk, type="campaign.switches_changed").data
    assert switches["before"] == {"claims_enabled": True} and switches["after"] == {"claims_enabled": False}


def test_switched_off_the_stream_records_nothing(campaign, settings):
    settings.MIANDAN_EVENTS_ENABLED = False
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    VoucherFactory(campaign=campaign)
    assert not Event.objects.exists()


def test_a_second_campaign_has_its_own_events():
    one, two = CampaignFactory(), CampaignFactory()
    VoucherFactory(campaign=one)
    VoucherFactory(campaign=two)
    VoucherFactory(campaign=two)
    assert (len(types(one)), len(types(two))) == (1, 2)


def _reviewer():
    from django.contrib.auth.models import Permission

    staff = StaffFactory()
    staff.user_permissions.add(Permission.objects.get(codename="review_referral"))
    return type(staff).objects.get(pk=staff.pk)


def test_referrals_and_orders_are_in_the_stream():
    from orders.models import Order
    from orders.services import order_transition
    from referrals.services import invite_code_get_or_create, referral_accept, referral_approve, referral_reject
    from tests.factories import OrderFactory
    from tests.referrals.conftest import relax

    campaign = relax(CampaignFactory(), referral_device_max_accounts=1)
    reviewer = _reviewer()

    def accept(invitee, inviter, **kw):
        code = invite_code_get_or_create(user=inviter, campaign=campaign).code
        return referral_accept(user=invitee, campaign=campaign, code=code, **kw)

    ok = accept(UserFactory(), UserFactory(), device_id="farm")
    held = accept(UserFactory(), UserFactory(), device_id="farm")
    held2 = accept(UserFactory(), UserFactory(), device_id="farm")
    referral_approve(referral=held, actor=reviewer, note="核实")
    referral_reject(referral=held2, actor=reviewer, note="设备农场")
    got = [(e.type, e.data["referral_id"]) for e in Event.objects.filter(type__startswith="referral.").order_by("id")]
    assert got == [("referral.accepted", ok.pk), ("referral.held", held.pk), ("referral.held", held2.pk),
                   ("referral.accepted", held.pk), ("referral.rejected", held2.pk)]
    assert Event.objects.filter(type__startswith="referral.").first().data["inviter_voucher_id"] == ok.inviter_voucher_id

    order = OrderFactory(status=Order.Status.PLACED)
    order_transition(order_id=order.pk, from_statuses=[Order.Status.PLACED], to_status=Order.Status.ACCEPTED)
    order_transition(order_id=order.pk, from_statuses=[Order.Status.PLACED], to_status=Order.Status.FAILED)  # no-op
    moves = [(e.data["from"], e.data["to"]) for e in Event.objects.filter(type="order.status_changed")]
    assert moves == [("placed", "accepted")]
