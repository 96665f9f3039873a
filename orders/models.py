"""Brands, stores, menus, orders and their state transitions."""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from campaign.models import MONEY, Campaign
from vouchers.models import Voucher

SIZES = ["小杯", "中杯", "大杯", "超大杯"]
SUGARS = ["全糖", "七分糖", "半糖", "三分糖", "微糖", "无糖"]
ICES = ["正常冰", "少冰", "去冰", "常温", "温", "热"]


class Brand(models.Model):
    name = models.CharField("品牌", max_length=64, unique=True)
    slug = models.SlugField("标识", max_length=64, unique=True)
    aliases = models.JSONField("别名", default=list, blank=True)
    participating = models.BooleanField("参与活动", default=True)

    class Meta:
        verbose_name = "品牌"
        verbose_name_plural = "品牌"
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    brand = models.ForeignKey(Brand, on_delete=models.PROTECT, related_name="products", verbose_name="品牌")
    name = models.CharField("商品名", max_length=64)
    aliases = models.JSONField("别名", default=list, blank=True)
    category = models.CharField("品类", max_length=32, blank=True, default="")
    price = models.DecimalField("基础价（元）", max_digits=8, decimal_places=2)
    # {"中杯": "0.00", "大杯": "3.00"}: size -> surcharge over the base price.
    sizes = models.JSONField("杯型及加价", default=dict, blank=True)
    sugar_options = models.JSONField("甜度选项", default=list, blank=True)
    ice_options = models.JSONField("温度选项", default=list, blank=True)
    default_size = models.CharField("默认杯型", max_length=8, blank=True, default="")
    is_default = models.BooleanField("品牌招牌（模糊点单时默认）", default=False)
    active = models.BooleanField("在售", default=True)

    class Meta:
        verbose_name = "商品"
        verbose_name_plural = "商品"
        ordering = ["brand", "id"]
        constraints = [
            models.UniqueConstraint(fields=["brand", "name"], name="product_unique_name_per_brand"),
            models.CheckConstraint(condition=Q(price__gt=0), name="product_price_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.brand.name} {self.name}"


class Store(models.Model):
    brand = models.ForeignKey(Brand, on_delete=models.PROTECT, related_name="stores", verbose_name="品牌")
    name = models.CharField("门店", max_length=128)
    city = models.CharField("城市", max_length=32, db_index=True)
    district = models.CharField("区", max_length=32, blank=True, default="")
    address = models.CharField("地址", max_length=255, blank=True, default="")
    lat = models.FloatField("纬度")
    lng = models.FloatField("经度")
    # Local (Asia/Shanghai) times; closes_at <= opens_at means the store closes after midnight.
    opens_at = models.TimeField("开门时间", null=True, blank=True)
    closes_at = models.TimeField("关门时间", null=True, blank=True)
    open_24h = models.BooleanField("24 小时营业", default=False)
    capacity_per_minute = models.PositiveIntegerField("每分钟最多接单", default=10)
    active = models.BooleanField("营业中", default=True)
    sold_out = models.ManyToManyField(Product, blank=True, related_name="+", verbose_name="售罄商品")

    class Meta:
        verbose_name = "门店"
        verbose_name_plural = "门店"
        ordering = ["id"]
        indexes = [models.Index(fields=["lat", "lng"], name="store_location")]
        constraints = [
            models.CheckConstraint(condition=Q(lat__gte=-90) & Q(lat__lte=90), name="store_lat_range"),
            models.CheckConstraint(condition=Q(lng__gte=-180) & Q(lng__lte=180), name="store_lng_range"),
            models.CheckConstraint(condition=Q(capacity_per_minute__gte=1), name="store_capacity_positive"),
            models.CheckConstraint(
                condition=Q(open_24h=True) | (Q(opens_at__isnull=False) & Q(closes_at__isnull=False)),
                name="store_hours_set",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.brand.name}（{self.name}）"


class Order(models.Model):
    class Status(models.TextChoices):
        PLACED = "placed", "已下单"
        SENT_TO_STORE = "sent_to_store", "已发送门店"
        ACCEPTED = "accepted", "门店已接单"
        DELIVERING = "delivering", "配送中"
        COMPLETED = "completed", "已完成"
        FAILED = "failed", "失败"
        CANCELLED = "cancelled", "已取消"

    FINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders", verbose_name="用户")
    # Indexed by order_campaign_state (campaign first).
    campaign = models.ForeignKey(
        Campaign, on_delete=models.PROTECT, null=True, blank=True, related_name="orders", verbose_name="活动",
        db_index=False,
    )
    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="orders", verbose_name="门店")
    voucher = models.ForeignKey(
        Voucher, on_delete=models.PROTECT, null=True, blank=True, related_name="orders", verbose_name="使用的卡"
    )
    status = models.CharField("状态", max_length=16, choices=Status.choices, default=Status.PLACED, db_index=True)
    total_price = models.DecimalField("商品总价", **MONEY)
    subsidy = models.DecimalField("补贴", default=Decimal("0.00"), **MONEY)
    amount_to_pay = models.DecimalField("应付", **MONEY)
    # The local day whose store / brand subsidy counters this order was counted in (null: no cap was set).
    capped_on = models.DateField("计入门店日补贴的日期", null=True, blank=True)
    source_text = models.CharField("点单原话", max_length=200, blank=True, default="")
    failure_reason = models.CharField("失败原因", max_length=255, blank=True, default="")
    merchant = models.CharField("门店系统", max_length=32, blank=True, default="")
    merchant_ref = models.CharField("门店单号", max_length=64, blank=True, default="")
    attempts = models.PositiveIntegerField("发送次数", default=0)
    # When fulfilment next looks at this order if nothing happens first: re-send an order never sent, ask the
    # merchant about one we have not heard of. NULL once the order is final (the index only holds live orders).
    next_check_at = models.DateTimeField("下次检查时间", null=True, blank=True)
    created_at = models.DateTimeField("下单时间", auto_now_add=True, db_index=True)
    # Indexed only where the sweeper looks (orders still in flight): see Meta.indexes.
    state_changed_at = models.DateTimeField("状态更新时间", auto_now_add=True)

    class Meta:
        verbose_name = "订单"
        verbose_name_plural = "订单"
        ordering = ["-id"]
        # Staff intervention (cancel, re-send) from admin: support and superusers only (orders 0005).
        permissions = [("can_intervene", "可以干预订单（取消、重发）")]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="order_user_recent"),
            # Orders by state and the busiest stores on the dashboard and in the report: index-only.
            models.Index(fields=["campaign", "status", "store"], name="order_campaign_state"),
            # The sweeper's scan touches only orders not yet accepted: a partial index stays tiny at a million
            # orders and answers "older than the deadline" by an index range (statuses as in orders.services).
            models.Index(fields=["created_at"], name="order_unaccepted_age",
                         condition=Q(status__in=["placed", "sent_to_store"])),
            # Support searches the store's order number.
            models.Index(fields=["merchant_ref"], name="order_merchant_ref", condition=~Q(merchant_ref="")),
            models.Index(fields=["next_check_at"], name="order_next_check",
                         condition=Q(next_check_at__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(total_price__gt=0), name="order_price_positive"),
            models.CheckConstraint(
                condition=Q(subsidy__gte=0) & Q(subsidy__lte=F("total_price")), name="order_subsidy_within_price"
            ),
            models.CheckConstraint(
                condition=Q(amount_to_pay=F("total_price") - F("subsidy")), name="order_amount_adds_up"
            ),
            models.CheckConstraint(condition=Q(voucher__isnull=False) | Q(subsidy=0), name="order_subsidy_needs_card"),
            # A card backs at most one live order; failed/cancelled orders let it go.
            models.UniqueConstraint(
                fields=["voucher"],
                condition=~Q(status__in=["failed", "cancelled"]),
                name="order_one_live_per_card",
            ),
        ]

    def __str__(self) -> str:
        return f"订单 #{self.pk}"


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items", verbose_name="订单")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+", verbose_name="商品")
    quantity = models.PositiveSmallIntegerField("数量")
    size = models.CharField("杯型", max_length=8, blank=True, default="")
    sugar = models.CharField("甜度", max_length=8, blank=True, default="")
    ice = models.CharField("温度", max_length=8, blank=True, default="")
    unit_price = models.DecimalField("单价", max_digits=8, decimal_places=2)
    line_total = models.DecimalField("小计", **MONEY)

    class Meta:
        verbose_name = "订单商品"
        verbose_name_plural = "订单商品"
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=1) & Q(quantity__lte=10), name="item_quantity_range"),
            models.CheckConstraint(condition=Q(unit_price__gt=0), name="item_price_positive"),
            models.CheckConstraint(condition=Q(line_total=F("unit_price") * F("quantity")), name="item_total_adds_up"),
        ]

    def __str__(self) -> str:
        return f"{self.product} x{self.quantity}"


