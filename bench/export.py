"""Export benchmark (issue 8): 1,000,000 ledger rows to CSV and to XLSX — time and peak memory.

    .venv/bin/python bench/export.py                    # 1,000,000 rows, CSV then XLSX (minutes on 2 cores)
    .venv/bin/python bench/export.py --rows 20000       # smoke run: checks the harness only
    nice -n 19 .venv/bin/python bench/export.py --json /tmp/export.json

Steps:
1. (Re)create the PostgreSQL database `miandan_bench_export` (BENCH_EXPORT_DATABASE_URL), migrate it,
   create one campaign through `campaign_create` (64 buckets).
2. Insert N ledger rows with one `INSERT ... SELECT generate_series` (reserve/spend/release rows spread
   over the buckets and over 10 days) — the ledger is append-only, inserts are what it allows.
3. For each format, a fresh child process runs the real background-export code path
   (`reports.services.export_job_request` -> Celery task, eager here -> `export_job_run`: rows streamed
   with `.iterator(chunk_size=5000)`, progress written to the ExportJob row every 10,000 rows) and reports
   wall time, rows/s, file size and `resource.getrusage(RUSAGE_SELF).ru_maxrss` before and after.
   A separate process per format, so one export's peak cannot hide the other's.
4. Also times the finance report endpoint's work (`budget_report` + CSV/XLSX writers, group_by=day) over
   the same ledger.

Redis is not used (REDIS_URL unset: local-memory cache, Celery eager). The numbers go into BENCHMARKS.md
("Finance exports"); rerun on a quiet machine for the real figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = os.environ.get("BENCH_EXPORT_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/miandan_bench_export")
SLUG = "bench-export"


def child_env(database_url: str, media_root: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "CELERY_BROKER_URL"}}
    env.update({
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "miandan.settings",
        "MIANDAN_EXPORT_ROOT": media_root,
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "LOG_LEVEL": "WARNING",
        "DJANGO_DEBUG": "0",
        "PYTHONPATH": str(ROOT),
    })
    return env


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- phases that run inside a child process with Django set up ------------------------------

def _setup_django() -> None:
    import django

    django.setup()


def phase_prepare(rows: int) -> dict:
    _setup_django()
    import datetime as dt
    from decimal import Decimal

    from django.db import connection
    from django.utils import timezone

    from campaign.models import Campaign, LedgerEntry
    from campaign.services import CampaignSpec, campaign_create

    campaign = Campaign.objects.filter(slug=SLUG).first()
    if campaign is None:
        now = timezone.now()
        campaign = campaign_create(spec=CampaignSpec(
            slug=SLUG, name="导出基准活动", total_budget=Decimal("3000000000.00"), starts_at=now - dt.timedelta(days=10),
            ends_at=now + dt.timedelta(days=30), status=Campaign.Status.LIVE, bucket_count=64,
        ))
    bucket_ids = list(campaign.buckets.order_by("index").values_list("pk", flat=True))
    table = LedgerEntry._meta.db_table
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # Rows cycle reserve -> spend -> release, over the buckets, spread over the last 10 days.
        cursor.execute(
            f"""
            INSERT INTO {table} (campaign_id, bucket_id, kind, amount, voucher_id, order_id, actor_id, reason, created_at)
            SELECT %s,
                   (%s::bigint[])[1 + (g %% %s)],
                   (ARRAY['reserve','spend','release'])[1 + (g %% 3)],
                   CASE g %% 3 WHEN 0 THEN 25.00 WHEN 1 THEN 18.00 + (g %% 7) ELSE 7.00 - (g %% 7) + 0.50 END,
                   g / 3 + 1,
                   CASE WHEN g %% 3 = 0 THEN NULL ELSE g / 3 + 1 END,
                   NULL,
                   CASE g %% 3 WHEN 0 THEN '发卡：新人卡' WHEN 1 THEN '订单完成：补贴' ELSE '订单完成：面额未用完部分退回' END,
                   now() - (interval '10 days') * (1 - g::float8 / %s)
            FROM generate_series(0, %s - 1) AS g
            """,
            [campaign.pk, bucket_ids, len(bucket_ids), rows, rows],
        )
        cursor.execute(f"ANALYZE {table}")
    return {"inserted": rows, "insert_seconds": round(time.perf_counter() - started, 2),
            "ledger_rows": LedgerEntry.objects.filter(campaign=campaign).count()}


def phase_export(fmt: str) -> dict:
    _setup_django()
    from campaign.models import Campaign
    from reports.models import ExportJob
    from reports.services import export_job_request, export_path

    campaign = Campaign.objects.get(slug=SLUG)
    rss_before = maxrss_mb()
    started = time.perf_counter()
    job = export_job_request(campaign=campaign, kind=ExportJob.Kind.LEDGER, fmt=fmt, actor=None)  # eager: runs here
    seconds = time.perf_counter() - started
    job.refresh_from_db()
    if job.status != ExportJob.Status.DONE:
        raise SystemExit(f"export failed: {job.status} {job.error}")
    size = export_path(job).stat().st_size
    return {
        "format": fmt, "rows": job.rows_done, "seconds": round(seconds, 2), "rows_per_s": round(job.rows_done / seconds),
        "file_mb": round(size / 1e6, 1), "maxrss_before_mb": round(rss_before, 1), "maxrss_peak_mb": round(maxrss_mb(), 1),
    }


def phase_report(fmt: str) -> dict:
    _setup_django()
    import tempfile

    from campaign.models import Campaign
    from reports.exports import budget_report_csv, budget_report_xlsx
    from reports.selectors import budget_report

    campaign = Campaign.objects.get(slug=SLUG)
    rss_before = maxrss_mb()
    started = time.perf_counter()
    report = budget_report(campaign=campaign, group_by="day")
    with tempfile.TemporaryFile() as fh:
        if fmt == "csv":
            for chunk in budget_report_csv(report):
                fh.write(chunk.encode())
        else:
            budget_report_xlsx(report, fh)
    return {"format": f"report-{fmt}", "seconds": round(time.perf_counter() - started, 2),
            "maxrss_before_mb": round(rss_before, 1), "maxrss_peak_mb": round(maxrss_mb(), 1)}


# --- the parent --------------------------------------------------------------------------------

def run_child(args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        raise SystemExit(f"child {args} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def reset_database(database_url: str, env: dict[str, str]) -> None:
    import psycopg

    parsed = urlparse(database_url)
    name = parsed.path.lstrip("/")
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--media-root", default="/tmp/miandan-bench-export-media")
    parser.add_argument("--formats", default="csv,xlsx")
    parser.add_argument("--keep", action="store_true", help="reuse the existing bench database (skip reset+insert)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--arg", help=argparse.SUPPRESS)
    opts = parser.parse_args()

    if opts.phase:  # child
        result = {"prepare": lambda: phase_prepare(int(opts.arg)), "export": lambda: phase_export(opts.arg),
                  "report": lambda: phase_report(opts.arg)}[opts.phase]()
        print(json.dumps(result))
        return 0

    env = child_env(opts.database_url, opts.media_root)
    results: dict = {"rows": opts.rows, "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    if not opts.keep:
        t = time.perf_counter()
        reset_database(opts.database_url, env)
        results["migrate_seconds"] = round(time.perf_counter() - t, 1)
        results["prepare"] = run_child(["--phase", "prepare", "--arg", str(opts.rows)], env)
        print(f"prepared: {results['prepare']}", flush=True)
    results["exports"] = []
    for fmt in opts.formats.split(","):
        res = run_child(["--phase", "export", "--arg", fmt], env)
        results["exports"].append(res)
        print(f"ledger export {fmt}: {res}", flush=True)
    for fmt in opts.formats.split(","):
        res = run_child(["--phase", "report", "--arg", fmt], env)
        results["exports"].append(res)
        print(f"budget report {fmt} (group_by=day): {res}", flush=True)

    print()
    print("| export | rows | seconds | rows/s | file MB | peak RSS MB (before export) |")
    print("|---|---|---|---|---|---|")
    for r in results["exports"]:
        print(f"| {r['format']} | {r.get('rows', '-')} | {r['seconds']} | {r.get('rows_per_s', '-')} | "
              f"{r.get('file_mb', '-')} | {r['maxrss_peak_mb']} ({r['maxrss_before_mb']}) |")
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
