"""A large export runs as a Celery job on a real worker; admin shows its progress and serves the file."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from campaign.models import LedgerEntry
from reports.models import ExportJob
from tests.celery_worker import celery_worker  # noqa: F401  (fixture)
from tests.factories import CampaignFactory, StaffFactory, VoucherFactory

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def _wait_done(job_id: int, timeout: float = 60.0) -> ExportJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ExportJob.objects.get(pk=job_id)
        if job.status in (ExportJob.Status.DONE, ExportJob.Status.FAILED):
            return job
        time.sleep(0.2)
    raise AssertionError(f"export job {job_id} still {job.status}")


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_ledger_export_runs_on_a_worker_and_downloads(client, celery_worker, settings, tmp_path, fmt):  # noqa: F811
    settings.MIANDAN_EXPORT_ROOT = tmp_path
    campaign = CampaignFactory(bucket_count=4)
    for _ in range(5):
        VoucherFactory(campaign=campaign)
    finance = StaffFactory(groups=["finance"])
    celery_worker.start(MIANDAN_EXPORT_ROOT=str(tmp_path))
    client.force_login(finance)
    response = client.post(reverse("admin:campaign_campaign_export", args=[campaign.pk]), {"kind": "ledger", "format": fmt})
    assert response.status_code == 302
    job = _wait_done(ExportJob.objects.get().pk)
    assert job.status == ExportJob.Status.DONE, (job.error, celery_worker.log()[-3000:])
    assert job.rows_done == job.rows_total == LedgerEntry.objects.filter(campaign=campaign).count()
    assert (tmp_path / job.file).is_file()
    download = client.get(reverse("admin:reports_exportjob_download", args=[job.pk]))
    assert download.status_code == 200
    body = b"".join(download.streaming_content)
    if fmt == "csv":
        assert body.decode("utf-8-sig").count("\n") == job.rows_total + 1
    else:
        import io

        import openpyxl

        ws = openpyxl.load_workbook(io.BytesIO(body), read_only=True)["预算流水"]
        rows = list(ws.iter_rows(values_only=True))
        assert len(rows) == job.rows_total + 1
        assert rows[0][:7] == ("流水号", "时间（北京时间）", "类型", "金额（元）", "预算桶", "卡号", "持卡人")