class OrderEvent(models.Model):
    """Each state is entered once per order: the unique constraint makes transitions idempotent."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events", verbose_name="订单")
    from_status = models.CharField("原状态", max_length=16, blank=True, default="")
    to_status = models.CharField("新状态", max_length=16, choices=Order.Status.choices)
    note = models.CharField("说明", max_length=255, blank=True, default="")
    created_at = models.DateTimeField("时间", auto_now_add=True)

    class Meta:
        verbose_name = "订单事件"
        verbose_name_plural = "订单事件"
        ordering = ["order", "id"]
        constraints = [models.UniqueConstraint(fields=["order", "to_status"], name="order_event_once_per_state")]

    def __str__(self) -> str:
        return f"#{self.order_id} {self.from_status} -> {self.to_status}"


class StoreMinute(models.Model):
    """Orders accepted by a store in one wall-clock minute: the capacity counter when Redis is absent.

    Taken with INSERT .. ON CONFLICT DO UPDATE .. WHERE count < capacity inside the order's
    transaction, so a rolled-back order gives its slot back by itself.
    """

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", verbose_name="门店")
    minute = models.BigIntegerField("分钟（Unix 时间 // 60）")
    count = models.PositiveIntegerField("已接单数", default=0)

    class Meta:
        verbose_name = "门店每分钟接单数"
        verbose_name_plural = "门店每分钟接单数"
        constraints = [models.UniqueConstraint(fields=["store", "minute"], name="store_minute_unique")]

    def __str__(self) -> str:
        return f"{self.store_id}@{self.minute}: {self.count}"


class MerchantEvent(models.Model):
    """One event a merchant reported (callback or poll), kept once per merchant event id.

    The unique (merchant, event_id) pair makes every event idempotent: a repeat is acknowledged and changes
    nothing. `outcome` says what the event did to its order (applied, or ignored because the order was already
    there or past it); `occurred_at` (the merchant's clock) and `received_at` give the callback lag.
    """

    class Kind(models.TextChoices):
        ACCEPTED = "accepted", "门店接单"
        REJECTED = "rejected", "门店拒单"
        DISPATCHED = "dispatched", "已出餐配送"
        DELIVERED = "delivered", "已送达"

    class Outcome(models.TextChoices):
        APPLIED = "applied", "已生效"
        IGNORED = "ignored", "已忽略（订单已在该状态或之后）"

    merchant = models.CharField("门店系统", max_length=32)
    event_id = models.CharField("事件号", max_length=64)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="merchant_events", verbose_name="订单")
    kind = models.CharField("事件", max_length=16, choices=Kind.choices)
    outcome = models.CharField("结果", max_length=16, choices=Outcome.choices)
    digest = models.CharField("内容摘要", max_length=64)  # same id with another body is a conflict, not a repeat
    occurred_at = models.DateTimeField("发生时间（门店）")
    received_at = models.DateTimeField("收到时间", auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "门店事件"
        verbose_name_plural = "门店事件"
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["merchant", "event_id"], name="merchant_event_once")]

    def __str__(self) -> str:
        return f"{self.merchant}:{self.event_id} #{self.order_id} {self.kind}"


class StoreDaySubsidy(models.Model):
    """Subsidy committed per campaign, store and local day while a store cap is set (the cap's counter).

    Taken by a conditional upsert in the placement transaction, given back on cancel / failure.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="+", verbose_name="活动",
                                 db_index=False)
    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="+", verbose_name="门店")
    day = models.DateField("日期（北京时间）")
    subsidy = models.DecimalField("已占用补贴（元）", default=Decimal("0.00"), **MONEY)

    class Meta:
        verbose_name = "门店每日补贴"
        verbose_name_plural = "门店每日补贴"
        ordering = ["-day", "store"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "store", "day"], name="store_day_subsidy_unique"),
            models.CheckConstraint(condition=Q(subsidy__gte=0), name="store_day_subsidy_nonneg"),
        ]

    def __str__(self) -> str:
        return f"{self.day} #{self.store_id} {self.subsidy}"


class BrandDaySubsidy(models.Model):
    """Subsidy committed per campaign, brand and local day while a brand cap is set (same rules as the store's)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="+", verbose_name="活动",
                                 db_index=False)
    brand = models.ForeignKey(Brand, on_delete=models.PROTECT, related_name="+", verbose_name="品牌")
    day = models.DateField("日期（北京时间）")
    subsidy = models.DecimalField("已占用补贴（元）", default=Decimal("0.00"), **MONEY)

    class Meta:
        verbose_name = "品牌每日补贴"
        verbose_name_plural = "品牌每日补贴"
        ordering = ["-day", "brand"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "brand", "day"], name="brand_day_subsidy_unique"),
            models.CheckConstraint(condition=Q(subsidy__gte=0), name="brand_day_subsidy_nonneg"),
        ]

    def __str__(self) -> str:
        return f"{self.day} #{self.brand_id} {self.subsidy}"
