"""Campaigns, the bucketed budget and its append-only ledger.

Finance invariants live in the database:
- every bucket: 0 <= reserved, 0 <= spent, reserved + spent <= allotment;
- the ledger only grows (a PostgreSQL trigger refuses UPDATE and DELETE);
- per bucket, sum(adjust) == allotment, sum(reserve) - sum(spend) - sum(release) == reserved,
  sum(spend) == spent (checked by `reconcile`).
"""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q

MONEY = {"max_digits": 16, "decimal_places": 2}


class CampaignQuerySet(models.QuerySet):
    def live(self, now=None) -> "CampaignQuerySet":
        """Live status and inside the window: the query twin of `campaign.gate.campaign_is_live`."""
        from django.utils import timezone

        now = now or timezone.now()
        return self.filter(status=Campaign.Status.LIVE, starts_at__lte=now, ends_at__gt=now)


class PaceMode(models.TextChoices):
    NONE = "none", "不控制"
    ALERT = "alert", "仅告警"
    REFUSE = "refuse", "超出计划即拒绝"
    THROTTLE = "throttle", "接近计划时按概率限流"


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "草稿"
        LIVE = "live", "进行中"
        PAUSED = "paused", "已暂停"
        ENDED = "ended", "已结束"

    slug = models.SlugField("标识", max_length=64, unique=True)
    name = models.CharField("名称", max_length=128)
    status = models.CharField("状态", max_length=16, choices=Status.choices, default=Status.DRAFT)
    starts_at = models.DateTimeField("开始时间")
    ends_at = models.DateTimeField("结束时间")
    face_value = models.DecimalField("单张面额（元）", default=Decimal("25.00"), **MONEY)
    card_cap = models.PositiveSmallIntegerField("每人最多卡数", default=21)
    min_app_version = models.CharField("最低 App 版本", max_length=32, default="1.0.0")
    card_validity = models.DurationField("卡有效期", default=timedelta(days=30))
    total_budget = models.DecimalField("总预算（元）", default=Decimal("0.00"), **MONEY)
    bucket_count = models.PositiveSmallIntegerField("预算分桶数", default=64)

    claims_enabled = models.BooleanField("允许领卡", default=True)
    referrals_enabled = models.BooleanField("允许邀请", default=True)
    orders_enabled = models.BooleanField("允许下单", default=True)

    # Referral abuse rules (per campaign, see referrals.services).
    referral_inviter_hourly_limit = models.PositiveIntegerField("每位邀请人每小时最多成功邀请", default=20)
    referral_inviter_daily_limit = models.PositiveIntegerField("每位邀请人每天最多成功邀请", default=100)
    referral_device_max_accounts = models.PositiveIntegerField("同一设备最多被邀请账号数", default=1)
    referral_ip_burst_limit = models.PositiveIntegerField("同一 IP 十分钟内新账号接受邀请上限", default=5)
    # Clawback (referrals.services.referral_revoke): a referral rejected after the fact voids its unused rewards.
    referral_clawback = models.BooleanField(
        "事后拒绝邀请时收回未使用的奖励卡", default=True,
        help_text="开启：客服事后判定邀请作弊并拒绝时，未使用的奖励卡自动作废、预算退回；已使用的列出待跟进")

    # Spend plan (issue 20): how much of the budget may be committed by each moment (campaign.pacing).
    pace_mode = models.CharField("投放节奏控制", max_length=16, choices=PaceMode.choices, default=PaceMode.NONE)
    pace_even_daily = models.BooleanField(
        "按天平均投放", default=False, help_text="勾选后每天（北京时间零点起）可用预算 = 总预算 ÷ 活动天数，忽略下方曲线")
    # [["2026-02-01T10:00:00+08:00", "20%"], ["2026-02-03T00:00:00+08:00", "1500000.00"], ...]: a share of the
    # total budget (ending in %) or an amount in yuan, cumulative, linear in between (campaign.pacing).
    pace_points = models.JSONField("投放计划曲线", default=list, blank=True)
    pace_throttle_from = models.DecimalField(
        "限流起点（占计划比例）", max_digits=4, decimal_places=3, default=Decimal("0.900"),
        help_text="按概率限流时：已用达到计划的该比例后开始随机拒绝，越接近计划拒绝越多")
    pace_alert_margin = models.DecimalField(
        "超计划告警阈值", max_digits=4, decimal_places=3, default=Decimal("0.050"),
        help_text="实际投放超过计划的该比例时告警（日志、监控指标、后台横幅）")

    # Daily caps (issue 20): enforced in the claim's / the order's own transaction by conditional counter updates.
    daily_card_cap = models.PositiveIntegerField("每日发卡上限（张）", null=True, blank=True,
                                                 help_text="北京时间零点重置；留空表示不限")
    store_daily_subsidy_cap = models.DecimalField("单门店每日补贴上限（元）", null=True, blank=True,
                                                  help_text="超出时订单改派下一家最近门店；留空表示不限", **MONEY)
    brand_daily_subsidy_cap = models.DecimalField("单品牌每日补贴上限（元）", null=True, blank=True,
                                                  help_text="留空表示不限", **MONEY)
    # Bot farms (issue 16): age-independent per-address rules (24 h, any account age) feed the review queue;
    # 0 turns a rule off. The subnet is the /24 (IPv4) or /48 (IPv6) of the accepting client.
    referral_ip_daily_limit = models.PositiveIntegerField("同一 IP 每天接受邀请上限（超出转人工审核）", default=50)
    referral_subnet_daily_limit = models.PositiveIntegerField("同一网段每天接受邀请上限（超出转人工审核）", default=200)
    # Per-device caps enforced by the database (vouchers.DeviceClaim rows in the card's own transaction); the
    # device is the one the login bound to the token. 0 = no cap.
    device_welcome_cap = models.PositiveIntegerField("同一设备最多领取欢迎卡的账号数", default=3)
    device_reward_cap = models.PositiveIntegerField("同一设备最多获得邀请奖励的次数", default=3)

    created_at = models.DateTimeField("创建时间", auto_now_add=True)
    updated_at = models.DateTimeField("更新时间", auto_now=True)

    objects = CampaignQuerySet.as_manager()

    class Meta:
        verbose_name = "活动"
        verbose_name_plural = "活动"
        ordering = ["-starts_at"]
        permissions = [
            ("view_budget_report", "可查看与导出预算报表"),
            ("change_budget", "可调整活动预算"),
            ("toggle_switches", "可切换活动开关"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="campaign_window_order"),
            models.CheckConstraint(condition=Q(face_value__gt=0), name="campaign_face_positive"),
            models.CheckConstraint(
                condition=Q(card_cap__gte=1) & Q(card_cap__lte=100), name="campaign_cap_range"
            ),
            models.CheckConstraint(condition=Q(total_budget__gte=0), name="campaign_budget_nonneg"),
            models.CheckConstraint(
                condition=Q(bucket_count__gte=1) & Q(bucket_count__lte=1024), name="campaign_bucket_count_range"
            ),
            models.CheckConstraint(
                condition=Q(daily_card_cap__isnull=True) | Q(daily_card_cap__gte=1), name="campaign_daily_cap_positive"
            ),
            models.CheckConstraint(
                condition=(Q(store_daily_subsidy_cap__isnull=True) | Q(store_daily_subsidy_cap__gte=0))
                & (Q(brand_daily_subsidy_cap__isnull=True) | Q(brand_daily_subsidy_cap__gte=0)),
                name="campaign_subsidy_caps_nonneg",
            ),
            models.CheckConstraint(
                condition=Q(pace_throttle_from__gte=0) & Q(pace_throttle_from__lte=1), name="campaign_throttle_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class BudgetBucket(models.Model):
    """One slice of a campaign's budget. Many rows so that no single row serialises the country."""

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="buckets", verbose_name="活动")
    index = models.PositiveSmallIntegerField("桶号")
    allotment = models.DecimalField("额度", default=Decimal("0.00"), **MONEY)
    reserved = models.DecimalField("已预留", default=Decimal("0.00"), **MONEY)
    spent = models.DecimalField("已花费", default=Decimal("0.00"), **MONEY)
    # Daily card cap (issue 20): cards this bucket issued on local day `day_on`. The cap is split over the buckets
    # and counted on the row the reservation already updates (no extra row, no extra lock, the first claim of a
    # new day restarts the count): a single per-day row would serialise every claim of the campaign.
    day_on = models.DateField("计数日期（北京时间）", null=True, blank=True)
    day_cards = models.PositiveIntegerField("当日发卡数", default=0)

    class Meta:
        verbose_name = "预算桶"
        verbose_name_plural = "预算桶"
        ordering = ["campaign", "index"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "index"], name="bucket_unique_index"),
            models.CheckConstraint(condition=Q(allotment__gte=0), name="bucket_allotment_nonneg"),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="bucket_reserved_nonneg"),
            models.CheckConstraint(condition=Q(spent__gte=0), name="bucket_spent_nonneg"),
            models.CheckConstraint(
                condition=Q(allotment__gte=F("reserved") + F("spent")), name="bucket_never_overspent"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.campaign.slug}#{self.index}"

    @property
    def available(self) -> Decimal:
        return self.allotment - self.reserved - self.spent


