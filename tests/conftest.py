import os
import socket

import pytest
from django.conf import settings
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from tests.ci_guard import check_services, pytest_collection_modifyitems, pytest_runtest_makereport  # noqa: F401
from tests.factories import CampaignFactory, UserFactory

# The servers and workers the tests start run with DJANGO_DEBUG=0 and the console / fixed SMS backend: that is a
# load test's setting, which they must declare or they refuse to start (miandan.checks.unsafe_to_serve). Set
# before any test starts a subprocess, which inherits it; a test of the refusal sets it to 0 itself.
os.environ.setdefault("MIANDAN_LOAD_TEST", "1")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# `pytest --hypothesis-profile=deep` (nightly): many more and longer programs for the state machines and the
# property tests that take their size from the profile. The default profile is Hypothesis' own (CI-sized
# tests set their size in the test).
hypothesis_settings.register_profile("deep", max_examples=400, stateful_step_count=120, deadline=None)


def pytest_configure(config):
    """In CI the real services are mandatory: fail the run instead of silently testing less.

    In-process code that sends an order to the merchant (eager tasks) must never reach a merchant someone runs
    on the documented default port: it gets a port nobody listens on (tests that need one start their own).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        settings.MIANDAN_MERCHANT_URL = f"http://127.0.0.1:{s.getsockname()[1]}"
    check_services(settings)  # CI=true: PostgreSQL, Redis and the brokers must answer (tests/ci_guard.py)


@pytest.fixture(autouse=True)
def _isolate_redis():
    """Each test starts with no Redis keys under this run's prefix (and leaves none)."""
    from miandan.redis import get_redis

    client = get_redis()

    def wipe():
        if client is None:
            return
        try:
            keys = list(client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}:*", count=1000))
            if keys:
                client.delete(*keys)
        except Exception:
            pass

    from django.core.cache import caches

    wipe()
    for alias, config in settings.CACHES.items():
        # django-redis' clear() is FLUSHDB, which would wipe parallel runs; `wipe` already covers
        # Redis caches because their keys carry the same prefix.
        if "locmem" in config["BACKEND"].lower():
            caches[alias].clear()
    yield
    wipe()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def campaign(db):
    return CampaignFactory()


def _token_for(user) -> str:
    from accounts.services import token_create

    return token_create(user=user, device_id=f"test-device-{user.pk}")  # one phone per test user (device caps)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def auth_client(user):
    """An APIClient logged in as `user` with a real bearer token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {_token_for(user)}")
    client.user = user
    return client


@pytest.fixture
def make_auth_client(db):
    def make(user=None):
        user = user or UserFactory()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {_token_for(user)}")
        client.user = user
        return client

    return make
