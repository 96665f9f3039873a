"""Idempotency-Key for creating POSTs (IETF httpapi idempotency-key draft, as api.md states it).

- Keys are scoped to the caller (api.md): one key names one request of that caller, whatever the endpoint.
- A repeat with the same key, endpoint and body gets the original status and body back.
- The same key with a different body, or on another endpoint: 422 `idempotency_key_reused` (the endpoint,
  method + path without the trailing slash, is part of the request's fingerprint).
- A repeat while the first is still running: 409 `idempotency_in_progress`.
- Records live 24 hours. 5xx, 429 and 503 answers are not stored: the client may retry them;
  nor are 400/401/413/415 (refused before doing anything: a corrected request may reuse the key).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from .errors import DomainError, InvalidInput
from .models import IdempotencyRecord

RETENTION = dt.timedelta(hours=24)
STALE_AFTER = dt.timedelta(seconds=120)  # a first attempt that died without finishing
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_TRANSIENT = {429, 503}
# The request was refused before it did anything: keep no record, so a corrected retry can reuse the key.
_NOT_PROCESSED = {400, 401, 413, 415}


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    detail = "该幂等键已用于另一个不同的请求"
    status = 422


class IdempotencyInProgress(DomainError):
    code = "idempotency_in_progress"
    detail = "相同的请求正在处理中，请稍后再试"
    status = 409


# Every record of a caller shares one scope: the column (and its unique constraint with user and key) predates
# caller-wide keys; the endpoint moved into the fingerprint instead.
CALLER_SCOPE = "caller"


def _fingerprint(request) -> str:
    """Hash of the endpoint and the parsed body. A body that does not parse raises here (400/413/415) before any
    record exists. Both spellings of a path are one endpoint (miandan.api.routes): a retry may add or drop the
    slash."""
    endpoint = f"{request.method} {request.path.rstrip('/')}"
    canonical = json.dumps(request.data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{endpoint}\n{canonical}".encode()).hexdigest()


def _replay(record: IdempotencyRecord) -> Response:
    body = json.loads(record.response_body) if record.response_body is not None else None  # keeps key order
    response = Response(body, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def _claim(user, scope: str, key: str, fingerprint: str) -> IdempotencyRecord | None:
    """Insert our record; return the existing one if another request owns the key."""
    now = timezone.now()
    for _ in range(3):
        try:
            with transaction.atomic():
                IdempotencyRecord.objects.create(user=user, scope=scope, key=key, fingerprint=fingerprint)
            return None
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(user=user, scope=scope, key=key).first()
            if existing is None:
                continue  # deleted meanwhile; try again
            expired = existing.created_at < now - RETENTION
            stale = existing.status_code is None and existing.created_at < now - STALE_AFTER
            if expired or stale:
                IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
                continue
            return existing
    raise IdempotencyInProgress()


def idempotent(method):
    """Decorate an APIView's `post`. Without the header the request runs as usual."""

    @functools.wraps(method)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None or not getattr(request.user, "is_authenticated", False):
            return method(self, request, *args, **kwargs)
        if not _KEY.match(key):
            raise InvalidInput(
                "Idempotency-Key 格式不正确", extra={"fields": {"Idempotency-Key": ["1 到 255 个可见 ASCII 字符"]}}
            )
        scope = CALLER_SCOPE
        fingerprint = _fingerprint(request)
        existing = _claim(request.user, scope, key, fingerprint)
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise IdempotencyKeyReused()
            if existing.status_code is None:
                raise IdempotencyInProgress(retry_after=1)
            return _replay(existing)
        records = IdempotencyRecord.objects.filter(user=request.user, scope=scope, key=key)
        try:
            response = method(self, request, *args, **kwargs)
        except Exception as exc:
            try:
                response = self.handle_exception(exc)
            except Exception:
                records.filter(status_code__isnull=True).delete()
                raise
        if response.status_code >= 500 or response.status_code in _TRANSIENT or response.status_code in _NOT_PROCESSED:
            records.filter(status_code__isnull=True).delete()
            return response
        body = JSONRenderer().render(response.data).decode() if response.data is not None else None
        records.update(status_code=response.status_code, response_body=body, completed_at=timezone.now())
        return response

    return wrapper


def idempotency_purge(*, older_than: dt.timedelta = RETENTION) -> int:
    """Delete records past retention (run by Celery beat)."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted
