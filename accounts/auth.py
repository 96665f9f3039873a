"""Bearer token authentication against revocable, hashed tokens, with a Redis copy of token -> user.

Every API request authenticates, so the token lookup is the most frequent query of the platform.
A valid token's row and its user's row are copied to Redis (`<prefix>:tok:<sha256>`, one GET per
request instead of a SELECT with a join) for `MIANDAN_TOKEN_CACHE_SECONDS`. Revocation stays exact:

- a revoked token, a deactivated or changed user: the service writes a *tombstone* ("-") over the
  token's entry *before* its change commits, for longer than any entry lives. A tombstone means "ask
  PostgreSQL", and a request that read the database before the commit can only add its stale copy
  with SET NX, which the tombstone refuses. So the request after a logout's answer is refused.
- expiry (MIANDAN_TOKEN_MAX_AGE_DAYS after issue) is checked on every request from the cached row itself
  (`token_is_valid`), so a copy never outlives its token.
- last_used_at is written at most once per MIANDAN_TOKEN_TOUCH_SECONDS per token: a Redis SET NX marker in
  the same round trip as the cache GET decides, and the UPDATE itself is conditional on the stored time, so
  even without Redis the hot path writes at most once a minute per token.
- staff tokens (is_staff / is_superuser) only open the reports API: a leaked finance token cannot act as an
  app user, and staff work elsewhere goes through the admin (session, CSRF, login throttling).
- Redis down or an odd entry: the database answers, exactly as without the cache.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, models
from rest_framework import authentication, exceptions

from miandan.api.guard import AdmissionRefused
from miandan.redis import ERRORS as REDIS_ERRORS
from miandan.redis import get_redis, key

from . import token_local
from .token_local import LOCAL

logger = logging.getLogger(__name__)
TOMBSTONE = "-"
# The user's password hash never leaves PostgreSQL (it stays deferred on a cached user).
_USER_EXCLUDE = frozenset({"password"})


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


# Paths a staff member's bearer token may open (the rest of the API is for app users).
STAFF_TOKEN_PATHS = ("/api/v1/reports/",)


def token_expires_at(token) -> dt.datetime:
    return token.created_at + dt.timedelta(days=settings.MIANDAN_TOKEN_MAX_AGE_DAYS)


def token_is_valid(token, now: dt.datetime | None = None) -> bool:
    """The one rule for "this token may be used", applied to database rows and cached copies alike."""
    from django.utils import timezone

    if token.revoked_at is not None or not token.user.is_active:
        return False
    return (now or timezone.now()) < token_expires_at(token)


def staff_token_allowed(user, path: str) -> bool:
    return not (user.is_staff or user.is_superuser) or path.startswith(STAFF_TOKEN_PATHS)


def _touch_key(key_hash: str) -> str:
    return key("toktouch", key_hash)


def token_touch(token, *, due: bool | None) -> None:
    """Record last use, at most once per MIANDAN_TOKEN_TOUCH_SECONDS per token.

    `due` is the Redis marker's verdict (True: we set it, False: someone did within the window, None: no
    Redis). The UPDATE only matches a row whose stored time is older than the window, so concurrent requests
    and a missing Redis still write at most once per window.
    """
    from django.utils import timezone

    if due is False or settings.MIANDAN_TOKEN_TOUCH_SECONDS < 0:
        return
    now = timezone.now()
    window = dt.timedelta(seconds=settings.MIANDAN_TOKEN_TOUCH_SECONDS)
    # The row (read now, or copied earlier) was used within the window: the stored time is at least as recent,
    # so the conditional UPDATE below would match nothing. (The login stamps a new token's first use.)
    if token.last_used_at is not None and now - token.last_used_at < window:
        return
    try:
        if connection.vendor == "postgresql":
            # The same conditional UPDATE the ORM would send, without building it per request (issue 14).
            with connection.cursor() as cursor:
                cursor.execute(_touch_sql(), [now, token.pk, now - window])
        else:
            from django.db.models import Q

            from .models import AuthToken

            stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - window)
            AuthToken.objects.filter(stale, pk=token.pk).update(last_used_at=now)
    except AdmissionRefused:
        raise  # a campaign write with no slot free for its first statement: answered 503 busy, not a failed touch
    except Exception:  # bookkeeping: never fail a request over it (e.g. a read-only replica)
        logger.warning("token touch failed", exc_info=True)


@functools.cache
def _touch_sql() -> str:
    from .models import AuthToken

    qn = connection.ops.quote_name
    return (f"UPDATE {qn(AuthToken._meta.db_table)} SET last_used_at = %s "
            "WHERE id = %s AND (last_used_at IS NULL OR last_used_at < %s)")


@functools.cache
def _token_row_sql() -> tuple[str, list[str], list[str]]:
    """`AuthToken.objects.select_related("user").filter(key_hash=..., revoked_at__isnull=True)` as one fixed
    statement (key_hash is unique): the ORM spent ~1 ms of Python building it on every cold token (issue 14)."""
    from .models import AuthToken, User

    qn = connection.ops.quote_name
    tok, usr = AuthToken._meta.concrete_fields, User._meta.concrete_fields
    columns = [f"t.{qn(f.column)}" for f in tok] + [f"u.{qn(f.column)}" for f in usr]
    sql = (f"SELECT {', '.join(columns)} FROM {qn(AuthToken._meta.db_table)} t "
           f"JOIN {qn(User._meta.db_table)} u ON u.{qn(User._meta.pk.column)} = t.{qn('user_id')} "
           "WHERE t.key_hash = %s AND t.revoked_at IS NULL")
    return sql, [f.attname for f in tok], [f.attname for f in usr]


def _token_row(key_hash: str):
    """The unrevoked token with this hash and its user, or None."""
    from .models import AuthToken, User

    if connection.vendor != "postgresql":  # raw rows skip the backend's converters (SQLite: text datetimes)
        return AuthToken.objects.select_related("user").filter(key_hash=key_hash, revoked_at__isnull=True).first()
    sql, tok_names, usr_names = _token_row_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    n = len(tok_names)
    token = AuthToken.from_db(connection.alias, tok_names, row[:n])
    token.user = User.from_db(connection.alias, usr_names, row[n:])
    return token


def _cache_key(key_hash: str) -> str:
    return key("tok", key_hash)


def _dump(obj: models.Model, exclude: frozenset[str] = frozenset()) -> dict:
    out = {}
    for field in obj._meta.concrete_fields:
        if field.attname in exclude:
            continue
        value = getattr(obj, field.attname)
        out[field.attname] = value.isoformat() if isinstance(value, dt.datetime | dt.date) else value
    return out


def _fields(model: type[models.Model], data: dict) -> tuple[list[str], tuple]:
    names, values = [], []
    for field in model._meta.concrete_fields:  # from_db wants the values in field order
        if field.attname not in data:
            continue
        value = data[field.attname]
        if value is not None and isinstance(field, models.DateTimeField):
            value = dt.datetime.fromisoformat(value)
        names.append(field.attname)
        values.append(value)
    return names, tuple(values)  # immutable values only (str, int, bool, datetime, None): safe to share


def _encode(token) -> str:
    return json.dumps({"t": _dump(token), "u": _dump(token.user, _USER_EXCLUDE)}, separators=(",", ":"))


# A copy's parsed fields by its text: the same copy is decoded on every request that presents its token (from
# this process's copy or from Redis), and parsing it (JSON, ISO datetimes) was most of the decoding. New model
# instances are built per request from the shared immutable values. Bounded; cleared when full.
_PARSED: dict[str, tuple] = {}
_PARSED_MAX = 5_000


def _parsed(raw: str) -> tuple:
    """((token field names, values), (user field names, values)) of a copy, parsed once per text."""
    from .models import AuthToken, User

    parsed = _PARSED.get(raw)
    if parsed is None:
        data = json.loads(raw)
        parsed = (_fields(AuthToken, data["t"]), _fields(User, data["u"]))
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[raw] = parsed
    return parsed


def _decode(raw: str):
    from .models import AuthToken, User

    (token_names, token_values), (user_names, user_values) = _parsed(raw)
    token = AuthToken.from_db(DEFAULT_DB_ALIAS, token_names, token_values)
    token.user = User.from_db(DEFAULT_DB_ALIAS, user_names, user_values)
    return token


def _cache_commands(pipe, key_hash: str) -> int:
    """Queue the token copy's GET and the touch marker's SET NX on a pipeline; returns how many commands."""
    if settings.MIANDAN_TOKEN_CACHE_SECONDS > 0:
        pipe.get(_cache_key(key_hash))
    pipe.set(_touch_key(key_hash), "1", ex=max(1, settings.MIANDAN_TOKEN_TOUCH_SECONDS), nx=True)
    return 2 if settings.MIANDAN_TOKEN_CACHE_SECONDS > 0 else 1


def _cache_get(key_hash: str):
    """(cached token or None, touch due: True/False, None without Redis, the raw copy or None), in one Redis
    round trip.

    None as token: miss, tombstone, Redis down or an unreadable entry: ask the database.
    """
    client = get_redis()
    if client is None:
        return None, None, None
    try:
        pipe = client.pipeline(transaction=False)
        _cache_commands(pipe, key_hash)
        replies = pipe.execute()
    except REDIS_ERRORS:
        return None, None, None
    return _cache_result(replies)


def _cache_result(replies: list):
    due = bool(replies[-1])
    raw = replies[0] if len(replies) == 2 else None
    if isinstance(raw, bytes):  # read by the rate-limit cache's client (no decode_responses)
        raw = raw.decode()
    if not raw or raw == TOMBSTONE:
        return None, due, None
    token = _decode_or_none(raw)
    return token, due, raw if token is not None else None


def _decode_or_none(raw: str):
    try:
        return _decode(raw)
    except Exception:  # an entry written by another version of the models: the database answers
        logger.warning("token cache: unreadable entry", exc_info=True)
        return None


def _cache_fill(token) -> None:
    client = get_redis() if settings.MIANDAN_TOKEN_CACHE_SECONDS > 0 else None
    if client is None:
        return
    try:
        # NX: a tombstone written since our read (a revocation) wins.
        client.set(_cache_key(token.key_hash), _encode(token), ex=settings.MIANDAN_TOKEN_CACHE_SECONDS, nx=True)
    except REDIS_ERRORS:
        pass


def token_cache_drop(token) -> None:
    """Drop a valid token's copy because its user row changed in this request (not for revocations: those
    need `token_cache_forget`'s tombstone); the next request reads PostgreSQL and copies the new row."""
    if token is None:
        return
    LOCAL.drop([token.key_hash])
    client = get_redis()
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        pipe.delete(_cache_key(token.key_hash))
        if token_local.publishes():  # every process's own copy (accounts/token_local.py)
            pipe.publish(token_local.channel(), token.key_hash)
        pipe.execute()
    except REDIS_ERRORS:
        pass
    LOCAL.drop([token.key_hash])


