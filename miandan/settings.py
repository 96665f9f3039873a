"""Miandan settings.

Every server setting comes from the environment. With nothing set, the embedded
defaults run a self-contained demo: SQLite file, local-memory cache, Celery eager.
See README.md ("Settings") for the full table.
"""

import datetime
import hashlib
import hmac
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = env(name)
    try:
        return int(value) if value is not None else default
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_float(name: str, default: float) -> float:
    value = env(name)
    try:
        return float(value) if value is not None else default
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from exc


def env_range(name: str, default: str) -> tuple[float, float]:
    """A range of seconds, "2-30" (uniform between the two) or one number "5"."""
    value = env(name, default) or default
    try:
        low, _, high = value.partition("-")
        bounds = (float(low), float(high or low))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a range of seconds such as 2-30, got {value!r}") from exc
    if not 0 <= bounds[0] <= bounds[1]:
        raise ImproperlyConfigured(f"{name} must be a range of seconds such as 2-30, got {value!r}")
    return bounds


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in (env(name, default) or "").split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
# The fallback key only exists so that the two-command demo works out of the box;
# `check --deploy` flags it (security.W009) because it is short and marked insecure.
SECRET_KEY = env("SECRET_KEY", "django-insecure-miandan-demo-only")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",  # admin login throttling (accounts/backends.py)
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served by us: /api/docs/ works offline, pinned version
    "miandan.api",
    "accounts",
    "events",  # the event stream (outbox + webhooks): below campaign, whose services and those above write to it
    "campaign",
    "vouchers",
    "referrals",
    "orders",
    "reports",
    "demo",  # top floor: demo data and simulation (imports every app; nothing imports it)
    "web",  # the pages people see: home (/) and the campaign page (/c/<slug>/); they call the public API
]

MIDDLEWARE = [
    "miandan.api.middleware.RequestIdMiddleware",
    # Admission of campaign writes before anything else runs: a refusal costs no I/O.
    "miandan.api.guard.SheddingMiddleware",
    "miandan.api.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, API docs, the campaign page's CSS/JS) from the process itself, so `make run` and the
    # cluster need no separate file server; a dictionary lookup for any other path.
    "miandan.staticfiles.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so its process_view runs right before the view: kill switch -> rate limit (shedding came first).
    "miandan.api.guard.GuardMiddleware",
    # Turns a locked-out admin login into its 429 page (accounts/backends.py).
    "axes.middleware.AxesMiddleware",
]
# The chain of an app call to the JSON API (a /api/v1/ path, no session cookie: miandan/api/stack.py): the same
# order without what only the admin and the pages use (static files, sessions, CSRF, auth, messages, axes).
# The app authenticates with its bearer token in DRF; a browser with a session cookie gets MIDDLEWARE.
MIANDAN_API_MIDDLEWARE = [
    "miandan.api.middleware.RequestIdMiddleware",
    "miandan.api.guard.SheddingMiddleware",
    "miandan.api.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "miandan.api.guard.GuardMiddleware",
]

ROOT_URLCONF = "miandan.urls"
WSGI_APPLICATION = "miandan.wsgi.application"
ASGI_APPLICATION = "miandan.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
DATABASE_URL = env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {"timeout": 20}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
# Parallel test runs on one server need distinct test databases.
if env("MIANDAN_TEST_DB_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": env("MIANDAN_TEST_DB_NAME")}
USING_POSTGRES = DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql")
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The same backend with a health check that needs no `SELECT 1` round trip on a live connection
    # (miandan/db_engines/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "miandan.db_engines.postgresql"
# DATABASE_URL points at PgBouncer in transaction pooling: each transaction may run on another server
# connection, so nothing may outlive a transaction. No server-side cursors (`.iterator()` would open a
# named cursor on one connection and fetch on another: tests/vouchers/test_pgbouncer.py) and no prepared
# statements (Django binds client-side, which prepares nothing; prepare_threshold=None keeps it so should
# OPTIONS ever turn server_side_binding on). Advisory locks are transaction-scoped already
# (miandan/db.py). Run the database with `timezone = UTC` (ALTER DATABASE ... SET timezone) so Django
# never needs its session-level SET TIME ZONE.
MIANDAN_PGBOUNCER = env_bool("MIANDAN_PGBOUNCER", False)


