"""Deployment hygiene, checked the way an operator runs it: real `manage.py` subprocesses."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent

# The production variables documented in README.md ("Settings" / "Production").
PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "ALLOWED_HOSTS": "miandan.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "MIANDAN_SMS_BACKEND": "http",
    "MIANDAN_SMS_HTTP_URL": "https://sms.example.com/send",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A clean environment: nothing from the test run (MIANDAN_*, DATABASE_URL, ...) leaks in by accident.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ") if k in os.environ}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def production_env() -> dict[str, str]:
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("postgresql"):
        url = f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/miandan"
    else:
        url = "postgres://postgres@127.0.0.1:5432/miandan"
    return {**PRODUCTION, "SECRET_KEY": secrets.token_urlsafe(64), "DATABASE_URL": url}


def test_check_deploy_is_clean_with_production_variables(production_env):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout + result.stderr


def test_check_deploy_warns_about_the_fixed_otp_backend(production_env):
    env = {**production_env, "MIANDAN_SMS_BACKEND": "fixed", "MIANDAN_FIXED_OTP": "123456"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "miandan.W001" in result.stderr
    assert "MIANDAN_SMS_BACKEND=fixed" in result.stderr


@pytest.mark.parametrize("unsafe, check_ids", [
    # the demo's fallback key, the console SMS backend, /metrics open to the world
    ({"SECRET_KEY": "", "MIANDAN_SMS_BACKEND": "console", "MIANDAN_METRICS_ALLOWED_NETS": "0.0.0.0/0"},
     ("miandan.E010", "miandan.E011", "miandan.E012")),
    # the HTTP backend without its URL, a fixed code left set
    ({"MIANDAN_SMS_BACKEND": "http", "MIANDAN_SMS_HTTP_URL": "", "MIANDAN_FIXED_OTP": "123456"}, ("miandan.E010",)),
])
def test_check_deploy_fails_loudly_on_an_unsafe_production_setting(production_env, unsafe, check_ids):
    """Errors, not warnings: `check --deploy` exits non-zero at its default fail level."""
    result = manage("check", "--deploy", env={**production_env, **unsafe})
    assert result.returncode != 0, result.stdout + result.stderr
    for check_id in check_ids:
        assert check_id in result.stderr, check_id
    assert "ERRORS" in result.stderr


def test_a_load_test_may_use_the_fixed_backend_with_debug_off(production_env):
    env = {**production_env, "MIANDAN_SMS_BACKEND": "fixed", "MIANDAN_FIXED_OTP": "123456", "MIANDAN_LOAD_TEST": "1"}
    result = manage("check", "--deploy", env=env)
    assert result.returncode == 0, result.stdout + result.stderr  # the W001 warning stays


def test_check_deploy_flags_the_demo_defaults():
    """Without the production variables the demo settings must not pass as production-ready."""
    result = manage("check", "--deploy", "--fail-level", "WARNING", env={"DJANGO_DEBUG": "0"})
    assert result.returncode != 0
    for check_id in ("security.W004", "security.W008", "security.W009", "security.W012", "security.W016",
                     "miandan.E010", "miandan.E011"):
        assert check_id in result.stderr, check_id


def test_no_missing_migrations(tmp_path):
    # SQLite in a temp dir: makemigrations only needs a connection for its history check.
    result = manage("makemigrations", "--check", "--dry-run", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'm.sqlite3'}"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_documents_every_setting():
    """Every environment variable settings.py reads has a row in the README's settings table."""
    import re

    source = (ROOT / "miandan" / "settings.py").read_text()
    names = set(re.findall(r"\benv(?:_bool|_int|_float|_list)?\(\s*\"([A-Z][A-Z0-9_]+)\"", source))
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= names  # the pattern still finds them
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert not missing, f"README.md does not document: {missing}"


@pytest.mark.parametrize("entry", ["import miandan.wsgi", "import miandan.asgi",
                                   "import django; django.setup(); from miandan.celery import _refuse_bad_settings; _refuse_bad_settings()"])
def test_servers_and_workers_refuse_to_start_with_dev_only_settings(production_env, entry):
    """gunicorn (wsgi/asgi) and Celery workers do not start with the console SMS backend or the demo SECRET_KEY
    when DJANGO_DEBUG=0; a load test (MIANDAN_LOAD_TEST=1) may; migrate and other commands still run."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ") if k in os.environ}
    run = lambda env: subprocess.run([sys.executable, "-c", entry], cwd=ROOT, env={"DJANGO_SETTINGS_MODULE": "miandan.settings", **base, **env},  # noqa: E731
                                     capture_output=True, text=True, timeout=120)
    unsafe = {**production_env, "MIANDAN_SMS_BACKEND": "console", "SECRET_KEY": ""}
    refused = run(unsafe)
    assert refused.returncode != 0
    assert "miandan.E010" in refused.stderr and "miandan.E011" in refused.stderr, refused.stderr[-2000:]
    assert run({**unsafe, "MIANDAN_LOAD_TEST": "1"}).returncode == 0
    assert run(production_env).returncode == 0
    assert manage("check", env=unsafe).returncode == 0  # commands (migrate, seed_demo, ...) are not blocked
