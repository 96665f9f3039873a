"""Every invariant finance relies on is enforced by PostgreSQL itself, not only by Python.

Each test writes a violating row straight through the ORM (bypassing the services) and
expects the database to refuse it with IntegrityError.
"""

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Device, OtpCode, User
from campaign.models import BudgetBucket, Campaign, LedgerEntry
from orders.models import Order, OrderEvent, OrderItem, Product, Store
from referrals.models import InviteCode, Referral
from tests.factories import (
    BrandFactory,
    CampaignFactory,
    DeviceFactory,
    InviteCodeFactory,
    OrderFactory,
    ProductFactory,
    ReferralFactory,
    StoreFactory,
    UserFactory,
    VoucherFactory,
)
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db
_codes = itertools.count(1)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.fail("constraint tests must run on PostgreSQL (set DATABASE_URL)")


def refused(fn, match: str | None = None):
    """Run fn in a savepoint and require the database to refuse it."""
    with pytest.raises(IntegrityError) as info, transaction.atomic():
        fn()
    if match:
        assert match in str(info.value), str(info.value)


def _voucher_row(card: Voucher, **overrides) -> Voucher:
    """An unsaved copy of `card` (new code) with some fields changed."""
    fields = {
        "code": f"TESTX{next(_codes):07d}", "campaign": card.campaign, "user": card.user,
        "bucket": card.bucket, "slot": card.slot + 1, "cap": card.cap, "source": Voucher.Source.STAFF,
        "status": Voucher.Status.ISSUED, "face_value": card.face_value, "expires_at": card.expires_at,
    }
    fields.update(overrides)
    return Voucher(**fields)


# --- campaign ------------------------------------------------------------------------

def _campaign_row(**overrides):
    now = timezone.now()
    fields = {"slug": f"c-{now.timestamp()}", "name": "x", "starts_at": now, "ends_at": now + dt.timedelta(days=1),
              "total_budget": Decimal("100.00")}
    fields.update(overrides)
    return Campaign.objects.create(**fields)


def test_campaign_ends_before_start():
    now = timezone.now()
    refused(lambda: _campaign_row(starts_at=now, ends_at=now - dt.timedelta(seconds=1)), "campaign_window_order")
    refused(lambda: _campaign_row(starts_at=now, ends_at=now), "campaign_window_order")


def test_campaign_cap_range():
    refused(lambda: _campaign_row(card_cap=0), "campaign_cap_range")
    refused(lambda: _campaign_row(card_cap=101), "campaign_cap_range")
    assert _campaign_row(card_cap=100).card_cap == 100


def test_campaign_face_positive():
    refused(lambda: _campaign_row(face_value=Decimal("0.00")), "campaign_face_positive")
    refused(lambda: _campaign_row(face_value=Decimal("-25.00")), "campaign_face_positive")


def test_campaign_budget_not_negative_and_bucket_count_range():
    refused(lambda: _campaign_row(total_budget=Decimal("-0.01")), "campaign_budget_nonneg")
    refused(lambda: _campaign_row(bucket_count=0), "campaign_bucket_count_range")
    refused(lambda: _campaign_row(bucket_count=1025), "campaign_bucket_count_range")


def test_campaign_slug_unique():
    campaign = CampaignFactory()
    refused(lambda: _campaign_row(slug=campaign.slug))


# --- budget buckets ----------------------------------------------------------------------

def test_bucket_overspend_refused():
    campaign = CampaignFactory(total_budget=Decimal("200.00"), bucket_count=2)
    bucket = campaign.buckets.order_by("index").first()
    qs = BudgetBucket.objects.filter(pk=bucket.pk)
    refused(lambda: qs.update(reserved=F("allotment") + Decimal("0.01")), "bucket_never_overspent")
    refused(lambda: qs.update(spent=F("allotment") + Decimal("0.01")), "bucket_never_overspent")
    # reserved + spent together beyond the allotment, each alone within it
    refused(lambda: qs.update(reserved=F("allotment"), spent=Decimal("0.01")), "bucket_never_overspent")
    refused(lambda: qs.update(allotment=Decimal("0.00"), reserved=Decimal("25.00")), "bucket_never_overspent")
    assert qs.update(reserved=F("allotment")) == 1  # exactly full is allowed


def test_bucket_negative_counters_refused():
    campaign = CampaignFactory(total_budget=Decimal("100.00"), bucket_count=1)
    qs = BudgetBucket.objects.filter(campaign=campaign)
    refused(lambda: qs.update(reserved=Decimal("-0.01")), "bucket_reserved_nonneg")
    refused(lambda: qs.update(spent=Decimal("-0.01")), "bucket_spent_nonneg")
    refused(lambda: qs.update(allotment=Decimal("-0.01")), "bucket_allotment_nonneg")


def test_bucket_index_unique_per_campaign():
    campaign = CampaignFactory(bucket_count=2)
    refused(lambda: BudgetBucket.objects.create(campaign=campaign, index=0), "bucket_unique_index")


