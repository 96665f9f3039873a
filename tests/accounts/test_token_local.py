"""The per-process copy of the token copies (accounts/token_local.py): no Redis round trip for a known token,
and revocation as exact as the Redis copy, in this process, in another one and through a real server."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pytest

from accounts.auth import hash_token, token_cache_forget
from accounts.models import AuthToken
from accounts.services import token_create, token_revoke
from accounts.token_local import LOCAL, _Local
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def plain_redis(settings):
    if not settings.REDIS_URL or settings.REDIS_URL.startswith("redis+cluster"):
        pytest.fail("these tests need the plain Redis the suite runs on")
    LOCAL.stop()
    yield
    LOCAL.stop()


def _client(raw: str):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def _subscribed(local: _Local, timeout: float = 5.0) -> None:
    local.begin()
    deadline = time.monotonic() + timeout
    while local.begin() is None:
        assert time.monotonic() < deadline, "no subscription"
        time.sleep(0.02)


@pytest.fixture
def other():
    """A second holder with its own subscription: another worker process, as far as Redis can tell."""
    holder = _Local()
    _subscribed(holder)
    yield holder
    holder.stop()


def test_a_known_token_is_answered_from_the_process_copy(own_lookups):
    _subscribed(LOCAL)
    client = _client(token_create(user=UserFactory(), device_id="d"))
    reads = own_lookups
    assert client.get("/api/v1/me").status_code == 200  # PostgreSQL, then the Redis copy
    assert client.get("/api/v1/me").status_code == 200  # the Redis copy, kept in the process
    assert len(reads) == 2
    for _ in range(5):
        assert client.get("/api/v1/me").status_code == 200
    assert len(reads) == 2  # no Redis read for a token the process holds


def test_nothing_is_served_before_the_subscription_is_confirmed(own_lookups, settings):
    settings.MIANDAN_TOKEN_LOCAL_SECONDS = 0  # off: every request reads Redis
    client = _client(token_create(user=UserFactory(), device_id="d"))
    reads = own_lookups
    for _ in range(4):
        assert client.get("/api/v1/me").status_code == 200
    assert len(reads) == 4
    assert LOCAL.begin() is None


def test_logout_is_exact_with_a_process_copy():
    _subscribed(LOCAL)
    raw = token_create(user=UserFactory(), device_id="d")
    client = _client(raw)
    for _ in range(3):
        assert client.get("/api/v1/me").status_code == 200
    assert LOCAL.get(hash_token(raw)) is not None
    assert client.post("/api/v1/auth/logout").status_code == 204
    assert client.get("/api/v1/me").status_code == 401


def test_another_process_s_copy_goes_when_the_revocation_returns(other):
    """A second holder with its own subscription stands for another worker: the revocation published in the
    revoking call is applied before that holder serves the token again, with no wait in between."""
    raw = token_create(user=UserFactory(), device_id="d")
    key_hash = hash_token(raw)
    ticket = other.begin()
    other.put(ticket, key_hash, "copy")
    assert other.get(key_hash) == "copy"
    token_cache_forget([key_hash])
    assert other.get(key_hash) is None


def test_a_copy_read_before_a_revocation_is_not_kept(other):
    """The race: a request read the copy, a revocation (of any token) arrives, then the request stores it."""
    ticket = other.begin()
    token_cache_forget(["some-other-token"])
    other.put(ticket, "a-token", "copy read before")
    assert other.get("a-token") is None
    other.put(other.begin(), "a-token", "copy read after")
    assert other.get("a-token") == "copy read after"


@pytest.mark.parametrize("how", ["client side", "killed by the server"])
def test_a_lost_subscription_empties_the_copy(how, other):
    """redis-py reconnects and resubscribes on its own; what was published in between is lost, so the copy
    must go and nothing is served until the keeper confirms a new subscription."""
    from miandan.redis import get_redis

    other.put(other.begin(), "a-token", "copy")
    with other.lock:
        connection = other.pubsub.connection
        if how == "client side":
            connection.disconnect()
        else:
            host, port = connection._sock.getsockname()[:2]
            assert get_redis().client_kill_filter(_id=None, addr=f"{host}:{port}") == 1
            time.sleep(0.1)
    assert other.get("a-token") is None
    assert other.entries == {} and other.begin() is None
    _subscribed(other)  # the keeper subscribes again
    other.put(other.begin(), "a-token", "copy")
    assert other.get("a-token") == "copy"


def test_an_entry_dies_after_its_life(settings, other):
    settings.MIANDAN_TOKEN_LOCAL_SECONDS = 1
    other.put(other.begin(), "a-token", "copy")
    assert other.get("a-token") == "copy"
    time.sleep(1.1)
    assert other.get("a-token") is None


def test_entries_past_their_life_are_purged_without_being_asked_for(settings, other):
    settings.MIANDAN_TOKEN_LOCAL_SECONDS = 1
    for i in range(50):
        other.put(other.begin(), f"token-{i}", "copy")
    assert len(other.entries) == 50
    deadline = time.monotonic() + 5
    while other.entries and time.monotonic() < deadline:  # the keeper purges every second
        time.sleep(0.1)
    assert other.entries == {}


@pytest.mark.django_db(transaction=True)
def test_revocation_is_exact_on_every_worker_of_a_real_server(tmp_path, settings):
    """gunicorn with two workers, each holding the token in its own copy: right after the revocation returns,
    every request is refused."""
    from django.db import connections

    from tests.celery_worker import _database_url
    from tests.fulfilment import GUNICORN
    from tests.servers import serve

    user = UserFactory()
    raw = token_create(user=user, device_id="d")
    connections.close_all()
    env = {**os.environ, "DATABASE_URL": _database_url(), "CONN_MAX_AGE": "60", "REDIS_URL": settings.REDIS_URL,
           "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "RATELIMIT_ENABLE": "0", "MIANDAN_SHED_ENABLED": "0"}
    env.pop("MIANDAN_TEST_DB_NAME", None)

    def me(url: str) -> tuple[int, int]:
        request = urllib.request.Request(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {raw}",
                                                                       "Connection": "close"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())["id"]
        except urllib.error.HTTPError as exc:
            return exc.code, 0

    with serve(lambda port: [GUNICORN, "miandan.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--threads", "2",
                             "--log-level", "warning"], env, tmp_path / "web.log") as url:
        assert {me(url) for _ in range(40)} == {(200, user.pk)}  # new connections: both workers serve it
        token_revoke(token=AuthToken.objects.get(key_hash=hash_token(raw)))
        answers = [me(url)[0] for _ in range(40)]
    assert answers == [401] * 40


def _round_trips(monkeypatch) -> list[str]:
    """Every Redis round trip of this process: pipelines and single commands (redis-py's own classes)."""
    import redis

    trips: list[str] = []
    real_pipe, real_command = redis.client.Pipeline.execute, redis.Redis.execute_command

    def pipe(self, *args, **kwargs):
        trips.append("pipeline")
        return real_pipe(self, *args, **kwargs)

    def command(self, *args, **kwargs):
        trips.append(str(args[0]))
        return real_command(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", pipe)
    monkeypatch.setattr(redis.Redis, "execute_command", command)
    return trips


@pytest.mark.parametrize("refusal", ["budget_exhausted", "card_limit_reached"])
def test_a_join_redis_refuses_costs_one_round_trip_for_a_known_token(settings, make_auth_client, monkeypatch,
                                                                     refusal):
    """With the token in the process copy, the join's Redis precheck rides in the guard's rate-limit pipeline
    (vouchers.api.join_prefetch): one round trip per refused join instead of two."""
    from decimal import Decimal

    from tests.factories import CampaignFactory, VoucherFactory

    settings.RATELIMIT_ENABLE = True
    settings.MIANDAN_RATELIMITS = {"join_user": "1000/m", "join_ip": "1000/m"}
    _subscribed(LOCAL)
    client = make_auth_client()
    if refusal == "budget_exhausted":
        campaign = CampaignFactory(total_budget=Decimal("0.00"), bucket_count=1)
    else:
        campaign = CampaignFactory(card_cap=2)
        VoucherFactory(user=client.user, campaign=campaign, source="referral_invitee", slot=1)
        VoucherFactory(user=client.user, campaign=campaign, source="referral_invitee", slot=2)
    path = f"/api/v1/campaigns/{campaign.slug}/join"
    for _ in range(3):  # learn: the token copy in the process, the user's state in Redis
        answer = client.post(path, {"app_version": "1.0.0"}, format="json")
        assert answer.status_code == 409 and answer.json()["code"] == refusal
    trips = _round_trips(monkeypatch)
    for _ in range(5):
        answer = client.post(path, {"app_version": "1.0.0"}, format="json")
        assert answer.status_code == 409 and answer.json()["code"] == refusal
    assert trips == ["pipeline"] * 5


def test_an_invalidation_behind_a_non_message_reply_is_still_applied(other):
    """Found in review: redis-py's get_message returns None after reading its own health-check reply, with the
    invalidation still waiting behind it; the drain must read on while the socket has data."""
    for i in range(10):
        key_hash = f"behind-{i}"
        other.put(other.begin(), key_hash, "copy")
        with other.lock:
            other.pubsub.connection.next_health_check = 0
            other.pubsub.connection.health_check_interval = 1
            other.pubsub.check_health()  # a health PING sent, its reply not read yet
        time.sleep(0.01)
        token_cache_forget([key_hash])
        assert other.get(key_hash) is None, i


def test_a_silent_subscription_stops_the_copy_even_without_the_keeper(monkeypatch, other):
    """Found in review: liveness was only checked by the keeper thread; a stalled keeper must not leave entries
    served. With nothing heard for PONG_WITHIN, the request path itself stops serving."""
    from accounts import token_local

    other.put(other.begin(), "a-token", "copy")
    assert other.get("a-token") == "copy"
    other.generation += 1  # the keeper stops (as if stalled)
    time.sleep(token_local.PONG_WITHIN + token_local.PING_EVERY + 0.3)  # its last PING may be answered
    assert other.get("a-token") is None
    assert other.begin() is None
