"""Writes of the reports app: background export jobs (no money moves here)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from campaign.models import Campaign
from campaign.selectors import pace_overviews
from miandan.api.errors import InvalidInput
from miandan.api.metrics import PACE_ALERTS
from miandan.tasks import enqueue_on_commit

from .exports import budget_report_csv, budget_report_xlsx, ledger_csv, ledger_csv_copy, ledger_xlsx
from .models import ExportJob, LedgerRollup
from .selectors import GROUP_BY, budget_report, ledger_copy_sql, ledger_export_queryset, ledger_rows

logger = logging.getLogger(__name__)


@transaction.atomic(durable=True)
def export_job_request(*, campaign: Campaign, kind: str, fmt: str, actor, group_by: str = "day") -> ExportJob:
    """Queue an export; the Celery task is sent only after the row is committed."""
    if kind not in ExportJob.Kind.values or fmt not in ExportJob.Format.values or group_by not in GROUP_BY:
        raise InvalidInput("导出参数有误")
    job = ExportJob.objects.create(campaign=campaign, kind=kind, format=fmt, group_by=group_by,
                                   requested_by=actor if getattr(actor, "pk", None) else None)
    enqueue_on_commit("reports.export_job_run", job.pk)
    return job


def export_root() -> Path:
    return Path(settings.MIANDAN_EXPORT_ROOT).resolve()


def export_path(job: ExportJob) -> Path | None:
    """The job's file under MIANDAN_EXPORT_ROOT, or None (no file, or a stored name pointing elsewhere)."""
    if not job.file:
        return None
    root = export_root()
    path = (root / job.file).resolve()
    return path if path.is_relative_to(root) and path != root else None


def export_job_run(*, job_id: int) -> ExportJob | None:
    """Write the export file, updating progress as rows go out. Safe to run again after a crash.

    No surrounding transaction: progress must be visible to the admin while the export runs,
    and a million-row export must not hold one transaction open. A pending or interrupted
    (running) job is (re)started from scratch; a finished one is left alone.
    """
    claimed = ExportJob.objects.filter(pk=job_id, status__in=[ExportJob.Status.PENDING, ExportJob.Status.RUNNING]).update(
        status=ExportJob.Status.RUNNING, started_at=timezone.now(), rows_done=0, error=""
    )
    if claimed != 1:
        return ExportJob.objects.filter(pk=job_id).first()
    job = ExportJob.objects.select_related("campaign").get(pk=job_id)
    # A random name under a folder no web server serves: the permission-checked admin view is the only way in,
    # and a guessed or leaked URL of another deployment's layout leads nowhere.
    rel = Path(job.campaign.slug) / f"{job.kind}-{job.pk}-{secrets.token_hex(16)}.{job.format}"
    final = export_root() / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    # Per-process partial name: a redelivered task racing a still-running first attempt never shares a file.
    partial = final.with_name(f"{final.name}.{os.getpid()}.part")
    try:
        if job.kind == ExportJob.Kind.LEDGER:
            upto = ledger_export_queryset(campaign=job.campaign).aggregate(m=Max("pk"))["m"] or 0
            total = ledger_export_queryset(campaign=job.campaign, upto_id=upto).count()
            ExportJob.objects.filter(pk=job.pk).update(rows_total=total)

            def progress(n: int) -> None:
                ExportJob.objects.filter(pk=job.pk).update(rows_done=n)

            rows = ledger_rows(campaign=job.campaign, upto_id=upto)
            if job.format == ExportJob.Format.CSV and connection.vendor == "postgresql":
                with open(partial, "w", encoding="utf-8", newline="") as fh:
                    ledger_csv_copy(ledger_copy_sql(campaign=job.campaign, upto_id=upto), fh, progress)
            elif job.format == ExportJob.Format.CSV:
                with open(partial, "w", encoding="utf-8", newline="") as fh:
                    ledger_csv(rows, fh, progress)
            else:
                with open(partial, "wb") as fh:
                    ledger_xlsx(rows, fh, progress)
        else:
            report = budget_report(campaign=job.campaign, group_by=job.group_by or "day")
            if job.format == ExportJob.Format.CSV:
                with open(partial, "w", encoding="utf-8", newline="") as fh:
                    for chunk in budget_report_csv(report):
                        fh.write(chunk)
            else:
                with open(partial, "wb") as fh:
                    budget_report_xlsx(report, fh)
            ExportJob.objects.filter(pk=job.pk).update(rows_total=1, rows_done=1)
        os.replace(partial, final)  # atomic: a download never sees half a file
    except Exception as exc:
        partial.unlink(missing_ok=True)
        ExportJob.objects.filter(pk=job.pk).update(status=ExportJob.Status.FAILED, error=str(exc)[:255],
                                                   finished_at=timezone.now())
        raise
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.DONE, file=str(rel), file_size=final.stat().st_size, finished_at=timezone.now(),
        rows_done=F("rows_total"),
    )
    job.refresh_from_db()
    return job


