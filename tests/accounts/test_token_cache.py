"""The Redis copy of token -> user (accounts/auth.py): no query per request, revocation still exact."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.auth import _cache_fill, hash_token
from accounts.models import AuthToken
from accounts.services import token_create, token_revoke
from miandan.redis import get_redis, key
from tests.factories import UserFactory

# Every test runs on a single Redis and on a three-master Redis Cluster (tests/conftest.py `redis_backend`).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_backend")]


def _client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def redis_required(settings):
    if not settings.REDIS_URL:
        pytest.skip("the token copy lives in Redis")


def test_a_known_token_is_answered_without_a_query(redis_required):
    user = UserFactory()
    client = _client(token_create(user=user, device_id="d"))
    assert client.get("/api/v1/me").status_code == 200  # reads PostgreSQL, keeps a copy
    with CaptureQueriesContext(connection) as queries:
        me = client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["phone"] == user.phone
    assert len(queries) == 0, [q["sql"] for q in queries]


def test_logout_is_exact_even_with_a_cached_copy(redis_required):
    raw = token_create(user=UserFactory(), device_id="d")
    client = _client(raw)
    assert client.get("/api/v1/me").status_code == 200
    assert client.post("/api/v1/auth/logout").status_code == 204
    assert client.get("/api/v1/me").status_code == 401


def test_a_copy_read_before_the_revocation_cannot_be_put_back(redis_required):
    """The race: a request read the token (still valid) from PostgreSQL, the revocation commits, then that
    request stores its copy. The tombstone written by the revocation refuses it (SET NX)."""
    raw = token_create(user=UserFactory(), device_id="d")
    stale = AuthToken.objects.select_related("user").get(key_hash=hash_token(raw))
    token_revoke(token=stale)
    _cache_fill(stale)
    assert get_redis().get(key("tok", stale.key_hash)) == "-"
    assert _client(raw).get("/api/v1/me").status_code == 401


def test_deactivating_or_deleting_a_user_refuses_their_cached_tokens(redis_required):
    user = UserFactory()
    raw = token_create(user=user, device_id="d")
    client = _client(raw)
    assert client.get("/api/v1/me").status_code == 200
    user.is_active = False
    user.save()
    assert client.get("/api/v1/me").status_code == 401
    user.is_active = True
    user.save()
    assert client.get("/api/v1/me").status_code == 200
    user.delete()
    assert client.get("/api/v1/me").status_code == 401


def test_staff_rights_taken_away_apply_at_once(redis_required, campaign):
    staff = UserFactory(is_staff=True, is_superuser=True)
    raw = token_create(user=staff, device_id="d")
    client = _client(raw)
    report = f"/api/v1/reports/campaigns/{campaign.slug}/budget"  # staff tokens only open the reports API
    assert client.get(report).status_code == 200
    staff.is_superuser = False
    staff.save()
    from accounts.auth import _cache_get

    assert _cache_get(hash_token(raw))[0] is None  # the copy with is_superuser=True is gone
    assert client.get(report).status_code == 404


def test_redis_down_falls_back_to_the_database(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    raw = token_create(user=UserFactory(), device_id="d")
    client = _client(raw)
    assert client.get("/api/v1/me").status_code == 200
    assert client.post("/api/v1/auth/logout").status_code == 204
    assert client.get("/api/v1/me").status_code == 401


def test_the_first_join_shows_in_me_through_the_cache(redis_required, campaign, guard_off):
    user = UserFactory(joined_app_version="")
    client = _client(token_create(user=user, device_id="d"))
    assert client.get("/api/v1/me").json()["joined_app_version"] == ""
    assert client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "2.3.4"}, format="json").status_code == 201
    assert client.get("/api/v1/me").json()["joined_app_version"] == "2.3.4"


def test_the_cached_user_never_carries_the_password_hash(redis_required):
    user = UserFactory()
    user.set_password("s3cret-pass")
    user.save()
    raw = token_create(user=user, device_id="d")
    _client(raw).get("/api/v1/me")
    stored = get_redis().get(key("tok", hash_token(raw)))
    assert stored and "password" not in stored and "pbkdf2" not in stored