# --- ledger ------------------------------------------------------------------------------

def _ledger_row(campaign, **overrides):
    fields = {"campaign": campaign, "bucket": campaign.buckets.first(), "kind": LedgerEntry.Kind.RESERVE,
              "amount": Decimal("25.00")}
    fields.update(overrides)
    return LedgerEntry.objects.create(**fields)


@pytest.mark.parametrize("kind", ["reserve", "spend", "release"])
@pytest.mark.parametrize("amount", ["0.00", "-25.00"])
def test_ledger_movement_must_be_positive(kind, amount):
    campaign = CampaignFactory()
    refused(lambda: _ledger_row(campaign, kind=kind, amount=Decimal(amount)), "ledger_movement_positive")


def test_ledger_adjust_may_be_negative_but_not_zero():
    campaign = CampaignFactory()
    refused(lambda: _ledger_row(campaign, kind="adjust", amount=Decimal("0.00")), "ledger_adjust_nonzero")
    with transaction.atomic():  # a negative adjust is legal (budget lowered); rolled back to keep the books clean
        _ledger_row(campaign, kind="adjust", amount=Decimal("-1.00"))
        transaction.set_rollback(True)


def test_ledger_is_append_only():
    campaign = CampaignFactory()
    entry = campaign.ledger.first()
    refused(lambda: LedgerEntry.objects.filter(pk=entry.pk).update(amount=Decimal("1.00")), "append-only")
    refused(lambda: LedgerEntry.objects.filter(pk=entry.pk).update(reason="edited"), "append-only")
    refused(lambda: LedgerEntry.objects.filter(pk=entry.pk).delete(), "append-only")

    def raw_delete():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM campaign_ledgerentry WHERE campaign_id = %s", [campaign.pk])

    refused(raw_delete, "append-only")
    assert LedgerEntry.objects.filter(pk=entry.pk, amount=entry.amount).exists()


# --- vouchers ----------------------------------------------------------------------------

def test_voucher_duplicate_slot_refused():
    card = VoucherFactory()
    refused(lambda: _voucher_row(card, slot=card.slot).save(), "voucher_unique_slot")


def test_voucher_slot_beyond_cap_or_zero_refused():
    card = VoucherFactory(campaign=CampaignFactory(card_cap=3))
    refused(lambda: _voucher_row(card, slot=4).save(), "voucher_slot_within_cap")
    refused(lambda: _voucher_row(card, slot=0).save(), "voucher_slot_within_cap")
    # the cap is copied onto the row: raising it on one row alone is caught too (slot 3 > cap 2)
    refused(lambda: _voucher_row(card, slot=3, cap=2).save(), "voucher_slot_within_cap")


def test_second_welcome_card_refused():
    card = VoucherFactory(source=Voucher.Source.WELCOME)
    refused(lambda: _voucher_row(card, source=Voucher.Source.WELCOME).save(), "voucher_one_welcome_card")


def test_voucher_code_unique():
    card = VoucherFactory()
    refused(lambda: _voucher_row(card, code=card.code).save(), "code")


def test_voucher_money_rules():
    card = VoucherFactory()
    qs = Voucher.objects.filter(pk=card.pk)
    refused(lambda: qs.update(subsidy=card.face_value + Decimal("0.01")), "voucher_subsidy_within_face")
    refused(lambda: qs.update(subsidy=Decimal("-0.01")), "voucher_subsidy_within_face")
    refused(lambda: qs.update(face_value=Decimal("0.00")), "voucher_face_positive")
    refused(lambda: qs.update(status="redeemed"), "voucher_redeemed_has_order")
    refused(lambda: qs.update(status="redeemed", order_id=1), "voucher_redeemed_has_order")
    refused(lambda: qs.update(status="locked"), "voucher_locked_has_order")
    refused(lambda: qs.update(status="lost"), "voucher_status_valid")


def test_one_card_per_order_id():
    card = VoucherFactory()
    other = VoucherFactory(user=card.user, campaign=card.campaign)
    Voucher.objects.filter(pk=card.pk).update(status="locked", order_id=4242)
    refused(lambda: Voucher.objects.filter(pk=other.pk).update(status="locked", order_id=4242), "voucher_one_per_order")


# --- referrals -----------------------------------------------------------------------------

def test_second_referral_for_one_invitee_refused():
    first = ReferralFactory()
    another_inviter = UserFactory()
    code = InviteCodeFactory(campaign=first.campaign, user=another_inviter)

    def second():
        Referral.objects.create(campaign=first.campaign, invite_code=code, inviter=another_inviter,
                                invitee=first.invitee, root=another_inviter, depth=1, path=f"/{another_inviter.pk}/")

    refused(second, "referral_one_per_invitee")


def test_self_referral_refused():
    code = InviteCodeFactory()

    def self_referral():
        Referral.objects.create(campaign=code.campaign, invite_code=code, inviter=code.user, invitee=code.user,
                                root=code.user, depth=1, path=f"/{code.user.pk}/")

    refused(self_referral, "referral_not_self")


