"""A web or worker process does not carry what only a few requests need (issue 12: worker RSS < 150 MB).

Measured on this box: pypinyin's phrase dictionary ~45 MB, openpyxl ~20 MB, segno ~11 MB, gunicorn's gthread
worker ~13 MB resident. The parser reads single characters only, XLSX and QR codes are made by a few staff and
invite requests, gunicorn's worker class is the web server's own (the guard reads its stamp by name); each is
loaded where it is used. A fresh interpreter stands in for a process just forked by gunicorn or Celery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, os, sys
import django
django.setup()
from miandan.celery import app
app.loader.import_default_modules()          # every task module, as a worker imports them
import orders.parser, orders.fuzzy, reports.exports, referrals.sharing, web.views  # noqa: F401
orders.fuzzy.readings("茶")                  # the parser has looked a character up
from pypinyin import constants
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
print(json.dumps({"modules": sorted(m for m in ("openpyxl", "segno", "gunicorn") if m in sys.modules),
                  "phrases": len(constants.PHRASES_DICT), "rss_mb": rss}))
"""


def test_a_fresh_process_loads_no_phrase_dictionary_no_openpyxl_no_segno_no_gunicorn():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "miandan.settings", "PYTHONPATH": str(ROOT)}
    env.pop("PYPINYIN_NO_PHRASES", None)
    env.pop("PYPINYIN_NO_DICT_COPY", None)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["modules"] == [], probe
    assert probe["phrases"] == 0, probe
    # Generous: the budget is 150 MB per worker process after a run; a fresh one measured 98 MB.
    assert probe["rss_mb"] < 130, probe
