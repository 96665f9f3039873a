"""The tooling contract commands: create_campaign and reconcile (api.md, "Tooling contract")."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from campaign.models import Campaign, LedgerEntry
from tests.factories import CampaignFactory, VoucherFactory
from vouchers.selectors import reconcile

ROOT = Path(__file__).resolve().parent.parent


def create(*args: str) -> str:
    out = StringIO()
    call_command("create_campaign", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_create_campaign_draft_with_defaults():
    out = create("--slug", "cmd-draft", "--name", "命令行活动", "--budget", "250.00")
    assert out.strip() == "cmd-draft"
    campaign = Campaign.objects.get(slug="cmd-draft")
    assert campaign.status == Campaign.Status.DRAFT
    assert campaign.total_budget == Decimal("250.00")
    assert campaign.face_value == Decimal("25.00") and campaign.card_cap == 21 and campaign.min_app_version == "1.0.0"
    assert campaign.buckets.count() == 64
    assert reconcile(campaign=campaign).ok


@pytest.mark.django_db
def test_create_campaign_live_with_options():
    before = timezone.now()
    out = create("--slug", "cmd-live", "--name", "直播", "--budget", "1000", "--face", "12.50", "--cap", "3",
                 "--min-app-version", "2.1.0", "--live")
    assert out.strip() == "cmd-live"
    campaign = Campaign.objects.get(slug="cmd-live")
    assert campaign.status == Campaign.Status.LIVE
    assert before <= campaign.starts_at <= timezone.now()
    assert abs((campaign.ends_at - campaign.starts_at).total_seconds() - 30 * 86400) < 5
    assert (campaign.face_value, campaign.card_cap, campaign.min_app_version) == (Decimal("12.50"), 3, "2.1.0")
    assert sum(b.allotment for b in campaign.buckets.all()) == Decimal("1000.00")
    assert reconcile(campaign=campaign).ok


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "abc"], "not an amount"),
        (["--budget", "NaN"], "not an amount"),
        (["--budget", "-1.00"], "budget"),
        (["--budget", "1.001"], "budget"),
        (["--budget", "1e20"], "maximum"),
        (["--budget", "250", "--face", "0"], "face"),
        (["--budget", "250", "--face", "-5"], "face"),
        (["--budget", "250", "--cap", "0"], "cap"),
        (["--budget", "250", "--cap", "101"], "cap"),
        (["--budget", "250", "--min-app-version", "latest"], "min_app_version"),
        (["--budget", "250", "--buckets", "0"], "bucket_count"),
    ],
)
def test_create_campaign_rejects_bad_values(args, message):
    with pytest.raises(CommandError, match=message):
        create("--slug", "cmd-bad", "--name", "坏参数", *args)
    assert not Campaign.objects.filter(slug="cmd-bad").exists()


@pytest.mark.django_db
def test_create_campaign_rejects_bad_or_duplicate_slug_and_empty_name():
    CampaignFactory(slug="taken")
    with pytest.raises(CommandError, match="slug"):
        create("--slug", "taken", "--name", "重复", "--budget", "250")
    with pytest.raises(CommandError, match="slug"):
        create("--slug", "has space", "--name", "x", "--budget", "250")
    with pytest.raises(CommandError, match="name"):
        create("--slug", "no-name", "--name", "  ", "--budget", "250")
    assert Campaign.objects.filter(slug="taken").count() == 1


def manage(*args: str) -> subprocess.CompletedProcess:
    """Run manage.py against this test run's database (the rows committed by a transaction=True test)."""
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_create_campaign_exit_codes_in_a_real_process(transactional_db):
    if not settings.USING_POSTGRES:
        pytest.fail("needs PostgreSQL")
    ok = manage("create_campaign", "--slug", "proc-ok", "--name", "进程", "--budget", "250.00", "--live")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "proc-ok"
    bad = manage("create_campaign", "--slug", "proc-bad", "--name", "进程", "--budget", "two hundred")
    assert bad.returncode != 0
    assert "not an amount" in bad.stderr
    dup = manage("create_campaign", "--slug", "proc-ok", "--name", "进程", "--budget", "250.00")
    assert dup.returncode != 0 and "slug" in dup.stderr
    assert Campaign.objects.filter(slug__startswith="proc-").count() == 1


def test_reconcile_exit_codes(transactional_db):
    if not settings.USING_POSTGRES:
        pytest.fail("needs PostgreSQL")
    campaign = CampaignFactory(slug="recon")
    VoucherFactory(campaign=campaign)
    clean = manage("reconcile", "recon")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "PASS" in clean.stdout

    # A ledger row with no card or bucket change behind it: the books no longer add up.
    LedgerEntry.objects.create(campaign=campaign, bucket=campaign.buckets.first(), kind=LedgerEntry.Kind.RESERVE,
                               amount=Decimal("25.00"), reason="injected by test")
    dirty = manage("reconcile", "recon")
    assert dirty.returncode != 0
    assert "FAIL" in dirty.stderr

    missing = manage("reconcile", "no-such-campaign")
    assert missing.returncode != 0
