"""Race tests on real PostgreSQL (threads and processes): exact card counts, exact budget, reconcile after each."""

import threading
import time
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.services import token_create
from campaign.errors import BudgetExhausted
from campaign.models import BudgetBucket, Campaign
from miandan.api.models import IdempotencyRecord
from tests.concurrency import run_processes, run_threads
from tests.factories import CampaignFactory, UserFactory
from vouchers.errors import CardLimitReached
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import campaign_join, voucher_issue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("guard_off")]
# 64 threads, each its own PostgreSQL connection (max_connections is 300 here, shared with other test runs):
# the "200 claims" below are 200 attempts of which 64 are in flight at any moment, not 25.
THREADS = 64


def chunks(items, n):
    return [tuple(items[i::n]) for i in range(n)]


def client_for(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, device_id=f'race-{user.pk}')}")
    return client


def remaining(campaign):
    return sum(b.available for b in BudgetBucket.objects.filter(campaign=campaign))


def assert_all_ok(results):
    failed = [r for r in results if not r.ok]
    if failed:
        pytest.fail(f"{len(failed)} worker(s) failed; first:\n{failed[0].trace}", pytrace=False)


def assert_reconciled(campaign):
    report = reconcile(campaign=campaign)
    assert report.ok, report.differences
    return report


def test_200_concurrent_claims_for_one_user_across_sources_give_exactly_21_cards():
    campaign = CampaignFactory(bucket_count=8)
    user = UserFactory()
    kinds = ["welcome", "staff", "referral_inviter", "referral_invitee"] * 50  # 200 claims

    def claim_all(batch):
        outcomes = []
        for kind in batch:
            try:
                if kind == "welcome":
                    campaign_join(user=user, campaign=campaign, app_version="2.0.0")
                else:
                    voucher_issue(user=user, campaign=campaign, source=kind, reason="并发测试")
                outcomes.append("ok")
            except CardLimitReached:
                outcomes.append("cap")
        return outcomes

    results = run_threads(claim_all, THREADS, args=[(c,) for c in chunks(kinds, THREADS)])
    assert_all_ok(results)
    cards = Voucher.objects.filter(user=user, campaign=campaign)
    assert sorted(cards.values_list("slot", flat=True)) == list(range(1, 22))
    assert cards.filter(source="welcome").count() <= 1
    assert sum(r.value.count("cap") for r in results) >= 200 - 21 - 49  # repeated welcome joins answer "ok"
    report = assert_reconciled(campaign)
    assert report.totals["reserved"] == Decimal("525.00")


def test_budget_for_n_cards_and_10n_users_over_http():
    n = 10
    campaign = CampaignFactory(total_budget=Decimal("25.00") * n, bucket_count=8)
    clients = [client_for(UserFactory()) for _ in range(10 * n)]

    def join_all(batch):
        answers = []
        for client in batch:
            r = client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
            answers.append((r.status_code, r.json()["code"]))
        return answers

    results = run_threads(join_all, THREADS, args=[(c,) for c in chunks(clients, THREADS)])
    assert_all_ok(results)
    answers = [a for r in results for a in r.value]
    created = [a for a in answers if a[0] == 201]
    refused = [a for a in answers if a[0] != 201]
    assert len(created) == n
    assert set(refused) == {(409, "budget_exhausted")} and len(refused) == 9 * n
    assert Voucher.objects.filter(campaign=campaign).count() == n
    assert remaining(campaign) == 0
    report = assert_reconciled(campaign)
    assert report.totals["remaining"] == 0 and report.totals["reserved"] == Decimal("25.00") * n


def _join_users(campaign_id, user_ids):
    """Runs in a forked child process."""
    from accounts.models import User

    campaign = Campaign.objects.get(pk=campaign_id)
    answers = []
    for user in User.objects.filter(pk__in=user_ids):
        try:
            card, created = campaign_join(user=user, campaign=campaign, app_version="1.0.0")
            answers.append("created" if created else "repeat")
        except BudgetExhausted:
            answers.append("budget_exhausted")
    return answers


