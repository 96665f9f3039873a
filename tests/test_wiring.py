"""How the lower floors are wired to the apps above them without importing them (issue: the honest picture).

The counter, the switch lookup, the task sender and the settings each have one home; these tests
fail if the wiring falls back to the old side doors (post_save, hidden defaults, imported tasks).
"""

from __future__ import annotations

import pytest
from django.db import connection

from campaign.gate import PAUSED_RETRY_AFTER, PAUSED_TEXT
from campaign.services import CampaignSpec, campaign_create, campaign_set_switches
from miandan.api.metrics import CARDS_ISSUED
from miandan.tasks import enqueue
from tests.factories import UserFactory
from vouchers.services import campaign_join

pytestmark = pytest.mark.django_db


def _issued(source: str) -> float:
    return CARDS_ISSUED.labels(source)._value.get()


def test_cards_issued_metric_counts_cards_of_the_raw_sql_hot_path(campaign, django_capture_on_commit_callbacks):
    assert connection.vendor == "postgresql"  # the hot path is one raw statement there: no post_save fires
    before = _issued("welcome")
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):
            card, created = campaign_join(user=UserFactory(), campaign=campaign, app_version="1.0.0")
            assert created and card.pk
    assert _issued("welcome") == before + 3


def test_cards_issued_metric_ignores_a_rolled_back_issue(campaign, django_capture_on_commit_callbacks):
    before = _issued("welcome")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        campaign_join(user=UserFactory(), campaign=campaign, app_version="1.0.0")
    assert callbacks and _issued("welcome") == before  # only counted once the transaction commits


def test_redis_timeouts_reach_the_fast_path_client(settings):
    from miandan import redis as md_redis

    settings.REDIS_CONNECT_TIMEOUT = 0.123
    settings.REDIS_SOCKET_TIMEOUT = 0.456
    client = md_redis.get_redis()
    assert client is not None
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (0.123, 0.456)


def test_budget_buckets_setting_decides_new_campaigns(settings):
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    settings.MIANDAN_BUDGET_BUCKETS = 7
    now = timezone.now()
    campaign = campaign_create(spec=CampaignSpec(slug="seven", name="七桶", total_budget=Decimal("700.00"),
                                                 starts_at=now, ends_at=now + dt.timedelta(days=1)))
    assert campaign.bucket_count == 7 and campaign.buckets.count() == 7


def test_ratelimit_check_names_unknown_limits(settings):
    from django.core import checks

    settings.MIANDAN_RATELIMITS = {"join_usr": "10/m", "join_ip": "off"}
    errors = [m for m in checks.run_checks(tags=["miandan"]) if m.id == "miandan.E001"]
    assert len(errors) == 1 and "join_usr" in errors[0].msg


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("feature, path_fmt, body", [
    ("claims", "/api/v1/campaigns/{slug}/join", {"app_version": "1.0.0"}),
    ("referrals", "/api/v1/campaigns/{slug}/referrals", {"code": "ABCDEFGH"}),
    ("orders", "/api/v1/orders/chat", {"text": "帮我点一杯奶茶", "lat": 30.27, "lng": 120.15, "campaign": "{slug}"}),
])
def test_guard_and_services_pause_with_the_same_words(auth_client, campaign, feature, path_fmt, body):
    """One gate: the guard's 503 and the service's 503 are the same answer (text and Retry-After)."""
    from campaign.selectors import campaign_cache_clear
    from miandan.api.errors import Paused
    from referrals.services import invite_code_get_or_create
    from vouchers.services import campaign_join as join

    campaign_set_switches(campaign=campaign, actor=None, **{f"{feature}_enabled": False})
    campaign_cache_clear()
    body = {k: (v.format(slug=campaign.slug) if isinstance(v, str) else v) for k, v in body.items()}
    response = auth_client.post(path_fmt.format(slug=campaign.slug), body, format="json")
    assert response.status_code == 503
    assert response.json() == {"code": "paused", "detail": PAUSED_TEXT[feature], "retry_after": PAUSED_RETRY_AFTER}
    assert response["Retry-After"] == str(PAUSED_RETRY_AFTER)
    campaign.refresh_from_db()
    service = {"claims": lambda: join(user=auth_client.user, campaign=campaign, app_version="1.0.0"),
               "referrals": lambda: invite_code_get_or_create(user=auth_client.user, campaign=campaign)}
    if feature in service:
        with pytest.raises(Paused) as raised:
            service[feature]()
        assert raised.value.body() == response.json()


def test_enqueue_by_name_runs_inline_in_eager_mode(campaign):
    from miandan.celery import app
    from reports.models import ExportJob

    job = ExportJob.objects.create(campaign=campaign, kind="budget", format="csv", group_by="day")
    old, app.conf.task_always_eager = app.conf.task_always_eager, True  # the demo: no broker
    try:
        assert enqueue("reports.export_job_run", job.pk) is True
    finally:
        app.conf.task_always_eager = old
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE


def test_enqueue_reports_a_refusing_broker_instead_of_raising():
    """A process whose broker refuses connections: enqueue answers False and logs one line (no exception)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "CELERY_TASK_ALWAYS_EAGER": "0",
           "DJANGO_SETTINGS_MODULE": "miandan.settings"}
    code = ("import django; django.setup(); from miandan.celery import app; "
            "app.conf.broker_connection_max_retries = 0; "
            "from miandan.tasks import enqueue; print('sent' if enqueue('orders.sweep') else 'refused')")
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "refused"
    assert "could not enqueue orders.sweep" in result.stderr


@pytest.mark.parametrize(("worker", "prefix", "queue", "want_prefix", "want_queue"), [
    ("", "mdt", "mdq", "mdt", "mdq"),                                    # not under pytest-xdist: as given
    ("gw1", "mdt", "mdq", "mdt-gw1", "mdq-gw1"),                         # a worker: its own keys and queue
    ("gw1", "mdt-gw1-ff-12ab", "mdq-gw1-ff-12ab", "mdt-gw1-ff-12ab", "mdq-gw1-ff-12ab"),  # passed down: kept
    ("gw1", "mdt-gw10", "mdq-gw10", "mdt-gw10-gw1", "mdq-gw10-gw1"),     # gw10 is not gw1
], ids=["serial", "worker", "passed-down", "other-worker"])
@pytest.mark.django_db(False)
def test_each_xdist_worker_gets_its_own_redis_prefix_and_queue(worker, prefix, queue, want_prefix, want_queue):
    """A server or Celery worker a test starts inherits PYTEST_XDIST_WORKER and must land on its test's names."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTEST_XDIST_WORKER": worker, "REDIS_KEY_PREFIX": prefix, "CELERY_DEFAULT_QUEUE": queue,
           "DJANGO_SETTINGS_MODULE": "miandan.settings", "REDIS_URL": "redis://127.0.0.1:6379/15"}
    probe = ("from django.conf import settings; "
             "print(settings.REDIS_KEY_PREFIX, settings.CELERY_TASK_DEFAULT_QUEUE, settings.CACHES['default'].get('KEY_PREFIX'))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=root, capture_output=True, text=True, timeout=60,
                         check=True)
    got_prefix, got_queue, cache_prefix = out.stdout.split()[-3:]
    assert (got_prefix, got_queue) == (want_prefix, want_queue)
    assert cache_prefix == want_prefix  # the Django caches share the keys' namespace
