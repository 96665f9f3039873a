"""A rate-limited write reads its token copy in the guard's rate-limit round trip (accounts.auth.token_prefetch)."""

import pytest
from rest_framework.test import APIClient

from accounts.services import token_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def single_redis(settings):
    if not settings.REDIS_URL or settings.REDIS_URL.startswith("redis+cluster://"):
        pytest.skip("the prefetch rides in a single Redis's pipeline")
    settings.RATELIMIT_ENABLE = True
    settings.RATELIMIT_REDIS_URL = settings.REDIS_URL


def _client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_guarded_write_needs_no_round_trip_of_its_own_for_the_token(single_redis, own_lookups, campaign):
    client = _client(token_create(user=UserFactory(), device_id="d"))
    assert client.get("/api/v1/me").status_code == 200  # no rate limit on reads: its own lookup, copy kept
    assert len(own_lookups) == 1
    joined = client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
    assert joined.status_code == 201
    assert len(own_lookups) == 1  # the join's token came with its rate-limit counters
    again = client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
    assert again.status_code == 200 and again.json()["code"] == joined.json()["code"]
    assert len(own_lookups) == 1


def test_a_revoked_token_is_refused_on_a_guarded_write_at_once(single_redis, campaign):
    client = _client(token_create(user=UserFactory(), device_id="d"))
    assert client.get("/api/v1/me").status_code == 200  # the copy is in Redis
    assert client.post("/api/v1/auth/logout").status_code == 204  # tombstone over it
    refused = client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
    assert refused.status_code == 401


def test_a_bad_or_foreign_header_prefetches_nothing(single_redis, own_lookups, campaign):
    # Over HTTP a header's bytes reach Django decoded as latin-1 (WSGI), so non-ASCII UTF-8 arrives like this.
    for header in ("Bearer", "Bearer a b", "Basic dXNlcjpwYXNz", "Bearer " + "令牌".encode().decode("latin-1")):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        answer = client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
        assert answer.status_code in (401, 403), (header, answer.status_code)