def export_cleanup(*, now: dt.datetime | None = None) -> int:
    """Delete export files older than MIANDAN_EXPORT_RETENTION_HOURS (and stale partial files); returns the count.

    The job row stays (who exported what, when) with its file name cleared, so its download is gone too.
    """
    now = now or timezone.now()
    cutoff = now - dt.timedelta(hours=settings.MIANDAN_EXPORT_RETENTION_HOURS)
    removed = 0
    for job in ExportJob.objects.filter(status=ExportJob.Status.DONE, finished_at__lt=cutoff).exclude(file=""):
        path = export_path(job)
        if path is not None:
            path.unlink(missing_ok=True)
        ExportJob.objects.filter(pk=job.pk).update(file="", error="文件已按保留期删除")
        removed += 1
    root = export_root()
    if root.is_dir():
        for part in root.rglob("*.part"):
            if dt.datetime.fromtimestamp(part.stat().st_mtime, tz=dt.UTC) < cutoff:
                part.unlink(missing_ok=True)
                removed += 1
    if removed:
        logger.info("export cleanup: removed %d file(s) older than %d h", removed, settings.MIANDAN_EXPORT_RETENTION_HOURS)
    return removed


# --- the ledger rollup (dashboard burn line, report days) -------------------------------

_ROLLUP_SQL = """
INSERT INTO reports_ledgerminute (campaign_id, minute, reserve, spend, release, adjust, entries)
SELECT campaign_id, date_trunc('minute', created_at),
       COALESCE(SUM(amount) FILTER (WHERE kind = 'reserve'), 0), COALESCE(SUM(amount) FILTER (WHERE kind = 'spend'), 0),
       COALESCE(SUM(amount) FILTER (WHERE kind = 'release'), 0), COALESCE(SUM(amount) FILTER (WHERE kind = 'adjust'), 0),
       COUNT(*)
FROM campaign_ledgerentry
WHERE campaign_id = %s AND id > %s AND id <= %s
GROUP BY campaign_id, date_trunc('minute', created_at)
ON CONFLICT (campaign_id, minute) DO UPDATE SET
    reserve = reports_ledgerminute.reserve + EXCLUDED.reserve, spend = reports_ledgerminute.spend + EXCLUDED.spend,
    release = reports_ledgerminute.release + EXCLUDED.release, adjust = reports_ledgerminute.adjust + EXCLUDED.adjust,
    entries = reports_ledgerminute.entries + EXCLUDED.entries
"""

# A transaction that began before `at` may still commit ledger rows with ids at or below what was seen
# then (ids come from a sequence in allocation order, commits come in any order). Sessions whose activity
# this role may not see (state NULL) count as open: never sum a row that could still appear below the mark.
_OLDER_TRANSACTIONS_OPEN = """
SELECT EXISTS (
    SELECT 1 FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
      AND (xact_start < %s OR state IS NULL)
)
"""


@transaction.atomic(durable=True)
def ledger_rollup_advance(*, campaign: Campaign) -> int:
    """Move the campaign's ledger watermark forward where that is provably safe; returns the watermark.

    Two steps, a call apart: (1) note the largest ledger id visible now and the time just after; (2) once
    no transaction that began before that time is still open, every row up to that id has committed (or
    never will), so their sums go into LedgerMinute and the watermark moves there, in one transaction.
    Exact by construction: the dashboard adds the live rows above the watermark. PostgreSQL only (on
    SQLite the watermark stays 0 and every read is live). Concurrent callers skip instead of queueing.
    """
    if connection.vendor != "postgresql":
        return 0
    LedgerRollup.objects.bulk_create([LedgerRollup(campaign=campaign)], ignore_conflicts=True)
    state = LedgerRollup.objects.select_for_update(skip_locked=True).filter(campaign=campaign).first()
    if state is None:
        return LedgerRollup.objects.get(campaign=campaign).upto_id  # another caller is advancing it
    with connection.cursor() as cur:
        if state.candidate_id > state.upto_id and state.candidate_at is not None:
            cur.execute(_OLDER_TRANSACTIONS_OPEN, [state.candidate_at])
            if not cur.fetchone()[0]:
                cur.execute(_ROLLUP_SQL, [campaign.pk, state.upto_id, state.candidate_id])
                state.upto_id = state.candidate_id
        if state.candidate_id <= state.upto_id:
            cur.execute("SELECT max(id) FROM campaign_ledgerentry WHERE campaign_id = %s", [campaign.pk])
            newest = cur.fetchone()[0] or 0
            cur.execute("SELECT clock_timestamp()")  # after the read: whoever holds a smaller id began before
            state.candidate_id, state.candidate_at = max(newest, state.upto_id), cur.fetchone()[0]
    state.save(update_fields=["upto_id", "candidate_id", "candidate_at"])
    return state.upto_id


logger = logging.getLogger(__name__)


def pace_check(*, now=None) -> list[str]:
    """The spend-ahead-of-plan alert: one WARNING log line and +1 on miandan_budget_pace_alerts_total per
    live campaign whose committed money exceeds its plan by more than its margin. Beat runs it every minute;
    the admin banner and the miandan_budget_pace_alert gauge read the same figures on their own."""
    fired = []
    for campaign, o in pace_overviews(now=now):
        if not o["alert"]:
            continue
        logger.warning(
            "budget ahead of plan: campaign=%s committed=%s planned=%s ahead=%s margin=%s",
            campaign.slug, o["committed"], o["planned"], o["ahead"], o["margin"],
        )
        PACE_ALERTS.labels(campaign.slug).inc()
        fired.append(campaign.slug)
    return fired
