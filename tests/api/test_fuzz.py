"""Contract fuzzing: schemathesis against the served `/api/schema/` of a live server.

Every operation gets schema-derived edge cases (coverage phase) and random inputs (fuzzing phase), then the
stateful phase follows the schema's OpenAPI links (miandan.api.schema.LINKS: campaign -> join -> card -> order
-> cancel, invite -> referral) with the resources it really created. The run fails on any 5xx, any status code
the schema does not list for the operation, any response that violates its documented schema, content type or
headers. Once with a user's token (logout left out: it would revoke the token mid-run) and once without.

The rate limiter and the load shedder are off for the run (their 429/503 are documented, but they would keep
most requests from reaching the code under test). Bounded for the default run; the `long` one goes deeper.
A failure prints schemathesis' report: the request to reproduce it (curl) and the seed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from accounts.services import token_create
from demo.catalog import catalog_load
from orders import parser
from tests.celery_worker import _database_url
from tests.factories import CampaignFactory, UserFactory, VoucherFactory
from tests.fulfilment import GUNICORN
from tests.servers import serve

pytestmark = pytest.mark.django_db(transaction=True)
ST = str(Path(sys.executable).with_name("st"))
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance")
LONG = pytest.mark.skipif(not os.environ.get("MIANDAN_LONG_TESTS"), reason="set MIANDAN_LONG_TESTS=1")


@pytest.fixture
def fuzz_target(tmp_path):
    """gunicorn (2 workers, as gunicorn.conf.py runs it) on the test database with a campaign, the catalogue,
    a user holding cards, and that user's token."""
    from django.conf import settings
    from django.db import connections

    catalog_load(stores_per_city=0)
    parser.catalogue_changed()
    campaign = CampaignFactory(slug="fuzz-tea")
    user = UserFactory()
    for _ in range(3):
        VoucherFactory(user=user, campaign=campaign)
    token = token_create(user=user, device_id="fuzz")
    connections.close_all()
    env = {**os.environ, "DATABASE_URL": _database_url(), "CONN_MAX_AGE": "60", "REDIS_URL": settings.REDIS_URL or "",
           "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "RATELIMIT_ENABLE": "0", "MIANDAN_SHED_ENABLED": "0",
           # Orders the fuzzer places are sent inline to a merchant nobody runs: refused, logged, left to the poller.
           "CELERY_TASK_ALWAYS_EAGER": "1", "MIANDAN_MERCHANT_URL": settings.MIANDAN_MERCHANT_URL}
    env.pop("MIANDAN_TEST_DB_NAME", None)
    with serve(lambda port: [GUNICORN, "miandan.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "-k", "gthread",
                             "--threads", "4", "--log-level", "warning"], env, tmp_path / "web.log") as url:
        yield url, token, tmp_path
    parser.catalogue_changed()


def schemathesis(url: str, workdir: Path, *args: str, timeout: int) -> None:
    # One worker: CPython 3.11's ast module is not thread-safe (gh-106905) and hypothesis parses lambdas with it,
    # so two generator threads can crash the tool ("AST constructor recursion depth mismatch").
    command = [ST, "--no-color", "run", f"{url}/api/schema/", "--checks", CHECKS, "--request-timeout", "20",
               "-w", "1", *args]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    report = result.stdout + result.stderr
    log = workdir / "web.log"
    assert result.returncode == 0, report[-12000:] + (f"\n--- server log\n{log.read_text()[-3000:]}" if log.exists() else "")
    # "0 generated" as a whole number: "990 generated, 990 passed" must not read as nothing tested.
    assert " passed" in report and not re.search(r"(?<!\d)0 generated", report), report[-3000:]


@pytest.mark.parametrize("examples", [pytest.param(8, marks=pytest.mark.timeout(300)),
                                      pytest.param(150, marks=[LONG, pytest.mark.long, pytest.mark.timeout(3600)])])
def test_contract_fuzz_with_and_without_a_token(fuzz_target, examples):
    url, token, workdir = fuzz_target
    schemathesis(url, workdir, "-H", f"Authorization: Bearer {token}", "--exclude-path", "/api/v1/auth/logout",
                 "--max-examples", str(examples), timeout=200 if examples < 50 else 1800)
    # Without a token: every operation must answer a documented 401 (or its public answer), never a 5xx.
    schemathesis(url, workdir, "--max-examples", str(max(3, examples // 3)),
                 "--phases", "fuzzing" if examples < 50 else "coverage,fuzzing", timeout=200 if examples < 50 else 1800)