def for_pgbouncer(database: dict) -> None:
    """What transaction pooling needs of one DATABASES entry (also used by tests/vouchers/test_pgbouncer.py)."""
    database["DISABLE_SERVER_SIDE_CURSORS"] = True
    database["OPTIONS"] = {**database.get("OPTIONS", {}), "prepare_threshold": None}


if MIANDAN_PGBOUNCER and USING_POSTGRES:
    for_pgbouncer(DATABASES["default"])

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# Admin logins: django-axes first (a locked username + address is refused before its password is checked).
AUTHENTICATION_BACKENDS = [
    "accounts.backends.AdminLoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = datetime.timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
# One username from one client address: a guessing run is stopped, a colleague on another network is not.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The same client address as the rate limits (behind MIANDAN_PROXY_COUNT trusted proxies).
AXES_CLIENT_IP_CALLABLE = "miandan.api.guard.client.client_inet"  # None when not an address (force_login)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Redis, cache, Celery ------------------------------------------------------------
REDIS_URL = env("REDIS_URL")
REDIS_KEY_PREFIX = env("REDIS_KEY_PREFIX", "miandan")
# Under pytest-xdist (`make test` runs the suite on several workers) each worker gets its own keys and queue, as
# pytest-django gives it its own test database. The servers and Celery workers a test starts inherit the
# variable and the unsuffixed environment, so they land on the same suffix; a name that already carries it
# (a test passes `mdq-x-gw1-ff-1234` down explicitly) is left alone. Set by pytest-xdist only, never by an operator.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _per_worker(name: str) -> str:
    if not _XDIST_WORKER or f"-{_XDIST_WORKER}-" in f"{name}-":
        return name
    return f"{name}-{_XDIST_WORKER}"


REDIS_KEY_PREFIX = _per_worker(REDIS_KEY_PREFIX)
# Seconds; for the cache and the fast-path client (admission, capacity, GEO): a slow Redis must not slow requests.
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 0.5)
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 0.5)


def _redis_client_class(url: str) -> str:
    """django-redis client for a URL: a `redis+cluster://` URL gets the cluster client (miandan/cache_cluster.py)."""
    return ("miandan.cache_cluster.ClusterClient" if url.startswith("redis+cluster://")
            else "django_redis.client.DefaultClient")


if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            # A list: django-redis would split a string at the commas of a cluster URL's node list.
            "LOCATION": [REDIS_URL],
            "KEY_PREFIX": REDIS_KEY_PREFIX,
            "OPTIONS": {
                "CLIENT_CLASS": _redis_client_class(REDIS_URL),
                "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "miandan-default",
        }
    }

# --- Flash-crowd guard (miandan/api/guard.py; docs/operations.md) -------------------
# Rate-limit counters get their own cache alias: short timeouts, and errors reach the guard
# (no IGNORE_EXCEPTIONS) so it applies its per-endpoint Redis-down policy.
RATELIMIT_REDIS_URL = env("RATELIMIT_REDIS_URL", REDIS_URL)
if RATELIMIT_REDIS_URL:
    CACHES["ratelimit"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": [RATELIMIT_REDIS_URL],
        "KEY_PREFIX": REDIS_KEY_PREFIX,
        "OPTIONS": {
            "CLIENT_CLASS": _redis_client_class(RATELIMIT_REDIS_URL),
            "SOCKET_CONNECT_TIMEOUT": env_float("RATELIMIT_REDIS_TIMEOUT", 0.2),
            "SOCKET_TIMEOUT": env_float("RATELIMIT_REDIS_TIMEOUT", 0.2),
        },
    }
else:
    CACHES["ratelimit"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "miandan-rl"}
