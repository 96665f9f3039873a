"""The Redis code paths on a Redis Cluster: one slot per multi-key operation, and a lost master survived.

The admission, capacity, rate-limit, idempotency, token-cache and kill-switch modules run whole on a
three-master cluster too (their `redis_backend` parametrisation); this module holds what only a cluster has.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from redis.crc import key_slot

from campaign.errors import BudgetExhausted
from miandan.redis import cluster_nodes, get_redis, is_cluster_url, make_client
from orders import geo
from tests.conftest import use_redis
from tests.factories import CampaignFactory, UserFactory
from tests.orders.conftest import LAT, LNG, catalogue  # noqa: F401  (fixture)
from tests.servers import OwnRedisCluster
from vouchers import admission
from vouchers.errors import CardLimitReached
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import campaign_join, voucher_issue

pytestmark = pytest.mark.django_db


def test_cluster_url_is_parsed():
    assert is_cluster_url("redis+cluster://127.0.0.1:7000,10.0.0.2:7001")
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    assert cluster_nodes("redis+cluster://:secret@127.0.0.1:7000,10.0.0.2:7001/0") == [("127.0.0.1", 7000),
                                                                                         ("10.0.0.2", 7001)]
    with pytest.raises(ValueError):
        make_client("redis+cluster://127.0.0.1:7000/3", connect_timeout=0.1, socket_timeout=0.1)


def test_keys_used_together_share_one_slot():
    """Pipelines and renames that touch several keys must stay in one hash slot (a cluster refuses the rest)."""
    assert key_slot(admission._user_key(42, 7).encode()) == key_slot(admission._exhausted_key(42).encode())
    assert key_slot(admission._user_key(42, 7).encode()) == key_slot(admission._user_key(42, 99_999).encode())
    index = geo._index_key()
    assert key_slot(index.encode()) == key_slot(f"{index}:building:abc".encode())


def test_store_index_is_built_and_searched_on_the_cluster(catalogue, settings, redis_cluster):  # noqa: F811
    use_redis(settings, redis_cluster.url)
    client = get_redis()
    client.delete(geo._index_key())
    found = geo._candidates_redis(LAT, LNG, 5000)
    assert found, "the search answered from Redis"
    assert client.exists(geo._index_key())


def test_cache_reads_many_keys_across_slots(settings, redis_cluster):
    from django.core.cache import caches

    use_redis(settings, redis_cluster.url)
    cache = caches["default"]
    values = {f"k{i}": i for i in range(20)}  # 20 keys land in different slots
    cache.set_many(values, 30)
    assert cache.get_many(list(values)) == values
    cache.delete_many(list(values))


@pytest.fixture
def own_cluster(tmp_path):
    cluster = OwnRedisCluster(tmp_path / "rc", masters=3, replicas=0).start()
    yield cluster
    cluster.stop()


def _master_of(cluster, key: str) -> int:
    client = get_redis()
    return client.get_node_from_key(key).port


def test_a_stopped_master_sends_its_campaigns_to_the_database_without_a_wrong_grant(settings, own_cluster):
    """No replica: the slots of the stopped master answer errors; admission treats them as "don't know"
    and PostgreSQL decides (cap and budget stay exact); campaigns on the other masters keep their fast path."""
    use_redis(settings, own_cluster.url)
    campaign = CampaignFactory(card_cap=2, total_budget=Decimal("75.00"), face_value=Decimal("25.00"))
    user = UserFactory()
    campaign_join(user=user, campaign=campaign, app_version="1.0.0")
    admission.remember_user(campaign.pk, user.pk, count=1, welcome_code="x")
    port = _master_of(own_cluster, admission._user_key(campaign.pk, user.pk))
    own_cluster.procs.kill(port)

    assert admission.precheck(campaign.pk, user.pk) == (None, False)  # no exception: "don't know"
    voucher_issue(user=user, campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    with pytest.raises(CardLimitReached):
        voucher_issue(user=user, campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    other = UserFactory()
    campaign_join(user=other, campaign=campaign, app_version="1.0.0")
    with pytest.raises(BudgetExhausted):
        campaign_join(user=UserFactory(), campaign=campaign, app_version="1.0.0")
    assert Voucher.objects.filter(campaign=campaign).count() == 3
    assert reconcile(campaign=campaign).ok


def test_no_node_answering_counts_as_no_redis(settings, own_cluster):
    """A process that starts while the whole cluster is down serves from PostgreSQL (no exception escapes)."""
    url = own_cluster.url
    own_cluster.stop()
    use_redis(settings, url)
    assert get_redis() is None
    campaign = CampaignFactory()
    card, created = campaign_join(user=UserFactory(), campaign=campaign, app_version="1.0.0")
    assert created and card.pk


def test_a_replica_takes_over_a_stopped_master(settings, tmp_path):
    cluster = OwnRedisCluster(tmp_path / "rf", masters=3, replicas=1).start()
    try:
        use_redis(settings, cluster.url)
        campaign, user = CampaignFactory(), UserFactory()
        port = _master_of(cluster, admission._user_key(campaign.pk, user.pk))
        cluster.procs.kill(port)
        cluster.procs.wait_ok(seconds=20)  # the replica was promoted: every slot served again
        admission.remember_user(campaign.pk, user.pk, count=1, welcome_code="w")
        assert admission.user_state(campaign.pk, user.pk) == admission.UserState(count=1, welcome_code="w")
        assert _master_of(cluster, admission._user_key(campaign.pk, user.pk)) != port
    finally:
        cluster.stop()
