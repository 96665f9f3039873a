"""Under CI=true nothing is skipped quietly and every service must answer (tests/ci_guard.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

from django.conf import settings

from tests.ci_guard import service_problems
from tests.servers import ROOT, free_port

SAMPLE = textwrap.dedent('''
    import pytest

    def test_passes():
        pass

    def test_skips():
        pytest.skip("chromium is not installed")

    @pytest.fixture
    def needs_a_browser():
        pytest.skip("no browser")

    def test_skips_in_a_fixture(needs_a_browser):
        pass

    @pytest.mark.long
    def test_long():
        pass
''')


def _run(tmp_path, **env_extra) -> str:
    (tmp_path / "conftest.py").write_text(
        "from tests.ci_guard import pytest_collection_modifyitems, pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    long: long\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "MIANDAN_LONG_TESTS", "PYTEST_ADDOPTS")}
    env.update(PYTHONPATH=str(ROOT), **env_extra)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:django", "-p", "no:cacheprovider", "-rA", "-q",
                           "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return done.stdout.splitlines()[-1]


def test_outside_ci_skips_stay_skips_and_long_tests_are_skipped(tmp_path):
    summary = _run(tmp_path)
    assert summary.startswith("1 passed, 3 skipped in"), summary


def test_under_ci_every_skip_fails_except_long_tests(tmp_path):
    summary = _run(tmp_path, CI="true")
    # The skip in a test body fails it; the one in a fixture makes its setup an error: both fail the run.
    assert summary.startswith("1 failed, 1 passed, 1 skipped, 1 error"), summary


def test_under_ci_with_long_tests_on_they_run(tmp_path):
    summary = _run(tmp_path, CI="true", MIANDAN_LONG_TESTS="1")
    assert summary.startswith("1 failed, 2 passed, 1 error"), summary


def test_services_must_answer_not_just_be_configured():
    """The configured services answer; the same settings with nothing listening are reported, each by name."""
    assert service_problems(settings) == []
    dead = f"127.0.0.1:{free_port()}"
    db = {**settings.DATABASES["default"], "HOST": "127.0.0.1", "PORT": dead.split(":")[1]}
    broken = SimpleNamespace(USING_POSTGRES=True, DATABASES={"default": db}, REDIS_URL=f"redis://{dead}/0",
                             CELERY_BROKER_URL=f"redis://{dead}/1")
    problems = service_problems(broken)
    assert any(p.startswith("PostgreSQL does not answer") for p in problems), problems
    assert any(p.startswith("Redis does not answer") for p in problems), problems
    assert any(p.startswith("the Celery broker does not answer") for p in problems), problems


def test_ci_run_ignores_an_inherited_pytest_args(tmp_path):
    """`.ci/run` runs the whole suite even when the environment carries a PYTEST_ARGS that would narrow it.

    `make`, `chromium` and `fc-list` are stand-ins on PATH (the real services must answer, as in CI), so the
    script runs to its last line and the stand-in `make` reports what it was given.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("make", 'echo "make $* PYTEST_ARGS=[${PYTEST_ARGS-unset}] ADDOPTS=[${PYTEST_ADDOPTS-unset}]"'),
                       ("chromium", "exit 0"), ("fc-list", 'echo "WenQuanYi Micro Hei wqy"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CI": "true",
           "PYTEST_ARGS": "tests/test_wiring.py -k nothing", "PYTEST_ADDOPTS": "-k nothing"}
    done = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "make test PYTEST_ARGS=[unset] ADDOPTS=[unset]" in done.stdout, done.stdout
