"""The 25-yuan card.

Database-enforced rules:
- a user's cards in a campaign occupy slots 1..cap: UNIQUE(campaign, user, slot) and
  CHECK(1 <= slot <= cap) with the cap copied onto the row, so no race can exceed it;
- one welcome card per user per campaign (partial unique index);
- a redeemed card names its order and subsidy, and subsidy <= face value;
- a card is attached to at most one order at a time (UNIQUE(order_id)).
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from campaign.models import MONEY, BudgetBucket, Campaign


class Voucher(models.Model):
    class Source(models.TextChoices):
        WELCOME = "welcome", "新人卡"
        REFERRAL_INVITER = "referral_inviter", "邀请奖励"
        REFERRAL_INVITEE = "referral_invitee", "受邀奖励"
        STAFF = "staff", "人工发放"

    class Status(models.TextChoices):
        ISSUED = "issued", "可使用"
        LOCKED = "locked", "下单中"
        REDEEMED = "redeemed", "已使用"
        EXPIRED = "expired", "已过期"
        VOID = "void", "已作废"

    code = models.CharField("卡号", max_length=16, unique=True)
    # No single-column indexes on campaign/user: (campaign, user, slot) and (user, campaign, status) lead with
    # them, and each index costs every card insert on the hot join path.
    campaign = models.ForeignKey(
        Campaign, on_delete=models.PROTECT, related_name="vouchers", verbose_name="活动", db_index=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="vouchers", verbose_name="持有人",
        db_index=False,
    )
    bucket = models.ForeignKey(BudgetBucket, on_delete=models.PROTECT, related_name="vouchers", verbose_name="预算桶")
    slot = models.PositiveSmallIntegerField("卡位")
    cap = models.PositiveSmallIntegerField("卡数上限")
    source = models.CharField("来源", max_length=32, choices=Source.choices)
    status = models.CharField("状态", max_length=16, choices=Status.choices, default=Status.ISSUED)
    face_value = models.DecimalField("面额", **MONEY)
    subsidy = models.DecimalField("实际补贴", null=True, blank=True, **MONEY)
    # Plain id: `orders` sits above `vouchers`.
    order_id = models.BigIntegerField("订单 ID", null=True, blank=True)
    issued_at = models.DateTimeField("发放时间", auto_now_add=True)
    expires_at = models.DateTimeField("过期时间", db_index=True)
    locked_at = models.DateTimeField("锁定时间", null=True, blank=True)
    redeemed_at = models.DateTimeField("使用时间", null=True, blank=True)
    closed_at = models.DateTimeField("过期/作废时间", null=True, blank=True)
    void_reason = models.CharField("作废原因", max_length=255, blank=True, default="")
    # The local (Asia/Shanghai) day this card was counted in against the daily card cap (its bucket's `day_cards`);
    # null when no daily cap was set at issue time. `reconcile` proves each bucket's counter equals its cards.
    counted_on = models.DateField("计入每日发卡数的日期", null=True, blank=True)

    class Meta:
        verbose_name = "免单卡"
        verbose_name_plural = "免单卡"
        ordering = ["expires_at", "id"]
        permissions = [("void_voucher", "可作废免单卡"), ("issue_voucher", "可人工发卡")]
        indexes = [
            models.Index(fields=["user", "campaign", "status"], name="voucher_owner_status"),
            models.Index(fields=["status", "expires_at"], name="voucher_status_expiry"),
            # The expiry batch: issued cards, oldest expiry first, in index order (1 ms at 0.5 M cards; with
            # full rows selected PostgreSQL otherwise walks the expires_at index past every expired card).
            models.Index(fields=["expires_at", "id"], name="voucher_issued_expiry", condition=Q(status="issued")),
            # Counts by state and source for the dashboard and the report: an index-only scan, not the wide heap.
            models.Index(fields=["campaign", "status", "source"], name="voucher_campaign_state"),
            # Admin at millions of cards: the date hierarchy's MIN/MAX and the dashboard's last hour; the
            # source filter (a rare source such as staff would otherwise scan the table).
            models.Index(fields=["issued_at"], name="voucher_issued_at"),
            models.Index(fields=["source", "expires_at"], name="voucher_source_expiry"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "user", "slot"], name="voucher_unique_slot"),
            models.CheckConstraint(condition=Q(slot__gte=1) & Q(slot__lte=F("cap")), name="voucher_slot_within_cap"),
            models.UniqueConstraint(
                fields=["campaign", "user"], condition=Q(source="welcome"), name="voucher_one_welcome_card"
            ),
            models.UniqueConstraint(fields=["order_id"], name="voucher_one_per_order"),
            models.CheckConstraint(condition=Q(face_value__gt=0), name="voucher_face_positive"),
            models.CheckConstraint(
                condition=Q(subsidy__isnull=True) | (Q(subsidy__gte=0) & Q(subsidy__lte=F("face_value"))),
                name="voucher_subsidy_within_face",
            ),
            models.CheckConstraint(
                condition=~Q(status="redeemed") | (Q(order_id__isnull=False) & Q(subsidy__isnull=False)),
                name="voucher_redeemed_has_order",
            ),
            models.CheckConstraint(
                condition=~Q(status="locked") | Q(order_id__isnull=False), name="voucher_locked_has_order"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["issued", "locked", "redeemed", "expired", "void"]),
                name="voucher_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.code


class DeviceClaim(models.Model):
    """How many welcome cards / referral rewards one device has taken in one campaign (issue 16, bot farms).

    Written by vouchers.services.device_claim in the same transaction as the card: one conditional upsert that
    only counts up while under the campaign's cap, so N accounts on one phone racing in parallel cannot pass
    the cap (the unique row serialises them), and a rolled-back card gives its count back.
    """

    class Kind(models.TextChoices):
        WELCOME = "welcome", "欢迎卡"
        REFERRAL = "referral", "邀请奖励"

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="+", verbose_name="活动")
    device_id = models.CharField("设备号", max_length=128)
    kind = models.CharField("类型", max_length=16, choices=Kind.choices)
    count = models.PositiveIntegerField("次数", default=0)
    updated_at = models.DateTimeField("最近领取", auto_now=True)

    class Meta:
        verbose_name = "设备领取计数"
        verbose_name_plural = "设备领取计数"
        constraints = [
            models.UniqueConstraint(fields=["campaign", "device_id", "kind"], name="device_claim_unique"),
            models.CheckConstraint(condition=Q(count__gte=1), name="device_claim_count_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.kind} x{self.count}"