RATELIMIT_USE_CACHE = "ratelimit"
RATELIMIT_ENABLE = env_bool("RATELIMIT_ENABLE", True)
# Overrides of the per-endpoint limits, e.g. "join_user=10/m,join_ip=60/m" (names in miandan/options.py);
# checked by the system check miandan.E001 (miandan/checks.py).
MIANDAN_RATELIMITS = dict(item.split("=", 1) for item in env_list("MIANDAN_RATELIMITS") if "=" in item)
# Number of trusted reverse proxies in front of gunicorn that append to X-Forwarded-For (0: use REMOTE_ADDR).
MIANDAN_PROXY_COUNT = env_int("MIANDAN_PROXY_COUNT", 0)
# The login endpoints' own per-IP floor (30 codes / 60 logins per 10 min); off only for load tests from one address.
MIANDAN_AUTH_IP_FLOOR = env_bool("MIANDAN_AUTH_IP_FLOOR", True)
MIANDAN_SHED_ENABLED = env_bool("MIANDAN_SHED_ENABLED", True)
# Per-process concurrency limit of campaign writes (miandan/api/guard/shedding.py). 0 = from the server shape:
# floor ceil(cores / gunicorn workers), ceiling the worker's threads minus one, start at 2.
MIANDAN_SHED_MIN_LIMIT = env_int("MIANDAN_SHED_MIN_LIMIT", 0)
MIANDAN_SHED_MAX_LIMIT = env_int("MIANDAN_SHED_MAX_LIMIT", 0)
MIANDAN_SHED_INITIAL_LIMIT = env_int("MIANDAN_SHED_INITIAL_LIMIT", 0)
# The limit rises while write latency stays within this multiple of the learned no-load latency.
MIANDAN_SHED_TOLERANCE = env_float("MIANDAN_SHED_TOLERANCE", 4.0)
# Base of Retry-After on a shed answer; each answer says base..2 x base seconds at random (jitter).
MIANDAN_SHED_RETRY_AFTER = env_int("MIANDAN_SHED_RETRY_AFTER", 1)
# A write that already queued longer than MAX_QUEUE_MS (in the gunicorn worker's own queue, stamped by
# miandan.server, or before it by a trusted proxy's X-Request-Start) is shed itself. With the limit full, a write
# may wait for a slot for what is left of MAX_WAIT_MS after its queueing, when a slot is expected in that time.
MIANDAN_SHED_MAX_QUEUE_MS = env_float("MIANDAN_SHED_MAX_QUEUE_MS", 500.0)
MIANDAN_SHED_MAX_WAIT_MS = env_float("MIANDAN_SHED_MAX_WAIT_MS", 1000.0)
# A write that queued longer than QUEUE_TARGET_MS never waits for a slot (a standing queue); behind a trusted
# proxy (MIANDAN_PROXY_COUNT > 0), most of the last 20 writes above it cut the limit by 20 %.
MIANDAN_SHED_QUEUE_TARGET_MS = env_float("MIANDAN_SHED_QUEUE_TARGET_MS", 100.0)
MIANDAN_READYZ_TIMEOUT = env_float("MIANDAN_READYZ_TIMEOUT", 1.0)

# A Redis Cluster cannot be a Celery broker: with a `redis+cluster://` REDIS_URL name the broker (RabbitMQ).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", None if (REDIS_URL or "").startswith("redis+cluster://") else REDIS_URL)
if (CELERY_BROKER_URL or "").startswith("redis+cluster://"):
    raise ImproperlyConfigured("CELERY_BROKER_URL cannot be a Redis Cluster; use RabbitMQ (amqp://) or a plain redis://")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", CELERY_BROKER_URL is None)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = _per_worker(env("CELERY_DEFAULT_QUEUE", "miandan"))
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 60
CELERY_TASK_SOFT_TIME_LIMIT = 45
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis broker: a message a worker took but never acknowledged (acks_late; the worker was killed) is delivered
# again after this many seconds. Longer than any task (60 s hard limit) plus its longest retry countdown (60 s),
# or a slow task would run twice; RabbitMQ redelivers at once when the worker's connection drops.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 300)}
CELERY_TIMEZONE = "Asia/Shanghai"
CELERY_BEAT_SCHEDULE: dict = {}
# Voucher engine (vouchers/tasks.py): expiry returns reservations; idempotency records live 24 h.
CELERY_BEAT_SCHEDULE.update({
    "vouchers-expire": {"task": "vouchers.expire_batch", "schedule": 60.0},
    "idempotency-purge": {"task": "api.idempotency_purge", "schedule": 3600.0},
})

