"""factory-boy factories for every model.

Money-bearing objects are built through the services (never raw inserts), so every
factory-made campaign and card is already consistent with its ledger.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import factory
from django.utils import timezone

from accounts.models import AuthToken, Device, OtpCode, User
from campaign.models import AuditLog, BudgetBucket, Campaign, LedgerEntry
from campaign.services import CampaignSpec, campaign_create
from events.models import Cursor, DeadLetter, Delivery, Endpoint, Event
from orders.models import Brand, BrandDaySubsidy, Order, OrderEvent, OrderItem, Product, Store, StoreDaySubsidy
from referrals.models import Clawback, InviteCode, Referral
from vouchers.models import Voucher
from vouchers.services import voucher_issue


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    phone = factory.Sequence(lambda n: f"139{n:08d}")
    username = factory.LazyAttribute(lambda o: o.phone)


class StaffFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"staff{n}")
    phone = None
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", "pw-for-tests-123")

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if create and extracted:
            from django.contrib.auth.models import Group

            for name in extracted:
                self.groups.add(Group.objects.get(name=name))
        self.save()


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Device

    user = factory.SubFactory(UserFactory)
    device_id = factory.Sequence(lambda n: f"device-{n:06d}")


class OtpCodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OtpCode

    phone = factory.Sequence(lambda n: f"138{n:08d}")
    code_hash = "x"
    expires_at = factory.LazyFunction(lambda: timezone.now() + dt.timedelta(minutes=5))


class AuthTokenFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuthToken

    user = factory.SubFactory(UserFactory)
    key_hash = factory.Sequence(lambda n: f"{n:064x}")


class CampaignFactory(factory.Factory):
    """Builds through `campaign_create`, so buckets and opening ledger rows exist."""

    class Meta:
        model = Campaign

    slug = factory.Sequence(lambda n: f"campaign-{n}")
    name = factory.Sequence(lambda n: f"测试活动 {n}")
    total_budget = Decimal("10000.00")
    face_value = Decimal("25.00")
    card_cap = 21
    min_app_version = "1.0.0"
    card_validity = dt.timedelta(days=30)
    status = Campaign.Status.LIVE
    bucket_count = 8
    starts_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(hours=1))
    ends_at = factory.LazyFunction(lambda: timezone.now() + dt.timedelta(days=30))

    @classmethod
    def _create(cls, model_class, **kwargs):
        switches = {k: kwargs.pop(k) for k in ("claims_enabled", "referrals_enabled", "orders_enabled") if k in kwargs}
        campaign = campaign_create(spec=CampaignSpec(**kwargs))
        if switches:
            Campaign.objects.filter(pk=campaign.pk).update(**switches)
            campaign.refresh_from_db()
        return campaign

    @classmethod
    def _build(cls, model_class, **kwargs):
        return model_class(**kwargs)


class VoucherFactory(factory.Factory):
    """Issues a real card through `voucher_issue` (budget reserved, ledger written)."""

    class Meta:
        model = Voucher

    user = factory.SubFactory(UserFactory)
    campaign = factory.SubFactory(CampaignFactory)
    source = Voucher.Source.REFERRAL_INVITEE

    @classmethod
    def _create(cls, model_class, user, campaign, source, **kwargs):
        reason = kwargs.pop("reason", "测试发卡" if source == Voucher.Source.STAFF else "")
        return voucher_issue(user=user, campaign=campaign, source=source, reason=reason)


class BudgetBucketFactory(factory.django.DjangoModelFactory):
    """Only for constraint tests: a bare bucket with no ledger behind it."""

    class Meta:
        model = BudgetBucket

    campaign = factory.SubFactory(CampaignFactory)
    index = factory.Sequence(lambda n: 1000 + n % 1000)
    allotment = Decimal("100.00")


class LedgerEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LedgerEntry

    campaign = factory.SubFactory(CampaignFactory)
    bucket = factory.LazyAttribute(lambda o: o.campaign.buckets.first())
    kind = LedgerEntry.Kind.ADJUST
    amount = Decimal("1.00")


class AuditLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuditLog

    action = "test"
    object_type = "campaign.campaign"
    object_id = "1"


class BrandFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Brand
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"品牌{n}")
    slug = factory.Sequence(lambda n: f"brand-{n}")


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    brand = factory.SubFactory(BrandFactory)
    name = factory.Sequence(lambda n: f"奶茶{n}")
    price = Decimal("18.00")
    sizes = factory.LazyFunction(lambda: {"中杯": "0.00", "大杯": "3.00"})
    sugar_options = factory.LazyFunction(lambda: ["全糖", "七分糖", "半糖", "三分糖", "微糖", "无糖"])
    ice_options = factory.LazyFunction(lambda: ["正常冰", "少冰", "去冰", "常温", "热"])
    default_size = "中杯"


class StoreFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Store

    brand = factory.SubFactory(BrandFactory)
    name = factory.Sequence(lambda n: f"测试门店{n}")
    city = "杭州"
    district = "西湖区"
    lat = 30.2741
    lng = 120.1551
    open_24h = True
    capacity_per_minute = 10


class InviteCodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InviteCode

    campaign = factory.SubFactory(CampaignFactory)
    user = factory.SubFactory(UserFactory)
    code = factory.Sequence(lambda n: f"T{n:07d}"[:8])


class ReferralFactory(factory.django.DjangoModelFactory):
    """A bare graph edge (no cards); use referrals.services for the real flow."""

    class Meta:
        model = Referral

    campaign = factory.SubFactory(CampaignFactory)
    inviter = factory.SubFactory(UserFactory)
    invitee = factory.SubFactory(UserFactory)
    invite_code = factory.LazyAttribute(
        lambda o: InviteCodeFactory(campaign=o.campaign, user=o.inviter)
    )
    root = factory.SelfAttribute("inviter")
    depth = 1
    path = factory.LazyAttribute(lambda o: f"/{o.inviter.pk}/")


class OrderFactory(factory.django.DjangoModelFactory):
    """A bare order without a card; use orders.services for the real flow."""

    class Meta:
        model = Order

    user = factory.SubFactory(UserFactory)
    store = factory.SubFactory(StoreFactory)
    total_price = Decimal("18.00")
    subsidy = Decimal("0.00")
    amount_to_pay = Decimal("18.00")


class OrderItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OrderItem

    order = factory.SubFactory(OrderFactory)
    product = factory.SubFactory(ProductFactory)
    quantity = 1
    unit_price = Decimal("18.00")
    line_total = Decimal("18.00")


class OrderEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OrderEvent

    order = factory.SubFactory(OrderFactory)
    to_status = Order.Status.PLACED


class ExportJobFactory(factory.django.DjangoModelFactory):
    """A queued background export (reports); run it with reports.services.export_job_run."""

    class Meta:
        model = "reports.ExportJob"

    campaign = factory.SubFactory(CampaignFactory)


class EventFactory(factory.django.DjangoModelFactory):
    """A bare outbox row; the services write the real ones in the transaction of each change."""

    class Meta:
        model = Event

    type = "card.issued"
    campaign_id = 0
    data = factory.LazyFunction(lambda: {"voucher_id": 1})


class EndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Endpoint

    name = factory.Sequence(lambda n: f"推送 {n}")
    url = "http://127.0.0.1:9/hook"


class CursorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Cursor

    endpoint = factory.SubFactory(EndpointFactory)
    campaign_id = factory.Sequence(lambda n: n + 1)


class DeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Delivery

    endpoint = factory.SubFactory(EndpointFactory)
    event = factory.SubFactory(EventFactory)
    attempt = 1
    outcome = Delivery.Outcome.DELIVERED
    status_code = 204


class DeadLetterFactory(DeliveryFactory):
    class Meta:
        model = DeadLetter

    outcome = Delivery.Outcome.DEAD
    status_code = 500
    error = "HTTP 500"


class ClawbackFactory(factory.django.DjangoModelFactory):
    """A bare record; use referrals.services.referral_revoke for the real flow."""

    class Meta:
        model = Clawback

    referral = factory.SubFactory(ReferralFactory)
    side = "inviter"
    voucher = factory.LazyAttribute(lambda o: VoucherFactory(campaign=o.referral.campaign, user=o.referral.inviter))
    action = Clawback.Action.USED
    amount = Decimal("18.00")
    order_id = 1


class StoreDaySubsidyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StoreDaySubsidy

    campaign = factory.SubFactory(CampaignFactory)
    store = factory.SubFactory(StoreFactory)
    day = factory.LazyFunction(lambda: timezone.localdate())
    subsidy = Decimal("0.00")


class BrandDaySubsidyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BrandDaySubsidy

    campaign = factory.SubFactory(CampaignFactory)
    brand = factory.SubFactory(BrandFactory)
    day = factory.LazyFunction(lambda: timezone.localdate())
    subsidy = Decimal("0.00")


class DeviceClaimFactory(factory.django.DjangoModelFactory):
    """A device's welcome-card count in a campaign (vouchers.DeviceClaim; normally written by device_claim)."""

    class Meta:
        model = "vouchers.DeviceClaim"

    campaign = factory.SubFactory(CampaignFactory)
    device_id = factory.Sequence(lambda n: f"device-{n}")
    kind = "welcome"
    count = 1


class AccessAttemptFactory(factory.django.DjangoModelFactory):
    """django-axes: a failed admin login being counted (admin "Access attempts" is the unlock path)."""

    class Meta:
        model = "axes.AccessAttempt"

    username = factory.Sequence(lambda n: f"staff{n}")
    ip_address = "127.0.0.1"
    user_agent = "pytest"
    path_info = "/admin/login/"
    get_data = ""
    post_data = ""
    failures_since_start = 1


class AccessFailureLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "axes.AccessFailureLog"

    username = factory.Sequence(lambda n: f"staff{n}")
    ip_address = "127.0.0.1"
    user_agent = "pytest"
    path_info = "/admin/login/"
    locked_out = False