class LedgerEntry(models.Model):
    """Append-only record of every budget movement. Amounts are positive; `kind` gives the sign."""

    class Kind(models.TextChoices):
        RESERVE = "reserve", "预留"
        SPEND = "spend", "花费"
        RELEASE = "release", "释放"
        ADJUST = "adjust", "调整"

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="ledger", verbose_name="活动")
    bucket = models.ForeignKey(BudgetBucket, on_delete=models.PROTECT, related_name="ledger", verbose_name="预算桶")
    kind = models.CharField("类型", max_length=16, choices=Kind.choices)
    # Adjust entries may be negative (budget lowered, or moved out of a bucket when rebalancing).
    amount = models.DecimalField("金额", **MONEY)
    # Plain ids: `campaign` sits below `vouchers` and `orders` and must not import them.
    # Indexed by ledger_card_rows (voucher_id, then kind, amount, campaign: a covering index).
    voucher_id = models.BigIntegerField("卡 ID", null=True, blank=True)
    order_id = models.BigIntegerField("订单 ID", null=True, blank=True, db_index=True)
    # Indexed only where set (ledger_staff_rows): almost every row is written by the system.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name="操作人",
        db_index=False,
    )
    reason = models.CharField("原因", max_length=255, blank=True, default="")
    created_at = models.DateTimeField("时间", auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "预算流水"
        verbose_name_plural = "预算流水"
        ordering = ["-id"]
        indexes = [
            # A card's rows, and reconcile's per-card proof as an index-only scan in card order (merged with the
            # cards' primary key) instead of hashing millions of rows read from the wide heap.
            models.Index(fields=["voucher_id", "kind", "amount", "campaign"], name="ledger_card_rows"),
            # The admin's kind filter, newest first, without scanning millions of other kinds.
            models.Index(fields=["kind", "-id"], name="ledger_kind_recent"),
            # Rows a person made (budget changes, voids, staff cards): the FK's index and the admin's reason search.
            models.Index(fields=["actor"], name="ledger_staff_rows", condition=Q(actor__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="adjust") | Q(amount__gt=0), name="ledger_movement_positive"
            ),
            models.CheckConstraint(
                condition=~Q(kind="adjust") | ~Q(amount=0), name="ledger_adjust_nonzero"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount}"


class AuditLog(models.Model):
    """Who changed what, when, with before/after. Written by services, read-only in admin."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name="操作人"
    )
    action = models.CharField("动作", max_length=64, db_index=True)
    object_type = models.CharField("对象类型", max_length=64)
    object_id = models.CharField("对象 ID", max_length=64)
    campaign = models.ForeignKey(
        Campaign, on_delete=models.PROTECT, null=True, blank=True, related_name="audit", verbose_name="活动"
    )
    before = models.JSONField("变更前", null=True, blank=True)
    after = models.JSONField("变更后", null=True, blank=True)
    reason = models.CharField("原因", max_length=255, blank=True, default="")
    created_at = models.DateTimeField("时间", auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "审计日志"
        verbose_name_plural = "审计日志"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id}"