# --- I18N ---------------------------------------------------------------------------
LANGUAGE_CODE = "zh-hans"
# Project overrides of a few wrong or missing Chinese messages of Django and DRF (locale/zh_Hans/LC_MESSAGES).
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
TIME_ZONE = "Asia/Shanghai"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise (miandan/staticfiles.py) serves from the apps' static folders too, so the demo needs no collectstatic.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "media/"

# --- Security (production values come from the environment) --------------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 64 * 1024)

# --- DRF ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "miandan.api.negotiation.AppNegotiation",
    "DEFAULT_PARSER_CLASSES": ["miandan.api.parsers.LimitedJSONParser"],  # enforces DATA_UPLOAD_MAX_MEMORY_SIZE
    "DEFAULT_PAGINATION_CLASS": "miandan.api.pagination.Pagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "miandan.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "miandan.api.schema.AutoSchema",  # unique component names, bearer auth
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Miandan API",
    "DESCRIPTION": "免单 — giveaway campaigns: login, cards, referrals, one-sentence orders.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from drf-spectacular-sidecar (static files of a pinned package), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["miandan.api.schema.drop_slash_aliases"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "miandan.api.schema.document_operations_endpoints",
                             "miandan.api.schema.document_guard_responses",
                             "miandan.api.schema.document_error_responses",
                             "miandan.api.schema.document_links"],
}

# --- Miandan ------------------------------------------------------------------------
# Unset: invite links use the host of the request (right for any port in development).
MIANDAN_PUBLIC_BASE_URL = env("MIANDAN_PUBLIC_BASE_URL")
# Deep link behind the landing page's "open the app" button ({code} is filled in); never shown inside WeChat.
MIANDAN_APP_INVITE_LINK = env("MIANDAN_APP_INVITE_LINK", "qianwen://miandan/invite?code={code}")
# The app's name as users know it: share text (口令), invite page, campaign page ("打开千问App").
MIANDAN_APP_NAME = env("MIANDAN_APP_NAME", "千问")
MIANDAN_SMS_BACKEND = env("MIANDAN_SMS_BACKEND", "console")
MIANDAN_FIXED_OTP = env("MIANDAN_FIXED_OTP")
MIANDAN_OTP_RESEND_SECONDS = env_int("MIANDAN_OTP_RESEND_SECONDS", 30)
# Seconds a token -> user copy lives in Redis (accounts/auth.py); revocation is exact anyway. 0 turns the copy off.
MIANDAN_TOKEN_CACHE_SECONDS = env_int("MIANDAN_TOKEN_CACHE_SECONDS", 60)  # a phone gets a new code at most this often
# Seconds a process keeps its own copy of a token copy, invalidated through Redis pub/sub as soon as it is revoked
# (accounts/token_local.py); 0 turns it off. Plain Redis only (off on a Redis Cluster URL).
MIANDAN_TOKEN_LOCAL_SECONDS = env_int("MIANDAN_TOKEN_LOCAL_SECONDS", 5)
# The login endpoints' own per-IP floor: action -> (max requests, window seconds); generous, carrier NAT shares IPs.
MIANDAN_AUTH_IP_LIMITS = {"otp": (30, 600), "token": (60, 600)}
MIANDAN_BUDGET_BUCKETS = env_int("MIANDAN_BUDGET_BUCKETS", 64)
# Merchant integration (orders/merchant.py; docs/operations.md "Merchants"). The adapter submits orders to
# MIANDAN_MERCHANT_URL with our order id as the idempotency key; the merchant reports progress as signed events
# to /api/v1/merchants/<name>/events (HMAC-SHA256 with MIANDAN_MERCHANT_SECRET) and answers polls for orders we
# have not heard about for MIANDAN_MERCHANT_POLL_SECONDS.
MIANDAN_MERCHANT_ADAPTER = env("MIANDAN_MERCHANT_ADAPTER", "orders.merchant.SimulatedMerchant")
MIANDAN_MERCHANT_URL = env("MIANDAN_MERCHANT_URL", "http://127.0.0.1:8790")
# Unset: derived from SECRET_KEY, so every process of one deployment (and the simulated merchant started from
# the same environment) agrees on it and no fixed demo secret can ever sign events in production.
MIANDAN_MERCHANT_SECRET = env("MIANDAN_MERCHANT_SECRET") or hmac.new(
    SECRET_KEY.encode(), b"miandan-merchant-callbacks", hashlib.sha256).hexdigest()
