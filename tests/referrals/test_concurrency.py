"""Races on the referral graph and the cards behind it, on real PostgreSQL connections."""

import pytest

from referrals.errors import AlreadyReferred, ReferralCycle
from referrals.models import Referral
from referrals.services import invite_code_get_or_create, referral_accept
from tests.concurrency import run_threads
from tests.factories import CampaignFactory, UserFactory, VoucherFactory
from tests.referrals.conftest import relax
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import campaign_join

pytestmark = pytest.mark.django_db(transaction=True)


def _accept(user, campaign, code, device_id=""):
    return referral_accept(user=user, campaign=campaign, code=code, device_id=device_id).status


def test_mutual_accept_at_the_same_moment_one_wins():
    campaign = relax(CampaignFactory())
    for _ in range(5):
        a, b = UserFactory(), UserFactory()
        code_a = invite_code_get_or_create(user=a, campaign=campaign).code
        code_b = invite_code_get_or_create(user=b, campaign=campaign).code
        results = run_threads(_accept, 2, args=[(a, campaign, code_b), (b, campaign, code_a)])
        winners = [r for r in results if r.ok]
        losers = [r for r in results if not r.ok]
        assert len(winners) == 1, [r.trace for r in losers]
        assert winners[0].value == "accepted"
        assert isinstance(losers[0].error, (ReferralCycle, AlreadyReferred)), losers[0].trace
        assert Referral.objects.filter(invitee__in=[a, b]).count() == 1
    assert Voucher.objects.filter(campaign=campaign).count() == 10
    assert reconcile(campaign=campaign).ok


def test_one_invitee_fifty_codes_in_parallel_gets_one_referral():
    campaign = relax(CampaignFactory())
    invitee = UserFactory()
    inviters = [UserFactory() for _ in range(50)]
    codes = [invite_code_get_or_create(user=u, campaign=campaign).code for u in inviters]
    results = run_threads(_accept, 50, args=[(invitee, campaign, code) for code in codes])
    ok = [r for r in results if r.ok]
    assert len(ok) == 1, [r.trace for r in results if not r.ok and not isinstance(r.error, AlreadyReferred)][:2]
    assert all(isinstance(r.error, AlreadyReferred) for r in results if not r.ok)
    referral = Referral.objects.get(campaign=campaign)
    assert referral.invitee == invitee
    cards = Voucher.objects.filter(campaign=campaign)
    assert cards.count() == 2
    assert {c.user_id for c in cards} == {invitee.pk, referral.inviter_id}
    assert reconcile(campaign=campaign).ok


def test_inviter_at_twenty_cards_gets_thirty_accepts_while_joining():
    campaign = relax(CampaignFactory(card_cap=21))
    inviter = UserFactory()
    for _ in range(20):
        VoucherFactory(user=inviter, campaign=campaign)
    code = invite_code_get_or_create(user=inviter, campaign=campaign).code
    invitees = [UserFactory() for _ in range(30)]

    def work(kind, user):
        if kind == "join":
            return campaign_join(user=user, campaign=campaign, app_version="1.0.0")[0].pk
        return referral_accept(user=user, campaign=campaign, code=code).status

    args = [("accept", u) for u in invitees]
    args.insert(15, ("join", inviter))
    results = run_threads(work, 31, args=args)

    assert Voucher.objects.filter(campaign=campaign, user=inviter).count() == 21
    join = results[15]
    accepts = results[:15] + results[16:]
    assert all(r.ok and r.value == "accepted" for r in accepts), [r.trace for r in accepts if not r.ok][:2]
    referrals = Referral.objects.filter(campaign=campaign)
    assert referrals.count() == 30
    assert set(referrals.values_list("invitee_outcome", flat=True)) == {"issued"}
    for user in invitees:
        assert Voucher.objects.filter(campaign=campaign, user=user, source="referral_invitee").count() == 1
    inviter_rewards = referrals.filter(inviter_outcome="issued").count()
    # The 21st slot went to exactly one of: the welcome card, or one referral reward.
    assert inviter_rewards + (1 if join.ok else 0) == 1
    assert referrals.filter(inviter_outcome="card_limit_reached").count() == 30 - inviter_rewards
    assert reconcile(campaign=campaign).ok


def test_bot_farm_on_one_device_in_parallel_pays_out_once():
    campaign = relax(CampaignFactory(), referral_device_max_accounts=1)
    # Different inviters, so only the device lock (not an inviter lock) can serialise them.
    codes = [invite_code_get_or_create(user=UserFactory(), campaign=campaign).code for _ in range(12)]
    farm = [UserFactory() for _ in range(12)]
    results = run_threads(_accept, 12, args=[(u, campaign, c, "farm-phone") for u, c in zip(farm, codes, strict=True)])
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok][:2]
    assert sorted(r.value for r in results) == ["accepted"] + ["under_review"] * 11
    assert Voucher.objects.filter(campaign=campaign).count() == 2
    assert reconcile(campaign=campaign).ok


def test_parallel_first_invite_requests_share_one_code():
    campaign = relax(CampaignFactory())
    user = UserFactory()
    results = run_threads(lambda: invite_code_get_or_create(user=user, campaign=campaign).code, 10)
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok][:1]
    assert len({r.value for r in results}) == 1
    assert campaign.invite_codes.filter(user=user).count() == 1


def test_fifty_parallel_http_accepts_from_one_invitee(settings):
    """The same race through the whole stack (idempotency, API) with the guard off, so that all 50 requests
    reach the service: one 201, the other 49 already_referred (the guard's own answers are tested with it on,
    against gunicorn, in tests/flash/test_multiprocess_races.py)."""
    from tests.vouchers.conftest import RATES_OFF

    settings.MIANDAN_SHED_ENABLED = False
    settings.RATELIMIT_ENABLE = False
    settings.MIANDAN_RATELIMITS = dict(RATES_OFF)
    from rest_framework.test import APIClient

    from accounts.services import token_create

    campaign = relax(CampaignFactory())
    invitee = UserFactory()
    token = token_create(user=invitee, device_id="one-phone")
    codes = [invite_code_get_or_create(user=UserFactory(), campaign=campaign).code for _ in range(50)]

    def post(code):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        response = client.post(f"/api/v1/campaigns/{campaign.slug}/referrals", {"code": code}, format="json")
        return response.status_code, response.json().get("code")

    results = run_threads(post, 50, args=[(c,) for c in codes])
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok][:1]
    answers = [r.value for r in results]
    assert sum(1 for status, _ in answers if status == 201) == 1, answers
    assert [a for a in answers if a[0] != 201] == [(409, "already_referred")] * 49, answers
    assert Referral.objects.filter(campaign=campaign).count() == 1
    assert Voucher.objects.filter(campaign=campaign).count() == 2
    assert reconcile(campaign=campaign).ok