def token_cache_forget(key_hashes: list[str]) -> None:
    """Tombstones over these tokens' entries: requests read PostgreSQL for the next entry lifetime (call
    before the change commits; a rollback only costs that spell of uncached reads)."""
    if not key_hashes:
        return
    LOCAL.drop(key_hashes)
    client = get_redis()
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for key_hash in key_hashes:
            pipe.set(_cache_key(key_hash), TOMBSTONE, ex=settings.MIANDAN_TOKEN_CACHE_SECONDS + 5)
        # Every process's own copy goes too (accounts/token_local.py), in the same round trip.
        for start in range(0, len(key_hashes), 500) if token_local.publishes() else ():
            pipe.publish(token_local.channel(), " ".join(key_hashes[start:start + 500]))
        pipe.execute()
        LOCAL.drop(key_hashes)  # a copy read here between the first drop and the tombstone
    except REDIS_ERRORS:
        # The entries expire on their own; until then a revoked token could still pass, so say it loudly.
        logger.error("token cache: could not forget %d token(s); they expire within %s s", len(key_hashes),
                     settings.MIANDAN_TOKEN_CACHE_SECONDS)


def _bearer_hash(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(header) != 2 or header[0].lower() != "bearer" or not header[1].isascii():
        return None
    return hash_token(header[1])


def _local_copy(request) -> tuple[str | None, str | None]:
    """(token hash, this process's copy or None) for the request's bearer token, looked up once per request:
    the guard's riders and `authenticate` share it (an invalidation after that lookup reaches this request
    no more than it would have a microsecond earlier)."""
    request = getattr(request, "_request", request)  # DRF's Request wraps Django's
    found = getattr(request, "_token_local", None)
    if found is None:
        key_hash = _bearer_hash(request)
        found = request._token_local = (key_hash, LOCAL.get(key_hash) if key_hash else None)
    return found


def token_local_user_id(request) -> int | None:
    """The user id of the request's bearer token when this process holds its copy (accounts/token_local.py),
    else None. Not an authentication: for reads that may ride ahead of it (the join's Redis precheck)."""
    raw = _local_copy(request)[1]
    if raw is None:
        return None
    try:  # the fields `authenticate` will build the token from, parsed once for both
        names, values = _parsed(raw)[0]
        return int(values[names.index("user_id")])
    except (ValueError, KeyError, TypeError):
        return None


def token_prefetch(request, pipe):
    """Registered with the guard (miandan.api.guard.register_prefetch): a rate-limited request's token copy is
    read in the same Redis round trip as its counters, and `authenticate` uses that answer. Only a read: a
    tombstone or a miss still sends the request to PostgreSQL, so revocation stays exact. (A request then
    refused 429 has set the touch marker without writing last_used_at: that token's next window writes it.)"""
    key_hash, local = _local_copy(request)
    if key_hash is None or local is not None:
        return None  # no token, or this process holds its copy: `authenticate` answers from it
    ticket = LOCAL.begin()  # before the read: a revocation arriving meanwhile keeps the copy out of LOCAL
    added = _cache_commands(pipe, key_hash)

    def consume(replies: list) -> None:
        request._token_prefetched = (key_hash, _cache_result(replies), ticket)

    return added, consume


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("令牌格式错误")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("令牌格式错误") from exc
        key_hash = hash_token(raw)
        # A guarded write read the copy already, in the guard's rate-limit round trip (token_prefetch).
        known_hash, local = _local_copy(request)
        if known_hash != key_hash:  # a header DRF reads differently from the guard's split (never in practice)
            local = LOCAL.get(key_hash)
        if local is not None:
            # This process's copy of the Redis copy (accounts/token_local.py): no round trip, and no touch
            # (the read that filled it made the touch decision less than one entry's life ago).
            token, due = _decode_or_none(local), False
        else:
            prefetched = getattr(getattr(request, "_request", request), "_token_prefetched", None)
            if prefetched and prefetched[0] == key_hash:
                (token, due, copy), ticket = prefetched[1], prefetched[2]
            else:
                ticket = LOCAL.begin()
                token, due, copy = _cache_get(key_hash)
            if token is not None and token_is_valid(token):
                LOCAL.put(ticket, key_hash, copy)
        if token is None:
            token = _token_row(key_hash)
            if token is not None and token_is_valid(token):
                _cache_fill(token)
        if token is None or not token_is_valid(token):
            raise exceptions.AuthenticationFailed("登录已失效，请重新登录")
        if not staff_token_allowed(token.user, request.path):
            logger.warning("staff token refused outside the reports API", extra={"user_id": token.user.pk})
            raise exceptions.PermissionDenied("员工令牌只能用于报表接口")
        token_touch(token, due=due)
        request.auth_token = token
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
