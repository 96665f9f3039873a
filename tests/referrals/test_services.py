from decimal import Decimal

import pytest

from accounts.models import Device
from campaign.errors import CampaignNotLive
from campaign.models import AuditLog, Campaign
from miandan.api.errors import InvalidInput, Paused
from referrals.codes import ALPHABET, LENGTH, new_invite_code, normalize_code
from referrals.errors import AlreadyReferred, InvalidCode, ReferralCycle, ReferralNotPending, ReviewForbidden, SelfReferral
from referrals.models import InviteCode, Referral
from referrals.selectors import referral_chain, top_inviters
from referrals.services import invite_code_get_or_create, referral_accept, referral_approve, referral_reject
from tests.factories import CampaignFactory, StaffFactory, UserFactory, VoucherFactory
from tests.referrals.conftest import relax
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db


def accept(invitee, inviter, campaign, **kwargs):
    return referral_accept(user=invitee, campaign=campaign,
                           code=invite_code_get_or_create(user=inviter, campaign=campaign).code, **kwargs)


def nothing_written(campaign, before_refs=0, before_cards=0):
    assert Referral.objects.filter(campaign=campaign).count() == before_refs
    assert Voucher.objects.filter(campaign=campaign).count() == before_cards
    assert reconcile(campaign=campaign).ok


# --- codes ----------------------------------------------------------------------------------