MIANDAN_MERCHANT_POLL_SECONDS = env_int("MIANDAN_MERCHANT_POLL_SECONDS", 30)
# The simulated merchant (`manage.py simulated_merchant`): seconds from receiving an order to accepting it, and
# from accepting it to delivering it (ranges "a-b", uniform), share of orders it rejects, share of events it
# sends twice, and a seed for repeatable runs.
MIANDAN_MERCHANT_ACCEPT_SECONDS = env_range("MIANDAN_MERCHANT_ACCEPT_SECONDS", "1-3")
MIANDAN_MERCHANT_DELIVER_SECONDS = env_range("MIANDAN_MERCHANT_DELIVER_SECONDS", "2-5")
MIANDAN_MERCHANT_REJECT_RATE = env_float("MIANDAN_MERCHANT_REJECT_RATE", 0.0)
MIANDAN_MERCHANT_DUPLICATE_RATE = env_float("MIANDAN_MERCHANT_DUPLICATE_RATE", 0.0)
MIANDAN_MERCHANT_SEED = env("MIANDAN_MERCHANT_SEED")
# Orders (orders/services.py): search radius for chat orders, when the sweeper re-sends a stuck
# order, and when an order no store accepted is failed (its card goes back to the user).
MIANDAN_ORDER_RADIUS_M = env_int("MIANDAN_ORDER_RADIUS_M", 5000)
MIANDAN_ORDER_CANDIDATE_STORES = env_int("MIANDAN_ORDER_CANDIDATE_STORES", 20)  # nearest stores a chat order tries
MIANDAN_ORDER_STUCK_SECONDS = env_int("MIANDAN_ORDER_STUCK_SECONDS", 60)
MIANDAN_ORDER_ACCEPT_DEADLINE_SECONDS = env_int("MIANDAN_ORDER_ACCEPT_DEADLINE_SECONDS", 600)
CELERY_BEAT_SCHEDULE["orders-sweep"] = {"task": "orders.sweep", "schedule": 30.0}
# Reports: sum new ledger rows into per-minute rows (the live dashboard's burn line reads those).
CELERY_BEAT_SCHEDULE["reports-ledger-rollup"] = {"task": "reports.ledger_rollup", "schedule": 30.0}
# Reports: the spend-ahead-of-plan alert (log line + miandan_budget_pace_alerts_total), issue 20.
CELERY_BEAT_SCHEDULE["reports-pace-check"] = {"task": "reports.pace_check", "schedule": 60.0}
# Orders due for a check (no news from the merchant, or never sent) are asked about in batches: no worker waits.
CELERY_BEAT_SCHEDULE["orders-poll"] = {"task": "orders.poll", "schedule": 5.0}
# Event stream (events/, docs/events.md): business events written in the transaction of the change (outbox),
# pushed to the endpoints configured in admin, signed, in order per campaign, retried with exponential backoff
# (base doubling up to the max) for MIANDAN_EVENTS_RETRY_SECONDS (3 days), then dead-lettered.
MIANDAN_EVENTS_ENABLED = env_bool("MIANDAN_EVENTS_ENABLED", True)
MIANDAN_EVENTS_HTTP_TIMEOUT = env_float("MIANDAN_EVENTS_HTTP_TIMEOUT", 10.0)
MIANDAN_EVENTS_BACKOFF_BASE_SECONDS = env_float("MIANDAN_EVENTS_BACKOFF_BASE_SECONDS", 10.0)
MIANDAN_EVENTS_BACKOFF_MAX_SECONDS = env_float("MIANDAN_EVENTS_BACKOFF_MAX_SECONDS", 3600.0)
MIANDAN_EVENTS_RETRY_SECONDS = env_int("MIANDAN_EVENTS_RETRY_SECONDS", 3 * 24 * 3600)
# A worker owns a cursor this long; one killed mid-batch lets it run out and another picks the cursor up.
MIANDAN_EVENTS_LEASE_SECONDS = env_int("MIANDAN_EVENTS_LEASE_SECONDS", 60)
CELERY_BEAT_SCHEDULE["events-deliver"] = {"task": "events.deliver", "schedule": 5.0}