def test_referral_depth_positive():
    referral = ReferralFactory()
    refused(lambda: Referral.objects.filter(pk=referral.pk).update(depth=0), "referral_depth_positive")


def test_one_invite_code_per_user_per_campaign():
    code = InviteCodeFactory()
    refused(lambda: InviteCode.objects.create(campaign=code.campaign, user=code.user, code="ZZZZ9999"),
            "invite_code_one_per_user")
    other = CampaignFactory()
    refused(lambda: InviteCode.objects.create(campaign=other, user=code.user, code=code.code))


# --- orders --------------------------------------------------------------------------------

def test_order_amount_must_add_up():
    refused(lambda: OrderFactory(total_price=Decimal("18.00"), subsidy=Decimal("0.00"), amount_to_pay=Decimal("17.00")),
            "order_amount_adds_up")


def test_order_money_rules():
    refused(lambda: OrderFactory(total_price=Decimal("0.00"), amount_to_pay=Decimal("0.00")), "order_price_positive")
    # a subsidy without a card
    refused(lambda: OrderFactory(subsidy=Decimal("5.00"), amount_to_pay=Decimal("13.00")), "order_subsidy_needs_card")
    card = VoucherFactory()  # created outside the savepoint: voucher_issue is a durable service
    refused(lambda: OrderFactory(voucher=card, subsidy=Decimal("19.00"), amount_to_pay=Decimal("-1.00")),
            "order_subsidy_within_price")


def test_two_live_orders_on_one_card_refused():
    card = VoucherFactory()
    first = OrderFactory(user=card.user, voucher=card)
    refused(lambda: OrderFactory(user=card.user, voucher=card, store=first.store), "order_one_live_per_card")
    # once the first order failed, the card may back a new one
    Order.objects.filter(pk=first.pk).update(status=Order.Status.FAILED)
    assert OrderFactory(user=card.user, voucher=card, store=first.store).pk


@pytest.mark.parametrize("quantity", [0, 11])
def test_item_quantity_range(quantity):
    order = OrderFactory()
    product = ProductFactory()
    refused(lambda: OrderItem.objects.create(order=order, product=product, quantity=quantity, unit_price=Decimal("18.00"),
                                             line_total=Decimal("18.00") * quantity), "item_quantity_range")


def test_item_total_and_price():
    order = OrderFactory()
    product = ProductFactory()
    refused(lambda: OrderItem.objects.create(order=order, product=product, quantity=2, unit_price=Decimal("18.00"),
                                             line_total=Decimal("18.00")), "item_total_adds_up")
    refused(lambda: OrderItem.objects.create(order=order, product=product, quantity=1, unit_price=Decimal("0.00"),
                                             line_total=Decimal("0.00")), "item_price_positive")


def test_order_event_once_per_state():
    order = OrderFactory()
    OrderEvent.objects.create(order=order, to_status=Order.Status.PLACED)
    refused(lambda: OrderEvent.objects.create(order=order, to_status=Order.Status.PLACED), "order_event_once_per_state")


def test_catalogue_rules():
    brand = BrandFactory()
    refused(lambda: ProductFactory(brand=brand, price=Decimal("0.00")), "product_price_positive")
    product = ProductFactory(brand=brand)
    refused(lambda: Product.objects.create(brand=brand, name=product.name, price=Decimal("10.00")),
            "product_unique_name_per_brand")
    refused(lambda: StoreFactory(brand=brand, lat=90.5), "store_lat_range")
    refused(lambda: StoreFactory(brand=brand, lng=-180.5), "store_lng_range")
    refused(lambda: StoreFactory(brand=brand, capacity_per_minute=0), "store_capacity_positive")
    refused(lambda: StoreFactory(brand=brand, open_24h=False, opens_at=None, closes_at=None), "store_hours_set")
    assert Store.objects.filter(brand=brand).count() == 0


# --- accounts ------------------------------------------------------------------------------

@pytest.mark.parametrize("phone", ["12345678901", "10000000000", "1380000000", "1380000000a", "+8613800000", ""])
def test_phone_format(phone):
    refused(lambda: User.objects.create(username=f"u-{phone}", phone=phone), "user_phone_format")


def test_phone_unique_and_null_allowed_many_times():
    user = UserFactory()
    refused(lambda: User.objects.create(username="other", phone=user.phone))
    User.objects.create(username="staff-a", phone=None)
    User.objects.create(username="staff-b", phone=None)  # staff have no phone: NULLs do not collide


def test_device_unique_per_user_and_otp_attempts_bounded():
    device = DeviceFactory()
    refused(lambda: Device.objects.create(user=device.user, device_id=device.device_id), "device_unique_per_user")
    refused(lambda: OtpCode.objects.create(phone="13800000000", code_hash="x", attempts=101,
                                           expires_at=timezone.now()), "otp_attempts_bounded")