def test_codes_use_the_unambiguous_alphabet():
    codes = {new_invite_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(len(c) == LENGTH and set(c) <= set(ALPHABET) for c in codes)
    assert not set("0O1IL") & set(ALPHABET)


@pytest.mark.parametrize("raw, expected", [
    ("abcd2345", "ABCD2345"),
    ("  AbCd2345\n", "ABCD2345"),
    ("\u3000ABCD 2345\u3000", "ABCD2345"),  # full-width spaces from a Chinese IME
    ("ＡＢＣＤ２３４５", "ABCD2345"),  # full-width letters and digits
    ("ABCD\u200b2345", "ABCD2345"),  # zero-width space copied out of a chat
    ("", None), ("   ", None), ("ab", None), ("A" * 17, None), ("' OR 1=1 --", None),
    ("<script>alert(1)</script>", None), ("ABCD-2345", None), (None, None), (12345678, None),
])
def test_normalize_code(raw, expected):
    assert normalize_code(raw) == expected


def test_invite_code_is_created_once_per_user_and_campaign(campaign):
    user = UserFactory()
    first = invite_code_get_or_create(user=user, campaign=campaign)
    again = invite_code_get_or_create(user=user, campaign=campaign)
    other = invite_code_get_or_create(user=user, campaign=CampaignFactory())
    assert first.pk == again.pk
    assert other.code != first.code
    assert InviteCode.objects.filter(user=user).count() == 2


# --- accepting ------------------------------------------------------------------------------

def test_accept_issues_one_card_to_each_side(campaign):
    inviter, invitee = UserFactory(), UserFactory()
    referral = accept(invitee, inviter, campaign)
    assert referral.status == Referral.Status.ACCEPTED
    assert (referral.inviter_outcome, referral.invitee_outcome) == ("issued", "issued")
    assert referral.inviter_voucher.user == inviter and referral.inviter_voucher.source == "referral_inviter"
    assert referral.invitee_voucher.user == invitee and referral.invitee_voucher.source == "referral_invitee"
    assert (referral.root, referral.depth, referral.path) == (inviter, 1, f"/{inviter.pk}/")
    assert Voucher.objects.filter(campaign=campaign).count() == 2
    assert reconcile(campaign=campaign).ok


def test_code_is_accepted_case_insensitively_with_spaces(campaign):
    inviter, invitee = UserFactory(), UserFactory()
    code = invite_code_get_or_create(user=inviter, campaign=campaign).code
    typed = "\u3000 " + code[:4].lower() + " " + code[4:].lower() + " \n"
    assert referral_accept(user=invitee, campaign=campaign, code=typed).inviter == inviter


def test_chain_stores_root_depth_and_path(campaign):
    a, b, c, d = (UserFactory() for _ in range(4))
    accept(b, a, campaign)
    accept(c, b, campaign)
    ref = accept(d, c, campaign)
    assert (ref.root, ref.depth, ref.path) == (a, 3, f"/{a.pk}/{b.pk}/{c.pk}/")
    chain = referral_chain(user=b, campaign=campaign)
    assert chain.ancestors == [a]
    assert [r.invitee for r in chain.invitees] == [c]
    assert chain.subtree_size == 2
    assert referral_chain(user=a, campaign=campaign).subtree_size == 3
    assert referral_chain(user=d, campaign=campaign).ancestors == [a, b, c]
    assert referral_chain(user=d, campaign=campaign).subtree_size == 0
    assert [(row["inviter"], row["total"]) for row in top_inviters(campaign=campaign)] == [(a, 1), (b, 1), (c, 1)]


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_no_cycles_at_any_depth(campaign, depth):
    users = [UserFactory() for _ in range(depth + 1)]
    for parent, child in zip(users, users[1:], strict=False):
        accept(child, parent, campaign)
    refs, cards = Referral.objects.count(), Voucher.objects.count()
    # Every ancestor of the last user tries the last user's code.
    for ancestor in users[:-1]:
        with pytest.raises(ReferralCycle):
            accept(ancestor, users[-1], campaign)
    nothing_written(campaign, refs, cards)


def test_self_referral(campaign):
    user = UserFactory()
    with pytest.raises(SelfReferral):
        accept(user, user, campaign)
    nothing_written(campaign)


def test_code_of_another_campaign_is_invalid(campaign):
    other = relax(CampaignFactory())
    inviter, invitee = UserFactory(), UserFactory()
    code = invite_code_get_or_create(user=inviter, campaign=other).code
    with pytest.raises(InvalidCode):
        referral_accept(user=invitee, campaign=campaign, code=code)
    nothing_written(campaign)
    nothing_written(other)


@pytest.mark.parametrize("code", ["", "   ", "ZZZZZZZZ", "' OR '1'='1", "'; DROP TABLE referrals_referral; --",
                                  "<img src=x onerror=alert(1)>", "A" * 500, None])
def test_malformed_unknown_and_hostile_codes_are_invalid(campaign, code):
    with pytest.raises(InvalidCode):
        referral_accept(user=UserFactory(), campaign=campaign, code=code)
    nothing_written(campaign)


def test_invitee_accepts_only_once(campaign):
    a, b, c = UserFactory(), UserFactory(), UserFactory()
    accept(c, a, campaign)
    with pytest.raises(AlreadyReferred):
        accept(c, b, campaign)
    nothing_written(campaign, 1, 2)


def test_someone_who_already_invited_cannot_become_an_invitee(campaign):
    a, b, c = UserFactory(), UserFactory(), UserFactory()
    accept(b, a, campaign)  # a has an invitee now
    with pytest.raises(AlreadyReferred):
        accept(a, c, campaign)
    nothing_written(campaign, 1, 2)


def test_cycle_is_reported_before_already_referred(campaign):
    # b is a's invitee and c is b's; a (who has invitees) tries c's code: the cycle is the real reason.
    a, b, c = UserFactory(), UserFactory(), UserFactory()
    accept(b, a, campaign)
    accept(c, b, campaign)
    with pytest.raises(ReferralCycle):
        accept(a, c, campaign)


def test_graphs_are_per_campaign(campaign):
    other = relax(CampaignFactory())
    a, b = UserFactory(), UserFactory()
    accept(b, a, campaign)
    # In another campaign b may invite a.
    assert accept(a, b, other).status == Referral.Status.ACCEPTED


def test_capped_inviter_does_not_block_the_invitee():
    campaign = relax(CampaignFactory(card_cap=2))
    inviter, invitee = UserFactory(), UserFactory()
    VoucherFactory(user=inviter, campaign=campaign)
    VoucherFactory(user=inviter, campaign=campaign)
    ref = accept(invitee, inviter, campaign)
    assert (ref.inviter_outcome, ref.inviter_voucher) == ("card_limit_reached", None)
    assert ref.invitee_outcome == "issued" and ref.invitee_voucher.user == invitee
    assert Voucher.objects.filter(user=inviter).count() == 2
    assert reconcile(campaign=campaign).ok


def test_exhausted_budget_records_the_referral_with_outcomes():
    campaign = relax(CampaignFactory(total_budget=Decimal("25.00"), bucket_count=1))
    inviter, invitee = UserFactory(), UserFactory()
    ref = accept(invitee, inviter, campaign)
    outcomes = sorted([ref.inviter_outcome, ref.invitee_outcome])
    assert outcomes == ["budget_exhausted", "issued"]  # one card of budget: whoever has the lower id got it
    assert Voucher.objects.filter(campaign=campaign).count() == 1
    assert Referral.objects.get().status == Referral.Status.ACCEPTED
    assert reconcile(campaign=campaign).ok


def test_not_live_and_paused(campaign):
    inviter, invitee = UserFactory(), UserFactory()
    code = invite_code_get_or_create(user=inviter, campaign=campaign).code
    Campaign.objects.filter(pk=campaign.pk).update(referrals_enabled=False)
    campaign.refresh_from_db()
    with pytest.raises(Paused):
        referral_accept(user=invitee, campaign=campaign, code=code)
    Campaign.objects.filter(pk=campaign.pk).update(referrals_enabled=True, status=Campaign.Status.ENDED)
    campaign.refresh_from_db()
    with pytest.raises(CampaignNotLive):
        referral_accept(user=invitee, campaign=campaign, code=code)
    nothing_written(campaign)


# --- abuse rules ----------------------------------------------------------------------------

def test_inviter_hourly_limit_holds_for_review(campaign):
    relax(campaign, referral_inviter_hourly_limit=2)
    inviter = UserFactory()
    assert [accept(UserFactory(), inviter, campaign).status for _ in range(3)] == ["accepted", "accepted", "under_review"]
    held = Referral.objects.get(status="under_review")
    assert held.review_reasons == ["inviter_hourly_limit"]
    assert (held.inviter_outcome, held.invitee_outcome, held.inviter_voucher, held.invitee_voucher) == (
        "pending", "pending", None, None)
    assert Voucher.objects.filter(campaign=campaign).count() == 4
    assert reconcile(campaign=campaign).ok


def test_inviter_daily_limit_holds_for_review(campaign):
    relax(campaign, referral_inviter_daily_limit=1)
    inviter = UserFactory()
    accept(UserFactory(), inviter, campaign)
    held = accept(UserFactory(), inviter, campaign)
    assert held.status == "under_review" and held.review_reasons == ["inviter_daily_limit"]


def test_one_device_for_several_invitees_is_held(campaign):
    relax(campaign, referral_device_max_accounts=1)
    first = accept(UserFactory(), UserFactory(), campaign, device_id="phone-1")
    second = accept(UserFactory(), UserFactory(), campaign, device_id="phone-1")
    other_device = accept(UserFactory(), UserFactory(), campaign, device_id="phone-2")
    assert (first.status, second.status, other_device.status) == ("accepted", "under_review", "accepted")
    assert second.review_reasons == ["device_shared"]
    assert second.device_id == "phone-1"


def test_device_logged_in_as_several_accounts_is_held(campaign):
    relax(campaign, referral_device_max_accounts=1)
    invitee, other_account = UserFactory(), UserFactory()
    Device.objects.create(user=other_account, device_id="shared-phone")
    Device.objects.create(user=invitee, device_id="shared-phone")
    held = accept(invitee, UserFactory(), campaign, device_id="shared-phone")
    assert held.status == "under_review" and held.review_reasons == ["device_shared"]


def test_ip_burst_of_new_accounts_is_held(campaign):
    relax(campaign, referral_ip_burst_limit=2)
    statuses = [accept(UserFactory(), UserFactory(), campaign, ip="10.0.0.7").status for _ in range(3)]
    assert statuses == ["accepted", "accepted", "under_review"]
    assert Referral.objects.get(status="under_review").review_reasons == ["ip_burst"]
    # Another IP, and an old account on the same IP, are not part of the burst.
    assert accept(UserFactory(), UserFactory(), campaign, ip="10.0.0.8").status == "accepted"
    old = UserFactory()
    type(old).objects.filter(pk=old.pk).update(date_joined=old.date_joined.replace(year=2020))
    old.refresh_from_db()
    assert accept(old, UserFactory(), campaign, ip="10.0.0.7").status == "accepted"


# --- review ---------------------------------------------------------------------------------

def _held(campaign):
    relax(campaign, referral_device_max_accounts=1)
    accept(UserFactory(), UserFactory(), campaign, device_id="farm")
    return accept(UserFactory(), UserFactory(), campaign, device_id="farm")


def test_approve_issues_the_cards_and_is_audited(campaign, reviewer):
    held = _held(campaign)
    assert held.status == "under_review"
    approved = referral_approve(referral=held, actor=reviewer, note="人工核实为真实用户")
    approved.refresh_from_db()
    assert approved.status == "accepted"
    assert (approved.inviter_outcome, approved.invitee_outcome) == ("issued", "issued")
    assert approved.invitee_voucher.user == approved.invitee
    assert approved.inviter_voucher.user == approved.inviter
    assert (approved.reviewed_by, approved.review_note) == (reviewer, "人工核实为真实用户")
    assert approved.reviewed_at is not None
    log = AuditLog.objects.get(action="referral.approve")
    assert (log.actor, log.object_id, log.reason) == (reviewer, str(held.pk), "人工核实为真实用户")
    assert log.before["status"] == "under_review" and log.after["status"] == "accepted"
    assert reconcile(campaign=campaign).ok
    with pytest.raises(ReferralNotPending):
        referral_approve(referral=held, actor=reviewer, note="再来一次")
    assert Voucher.objects.filter(campaign=campaign).count() == 4


def test_approve_is_still_capped():
    campaign = relax(CampaignFactory(card_cap=1), referral_device_max_accounts=1)
    accept(UserFactory(), UserFactory(), campaign, device_id="farm")
    inviter, invitee = UserFactory(), UserFactory()
    held = accept(invitee, inviter, campaign, device_id="farm")
    VoucherFactory(user=inviter, campaign=campaign)  # the inviter filled the cap meanwhile
    staff = StaffFactory(is_superuser=True)
    ref = referral_approve(referral=held, actor=staff, note="ok")
    assert (ref.inviter_outcome, ref.invitee_outcome) == ("card_limit_reached", "issued")
    assert reconcile(campaign=campaign).ok


def test_reject_issues_nothing_and_is_audited(campaign, reviewer):
    held = _held(campaign)
    cards = Voucher.objects.count()
    rejected = referral_reject(referral=held, actor=reviewer, note="同一设备批量注册")
    rejected.refresh_from_db()
    assert rejected.status == "rejected"
    assert (rejected.inviter_outcome, rejected.invitee_outcome) == ("rejected", "rejected")
    assert (rejected.inviter_voucher, rejected.invitee_voucher) == (None, None)
    assert Voucher.objects.count() == cards
    log = AuditLog.objects.get(action="referral.reject")
    assert (log.actor, log.reason) == (reviewer, "同一设备批量注册")
    # A rejected invitee stays in the graph: no second try with another code.
    with pytest.raises(AlreadyReferred):
        accept(rejected.invitee, UserFactory(), campaign)
    with pytest.raises(ReferralNotPending):
        referral_approve(referral=held, actor=reviewer, note="改主意")
    assert reconcile(campaign=campaign).ok


def test_review_needs_permission_and_a_note(campaign, reviewer):
    held = _held(campaign)
    with pytest.raises(ReviewForbidden):
        referral_approve(referral=held, actor=StaffFactory(), note="没有权限")
    with pytest.raises(ReviewForbidden):
        referral_reject(referral=held, actor=None, note="匿名")
    with pytest.raises(InvalidInput):
        referral_approve(referral=held, actor=reviewer, note="   ")
    held.refresh_from_db()
    assert held.status == "under_review"
    assert not AuditLog.objects.filter(action__startswith="referral.").exists()


def test_approve_after_the_campaign_ended_records_not_live(campaign, reviewer):
    held = _held(campaign)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.ENDED)
    ref = referral_approve(referral=held, actor=reviewer, note="活动结束后补审")
    assert ref.status == "accepted"
    assert (ref.inviter_outcome, ref.invitee_outcome) == ("campaign_not_live", "campaign_not_live")
    assert (ref.inviter_voucher, ref.invitee_voucher) == (None, None)
    assert reconcile(campaign=campaign).ok