# --- Security hardening (issue 16; docs/operations.md "Security") ---------------------------------
# A load test may run with DJANGO_DEBUG=0 and the fixed/console SMS backend; production never does
# (`check --deploy` errors miandan.E010 otherwise).
MIANDAN_LOAD_TEST = env_bool("MIANDAN_LOAD_TEST", False)
# A bearer token is refused this many days after it was issued (checked on cached copies too).
MIANDAN_TOKEN_MAX_AGE_DAYS = env_int("MIANDAN_TOKEN_MAX_AGE_DAYS", 30)
# last_used_at is written at most once per this many seconds per token (the hot path must not write per request).
MIANDAN_TOKEN_TOUCH_SECONDS = env_int("MIANDAN_TOKEN_TOUCH_SECONDS", 60)
# /metrics: a scrape with `Authorization: Bearer <MIANDAN_METRICS_TOKEN>`, or from an allow-listed network.
MIANDAN_METRICS_TOKEN = env("MIANDAN_METRICS_TOKEN")
MIANDAN_METRICS_ALLOWED_NETS = env_list("MIANDAN_METRICS_ALLOWED_NETS", "127.0.0.1/32,::1/128")
# Export files: random names under a folder no web server serves; removed after the retention (beat task).
MIANDAN_EXPORT_ROOT = Path(env("MIANDAN_EXPORT_ROOT", str(BASE_DIR / "var" / "exports")))
MIANDAN_EXPORT_RETENTION_HOURS = env_int("MIANDAN_EXPORT_RETENTION_HOURS", 72)
CELERY_BEAT_SCHEDULE["reports-export-cleanup"] = {"task": "reports.export_cleanup", "schedule": 3600.0}
# The budget report's JSON/CSV/XLSX GET reuses one reconcile for this many seconds (0: always fresh).
MIANDAN_REPORT_CACHE_SECONDS = env_int("MIANDAN_REPORT_CACHE_SECONDS", 30)
# The HTTP SMS provider backend (MIANDAN_SMS_BACKEND=http): POST JSON {phone, text} to this URL.
MIANDAN_SMS_HTTP_URL = env("MIANDAN_SMS_HTTP_URL")
MIANDAN_SMS_HTTP_TOKEN = env("MIANDAN_SMS_HTTP_TOKEN")
MIANDAN_SMS_HTTP_TIMEOUT = env_float("MIANDAN_SMS_HTTP_TIMEOUT", 3.0)
MIANDAN_SMS_HTTP_RETRIES = env_int("MIANDAN_SMS_HTTP_RETRIES", 2)
# Invite QR PNGs are rendered once per code and kept in the cache this long.
MIANDAN_QR_CACHE_SECONDS = env_int("MIANDAN_QR_CACHE_SECONDS", 86400)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "miandan.api.middleware.RequestIdFilter"}},
    "formatters": {"json": {"()": "miandan.api.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]}
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's default config leaves django.server with propagate=False; without its own handler here its
        # lines went to logging's last-resort stderr handler as plain text, without the request id.
        "django.server": {"level": "WARNING", "handlers": ["console"], "propagate": False},
    },
}
