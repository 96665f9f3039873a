"""Issue 20: the spend plan and the daily card cap, against real PostgreSQL with real threads."""

import datetime as dt
import random
from decimal import Decimal

import pytest
from django.db.models import Count, Sum
from django.utils import timezone

from campaign import pacing
from campaign.errors import BudgetPaced, DailyCapReached
from campaign.models import BudgetBucket, Campaign, PaceMode
from tests.concurrency import run_threads
from tests.factories import CampaignFactory, UserFactory
from vouchers.errors import BudgetExhausted
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import campaign_join, voucher_issue, voucher_void

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("guard_off")]
THREADS = 20
SHANGHAI = pacing.local_tz()
ZERO = Decimal("0.00")


def committed(campaign) -> Decimal:
    agg = BudgetBucket.objects.filter(campaign=campaign).aggregate(r=Sum("reserved"), s=Sum("spent"))
    return agg["r"] + agg["s"]


def day_counts(campaign) -> dict:
    """The daily card counters (on the buckets) summed per local day."""
    out: dict = {}
    for day, cards in BudgetBucket.objects.filter(campaign=campaign, day_on__isnull=False).values_list(
            "day_on", "day_cards"):
        out[day] = out.get(day, 0) + cards
    return out


def with_plan(campaign, **fields) -> Campaign:
    Campaign.objects.filter(pk=campaign.pk).update(**fields)
    campaign.refresh_from_db()
    return campaign


def assert_reconciled(campaign):
    report = reconcile(campaign=campaign)
    assert report.ok, report.differences


