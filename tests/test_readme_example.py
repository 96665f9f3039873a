"""The README's worked example runs, as written, against a freshly seeded demo server (the `make demo` setup:
SQLite, eager Celery, DJANGO_DEBUG=1 with the console SMS backend, the simulated merchant beside it), so it
cannot go stale."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.fulfilment import MerchantProcess
from tests.servers import ROOT, runserver

pytestmark = pytest.mark.timeout(240)


def _example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- worked-example:start -->\n```sh\n(.*?)```\n<!-- worked-example:end -->", text, re.S)
    assert block, "README.md lost its worked example"
    return block.group(1)


def test_the_readme_worked_example_runs_against_a_demo_server(tmp_path):
    script = _example()
    assert "../" not in (ROOT / "README.md").read_text(encoding="utf-8")  # the README stands alone in a clone
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "RATELIMIT_REDIS_URL", "MIANDAN_TEST_DB_NAME",
                        "CELERY_TASK_ALWAYS_EAGER", "MIANDAN_SMS_BACKEND", "MIANDAN_FIXED_OTP"}}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}", "DJANGO_DEBUG": "1"})
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True)
    merchant = MerchantProcess(tmp_path, env)  # as `make demo`: the simulated store system beside the server
    env["MIANDAN_MERCHANT_URL"] = merchant.url
    with runserver(env, tmp_path / "server.log") as base:
        merchant.start("--callback-url", base)
        try:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env={**env, "BASE": base},
                                  capture_output=True, text=True, timeout=120)
        finally:
            merchant.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"[A-Z0-9]+ 可使用 25\.00", lines[0]), lines  # 3. the welcome card
    assert "输入邀请码" in lines[1] and lines[1].split()[0] in lines[1].split(" ", 1)[1]  # 4. code inside the 口令
    assert lines[2].endswith("to pay 0.00") and "杨枝甘露" in lines[2], lines  # 5. the card covers the drink
    assert re.fullmatch(r"order \d+: completed", lines[-1]), lines  # 6. followed until delivered
