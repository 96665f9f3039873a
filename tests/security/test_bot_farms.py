"""Bot farms (issue 16): device ids bound to the token at login, per-device caps enforced by the database in
the card's transaction, per-IP / subnet rules (any account age) feeding the referral review queue, and the
support report of suspicious clusters."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import AuthToken
from accounts.services import token_create
from referrals.models import Referral
from referrals.services import referral_accept
from tests.factories import CampaignFactory, InviteCodeFactory, UserFactory
from vouchers.models import DeviceClaim, Voucher

pytestmark = pytest.mark.django_db


def _campaign(bucket_count: int = 8, **limits):
    """A live campaign with its abuse limits set the way staff set them (admin edits the row)."""
    from campaign.models import Campaign

    campaign = CampaignFactory(bucket_count=bucket_count)
    Campaign.objects.filter(pk=campaign.pk).update(**limits)
    campaign.refresh_from_db()
    return campaign


def _client(user, device: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, device_id=device)}")
    return client


def test_login_binds_the_token_to_a_device_and_issues_one_when_missing(api_client, settings, guard_off,
                                                                        django_capture_on_commit_callbacks):
    from tests.accounts.outbox import last_code

    settings.MIANDAN_SMS_BACKEND = "tests.accounts.outbox.OutboxBackend"
    for phone, sent, expect in (("13912340101", None, None), ("13912340102", "my-phone-1", "my-phone-1")):
        with django_capture_on_commit_callbacks(execute=True):
            api_client.post("/api/v1/auth/otp", {"phone": phone}, format="json")
        body = {"phone": phone, "code": last_code(phone)} | ({"device_id": sent} if sent else {})
        answer = api_client.post("/api/v1/auth/token", body, format="json").json()
        device = answer["device_id"]
        assert device == expect if expect else device.startswith("srv-") and len(device) > 20
        assert AuthToken.objects.get(user__phone=phone).device_id == device


def test_welcome_cards_per_device_are_capped(guard_off):
    campaign = _campaign(device_welcome_cap=2)
    answers = [_client(UserFactory(), "farm-phone").post(f"/api/v1/campaigns/{campaign.slug}/join",
                                                        {"app_version": "1.0.0"}, format="json") for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 409, 409]
    assert answers[2].json()["code"] == "device_limit_reached"
    assert Voucher.objects.filter(campaign=campaign).count() == 2  # the refused joins left no card...
    from vouchers.selectors import reconcile

    assert reconcile(campaign=campaign).ok  # ...and no reservation or ledger row behind
    assert DeviceClaim.objects.get(campaign=campaign, device_id="farm-phone").count == 2
    # Another phone is not affected; a repeat join of a holder is not a new claim.
    assert _client(UserFactory(), "other-phone").post(f"/api/v1/campaigns/{campaign.slug}/join",
                                                      {"app_version": "1.0.0"}, format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_parallel_joins_from_one_device_cannot_pass_the_cap():
    from vouchers.errors import DeviceLimitReached
    from vouchers.services import campaign_join

    assert connection.vendor == "postgresql"
    campaign = _campaign(device_welcome_cap=3)
    users = [UserFactory() for _ in range(12)]
    results: list[str] = []
    barrier = threading.Barrier(len(users))

    def join(user):
        from django.db import connections

        try:
            barrier.wait()
            campaign_join(user=user, campaign=campaign, app_version="1.0.0", device_id="racing-phone")
            results.append("card")
        except DeviceLimitReached:
            results.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=join, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count("card") == 3 and results.count("refused") == 9
    assert Voucher.objects.filter(campaign=campaign).count() == 3
    assert DeviceClaim.objects.get(campaign=campaign).count == 3


def _accept(campaign, *, device: str, ip: str):
    inviter = UserFactory()
    code = InviteCodeFactory(campaign=campaign, user=inviter).code
    return referral_accept(user=UserFactory(), campaign=campaign, code=code, device_id=device, ip=ip)


def test_referral_rewards_per_device_are_capped_into_review():
    campaign = _campaign(device_reward_cap=2, referral_device_max_accounts=100, referral_ip_daily_limit=0,
                               referral_subnet_daily_limit=0)
    refs = [_accept(campaign, device="shared-phone", ip=f"10.{i}.0.1") for i in range(3)]
    assert [r.status for r in refs] == ["accepted", "accepted", "under_review"]
    assert refs[2].review_reasons == ["device_reward_cap"]
    assert refs[2].inviter_voucher_id is None and refs[2].invitee_voucher_id is None


def test_per_ip_and_subnet_rules_hold_aged_accounts_too():
    import datetime as dt

    from django.utils import timezone

    campaign = _campaign(referral_ip_daily_limit=2, referral_subnet_daily_limit=3, referral_ip_burst_limit=100,
                               device_reward_cap=0, referral_device_max_accounts=100)
    old = timezone.now() - dt.timedelta(days=400)  # aged accounts: the 10-minute burst rule ignores them

    def accept(ip: str) -> Referral:
        invitee = UserFactory()
        type(invitee).objects.filter(pk=invitee.pk).update(date_joined=old)
        invitee.refresh_from_db()
        code = InviteCodeFactory(campaign=campaign).code
        return referral_accept(user=invitee, campaign=campaign, code=code, device_id=f"d-{invitee.pk}", ip=ip)

    same_ip = [accept("203.0.113.7") for _ in range(3)]
    assert [r.status for r in same_ip] == ["accepted", "accepted", "under_review"]
    assert "ip_daily" in same_ip[2].review_reasons
    # Same /24, other addresses: the subnet rule (3 a day) holds the next one.
    nxt = accept("203.0.113.99")
    assert nxt.status == "under_review" and "subnet_daily" in nxt.review_reasons
    assert accept("198.51.100.1").status == "accepted"  # another network is not affected
    # The review queue shows them with readable reasons.
    from referrals.services import REVIEW_REASONS

    assert {"ip_daily", "subnet_daily", "device_reward_cap"} <= set(REVIEW_REASONS)


def test_support_report_lists_suspicious_clusters():
    campaign = _campaign(device_welcome_cap=0, device_reward_cap=0, referral_device_max_accounts=100,
                               referral_ip_daily_limit=0, referral_subnet_daily_limit=0)
    for i in range(4):
        _accept(campaign, device="cluster-phone", ip=f"192.0.2.{i + 1}")
    _accept(campaign, device="lonely-phone", ip="198.51.100.5")
    out = StringIO()
    call_command("suspicious_clusters", campaign.slug, "--min", "3", stdout=out)
    text = out.getvalue()
    assert "cluster-phone" in text and "4" in text
    assert "192.0.2.0/24" in text
    assert "lonely-phone" not in text and "198.51.100.0/24" not in text


def test_the_orm_path_counts_like_the_sql_one(monkeypatch):
    """SQLite (the demo) takes the ORM branch of device_claim: same answers."""
    from vouchers import services

    monkeypatch.setattr(services, "is_postgres", lambda: False)
    campaign = _campaign(device_welcome_cap=2)
    answers = [services.device_claim(campaign=campaign, device_id="orm-phone", kind="welcome") for _ in range(3)]
    assert answers == [True, True, False]
    assert DeviceClaim.objects.get(campaign=campaign, device_id="orm-phone").count == 2


def test_the_device_cap_holds_on_the_join_s_slow_path_too(monkeypatch):
    """When the folded join statement finds no bucket with room (the end of a budget), the join goes the slow
    way (consolidation); the device cap is enforced there as well, and the refused card is rolled back."""
    from campaign.models import BudgetBucket, LedgerEntry
    from vouchers import services
    from vouchers.errors import DeviceLimitReached

    campaign = _campaign(bucket_count=2, device_welcome_cap=1)
    services.campaign_join(user=UserFactory(), campaign=campaign, app_version="1.0.0", device_id="farm-phone")
    monkeypatch.setattr(services, "_join_insert_pg", lambda **kwargs: None)  # "no bucket had room": slow path
    reserved = list(BudgetBucket.objects.filter(campaign=campaign).order_by("index").values_list("reserved", flat=True))
    entries = LedgerEntry.objects.filter(campaign=campaign).count()
    with pytest.raises(DeviceLimitReached):
        services.campaign_join(user=UserFactory(), campaign=campaign, app_version="1.0.0", device_id="farm-phone")
    assert Voucher.objects.filter(campaign=campaign).count() == 1
    assert list(BudgetBucket.objects.filter(campaign=campaign).order_by("index").values_list(
        "reserved", flat=True)) == reserved
    assert LedgerEntry.objects.filter(campaign=campaign).count() == entries
    # Another phone still joins on the same slow path.
    card, created = services.campaign_join(user=UserFactory(), campaign=campaign, app_version="1.0.0",
                                           device_id="other-phone")
    assert created and card.source == Voucher.Source.WELCOME


def test_the_device_count_rides_in_the_join_s_own_statement(guard_off):
    """The fast join counts the device in its card statement (one round trip less per join, issue 14)."""
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("the folded statement is PostgreSQL's")
    campaign = _campaign(device_welcome_cap=2)
    with CaptureQueriesContext(connection) as queries:
        answer = _client(UserFactory(), "one-phone").post(f"/api/v1/campaigns/{campaign.slug}/join",
                                                         {"app_version": "1.0.0"}, format="json")
    assert answer.status_code == 201
    device_statements = [q["sql"] for q in queries if "vouchers_deviceclaim" in q["sql"]]
    assert len(device_statements) == 1 and "vouchers_voucher" in device_statements[0]
    assert DeviceClaim.objects.get(campaign=campaign, device_id="one-phone").count == 1
