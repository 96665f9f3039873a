"""Background exports: a row per job, its progress, and the finished file under MIANDAN_EXPORT_ROOT."""

from django.conf import settings
from django.db import models

from campaign.models import Campaign


class ExportJob(models.Model):
    class Kind(models.TextChoices):
        LEDGER = "ledger", "完整预算流水"
        BUDGET = "budget", "预算报表"

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        XLSX = "xlsx", "XLSX"

    class Status(models.TextChoices):
        PENDING = "pending", "排队中"
        RUNNING = "running", "导出中"
        DONE = "done", "已完成"
        FAILED = "failed", "失败"

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="export_jobs", verbose_name="活动")
    kind = models.CharField("导出内容", max_length=16, choices=Kind.choices, default=Kind.LEDGER)
    format = models.CharField("格式", max_length=8, choices=Format.choices, default=Format.CSV)
    group_by = models.CharField("分组", max_length=8, blank=True, default="day")
    status = models.CharField("状态", max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    rows_total = models.PositiveBigIntegerField("总行数", default=0)
    rows_done = models.PositiveBigIntegerField("已导出行数", default=0)
    # Relative to MIANDAN_EXPORT_ROOT (a random name); served only through the permission-checked admin view.
    file = models.CharField("文件", max_length=255, blank=True, default="")
    file_size = models.PositiveBigIntegerField("文件大小（字节）", default=0)
    error = models.CharField("错误", max_length=255, blank=True, default="")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name="申请人"
    )
    created_at = models.DateTimeField("申请时间", auto_now_add=True)
    started_at = models.DateTimeField("开始时间", null=True, blank=True)
    finished_at = models.DateTimeField("完成时间", null=True, blank=True)

    class Meta:
        verbose_name = "导出任务"
        verbose_name_plural = "导出任务"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.get_format_display()} #{self.pk}"

    @property
    def percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        if not self.rows_total:
            return 0
        return min(99, int(self.rows_done * 100 / self.rows_total))


class LedgerMinute(models.Model):
    """Ledger sums of one campaign in one minute, for the rows up to the campaign's `LedgerRollup.upto_id`.

    The ledger is append-only, so a row once summed never changes; the dashboard's burn line and the
    report's days read these few thousand rows plus the live rows after the watermark instead of
    aggregating millions of ledger rows on every view. Written only by `reports.services.ledger_rollup_advance`.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="+", verbose_name="活动")
    minute = models.DateTimeField("分钟")
    reserve = models.DecimalField("预留", max_digits=16, decimal_places=2, default=0)
    spend = models.DecimalField("花费", max_digits=16, decimal_places=2, default=0)
    release = models.DecimalField("释放", max_digits=16, decimal_places=2, default=0)
    adjust = models.DecimalField("预算调整", max_digits=16, decimal_places=2, default=0)
    entries = models.PositiveBigIntegerField("流水笔数", default=0)

    class Meta:
        verbose_name = "每分钟流水汇总"
        verbose_name_plural = "每分钟流水汇总"
        constraints = [models.UniqueConstraint(fields=["campaign", "minute"], name="ledger_minute_unique")]

    def __str__(self) -> str:
        return f"{self.campaign_id}@{self.minute:%Y-%m-%d %H:%M}"


class LedgerRollup(models.Model):
    """How far a campaign's ledger is summed into LedgerMinute, and the next step waiting to become safe."""

    campaign = models.OneToOneField(Campaign, on_delete=models.PROTECT, primary_key=True, related_name="+",
                                    verbose_name="活动")
    # Every ledger row of the campaign with id <= upto_id is in LedgerMinute, and no other.
    upto_id = models.BigIntegerField("已汇总至流水号", default=0)
    # The largest id seen at candidate_at; summed once no transaction that began before candidate_at is open.
    candidate_id = models.BigIntegerField("待汇总至流水号", default=0)
    candidate_at = models.DateTimeField("候选时间", null=True, blank=True)

    class Meta:
        verbose_name = "流水汇总进度"
        verbose_name_plural = "流水汇总进度"

    def __str__(self) -> str:
        return f"{self.campaign_id}: {self.upto_id}"
