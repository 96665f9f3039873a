"""Invite codes and the referral graph.

The graph is a forest per campaign. An invitee joins it once (UNIQUE(campaign, invitee)),
and stores its inviter, root, depth and materialised ancestor path, so ancestry and
subtree questions are single indexed queries instead of per-request recursion.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from campaign.models import Campaign
from vouchers.models import Voucher


class InviteCode(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="invite_codes", verbose_name="活动")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="invite_codes", verbose_name="邀请人"
    )
    code = models.CharField("邀请码", max_length=16, unique=True)
    created_at = models.DateTimeField("创建时间", auto_now_add=True)

    class Meta:
        verbose_name = "邀请码"
        verbose_name_plural = "邀请码"
        constraints = [models.UniqueConstraint(fields=["campaign", "user"], name="invite_code_one_per_user")]

    def __str__(self) -> str:
        return self.code


class Referral(models.Model):
    class Status(models.TextChoices):
        ACCEPTED = "accepted", "已接受"
        UNDER_REVIEW = "under_review", "待审核"
        REJECTED = "rejected", "已拒绝"

    class Outcome(models.TextChoices):
        ISSUED = "issued", "已发卡"
        CARD_LIMIT_REACHED = "card_limit_reached", "已达卡数上限"
        BUDGET_EXHAUSTED = "budget_exhausted", "预算已用完"
        PENDING = "pending", "审核中"
        REJECTED = "rejected", "审核未通过"
        NOT_LIVE = "campaign_not_live", "活动未进行"

    # Indexed by referral_campaign_funnel (and the unique (campaign, invitee)).
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="referrals", verbose_name="活动",
                                 db_index=False)
    invite_code = models.ForeignKey(InviteCode, on_delete=models.PROTECT, related_name="referrals", verbose_name="邀请码")
    inviter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="referrals_made", verbose_name="邀请人"
    )
    invitee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="referrals_received", verbose_name="受邀人"
    )
    root = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name="链条起点"
    )
    depth = models.PositiveIntegerField("深度", default=1)
    # "/<root id>/.../<inviter id>/": ancestors of the invitee, for LIKE-prefix subtree queries.
    path = models.CharField("祖先路径", max_length=2048, db_index=True)
    status = models.CharField("状态", max_length=16, choices=Status.choices, default=Status.ACCEPTED)
    inviter_outcome = models.CharField("邀请人奖励", max_length=32, choices=Outcome.choices, default=Outcome.PENDING)
    invitee_outcome = models.CharField("受邀人奖励", max_length=32, choices=Outcome.choices, default=Outcome.PENDING)
    inviter_voucher = models.OneToOneField(
        Voucher, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name="邀请人的卡"
    )
    invitee_voucher = models.OneToOneField(
        Voucher, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name="受邀人的卡"
    )
    review_reasons = models.JSONField("可疑原因", default=list, blank=True)
    device_id = models.CharField("受邀设备", max_length=128, blank=True, default="", db_index=True)
    ip = models.GenericIPAddressField("受邀 IP", null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name="审核人"
    )
    reviewed_at = models.DateTimeField("审核时间", null=True, blank=True)
    review_note = models.CharField("审核说明", max_length=255, blank=True, default="")
    created_at = models.DateTimeField("时间", auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "邀请记录"
        verbose_name_plural = "邀请记录"
        ordering = ["-id"]
        permissions = [("review_referral", "可审核可疑邀请")]
        indexes = [
            models.Index(fields=["campaign", "inviter", "created_at"], name="referral_inviter_recent"),
            # The IP-burst abuse rule reads "this IP in this campaign, last 10 minutes" on every accept.
            models.Index(fields=["campaign", "ip", "created_at"], name="referral_ip_recent"),
            # The dashboard's referral funnel: one index-only pass instead of the wide rows.
            models.Index(fields=["campaign", "status", "inviter_outcome", "invitee_outcome"],
                         name="referral_campaign_funnel"),
            # Admin filters on the rare values (the review queue, refusals) without scanning a million accepted rows.
            models.Index(fields=["status", "id"], name="referral_not_accepted", condition=~Q(status="accepted")),
            models.Index(fields=["inviter_outcome", "id"], name="referral_inviter_unpaid",
                         condition=~Q(inviter_outcome="issued")),
            models.Index(fields=["invitee_outcome", "id"], name="referral_invitee_unpaid",
                         condition=~Q(invitee_outcome="issued")),
        ]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "invitee"], name="referral_one_per_invitee"),
            models.CheckConstraint(condition=~Q(inviter=F("invitee")), name="referral_not_self"),
            models.CheckConstraint(condition=Q(depth__gte=1), name="referral_depth_positive"),
        ]

    def __str__(self) -> str:
        # Shown in admin titles and breadcrumbs: no phone numbers (the pages show them masked where needed).
        return f"邀请 #{self.pk}"


class PendingReferral(Referral):
    """The review queue in admin: referrals held by the abuse rules (same table, own menu entry)."""

    class Meta:
        proxy = True
        verbose_name = "待审核邀请"
        verbose_name_plural = "待审核邀请（审核队列）"
        default_permissions = ()


class Clawback(models.Model):
    """What happened to one reward card when its referral was rejected after the fact (the audit record)."""

    class Action(models.TextChoices):
        VOIDED = "voided", "已作废，预算已退回"
        USED = "used", "已使用，待跟进"
        IN_USE = "in_use", "订单进行中，待跟进"
        ALREADY_CLOSED = "already_closed", "已过期或已作废，无需处理"
        KEPT = "kept", "活动未开启收回，保留"

    referral = models.ForeignKey(Referral, on_delete=models.PROTECT, related_name="clawbacks", verbose_name="邀请记录")
    side = models.CharField("奖励方", max_length=8, choices=[("inviter", "邀请人"), ("invitee", "受邀人")])
    voucher = models.ForeignKey(Voucher, on_delete=models.PROTECT, related_name="+", verbose_name="奖励卡")
    action = models.CharField("处理结果", max_length=16, choices=Action.choices)
    # Voided: the face value returned to the budget; used: the subsidy paid (in use: the face value at stake).
    amount = models.DecimalField("金额（元）", max_digits=12, decimal_places=2)
    order_id = models.BigIntegerField("订单号", null=True, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                              related_name="+", verbose_name="操作人")
    note = models.CharField("说明", max_length=255, blank=True, default="")
    created_at = models.DateTimeField("时间", auto_now_add=True)

    class Meta:
        verbose_name = "奖励收回记录"
        verbose_name_plural = "奖励收回记录"
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["referral", "voucher"], name="clawback_once_per_card")]

    def __str__(self) -> str:
        return f"收回 #{self.pk}"
