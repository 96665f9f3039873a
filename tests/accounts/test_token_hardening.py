"""Bearer tokens (issue 16): expiry on cached copies, throttled last_used_at, staff tokens only for reports."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.auth import hash_token
from accounts.models import AuthToken
from accounts.services import token_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_an_expired_token_is_refused_even_from_the_cache(settings):
    if not settings.REDIS_URL:
        pytest.skip("the token copy lives in Redis")
    raw = token_create(user=UserFactory(), device_id="d")
    client = _client(raw)
    assert client.get("/api/v1/me").status_code == 200  # now cached in Redis
    # The token gets old in PostgreSQL only; the cached copy still says created a moment ago...
    AuthToken.objects.filter(key_hash=hash_token(raw)).update(created_at=timezone.now() - dt.timedelta(days=31))
    assert client.get("/api/v1/me").status_code == 200  # (copy: created now, 30-day life)
    # ...so the rule must be applied to the copy's own issue time: shrink the lifetime below its age.
    settings.MIANDAN_TOKEN_MAX_AGE_DAYS = 0
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert not any("accounts_authtoken" in q["sql"] and "SELECT" in q["sql"] for q in queries)  # decided on the copy


def test_an_old_token_is_refused_from_the_database(settings):
    settings.MIANDAN_TOKEN_CACHE_SECONDS = 0
    raw = token_create(user=UserFactory(), device_id="d")
    AuthToken.objects.filter(key_hash=hash_token(raw)).update(created_at=timezone.now() - dt.timedelta(days=31))
    assert _client(raw).get("/api/v1/me").status_code == 401


@pytest.mark.parametrize("cache_seconds", [60, 0])
def test_last_used_is_written_once_per_window(settings, cache_seconds):
    settings.MIANDAN_TOKEN_CACHE_SECONDS = cache_seconds
    before = timezone.now()
    raw = token_create(user=UserFactory(), device_id="d")
    client = _client(raw)
    first = AuthToken.objects.get(key_hash=hash_token(raw)).last_used_at
    assert first is not None and first >= before  # handing the token out is its first use
    with CaptureQueriesContext(connection) as queries:
        for _ in range(6):  # the first request after the login included: it writes nothing either
            assert client.get("/api/v1/me").status_code == 200
    writes = [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "accounts_authtoken" in q["sql"]]
    assert writes == []
    assert AuthToken.objects.get(key_hash=hash_token(raw)).last_used_at == first
    # Past the window the next request records the new time.
    AuthToken.objects.filter(key_hash=hash_token(raw)).update(last_used_at=first - dt.timedelta(minutes=5))
    from miandan.redis import get_redis, key

    if get_redis() is not None:
        get_redis().delete(key("toktouch", hash_token(raw)))  # the marker's window is over too
        get_redis().delete(key("tok", hash_token(raw)))  # and the copy's lifetime (no longer than the window)
        from accounts.token_local import LOCAL

        LOCAL.clear()  # and the process's own copy's (MIANDAN_TOKEN_LOCAL_SECONDS, capped at the window)
    assert client.get("/api/v1/me").status_code == 200
    assert AuthToken.objects.get(key_hash=hash_token(raw)).last_used_at > first


def test_a_staff_token_only_opens_the_reports_api(campaign):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = _client(token_create(user=staff, device_id="d"))
    assert client.get(f"/api/v1/reports/campaigns/{campaign.slug}/budget").status_code == 200
    for method, path in (("get", "/api/v1/me"), ("post", f"/api/v1/campaigns/{campaign.slug}/join")):
        response = getattr(client, method)(path)
        assert response.status_code == 404, path  # api.md: what the caller may not use is not there
        assert response.json()["code"] == "not_found"
    # An app user's token keeps working everywhere it did.
    assert _client(token_create(user=UserFactory(), device_id="d")).get("/api/v1/me").status_code == 200


def test_the_raw_token_lookup_reads_what_the_orm_reads():
    """accounts.auth._token_row is the ORM's select_related lookup as one fixed statement (issue 14)."""
    from accounts.auth import _token_row

    user = UserFactory(joined_app_version="2.1.0", first_name="小明")
    raw = token_create(user=user, device_id="dev-1")
    orm = AuthToken.objects.select_related("user").get(key_hash=hash_token(raw))
    token = _token_row(hash_token(raw))
    for field in AuthToken._meta.concrete_fields:
        assert getattr(token, field.attname) == getattr(orm, field.attname), field.name
    for field in type(user)._meta.concrete_fields:
        assert getattr(token.user, field.attname) == getattr(orm.user, field.attname), field.name
    assert not token._state.adding and token.user.pk == user.pk
    with CaptureQueriesContext(connection) as queries:
        assert token.user.phone == user.phone  # the user came with the row: no second query
    assert len(queries) == 0
    AuthToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert _token_row(hash_token(raw)) is None
    assert _token_row(hash_token("no such token")) is None


def test_a_decoded_copy_is_a_new_object_each_time():
    """Decoding reuses the parsed fields of the same copy (accounts.auth._PARSED), never the model objects: a
    request that changes its user must not change the next request's."""
    from accounts.auth import _decode, _encode

    user = UserFactory(joined_app_version="1.0.0")
    token = AuthToken.objects.select_related("user").get(key_hash=hash_token(token_create(user=user, device_id="d")))
    raw = _encode(token)
    first, second = _decode(raw), _decode(raw)
    assert first is not second and first.user is not second.user
    first.user.joined_app_version, first.device_id = "9.9.9", "changed"
    assert (second.user.joined_app_version, second.device_id) == ("1.0.0", "d")
    third = _decode(raw)
    assert (third.user.joined_app_version, third.device_id, third.created_at) == ("1.0.0", "d", token.created_at)
    assert not third._state.adding and third.user.pk == user.pk
