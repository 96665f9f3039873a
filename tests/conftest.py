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
    _recreate_staff_groups_after_flush()


def _recreate_staff_groups_after_flush() -> None:
    """A `transaction=True` test ends with a flush, which drops the staff groups the data migrations made.

    The flush sends post_migrate (that is how Django recreates content types and permissions); this receiver,
    connected after every app's own, puts the groups back once the last app has been handled. Without it a
    test that needs a group passes or fails by which test ran before it on its pytest-xdist worker.
    """
    from django.apps import apps
    from django.db.models.signals import post_migrate

    # post_migrate goes to the apps that have a models module, in INSTALLED_APPS order.
    last = [config for config in apps.get_app_configs() if config.models_module is not None][-1].label

    def receiver(sender, using="default", **kwargs):
        if sender.label == last and using == "default":
            from tests.staff.groups import ensure_staff_groups

            ensure_staff_groups()

    post_migrate.connect(receiver, weak=False, dispatch_uid="tests-staff-groups")


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A three-master Redis Cluster on free ports, started once per session by the first test that asks."""
    from tests.servers import OwnRedisCluster

    cluster = OwnRedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


def use_redis(settings, url: str) -> None:
    """Point every Redis role (fast-path client, default cache, rate-limit cache) at `url`."""
    import copy

    caches = copy.deepcopy(settings.CACHES)
    client_class = ("miandan.cache_cluster.ClusterClient" if url.startswith("redis+cluster://")
                    else "django_redis.client.DefaultClient")
    for alias in ("default", "ratelimit"):
        caches[alias]["BACKEND"] = "django_redis.cache.RedisCache"
        caches[alias]["LOCATION"] = [url]
        caches[alias]["KEY_PREFIX"] = settings.REDIS_KEY_PREFIX
        caches[alias].setdefault("OPTIONS", {})["CLIENT_CLASS"] = client_class
    settings.REDIS_URL = url
    settings.CACHES = caches


@pytest.fixture(params=["single", "cluster"])
def redis_backend(request, settings):
    """Parametrises a test over the single Redis of REDIS_URL and a three-master Redis Cluster.

    Use as `pytestmark = pytest.mark.usefixtures("redis_backend")` in a Redis-touching module.
    """
    if request.param == "cluster" and request.node.get_closest_marker("single_redis_only"):
        pytest.skip("nothing Redis-specific to repeat on a cluster (marked single_redis_only)")
    if request.param == "single":
        if not settings.REDIS_URL:
            pytest.skip("REDIS_URL is not set")
        yield "single"
        return
    cluster = request.getfixturevalue("redis_cluster")
    use_redis(settings, cluster.url)
    from miandan.redis import get_redis

    client = get_redis()

    def wipe():
        keys = list(client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}:*", count=1000))
        if keys:
            client.delete(*keys)

    wipe()
    yield "cluster"
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