def test_budget_for_n_cards_and_10n_users_in_processes():
    n = 16
    campaign = CampaignFactory(total_budget=Decimal("25.00") * n, bucket_count=4)
    users = [UserFactory().pk for _ in range(10 * n)]
    procs = 16  # forked processes, each with its own connection and its own Python (no GIL between them)
    results = run_processes(_join_users, procs, args=[(campaign.pk, c) for c in chunks(users, procs)])
    assert_all_ok(results)
    answers = [a for r in results for a in r.value]
    assert answers.count("created") == n
    assert answers.count("budget_exhausted") == 9 * n
    assert Voucher.objects.filter(campaign=campaign).count() == n
    assert remaining(campaign) == 0
    assert_reconciled(campaign)


def test_same_user_joining_twice_at_once_gets_one_card():
    campaign = CampaignFactory()
    pairs = []
    for _ in range(5):
        user = UserFactory()
        pairs += [client_for(user), client_for(user)]

    def join(client):
        r = client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
        return r.status_code, r.json()["code"]

    results = run_threads(join, len(pairs), args=[(c,) for c in pairs])
    assert_all_ok(results)
    for i in range(0, len(pairs), 2):
        (s1, code1), (s2, code2) = results[i].value, results[i + 1].value
        assert sorted([s1, s2]) == [200, 201]
        assert code1 == code2
    assert Voucher.objects.filter(campaign=campaign).count() == 5
    assert_reconciled(campaign)


