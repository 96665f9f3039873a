"""The budget helpers' refusals and their portable (non-PostgreSQL) path, and the join's less common answers.

The portable reserve is what the SQLite demo runs; here it runs on PostgreSQL through the same ORM code
(the vendor check is switched for the call), so its ring order and its fallback are proven too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from campaign import services as budget
from campaign.errors import InvalidCampaign
from campaign.models import BudgetBucket, LedgerEntry
from campaign.services import (
    CampaignSpec,
    budget_release,
    budget_reserve,
    budget_spend,
    campaign_budget_change,
    campaign_budget_rebalance,
    validate_spec,
)
from miandan.api.errors import InvalidInput
from tests.factories import CampaignFactory, StaffFactory, UserFactory
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import campaign_join, parse_app_version, voucher_redeem

pytestmark = pytest.mark.django_db


def _spec(**changes) -> CampaignSpec:
    now = timezone.now()
    base = CampaignSpec(slug="edge", name="边界", total_budget=Decimal("100.00"), face_value=Decimal("25.00"), card_cap=3,
                        min_app_version="1.0.0", card_validity=dt.timedelta(days=1), status="live", bucket_count=2,
                        starts_at=now, ends_at=now + dt.timedelta(days=1))
    return dataclasses.replace(base, **changes)


def test_a_campaign_that_ends_before_it_starts_is_refused():
    spec = _spec(ends_at=timezone.now() - dt.timedelta(days=1))
    with pytest.raises(InvalidCampaign) as caught:
        validate_spec(spec)
    assert caught.value.extra["fields"] == {"ends_at": "结束时间必须晚于开始时间"}


def test_money_helpers_refuse_non_positive_movements_and_overdrafts():
    campaign = CampaignFactory(total_budget=Decimal("50.00"), bucket_count=2)
    with pytest.raises(ValueError):
        budget.budget_record_sql(campaign_id=campaign.pk, kind=LedgerEntry.Kind.RESERVE, amount=Decimal("0"), source="x",
                                 bucket_expr="1")
    with pytest.raises(ValueError):
        budget_reserve(campaign=campaign, amount=Decimal("0.00"))
    bucket = BudgetBucket.objects.filter(campaign=campaign).first()
    with pytest.raises(RuntimeError, match="holds less than"):
        budget_release(bucket_id=bucket.pk, amount=Decimal("0.01"))
    with pytest.raises(RuntimeError, match="holds less than"):
        budget_spend(bucket_id=bucket.pk, reserved=Decimal("0.01"), spend=Decimal("0.01"))
    bucket.refresh_from_db()
    assert (bucket.reserved, bucket.spent) == (Decimal("0.00"), Decimal("0.00"))


def test_the_portable_reserve_goes_round_the_ring_then_gathers(monkeypatch):
    campaign = CampaignFactory(total_budget=Decimal("75.00"), bucket_count=3)
    buckets = list(BudgetBucket.objects.filter(campaign=campaign).order_by("index"))
    monkeypatch.setattr(budget.connection, "vendor", "sqlite")
    # Hinted at bucket 1: it is used first, then 2, then 0 (ring order), each while it has room.
    used = [budget_reserve(campaign=campaign, amount=Decimal("20.00"), hint=1).pk for _ in range(3)]
    assert used == [buckets[1].pk, buckets[2].pk, buckets[0].pk]
    # 5.00 left in each bucket: no single one has 10.00, the slow path gathers it into one.
    monkeypatch.undo()
    gathered = budget_reserve(campaign=campaign, amount=Decimal("10.00"))
    gathered.refresh_from_db()
    assert gathered.reserved == Decimal("30.00")
    assert sum(b.allotment for b in BudgetBucket.objects.filter(campaign=campaign)) == Decimal("75.00")


def test_rebalance_moves_only_the_buckets_off_target_and_nothing_when_even():
    campaign = CampaignFactory(total_budget=Decimal("100.00"), bucket_count=2)
    staff = StaffFactory()
    assert campaign_budget_rebalance(campaign=campaign, actor=staff) == 0  # already even: no rows, no audit
    campaign_budget_change(campaign=campaign, new_total=Decimal("150.00"), actor=staff, reason="加预算")
    # 150 over 2 in whole cards: 75 + 75; cut 50 from the roomiest first -> 25 / 75; rebalance evens it out.
    campaign_budget_change(campaign=campaign, new_total=Decimal("100.00"), actor=staff, reason="减预算")
    assert sorted(b.available for b in BudgetBucket.objects.filter(campaign=campaign)) == [Decimal("25.00"),
                                                                                          Decimal("75.00")]
    assert campaign_budget_rebalance(campaign=campaign, actor=staff) == 2
    assert sorted(b.available for b in BudgetBucket.objects.filter(campaign=campaign)) == [Decimal("50.00"),
                                                                                          Decimal("50.00")]
    assert reconcile(campaign=campaign).ok


def test_join_refuses_a_malformed_version_and_a_capped_user_without_a_welcome_card():
    campaign = CampaignFactory(card_cap=1)
    for bad in (None, "", "x" * 40, "not-a-version"):
        with pytest.raises(InvalidInput):
            parse_app_version(bad)
    user = UserFactory()
    from vouchers.services import voucher_issue

    voucher_issue(user=user, campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    from vouchers.errors import CardLimitReached

    with pytest.raises(CardLimitReached):
        campaign_join(user=user, campaign=campaign, app_version="2.0.0")
    with pytest.raises(CardLimitReached):  # the second answer comes from what the first one remembered
        campaign_join(user=user, campaign=campaign, app_version="2.0.0")


def test_redeem_takes_an_integer_amount_as_whole_yuan():
    from django.db import transaction

    from vouchers.services import voucher_issue, voucher_lock_for_order

    campaign = CampaignFactory()
    user = UserFactory()
    voucher_issue(user=user, campaign=campaign, source=Voucher.Source.STAFF, reason="测试")
    with transaction.atomic():
        card = voucher_lock_for_order(user=user, campaign=campaign, order_id=77)
        done = voucher_redeem(voucher_id=card.pk, order_id=77, order_amount=12)
    assert done.subsidy == Decimal("12.00")
    with pytest.raises(InvalidInput):
        voucher_redeem(voucher_id=card.pk, order_id=77, order_amount=True)
