"""Store search by distance: Redis GEO (GEOSEARCH) when Redis is configured, SQL + haversine otherwise.

The Redis index is only a candidate list: every hit is re-read from PostgreSQL (active, hours),
so a stale or partly rebuilt index can never send an order to a closed or deleted store.
Stores are added on save (signals in apps.ready) and the whole index is rebuilt lazily when
the key is missing (Redis restarted, key expired, fresh prefix).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from dataclasses import dataclass

from django.utils import timezone

from miandan.redis import get_redis, key

from .models import Store

logger = logging.getLogger(__name__)
EARTH_RADIUS_M = 6371008.8
INDEX_TTL = 6 * 3600  # forces a periodic full rebuild, healing any drift


@dataclass(frozen=True)
class Hit:
    store: Store
    distance_m: int


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def is_open(store: Store, now: dt.datetime | None = None) -> bool:
    """Open at `now` in local (Asia/Shanghai) time; closes_at <= opens_at means past midnight."""
    if store.open_24h:
        return True
    if store.opens_at is None or store.closes_at is None:
        return False
    t = timezone.localtime(now or timezone.now()).time()
    if store.opens_at < store.closes_at:
        return store.opens_at <= t < store.closes_at
    if store.opens_at == store.closes_at:
        return True
    return t >= store.opens_at or t < store.closes_at


def _index_key() -> str:
    # Hash-tagged: the rebuild RENAMEs `<this>:building` onto it, which a cluster allows only within one slot.
    return key("{stores}", "geo")


def index_store(store: Store) -> None:
    client = get_redis()
    if client is None:
        return
    try:
        k = _index_key()
        if client.exists(k):  # a missing index is rebuilt whole on the next search
            client.geoadd(k, (store.lng, store.lat, str(store.pk)))
    except Exception as exc:  # Redis down: the search falls back to SQL and the next rebuild heals it
        # One line, no traceback: during an outage this fires on every request.
        logger.warning("store geo index update failed: %s", exc)


def unindex_store(store_id: int) -> None:
    client = get_redis()
    if client is None:
        return
    try:
        client.zrem(_index_key(), str(store_id))
    except Exception as exc:
        # One line, no traceback: during an outage this fires on every request.
        logger.warning("store geo index delete failed: %s", exc)


def rebuild_index() -> int:
    client = get_redis()
    if client is None:
        return 0
    rows = list(Store.objects.values_list("pk", "lat", "lng"))
    k = _index_key()
    # Built under a name of its own (same hash tag, so the same cluster slot), then swapped in with one
    # RENAME: readers see the old index or the whole new one, and two rebuilds never mix. (A Redis Cluster
    # client refuses RENAME inside a pipeline, so the swap is its own command.)
    tmp = f"{k}:building:{uuid.uuid4().hex}"
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(rows), 1000):
        values: list = []
        for pk, lat, lng in rows[i:i + 1000]:
            values.extend((lng, lat, str(pk)))
        pipe.geoadd(tmp, values)
    pipe.expire(tmp, 60)  # a rebuild that dies half-way leaves nothing behind for long
    pipe.execute()
    if rows:
        client.rename(tmp, k)
        client.expire(k, INDEX_TTL)
    return len(rows)


def _candidates_redis(lat: float, lng: float, radius_m: int) -> list[tuple[int, float]] | None:
    client = get_redis()
    if client is None:
        return None
    try:
        k = _index_key()
        if not client.exists(k):
            if rebuild_index() == 0:
                return []
        rows = client.geosearch(k, longitude=lng, latitude=lat, radius=radius_m, unit="m", withdist=True, sort="ASC")
        return [(int(member), float(dist)) for member, dist in rows]
    except Exception as exc:
        # One line, no traceback: during an outage this fires on every request.
        logger.warning("redis geo search failed; using SQL: %s", exc)
        return None


def _candidates_sql(lat: float, lng: float, radius_m: int) -> list[tuple[int, float]]:
    dlat = radius_m / 111_320.0
    dlng = radius_m / (111_320.0 * max(0.01, math.cos(math.radians(lat))))
    rows = Store.objects.filter(
        lat__gte=lat - dlat, lat__lte=lat + dlat, lng__gte=lng - dlng, lng__lte=lng + dlng, active=True
    ).values_list("pk", "lat", "lng")
    out = [(pk, haversine_m(lat, lng, slat, slng)) for pk, slat, slng in rows]
    return sorted((c for c in out if c[1] <= radius_m), key=lambda c: (c[1], c[0]))


def stores_nearby(
    *, lat: float, lng: float, radius_m: int = 3000, open_only: bool = True, brand_ids=None, limit: int | None = 50,
    now: dt.datetime | None = None,
) -> list[Hit]:
    """Active (and by default open) stores within radius, nearest first, distance in metres."""
    candidates = _candidates_redis(lat, lng, radius_m)
    if candidates is None:
        candidates = _candidates_sql(lat, lng, radius_m)
    if not candidates:
        return []
    qs = Store.objects.select_related("brand").filter(pk__in=[pk for pk, _ in candidates], active=True)
    if brand_ids is not None:
        qs = qs.filter(brand_id__in=list(brand_ids))
    stores = {s.pk: s for s in qs}
    now = now or timezone.now()
    hits: list[Hit] = []
    for pk, _ in candidates:
        store = stores.get(pk)
        if store is None or (open_only and not is_open(store, now)):
            continue
        # Distance from the row itself: an index entry may lag a moved store.
        hits.append(Hit(store=store, distance_m=round(haversine_m(lat, lng, store.lat, store.lng))))
        if limit is not None and len(hits) >= limit:
            break
    hits = [h for h in hits if h.distance_m <= radius_m]
    hits.sort(key=lambda h: (h.distance_m, h.store.pk))
    return hits
