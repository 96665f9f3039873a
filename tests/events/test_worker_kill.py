"""The delivery worker SIGKILLed mid-batch (a real `manage.py deliver_events` process) loses nothing."""

import os
import signal
import subprocess
import sys
import time

import pytest

from events.models import Endpoint, Event
from events.services import events_deliver
from tests.celery_worker import ROOT, _database_url
from tests.events.receiver import Receiver
from tests.factories import CampaignFactory, UserFactory, VoucherFactory

SECRET = "kill-test-secret"


def _worker_env() -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    env.update({"DATABASE_URL": _database_url(), "CONN_MAX_AGE": "0", "DJANGO_SETTINGS_MODULE": "miandan.settings",
                "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "MIANDAN_EVENTS_LEASE_SECONDS": "1",
                "MIANDAN_EVENTS_BACKOFF_BASE_SECONDS": "0.01", "MIANDAN_EVENTS_BACKOFF_MAX_SECONDS": "0.05"})
    env.pop("MIANDAN_TEST_DB_NAME", None)
    return env


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_loses_nothing(settings):
    settings.MIANDAN_EVENTS_LEASE_SECONDS = 1
    campaign = CampaignFactory()
    users = [UserFactory() for _ in range(4)]
    for i in range(40):
        VoucherFactory(campaign=campaign, user=users[i % 4])
    expected = list(Event.objects.filter(campaign_id=campaign.pk).order_by("id").values_list("pk", flat=True))
    # Slow answers: the kill lands while a batch is in flight.
    with Receiver(secret=SECRET, delay=0.03) as receiver:
        Endpoint.objects.create(name="kill", url=receiver.url, secret=SECRET)
        proc = subprocess.Popen([sys.executable, "manage.py", "deliver_events", "--batch", "100", "--interval", "0.1"],
                                cwd=ROOT, env=_worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while len(receiver.accepted) < 12:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the worker delivered nothing"
                time.sleep(0.01)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        killed_at = len(receiver.accepted)
        assert killed_at < len(expected), "the worker finished before it was killed: no mid-batch kill"
        # Another worker takes over once the dead one's lease ran out.
        time.sleep(1.1)
        deadline = time.monotonic() + 30
        while len(receiver.unique()) < len(expected) and time.monotonic() < deadline:
            events_deliver()
    unique = [d["id"] for d in receiver.unique()]
    assert unique == expected  # nothing lost, in order
    assert len(receiver.accepted) - len(unique) <= 1  # at most the one in flight at the kill came twice