def test_twenty_parallel_requests_with_one_idempotency_key():
    campaign = CampaignFactory()
    user = UserFactory()
    clients = [client_for(user) for _ in range(20)]
    url = f"/api/v1/campaigns/{campaign.slug}/join"

    def post(client):
        r = client.post(url, {"app_version": "1.0.0"}, format="json", HTTP_IDEMPOTENCY_KEY="join-once-1")
        return r.status_code, r.json(), r.headers.get("Idempotent-Replayed")

    results = run_threads(post, 20, args=[(c,) for c in clients])
    assert_all_ok(results)
    answers = [r.value for r in results]
    originals = [a for a in answers if a[0] == 201 and a[2] is None]
    replays = [a for a in answers if a[0] == 201 and a[2] == "true"]
    in_progress = [a for a in answers if a[0] == 409]
    assert len(originals) == 1
    assert len(originals) + len(replays) + len(in_progress) == 20
    assert all(a[1] == originals[0][1] for a in replays)
    assert all(a[1]["code"] == "idempotency_in_progress" for a in in_progress)
    assert Voucher.objects.filter(user=user).count() == 1
    assert IdempotencyRecord.objects.filter(user=user).count() == 1

    again = clients[0].post(url, {"app_version": "1.0.0"}, format="json", HTTP_IDEMPOTENCY_KEY="join-once-1")
    assert (again.status_code, again.json()) == (201, originals[0][1])
    assert again.headers["Idempotent-Replayed"] == "true"
    other = clients[0].post(url, {"app_version": "1.2.0"}, format="json", HTTP_IDEMPOTENCY_KEY="join-once-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    # Keys are scoped to the caller: another user's identical key is a different request.
    stranger = client_for(UserFactory()).post(url, {"app_version": "1.0.0"}, format="json",
                                              HTTP_IDEMPOTENCY_KEY="join-once-1")
    assert stranger.status_code == 201 and stranger.json()["code"] != originals[0][1]["code"]
    assert_reconciled(campaign)


# --- Redis flushed in the middle of a claim storm -----------------------------------------------

@pytest.fixture
def private_redis(settings):
    """A redis-server of our own (never FLUSHALL the shared one), wired in as settings.REDIS_URL."""
    import redis

    import miandan.redis
    from tests.servers import OwnRedis

    server = OwnRedis()
    server.start()
    settings.REDIS_URL = server.url
    miandan.redis._client.cache_clear()
    client = redis.Redis(port=server.port, decode_responses=True)
    client.server = server  # the test that stops Redis needs the process
    yield client
    miandan.redis._client.cache_clear()
    server.stop()


def test_redis_flushed_in_the_middle_of_a_claim_storm(private_redis):
    from vouchers import admission

    n = 15
    campaign = CampaignFactory(total_budget=Decimal("25.00") * n, bucket_count=4)
    users = [UserFactory() for _ in range(3 * n)]
    calls = users + users  # every user tries twice
    stop = threading.Event()
    flushes = []

    def flusher():
        while not stop.is_set():
            private_redis.flushall()
            flushes.append(1)
            time.sleep(0.005)

    def claim_all(batch):
        answers = []
        for user in batch:
            try:
                card, created = campaign_join(user=user, campaign=campaign, app_version="1.0.0")
                answers.append((user.pk, card.pk, created))
            except BudgetExhausted:
                answers.append((user.pk, None, False))
        return answers

    thread = threading.Thread(target=flusher, daemon=True)
    thread.start()
    try:
        results = run_threads(claim_all, THREADS, args=[(c,) for c in chunks(calls, THREADS)])
    finally:
        stop.set()
        thread.join(5)
    assert flushes, "the flusher never ran"
    assert_all_ok(results)
    answers = [a for r in results for a in r.value]
    assert sum(1 for a in answers if a[2]) == n  # exactly n cards created, no extra
    cards = Voucher.objects.filter(campaign=campaign)
    assert cards.count() == n
    assert len(set(cards.values_list("user_id", flat=True))) == n
    assert remaining(campaign) == 0
    assert_reconciled(campaign)

    # Counters come back from PostgreSQL on the next request.
    private_redis.flushall()
    holder = cards.first().user
    card, created = campaign_join(user=holder, campaign=campaign, app_version="1.0.0")
    assert not created
    assert admission.user_state(campaign.pk, holder.pk).welcome_code == card.code
    assert admission.user_state(campaign.pk, holder.pk).count == 1


def test_redis_stopped_in_the_middle_of_a_claim_storm(private_redis, settings):
    """Redis (a private redis-server) is STOPPED, not flushed, while 64 threads claim: every claim is served
    from PostgreSQL or refused as budget_exhausted, exactly n cards exist, the money is exact; and once Redis
    is back the next claims use it again."""
    server = private_redis.server
    n = 15
    campaign = CampaignFactory(total_budget=Decimal("25.00") * n, bucket_count=4)
    users = [UserFactory() for _ in range(6 * n)]
    calls = users + users  # 180 claims, ~3 per thread
    started = threading.Event()
    stopped_at: list[float] = []
    began: list[float] = []

    def stopper():
        started.wait(30)
        server.stop()
        stopped_at.append(time.monotonic())

    def claim_all(batch):
        answers = []
        for user in batch:
            began.append(time.monotonic())
            try:
                card, created = campaign_join(user=user, campaign=campaign, app_version="1.0.0")
                answers.append((user.pk, card.pk, created))
            except BudgetExhausted:
                answers.append((user.pk, None, False))
            started.set()  # the first claim is through: stop Redis under the rest
        return answers

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    results = run_threads(claim_all, THREADS, args=[(c,) for c in chunks(calls, THREADS)])
    thread.join(10)
    assert stopped_at, "redis-server was not stopped"
    assert sum(1 for t in began if t > stopped_at[0]) >= 10, "the storm was over before Redis stopped"
    assert_all_ok(results)  # no RedisError reached the caller
    answers = [a for r in results for a in r.value]
    assert sum(1 for a in answers if a[2]) == n
    cards = Voucher.objects.filter(campaign=campaign)
    assert cards.count() == n and len(set(cards.values_list("user_id", flat=True))) == n
    for user_pk, card_pk, _ in answers:  # a user told "here is your card" holds exactly that card
        if card_pk is not None:
            assert cards.get(pk=card_pk).user_id == user_pk
    assert remaining(campaign) == 0
    assert_reconciled(campaign)
