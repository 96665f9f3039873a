"""The first requests of a threaded web process all find their task (found by the campaign page's tests: an
order left in `placed` with "no task registered as 'orders.advance'"). Celery's lazy autodiscovery has a guard
that makes a second, concurrent discovery return at once with nothing imported; `miandan.tasks` serialises it.

A fresh interpreter per run, because discovery happens once per process."""

import subprocess
import sys

from tests.servers import ROOT

SCRIPT = """
import os, threading, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "miandan.settings"
import django; django.setup()
from miandan.tasks import _registered
barrier = threading.Barrier(16)
found = []
def go():
    barrier.wait()
    found.append(_registered("orders.advance") is not None)
threads = [threading.Thread(target=go) for _ in range(16)]
[t.start() for t in threads]; [t.join() for t in threads]
print(sum(found))
"""


def test_sixteen_threads_enqueueing_first_all_find_the_task():
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "16"
