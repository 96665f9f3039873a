"""`manage.py simulate` on a small population ends with a clean invariant report."""

import io
import json

import pytest
from django.core.management import call_command

from tests.factories import CampaignFactory
from vouchers.models import Voucher


@pytest.mark.django_db(transaction=True)
def test_simulate_small_population_clean_report(settings):
    settings.MIANDAN_SMS_BACKEND = "fixed"
    settings.MIANDAN_FIXED_OTP = "246810"
    campaign = CampaignFactory(slug="sim-tea")
    out = io.StringIO()
    call_command("simulate", users=8, orders=0, concurrency=3, campaign="sim-tea", json=True, stdout=out)
    report = json.loads(out.getvalue())
    assert report["ok"] is True, report
    assert all(check["ok"] for check in report["checks"].values())
    assert report["run"]["logged_in"] == 8
    assert report["run"]["joined"] == 8
    assert report["codes"]["join:201"] == 8
    referral_answers = sum(n for key, n in report["codes"].items() if key.startswith("referral:"))
    # Every attempt got exactly one final answer; a shed or rate-limited answer that was retried is counted apart.
    assert referral_answers - report["retries"].get("referral", 0) == report["run"]["referral_attempts"]
    assert report["checks"]["cards_per_user_within_cap"]["users_over_cap"] == 0
    assert report["checks"]["reconcile"]["ok"] is True
    assert report["checks"]["no_server_errors"]["5xx_other_than_503"] == 0
    welcome = Voucher.objects.filter(campaign=campaign, source=Voucher.Source.WELCOME).count()
    assert welcome == 8
    # Referral cards (if the invitee was accepted) are counted against the same budget and reconcile.
    assert Voucher.objects.filter(campaign=campaign).count() >= welcome


@pytest.mark.django_db(transaction=True)
def test_simulate_fails_loudly_on_unknown_campaign():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not found"):
        call_command("simulate", users=1, orders=0, campaign="nope", json=True, stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
@pytest.mark.celery_worker
def test_simulate_day_with_chat_orders_fulfilled_by_a_real_worker(settings, tmp_path):
    """Login, join, invites and chat orders; a real Celery worker sends them to the simulated merchant, whose
    signed callbacks complete them; the report is clean and describes the fulfilment."""
    from demo.catalog import catalog_load
    from orders import parser
    from orders.models import Order
    from tests.fulfilment import Stack

    settings.MIANDAN_SMS_BACKEND = "fixed"
    settings.MIANDAN_FIXED_OTP = "246810"
    catalog_load(stores_per_city=0)
    parser.catalogue_changed()
    stack = Stack(tmp_path, settings).start()
    try:
        campaign = CampaignFactory(slug="sim-day")
        out = io.StringIO()
        call_command("simulate", users=6, orders=10, concurrency=3, campaign="sim-day", wait=90, json=True,
                     stdout=out)
    finally:
        stack.close()
    report = json.loads(out.getvalue())
    assert report["ok"] is True, report
    assert report["run"]["orders_placed"] == 10
    assert report["checks"]["orders_final"]["orders"] == 10  # the run's orders, found by its phone prefix
    assert report["checks"]["orders_final"]["not_final"] == 0
    assert report["checks"]["no_card_redeemed_twice"]["ok"] is True
    assert Order.objects.filter(status__in=Order.FINAL).count() == 10
    # Every card that paid for an order was redeemed exactly once, and the money adds up.
    assert report["checks"]["reconcile"]["ok"] is True
    assert campaign.vouchers.filter(status="redeemed").count() == Order.objects.filter(
        status="completed", voucher__isnull=False).count()
    parser.catalogue_changed()


@pytest.mark.django_db(transaction=True)
def test_simulate_against_a_running_server_over_http(settings, tmp_path):
    """--url mode: real HTTP to a separate server process on the test database."""
    import os

    from django.db import connections

    from tests.celery_worker import _database_url
    from tests.servers import runserver

    CampaignFactory(slug="sim-http")
    env = {**os.environ, "DATABASE_URL": _database_url(), "CONN_MAX_AGE": "0", "MIANDAN_SMS_BACKEND": "fixed",
           "MIANDAN_FIXED_OTP": "135790", "MIANDAN_PROXY_COUNT": "1", "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
           "LOG_LEVEL": "ERROR"}
    env.pop("MIANDAN_TEST_DB_NAME", None)
    connections.close_all()
    with runserver(env, tmp_path / "server.log") as url:
        out = io.StringIO()
        call_command("simulate", users=5, orders=0, concurrency=2, campaign="sim-http", url=url,
                     otp="135790", json=True, stdout=out)
        report = json.loads(out.getvalue())
        assert report["ok"] is True, (report, (tmp_path / "server.log").read_text()[-2000:])
        assert report["run"]["mode"] == url
        assert report["codes"]["join:201"] == 5
        assert Voucher.objects.filter(campaign__slug="sim-http", source=Voucher.Source.WELCOME).count() == 5


@pytest.mark.django_db(transaction=True)
def test_simulate_exits_non_zero_when_an_invariant_fails(settings):
    """A ledger that no longer adds up (an adjust row without its bucket change) fails the report."""
    from django.core.management.base import CommandError

    from tests.factories import LedgerEntryFactory

    settings.MIANDAN_SMS_BACKEND = "fixed"
    settings.MIANDAN_FIXED_OTP = "246810"
    campaign = CampaignFactory(slug="sim-broken")
    LedgerEntryFactory(campaign=campaign)
    out = io.StringIO()
    with pytest.raises(CommandError, match="reconcile"):
        call_command("simulate", users=2, orders=0, concurrency=1, campaign="sim-broken", stdout=out, quiet=True)
    text = out.getvalue()
    assert "[FAIL] reconcile" in text
    assert "RESULT: FAIL" in text