def claim(campaign, users):
    """Half welcome joins (the folded join statement), half referral rewards (the issue statement)."""
    outcomes = []
    for i, user in enumerate(users):
        try:
            if i % 2:
                voucher_issue(user=user, campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
            else:
                campaign_join(user=user, campaign=campaign, app_version="2.0.0")
            outcomes.append("ok")
        except BudgetPaced as exc:
            assert exc.retry_after and exc.retry_after >= 1
            outcomes.append("paced")
        except DailyCapReached as exc:
            assert exc.retry_after and exc.retry_after >= 1
            outcomes.append("daily")
    return outcomes


def test_claims_racing_at_the_plan_boundary_never_commit_beyond_the_plan():
    # 10 000 yuan in 8 buckets; a plan that rises linearly from 0 at the start to 100 % in 10 hours: one hour
    # in, it allows 1 000 yuan = 40 cards. 160 claims race for them from 20 threads.
    start = timezone.now() - dt.timedelta(hours=1)
    campaign = CampaignFactory(bucket_count=8, starts_at=start, ends_at=start + dt.timedelta(days=1))
    with_plan(campaign, pace_mode=PaceMode.REFUSE,
              pace_points=[[(start + dt.timedelta(hours=10)).isoformat(), "100%"]])
    users = [UserFactory() for _ in range(160)]
    results = run_threads(claim, THREADS, args=[(campaign, users[i::THREADS]) for i in range(THREADS)])
    failed = [r for r in results if not r.ok]
    assert not failed, failed[0].trace
    outcomes = [o for r in results for o in r.value]
    planned = pacing.planned_amount(campaign, timezone.now())
    assert committed(campaign) <= planned
    # Never beyond; short of the plan by less than one card per bucket at most.
    assert committed(campaign) > planned - 8 * campaign.face_value
    assert outcomes.count("ok") == Voucher.objects.filter(campaign=campaign).count()
    assert outcomes.count("paced") == 160 - outcomes.count("ok") > 100
    assert_reconciled(campaign)


def test_staff_cards_are_outside_the_plan():
    campaign = CampaignFactory(bucket_count=2)
    with_plan(campaign, pace_mode=PaceMode.REFUSE, pace_points=[[campaign.starts_at.isoformat(), "0%"]])
    with pytest.raises(BudgetPaced):
        campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    voucher_issue(user=UserFactory(), campaign=campaign, source=Voucher.Source.STAFF, reason="补发")
    assert committed(campaign) == Decimal("25.00")


def test_even_per_day_plan_refuses_with_retry_after_until_local_midnight(monkeypatch):
    day = dt.datetime(2026, 2, 10, 12, 0, tzinfo=SHANGHAI)
    campaign = CampaignFactory(bucket_count=1, total_budget=Decimal("100.00"), starts_at=day - dt.timedelta(hours=12),
                               ends_at=day + dt.timedelta(days=3, hours=12))  # 4 local days: 25 yuan a day
    with_plan(campaign, pace_mode=PaceMode.REFUSE, pace_even_daily=True)
    now = day
    monkeypatch.setattr(timezone, "now", lambda: now)
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    with pytest.raises(BudgetPaced) as refused:
        campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    assert refused.value.retry_after == 12 * 3600
    assert refused.value.detail == "今日免单卡已发完，明天再来"
    now = day + dt.timedelta(hours=12)  # local midnight: the second day's share
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    assert committed(campaign) == Decimal("50.00")
    assert_reconciled(campaign)


def test_throttle_refusal_rate_follows_the_curve_on_a_seeded_run():
    # One bucket, a plan of 50 % of 1 000 = 500 yuan (20 cards), throttling from half the plan: a claim that
    # would bring the bucket to u of its plan is refused with probability (u - 0.5) / 0.5. The bucket is held
    # at each level (staff cards fill it, every card the throttle lets through is voided again) and 150
    # claims are tried there.
    pacing.set_rng(random.Random(20))
    try:
        campaign = CampaignFactory(bucket_count=1, total_budget=Decimal("1000.00"))
        with_plan(campaign, pace_mode=PaceMode.THROTTLE, pace_throttle_from=Decimal("0.5"),
                  pace_points=[[campaign.starts_at.isoformat(), "50%"]])
        staff = 0
        for held_cards, expected in ((11, 0.2), (14, 0.5), (17, 0.8)):
            while staff < held_cards:
                voucher_issue(user=UserFactory(), campaign=campaign, source=Voucher.Source.STAFF, reason="垫底")
                staff += 1
            refused = 0
            for _ in range(150):
                try:
                    card = voucher_issue(user=UserFactory(), campaign=campaign, source=Voucher.Source.REFERRAL_INVITER)
                except BudgetPaced:
                    refused += 1
                else:
                    voucher_void(voucher=card, actor=None, reason="回到原水位")
                assert committed(campaign) == Decimal(25 * held_cards)
            assert abs(refused / 150 - expected) < 0.1, (held_cards, expected, refused / 150)
    finally:
        pacing.set_rng(random.Random())
    assert_reconciled(campaign)


def test_daily_card_cap_under_concurrency_is_never_exceeded():
    campaign = CampaignFactory(bucket_count=8)
    with_plan(campaign, daily_card_cap=30)
    users = [UserFactory() for _ in range(100)]
    results = run_threads(claim, THREADS, args=[(campaign, users[i::THREADS]) for i in range(THREADS)])
    failed = [r for r in results if not r.ok]
    assert not failed, failed[0].trace
    outcomes = [o for r in results for o in r.value]
    assert outcomes.count("ok") == 30
    assert outcomes.count("daily") == 70
    assert Voucher.objects.filter(campaign=campaign).count() == 30
    assert day_counts(campaign) == {pacing.local_day(timezone.now()): 30}
    assert committed(campaign) == Decimal("750.00")
    assert_reconciled(campaign)


def test_daily_cap_resets_at_local_midnight_in_shanghai(monkeypatch):
    evening = dt.datetime(2026, 2, 10, 23, 59, 59, tzinfo=SHANGHAI)  # 15:59:59 UTC: the UTC date does not change
    campaign = CampaignFactory(bucket_count=2, starts_at=evening - dt.timedelta(days=1),
                               ends_at=evening + dt.timedelta(days=2))
    with_plan(campaign, daily_card_cap=2)
    now = evening
    monkeypatch.setattr(timezone, "now", lambda: now)
    for _ in range(2):
        campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    with pytest.raises(DailyCapReached) as refused:
        campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    assert refused.value.retry_after == 1
    with pytest.raises(DailyCapReached):
        voucher_issue(user=UserFactory(), campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    now = evening + dt.timedelta(seconds=1)
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    voucher_issue(user=UserFactory(), campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    by_day = dict(Voucher.objects.filter(campaign=campaign).values_list("counted_on").annotate(n=Count("id")))
    assert by_day == {dt.date(2026, 2, 10): 2, dt.date(2026, 2, 11): 2}
    assert day_counts(campaign) == {dt.date(2026, 2, 11): 2}  # the first claims after midnight restarted the count
    assert_reconciled(campaign)


def test_reconcile_catches_a_daily_counter_that_disagrees_with_the_cards():
    campaign = CampaignFactory(bucket_count=2)
    with_plan(campaign, daily_card_cap=5)
    campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    assert_reconciled(campaign)
    BudgetBucket.objects.filter(campaign=campaign, day_on__isnull=False).update(day_cards=3)
    report = reconcile(campaign=campaign)
    assert not report.ok and "每日发卡计数" in report.differences[0]


def test_exhausted_is_still_exhausted_with_a_plan():
    campaign = CampaignFactory(bucket_count=2, total_budget=Decimal("50.00"))
    with_plan(campaign, pace_mode=PaceMode.REFUSE, pace_points=[[campaign.starts_at.isoformat(), "100%"]])
    for _ in range(2):
        campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    with pytest.raises(BudgetExhausted) as refused:
        campaign_join(user=UserFactory(), campaign=campaign, app_version="2.0.0")
    assert type(refused.value) is BudgetExhausted


def test_join_over_http_answers_409_budget_paced_with_retry_after(auth_client):
    campaign = CampaignFactory(bucket_count=2)
    with_plan(campaign, pace_mode=PaceMode.REFUSE,
              pace_points=[[campaign.starts_at.isoformat(), "0%"], [campaign.ends_at.isoformat(), "100%"]])
    response = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "2.0.0"}, format="json")
    assert response.status_code == 409, response.content
    body = response.json()
    assert body["code"] == "budget_paced" and body["detail"] == "今日免单卡已发完，明天再来"
    assert int(response["Retry-After"]) == body["retry_after"] >= 1


def _two_buckets(day: dt.date, *, at_cap: tuple[int, ...]) -> Campaign:
    """30 yuan over 2 buckets, a daily cap of 2 (1 per bucket), the buckets in `at_cap` at their count for `day`."""
    campaign = CampaignFactory(bucket_count=2, total_budget=Decimal("30.00"))
    BudgetBucket.objects.filter(campaign=campaign, index__in=at_cap).update(day_on=day, day_cards=1)
    return campaign


def test_the_slow_path_gathers_room_into_the_bucket_that_still_has_a_count_today():
    """Deterministic cover of the consolidation under a daily cap (the concurrency test above reaches it only
    when its threads happen to scatter the last of the budget)."""
    from django.db import transaction

    from campaign.services import DayCap, budget_reserve_slow

    day = timezone.localdate()
    campaign = _two_buckets(day, at_cap=(0,))
    short = Decimal("25.00") - BudgetBucket.objects.get(campaign=campaign, index=1).available
    assert short > 0  # bucket 1 alone cannot hold the card: room must be gathered into it
    from campaign.models import LedgerEntry

    entries_before = set(LedgerEntry.objects.filter(campaign=campaign).values_list("pk", flat=True))
    with transaction.atomic():
        target = budget_reserve_slow(campaign=campaign, amount=Decimal("25.00"), day_cap=DayCap(day=day, cap=2))
    assert target.index == 1  # bucket 0 has no count left today: never the target, only a donor
    assert (target.available, target.reserved, target.day_on, target.day_cards) == (ZERO, Decimal("25.00"), day, 1)
    donor = BudgetBucket.objects.get(campaign=campaign, index=0)
    assert (donor.available, donor.reserved, donor.day_cards) == (Decimal("5.00"), ZERO, 1)  # its count untouched
    moves = LedgerEntry.objects.filter(campaign=campaign).exclude(pk__in=entries_before)
    assert sorted((m.kind, m.amount) for m in moves) == [("adjust", -short), ("adjust", short)]  # paired, net zero


def test_the_slow_path_refuses_when_no_bucket_has_a_count_left_today_and_moves_nothing():
    from django.db import transaction

    from campaign.services import DayCap, budget_reserve_slow

    day = timezone.localdate()
    campaign = _two_buckets(day, at_cap=(0, 1))
    from campaign.models import LedgerEntry

    before = list(BudgetBucket.objects.filter(campaign=campaign).order_by("index").values_list("allotment", "reserved"))
    entries = LedgerEntry.objects.filter(campaign=campaign).count()
    with pytest.raises(DailyCapReached) as refused, transaction.atomic():
        budget_reserve_slow(campaign=campaign, amount=Decimal("25.00"), day_cap=DayCap(day=day, cap=2))
    assert refused.value.retry_after > 0  # until local midnight
    after = list(BudgetBucket.objects.filter(campaign=campaign).order_by("index").values_list("allotment", "reserved"))
    assert after == before  # the gathering it tried rolled back with the refusal
    assert LedgerEntry.objects.filter(campaign=campaign).count() == entries


def test_the_slow_path_under_a_zero_plan_gathers_nothing_and_refuses_as_paced():
    """A plan at 0 % (nothing may be committed yet): no donor can give, no bucket may take; refused BudgetPaced."""
    from django.db import transaction

    from campaign.models import LedgerEntry
    from campaign.services import budget_reserve_slow

    campaign = _two_buckets(timezone.localdate(), at_cap=())
    before = list(BudgetBucket.objects.filter(campaign=campaign).order_by("index").values_list("allotment", "reserved"))
    entries = LedgerEntry.objects.filter(campaign=campaign).count()
    with pytest.raises(BudgetPaced), transaction.atomic():
        budget_reserve_slow(campaign=campaign, amount=Decimal("25.00"), share=ZERO)
    assert list(BudgetBucket.objects.filter(campaign=campaign).order_by("index").values_list(
        "allotment", "reserved")) == before
    assert LedgerEntry.objects.filter(campaign=campaign).count() == entries
