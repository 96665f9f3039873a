"""bench/scale.py, the seed-scale generator, against today's schema.

The generator bypasses the ORM (COPY with explicit column lists), so a new NOT NULL column silently broke it
once (orders' `merchant`, found only when a 5-million-card load failed). A small load here, checked by the
project's own `reconcile`, keeps it in step with the models.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_seed_scale_generator_loads_a_campaign_that_reconciles():
    url = settings.DATABASES["default"]
    if "postgresql" not in url["ENGINE"]:
        pytest.fail("the generator loads with PostgreSQL's COPY (set DATABASE_URL)")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    host, port = url.get("HOST") or "127.0.0.1", url.get("PORT") or 5432
    database_url = f"postgres://{url.get('USER') or 'postgres'}@{host}:{port}/miandan_bench_scale_test_{worker}"
    base = [sys.executable, str(ROOT / "bench" / "scale.py"), "--database-url", database_url]
    try:
        loaded = subprocess.run([*base, "load", "--cards", "1500", "--stores-per-city", "2"], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "miandan.settings"}
        checked = subprocess.run([sys.executable, "manage.py", "reconcile", "seed-scale"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=300)
        assert checked.returncode == 0 and "PASS seed-scale" in checked.stdout, checked.stdout + checked.stderr
    finally:
        subprocess.run([*base, "drop"], cwd=ROOT, capture_output=True, timeout=120)