def test_unique_constraint_is_the_backstop_when_the_checks_are_bypassed(campaign, monkeypatch):
    import referrals.services as services

    invitee = UserFactory()
    accept(invitee, UserFactory(), campaign)
    # Pretend both rule checks missed the existing referral (a bug, a skipped lock):
    # the database still refuses the second edge and the caller gets the contract error.
    monkeypatch.setattr(services, "_check_graph", lambda **kwargs: None)
    with pytest.raises(AlreadyReferred):
        accept(invitee, UserFactory(), campaign)
    nothing_written(campaign, 1, 2)


def test_a_chain_too_long_to_store_is_refused(campaign):
    from referrals.errors import ReferralChainTooLong
    from tests.factories import ReferralFactory

    deep = UserFactory()
    # A bare edge whose stored path is already full: appending one more ancestor cannot fit.
    full = "/" + "/".join(["12345678"] * 227)
    full += "/" + "9" * (Referral._meta.get_field("path").max_length - len(full) - 2) + "/"
    ReferralFactory(campaign=campaign, invitee=deep, depth=228, path=full)
    with pytest.raises(ReferralChainTooLong):
        accept(UserFactory(), deep, campaign)
    assert Referral.objects.filter(campaign=campaign).count() == 1


def test_invitees_of_a_held_or_rejected_inviter_are_held(campaign, reviewer):
    held = _held(campaign)  # held.invitee is now an inviter whose own referral awaits review
    relax(campaign)
    grandchild = accept(UserFactory(), held.invitee, campaign)
    assert grandchild.status == "under_review" and grandchild.review_reasons == ["inviter_flagged"]
    referral_reject(referral=held, actor=reviewer, note="设备农场")
    assert accept(UserFactory(), held.invitee, campaign).review_reasons == ["inviter_flagged"]
    # Once staff approve an inviter, its new invitees are paid normally.
    referral_approve(referral=grandchild, actor=reviewer, note="核实")
    assert accept(UserFactory(), grandchild.invitee, campaign).status == "accepted"
    assert reconcile(campaign=campaign).ok
