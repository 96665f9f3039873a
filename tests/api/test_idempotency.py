"""Idempotency-Key semantics on join (api.md): replay, 422 on reuse, 409 while running, scoping, retention."""

import datetime as dt

import pytest
from django.utils import timezone

from miandan.api.models import IdempotencyRecord
from vouchers.models import Voucher

# Every test runs on a single Redis and on a three-master Redis Cluster (tests/conftest.py `redis_backend`).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_off", "redis_backend")]


def join(client, campaign, key, version="1.0.0"):
    return client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": version}, format="json",
                       HTTP_IDEMPOTENCY_KEY=key)


def test_repeat_replays_status_and_body(auth_client, campaign):
    first = join(auth_client, campaign, "k-1")
    again = join(auth_client, campaign, "k-1")
    assert first.status_code == again.status_code == 201  # without the key a repeat would be 200
    assert first.json() == again.json() and again["Idempotent-Replayed"] == "true"
    # The original body to the byte, keys in their order (jsonb storage would reorder them).
    assert again.content == first.content
    assert Voucher.objects.count() == 1


def test_same_key_other_body_is_422(auth_client, campaign):
    join(auth_client, campaign, "k-2")
    reused = join(auth_client, campaign, "k-2", version="9.9.9")
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"


def test_in_progress_is_409_with_retry_after(auth_client, campaign):
    IdempotencyRecord.objects.create(user=auth_client.user, scope="caller",
                                     key="k-3", fingerprint=_fingerprint(campaign, {"app_version": "1.0.0"}))
    response = join(auth_client, campaign, "k-3")
    assert response.status_code == 409 and response.json()["code"] == "idempotency_in_progress"
    assert response["Retry-After"] == "1"
    assert Voucher.objects.count() == 0


def test_abandoned_first_attempt_is_taken_over(auth_client, campaign):
    record = IdempotencyRecord.objects.create(
        user=auth_client.user, scope="caller", key="k-4",
        fingerprint=_fingerprint(campaign, {"app_version": "1.0.0"}))
    IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=timezone.now() - dt.timedelta(minutes=5))
    assert join(auth_client, campaign, "k-4").status_code == 201


def test_domain_refusals_are_replayed_too(make_auth_client):
    from tests.factories import CampaignFactory

    client = make_auth_client()
    old_app = CampaignFactory(min_app_version="5.0.0")
    first = join(client, old_app, "k-5")
    assert first.status_code == 403
    assert join(client, old_app, "k-5").json() == first.json()


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "键"])
def test_malformed_key_is_400(auth_client, campaign, key):
    response = join(auth_client, campaign, key)
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert Voucher.objects.count() == 0 and IdempotencyRecord.objects.count() == 0


def test_keys_are_scoped_per_caller(make_auth_client, campaign):
    """api.md: keys are scoped to the caller. Another caller's key is theirs; the caller's own key on another
    endpoint names another request, which is the same key for a different request: 422."""
    from tests.factories import CampaignFactory

    a, b = make_auth_client(), make_auth_client()
    assert join(a, campaign, "same").status_code == 201
    assert join(b, campaign, "same").status_code == 201
    other = join(a, CampaignFactory(), "same")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Voucher.objects.count() == 2
    assert join(a, campaign, "same").status_code == 201  # the original is still replayed


def test_a_retry_with_or_without_the_trailing_slash_is_the_same_request(auth_client, campaign):
    first = join(auth_client, campaign, "slash")
    again = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join/", {"app_version": "1.0.0"}, format="json",
                             HTTP_IDEMPOTENCY_KEY="slash")
    assert again.status_code == first.status_code == 201 and again.content == first.content
    assert again["Idempotent-Replayed"] == "true"


def _fingerprint(campaign, data):
    import hashlib
    import json

    body = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"POST /api/v1/campaigns/{campaign.slug}/join\n{body}".encode()).hexdigest()
