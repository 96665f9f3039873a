"""The event stream: an outbox written in the same transaction as each business change, and its delivery.

`Event` rows are appended by the services of campaign, vouchers, orders and referrals (through
`events.services.event_record*`) inside the transaction that made the change, so an event exists iff the
change committed. A delivery worker later gives each committed event a `seq` (commit-visible order) and
pushes it to the subscribed `Endpoint`s, one `Cursor` per endpoint and campaign: the next event is not sent
before the previous one succeeded or was dead-lettered. Every attempt is a `Delivery` row.

`campaign_id` is a plain integer (0: an event outside any campaign, e.g. a full-price order), because this
app sits below `campaign` in the layers (docs/architecture.md).
"""

from __future__ import annotations

import secrets

from django.db import models
from django.db.models import Q
from django.utils import timezone


class EventType(models.TextChoices):
    CARD_ISSUED = "card.issued", "发卡"
    CARD_REDEEMED = "card.redeemed", "卡已核销"
    CARD_RELEASED = "card.released", "卡已退回（订单失败或取消）"
    CARD_EXPIRED = "card.expired", "卡已过期"
    CARD_VOIDED = "card.voided", "卡已作废"
    REFERRAL_ACCEPTED = "referral.accepted", "邀请成功"
    REFERRAL_HELD = "referral.held", "邀请待审核"
    REFERRAL_REJECTED = "referral.rejected", "邀请被拒绝"
    ORDER_STATUS_CHANGED = "order.status_changed", "订单状态变化"
    BUDGET_CHANGED = "budget.changed", "预算调整"
    SWITCHES_CHANGED = "campaign.switches_changed", "活动开关变化"


class Event(models.Model):
    id = models.BigAutoField("事件 ID", primary_key=True)
    type = models.CharField("类型", max_length=48, choices=EventType.choices)
    campaign_id = models.BigIntegerField("活动 ID", default=0)
    data = models.JSONField("内容")
    created_at = models.DateTimeField("发生时间", default=timezone.now)
    # Given by the delivery worker to committed rows only, in the order it sees them: ids are drawn at insert
    # time, so a transaction that started earlier can commit a smaller id after a larger one was delivered.
    seq = models.BigIntegerField("投递顺序号", null=True, blank=True)

    class Meta:
        verbose_name = "业务事件"
        verbose_name_plural = "业务事件（事件流）"
        # The insert on the hot path touches two indexes only (the primary key and the small "not yet numbered"
        # one): the seq indexes are partial, so their entries are written by the sequencer, off the hot path.
        indexes = [
            models.Index(fields=["campaign_id", "seq"], name="event_campaign_seq", condition=Q(seq__isnull=False)),
            models.Index(fields=["id"], name="event_unsequenced", condition=Q(seq__isnull=True)),
        ]
        constraints = [
            models.UniqueConstraint(fields=["seq"], name="event_seq_unique", condition=Q(seq__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.get_type_display()} #{self.pk}"


def _new_secret() -> str:
    return secrets.token_hex(24)


class Endpoint(models.Model):
    name = models.CharField("名称", max_length=100)
    url = models.URLField("推送地址", max_length=500)
    secret = models.CharField("签名密钥", max_length=128, default=_new_secret,
                              help_text="接收方用它校验 X-Miandan-Signature（HMAC-SHA256），见 docs/events.md")
    # Lists in JSON (not ArrayField): the demo runs on SQLite too.
    event_types = models.JSONField("事件类型", default=list, blank=True, help_text="留空表示全部类型")
    campaign_ids = models.JSONField("活动 ID", default=list, blank=True, help_text="留空表示全部活动")
    active = models.BooleanField("启用", default=True)
    # Events with a seq at or below this were in the stream before the endpoint existed: not pushed
    # (use the JSON Lines export, or rewind, for history).
    start_seq = models.BigIntegerField("起始顺序号", default=0)
    created_at = models.DateTimeField("创建时间", auto_now_add=True)

    class Meta:
        verbose_name = "推送地址"
        verbose_name_plural = "推送地址（Webhook）"

    def __str__(self) -> str:
        return self.name

    def wants_campaign(self, campaign_id: int) -> bool:
        return not self.campaign_ids or campaign_id in {int(c) for c in self.campaign_ids}

    def wants_type(self, event_type: str) -> bool:
        return not self.event_types or event_type in set(self.event_types)


class Cursor(models.Model):
    """How far one endpoint got in one campaign's events. Only moves forward after a recorded outcome."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="cursors", verbose_name="推送地址")
    campaign_id = models.BigIntegerField("活动 ID")
    last_seq = models.BigIntegerField("已完成顺序号", default=0)
    attempts = models.PositiveIntegerField("当前事件已尝试次数", default=0)
    first_failed_at = models.DateTimeField("当前事件首次失败时间", null=True, blank=True)
    next_attempt_at = models.DateTimeField("下次尝试时间", default=timezone.now)
    # A worker owns the cursor until then; a worker killed mid-batch simply lets the lease run out.
    leased_until = models.DateTimeField("占用至", null=True, blank=True)

    class Meta:
        verbose_name = "投递进度"
        verbose_name_plural = "投递进度"
        constraints = [models.UniqueConstraint(fields=["endpoint", "campaign_id"], name="cursor_one_per_campaign")]
        indexes = [models.Index(fields=["next_attempt_at"], name="cursor_due")]

    def __str__(self) -> str:
        return f"{self.endpoint} / 活动 {self.campaign_id}"


class Delivery(models.Model):
    class Outcome(models.TextChoices):
        DELIVERED = "delivered", "成功"
        FAILED = "failed", "失败（将重试）"
        DEAD = "dead", "死信（已放弃）"
        REPLAYED = "replayed", "人工重放成功"
        REPLAY_FAILED = "replay_failed", "人工重放失败"

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries", verbose_name="推送地址")
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="deliveries", verbose_name="事件")
    attempt = models.PositiveIntegerField("第几次")
    outcome = models.CharField("结果", max_length=16, choices=Outcome.choices)
    status_code = models.PositiveIntegerField("HTTP 状态码", null=True, blank=True)
    latency_ms = models.PositiveIntegerField("耗时（毫秒）", default=0)
    error = models.CharField("错误", max_length=500, blank=True, default="")
    created_at = models.DateTimeField("时间", default=timezone.now, db_index=True)
    replayed_at = models.DateTimeField("已重放", null=True, blank=True)

    class Meta:
        verbose_name = "投递记录"
        verbose_name_plural = "投递记录"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["endpoint", "event"], name="delivery_endpoint_event"),
            models.Index(fields=["id"], name="delivery_dead", condition=Q(outcome="dead")),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} ← #{self.event_id}（{self.get_outcome_display()}）"


class DeadLetterManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(outcome=Delivery.Outcome.DEAD)


class DeadLetter(Delivery):
    """The dead-letter view in admin: deliveries given up after the retry window (same table)."""

    objects = DeadLetterManager()

    class Meta:
        proxy = True
        verbose_name = "死信"
        verbose_name_plural = "死信（投递失败已放弃）"
        default_permissions = ("view", "change")
