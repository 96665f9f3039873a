"""The framework floor: what Django + DRF can do at all on this box, with no project code.

Served by gunicorn beside the project's server (same worker shape, same database) by
`bench/engine.py`, so every project ratio is printed against the framework in the same run:

- `GET  /floor/get`    a bare DRF APIView: no middleware, no authentication, no database, a small JSON body.
- `POST /floor/claim`  the least a card claim can do, in raw SQL on the project's own tables, one transaction:
                       token -> user lookup, a `FOR UPDATE SKIP LOCKED` bucket reserve, the card insert and its
                       ledger insert. Same rows as a project join, so `manage.py reconcile` still passes.

It imports nothing from the project (only Django and DRF), configures Django itself and reads the
same environment as the project's server (DATABASE_URL, FLOOR_CAMPAIGN). Run it alone with

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/miandan_bench_perf FLOOR_CAMPAIGN=bench \\
        .venv/bin/gunicorn bench.floor:application -b 127.0.0.1:8861 -w 4 -k gthread --threads 8
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import threading
from urllib.parse import urlsplit

import django
from django.conf import settings

_db = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/miandan_bench"))
if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="floor-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": _db.path.lstrip("/"), "USER": _db.username or "postgres",
            "PASSWORD": _db.password or "", "HOST": _db.hostname or "127.0.0.1", "PORT": _db.port or 5432,
            "CONN_MAX_AGE": 600,
        }},
        USE_TZ=True,
        TIME_ZONE="Asia/Shanghai",
        # A 500 of the floor must say why in the server log (bench-gunicorn-<port>.log).
        LOGGING={"version": 1, "disable_existing_loggers": False,
                 "handlers": {"console": {"class": "logging.StreamHandler"}},
                 "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR"}}},
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": [], "DEFAULT_PERMISSION_CLASSES": [], "UNAUTHENTICATED_USER": None,
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
            "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
        },
    )
    django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import IntegrityError, connection, transaction  # noqa: E402
from django.urls import path  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
_campaign: dict | None = None
_campaign_lock = threading.Lock()


def _the_campaign() -> dict:
    """The campaign row, read once per process (the project caches it too)."""
    global _campaign
    with _campaign_lock:
        if _campaign is None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT id, face_value, card_cap, bucket_count, card_validity FROM campaign_campaign "
                               "WHERE slug = %s", [os.environ.get("FLOOR_CAMPAIGN", "bench")])
                cid, face, cap, buckets, validity = cursor.fetchone()
            _campaign = {"id": cid, "face": face, "cap": cap, "buckets": buckets, "validity": validity}
    return _campaign


class FloorGet(APIView):
    def get(self, request):
        return Response({"slug": "bench", "name": "压测活动", "status": "live", "is_live": True, "face_value": "25.00",
                         "card_cap": 21, "has_budget": True})


class FloorClaim(APIView):
    def post(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.startswith("Bearer "):
            return Response({"code": "not_authenticated", "detail": "请先登录"}, status=401)
        app_version = request.data.get("app_version") if isinstance(request.data, dict) else None
        if not isinstance(app_version, str):
            return Response({"code": "invalid", "detail": "app_version"}, status=400)
        c = _the_campaign()
        key_hash = hashlib.sha256(header[7:].strip().encode()).hexdigest()
        now = timezone.now()
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT user_id FROM accounts_authtoken WHERE key_hash = %s AND revoked_at IS NULL",
                               [key_hash])
                row = cursor.fetchone()
                if row is None:
                    return Response({"code": "not_authenticated", "detail": "请先登录"}, status=401)
                user_id = row[0]
                n = c["buckets"]
                cursor.execute(
                    'UPDATE campaign_budgetbucket SET reserved = reserved + %s WHERE id = (SELECT id FROM '
                    'campaign_budgetbucket WHERE campaign_id = %s AND allotment >= reserved + spent + %s '
                    'ORDER BY ("index" - %s + %s) %% %s LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id',
                    [c["face"], c["id"], c["face"], user_id % n, n, n])
                bucket = cursor.fetchone()
                if bucket is None:
                    return Response({"code": "budget_exhausted", "detail": "预算已用完"}, status=409)
                cursor.execute(
                    "INSERT INTO vouchers_voucher (code, slot, cap, source, status, face_value, issued_at, expires_at, "
                    "void_reason, bucket_id, campaign_id, user_id) VALUES (%s, 1, %s, 'welcome', 'issued', %s, %s, %s, "
                    "'', %s, %s, %s) RETURNING id",
                    [code, c["cap"], c["face"], now, now + (c["validity"] or dt.timedelta(days=30)), bucket[0],
                     c["id"], user_id])
                voucher_id = cursor.fetchone()[0]
                cursor.execute(
                    "INSERT INTO campaign_ledgerentry (kind, amount, voucher_id, order_id, reason, created_at, actor_id, "
                    "bucket_id, campaign_id) VALUES ('reserve', %s, %s, NULL, 'floor claim', %s, NULL, %s, %s)",
                    [c["face"], voucher_id, now, bucket[0], c["id"]])
        except IntegrityError:
            return Response({"code": "already_joined", "detail": "已领取"}, status=409)
        return Response({"code": code, "campaign": "bench", "face_value": str(c["face"]), "slot": 1}, status=201)


urlpatterns = [path("floor/get", FloorGet.as_view()), path("floor/claim", FloorClaim.as_view())]
application = get_wsgi_application()
