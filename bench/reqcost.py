"""Per-request cost of the hot paths, in-process: ms per request, SQL statements and Redis commands per request.

Runs each request shape N times through Django's full stack (test client: middleware, guard, DRF, views;
no network, no gunicorn) against the bench database that `bench/engine.py` prepared, and prints one row
per shape. `--cprofile NAME` prints the top functions of one shape instead. Nothing is mocked: the
statements are the ones PostgreSQL receives, the Redis commands the ones redis-py sends.

    .venv/bin/python bench/engine.py --smoke                 # prepares the bench database (or any engine run)
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/miandan_bench REDIS_URL=redis://127.0.0.1:6379/14 \
           REDIS_KEY_PREFIX=bench MIANDAN_LOAD_TEST=1 MIANDAN_SMS_BACKEND=fixed MIANDAN_FIXED_OTP=246810
    .venv/bin/python bench/server.py call bench.reqcost:run '{"n": 100}'
    .venv/bin/python bench/server.py call bench.reqcost:run '{"n": 100, "shapes": "cards", "cprofile": "cards"}'
    REQCOST_SORT=tottime .venv/bin/python bench/server.py call ...   # the profile by own time, not cumulative

(`call` runs with the current environment: point it at the engine's database and Redis prefix.) Each shape
replays 10 users, so the numbers are those of a user who comes back (token copy and Redis state warm).
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import time


def _tokens(prefix: str, n: int, *, without_cards: bool = False) -> list[str]:
    """Raw tokens cannot be read back (only hashes are stored): mint fresh ones for existing users.

    `without_cards`: only users holding no card yet (a fresh join stays fresh when the tool is run again)."""
    import hashlib
    import secrets

    from django.db.models import Exists, OuterRef

    from accounts.models import AuthToken, User
    from vouchers.models import Voucher

    users = User.objects.filter(phone__startswith=prefix)
    if without_cards:
        users = users.filter(~Exists(Voucher.objects.filter(user=OuterRef("pk"))))
    users = list(users.order_by("id")[:n])
    raws = [secrets.token_urlsafe(32) for _ in users]
    AuthToken.objects.bulk_create([AuthToken(user=u, key_hash=hashlib.sha256(r.encode()).hexdigest(),
                                             device_id=f"profile-{u.pk}") for u, r in zip(users, raws, strict=True)])
    return raws


class _WsgiClient:
    """The production entry point (miandan.wsgi.application: the app-call dispatch, the chunked-body wrapper)
    called with a WSGI environ built by Django's RequestFactory: what gunicorn hands a worker thread, minus
    the HTTP parsing."""

    def __init__(self, **defaults):
        from django.test import RequestFactory

        from miandan.wsgi import application

        self.factory, self.app = RequestFactory(**defaults), application

    def _call(self, method: str, path: str, body, **extra):
        import json

        data = json.dumps(body) if body is not None else ""
        environ = self.factory.generic(method.upper(), path, data, content_type="application/json",
                                       **extra).environ
        status = []
        chunks = self.app(environ, lambda s, h, exc_info=None: status.append(s))
        b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()

        class _R:
            status_code = int(status[0].split()[0])

        return _R

    def get(self, path, body=None, content_type=None, **extra):
        return self._call("get", path, None, **extra)

    def post(self, path, body=None, content_type=None, **extra):
        return self._call("post", path, body, **extra)


def run(*, n: int = 200, cprofile: str = "", shapes: str = "", wsgi: bool = False) -> dict:
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from miandan.redis import get_redis

    settings.ALLOWED_HOSTS = ["*"]
    settings.MIANDAN_PROXY_COUNT = 1
    settings.RATELIMIT_ENABLE = True
    settings.MIANDAN_RATELIMITS = {"order_user": "1000/m", "join_user": "1000/m"}  # the same 50 users repeat here
    # Few users, many requests each: the steady state of a user who comes back (token copy, what Redis knows).
    me, capped, exhausted = _tokens("13", 10), _tokens("17", 10), _tokens("18", 10)
    fresh = _tokens("15", n + 20, without_cards=True)
    orderers = _tokens("14", 10)
    join = {"app_version": "1.0.0"}
    order = {"text": "来一杯喜茶多肉葡萄，少冰", "lat": 30.2741, "lng": 120.1551, "campaign": "bench", "pay_full_price": True}
    all_shapes = {
        "healthz": ("get", "/healthz", None, None),
        "campaign": ("get", "/api/v1/campaigns/bench/", None, me),
        "me": ("get", "/api/v1/me", None, me),
        "cards": ("get", "/api/v1/vouchers/", None, me),
        "join-capped": ("post", "/api/v1/campaigns/bench/join", join, capped),
        "join-exhausted": ("post", "/api/v1/campaigns/bench-empty/join", join, exhausted),
        "join-fresh": ("post", "/api/v1/campaigns/bench/join", join, fresh),
        "order-chat": ("post", "/api/v1/orders/chat", order, orderers),
    }
    wanted = [s for s in (shapes.split(",") if shapes else all_shapes) if s in all_shapes]
    redis_calls = {"n": 0}
    client_redis = get_redis()
    if client_redis is not None:
        real = client_redis.execute_command
        real_pipe = type(client_redis.pipeline()).execute

        def counting(*args, **kwargs):
            redis_calls["n"] += 1
            return real(*args, **kwargs)

        def counting_pipe(self, *args, **kwargs):
            redis_calls["n"] += 1
            return real_pipe(self, *args, **kwargs)

        client_redis.execute_command = counting
        type(client_redis.pipeline()).execute = counting_pipe
    out = {}
    for name in wanted:
        method, path, body, tokens = all_shapes[name]
        c = _WsgiClient(HTTP_X_FORWARDED_FOR="10.77.0.1") if wsgi else Client(HTTP_X_FORWARDED_FOR="10.77.0.1")
        # Warm: caches, connections, the Redis state of capped users.
        for i in range(min(20, len(tokens or [None]))):
            tok = tokens[i % len(tokens)] if tokens else None
            getattr(c, method)(path, body, content_type="application/json",
                               **({"HTTP_AUTHORIZATION": f"Bearer {tok}"} if tok else {}))
        statuses: dict[int, int] = {}
        redis_calls["n"] = 0
        prof = cProfile.Profile() if cprofile == name else None
        with CaptureQueriesContext(connection) as queries:
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            for i in range(n):
                tok = tokens[(i + 20) % len(tokens)] if tokens else None
                r = getattr(c, method)(path, body, content_type="application/json",
                                       HTTP_X_FORWARDED_FOR=f"10.77.{i >> 8}.{i & 255}",
                                       **({"HTTP_AUTHORIZATION": f"Bearer {tok}"} if tok else {}))
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if prof:
                prof.disable()
            elapsed = time.perf_counter() - t0
        out[name] = {"ms_per_request": round(1000 * elapsed / n, 3), "sql_per_request": round(len(queries) / n, 2),
                     "redis_per_request": round(redis_calls["n"] / n, 2), "statuses": statuses}
        if prof:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(os.environ.get("REQCOST_SORT", "cumulative")).print_stats(45)
            out[name]["profile"] = buf.getvalue()
            print(buf.getvalue())
        print(f"{name:<16}{out[name]['ms_per_request']:>8.2f} ms {out[name]['sql_per_request']:>6.2f} SQL "
              f"{out[name]['redis_per_request']:>6.2f} Redis  {statuses}")
    return {k: {kk: vv for kk, vv in v.items() if kk != "profile"} for k, v in out.items()}
