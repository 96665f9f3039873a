"""django-redis client for a Redis Cluster (a `redis+cluster://` LOCATION): the default and the rate-limit caches.

django-redis builds plain `redis.Redis` clients from a pool; this client builds one `RedisCluster` instead
(miandan.redis.make_client) and keeps everything else of django-redis (key prefix, serialisation,
`incr` as a one-key Lua script, `make_key`, which the guard's pipelined counters use). `get_many` reads the
keys slot by slot (MGET across slots is refused by the cluster).
"""

from __future__ import annotations

from django_redis.client import DefaultClient
from django_redis.exceptions import ConnectionInterrupted

from miandan.redis import ERRORS, make_client


class ClusterClient(DefaultClient):
    def connect(self, index: int = 0):
        options = self._options
        return make_client(
            self._server[index],
            connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT", 0.5),
            socket_timeout=options.get("SOCKET_TIMEOUT", 0.5),
            decode_responses=False,  # django-redis (de)serialises values itself
        )

    def get_many(self, keys, version=None, client=None) -> dict:
        if client is None:
            client = self.get_client(write=False)
        if not keys:
            return {}
        map_keys = {self.make_key(k, version=version): k for k in keys}
        try:
            results = client.mget_nonatomic(list(map_keys))
        except ERRORS as e:
            raise ConnectionInterrupted(connection=client) from e
        return {map_keys[k]: self.decode(v) for k, v in zip(map_keys, results, strict=True) if v is not None}
