"""Login by phone: one-time codes and revocable bearer tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time

from django.conf import settings
from django.core.cache import caches
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from miandan.api.errors import RateLimited

from .auth import hash_token, token_cache_forget
from .errors import OtpInvalid, OtpTooFrequent, OtpTooManyAttempts
from .models import AuthToken, Device, OtpCode, User
from .sms import get_backend

OTP_LIFETIME = dt.timedelta(minutes=5)
OTP_MAX_ATTEMPTS = 5
OTP_MAX_PER_HOUR = 10  # per phone: bounds SMS cost and guessing (5 tries per code)

logger = logging.getLogger(__name__)


def auth_ip_check(*, action: str, ip: str | None) -> None:
    """Fixed-window per-IP counter in the cache (Redis in production). Fails open if the cache is down.

    The general rate-limit layer (miandan.api.guard) sits in front of this; this is the login's own floor.
    """
    if not ip or not settings.MIANDAN_AUTH_IP_FLOOR:
        return
    limit, window = settings.MIANDAN_AUTH_IP_LIMITS.get(action, (None, None))
    if not limit:
        return
    cache = caches["ratelimit"] if "ratelimit" in settings.CACHES else caches["default"]
    now = int(time.time())
    key = f"authip:{action}:{ip}:{now // window}"
    try:
        cache.add(key, 0, timeout=window + 1)
        count = cache.incr(key)
    except Exception:  # a broken cache must not lock everyone out of logging in
        logger.warning("auth ip limit: cache unavailable")
        return
    if count > limit:
        raise RateLimited(retry_after=window - now % window)


def _hash_code(phone: str, code: str) -> str:
    # Keyed hash: a leaked table does not reveal codes, and 10^6 codes cannot be rainbow-tabled.
    return hmac.new(settings.SECRET_KEY.encode(), f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()


def otp_request(*, phone: str, ip: str | None = None) -> str:
    """Create and send a code; returns it (callers must not show it: see sms.code_shown_to_client).

    The send happens after commit (no network inside a transaction).
    """
    backend = get_backend()
    now = timezone.now()
    fixed = settings.MIANDAN_SMS_BACKEND == "fixed"
    with transaction.atomic(durable=True):
        resend = dt.timedelta(seconds=settings.MIANDAN_OTP_RESEND_SECONDS)
        recent = OtpCode.objects.filter(phone=phone, created_at__gt=now - resend, used_at__isnull=True)
        if not fixed and recent.exists():
            raise OtpTooFrequent(retry_after=settings.MIANDAN_OTP_RESEND_SECONDS)
        hourly = OtpCode.objects.filter(phone=phone, created_at__gt=now - dt.timedelta(hours=1))
        if not fixed and hourly.count() >= OTP_MAX_PER_HOUR:
            raise OtpTooFrequent(retry_after=3600)
        code = backend.generate_code()
        OtpCode.objects.create(phone=phone, code_hash=_hash_code(phone, code), expires_at=now + OTP_LIFETIME,
                               request_ip=ip)
        transaction.on_commit(lambda: backend.send(phone, code))
    return code


def otp_verify(*, phone: str, code: str) -> None:
    """Check the newest live code for the phone; every wrong try counts, at most 5."""
    now = timezone.now()
    error: Exception | None = None
    with transaction.atomic(durable=True):
        otp = (
            OtpCode.objects.select_for_update()
            .filter(phone=phone, used_at__isnull=True, expires_at__gt=now)
            .order_by("-created_at")
            .first()
        )
        if otp is None:
            error = OtpInvalid()
        elif otp.attempts >= OTP_MAX_ATTEMPTS:
            error = OtpTooManyAttempts(retry_after=60)
        elif not hmac.compare_digest(otp.code_hash, _hash_code(phone, code)):
            # The failed try must be committed, so the error is raised after the block.
            OtpCode.objects.filter(pk=otp.pk).update(attempts=F("attempts") + 1)
            error = OtpInvalid(extra={"attempts_left": max(0, OTP_MAX_ATTEMPTS - otp.attempts - 1)})
        elif settings.MIANDAN_SMS_BACKEND != "fixed":
            # The fixed backend (load tests) lets one code log in many times.
            OtpCode.objects.filter(pk=otp.pk).update(used_at=now)
    if error is not None:
        raise error


def _user_for_phone(phone: str) -> User:
    user = User.objects.filter(phone=phone).first()
    if user is not None:
        return user
    try:
        with transaction.atomic():
            return User.objects.create_user(username=phone, phone=phone)
    except IntegrityError:
        return User.objects.get(phone=phone)


def token_create(*, user: User, device_id: str = "") -> str:
    """A new bearer token; only its hash is stored. Returns the secret once."""
    raw = secrets.token_urlsafe(32)
    # Handing the token out is its first use: the app's first calls after a login (the join, in a flash crowd)
    # find a last use inside the touch window and write nothing (accounts.auth.token_touch).
    AuthToken.objects.create(key_hash=hash_token(raw), user=user, device_id=device_id[:128],
                             last_used_at=timezone.now())
    return raw


def new_device_id() -> str:
    """A server-issued device id (the app keeps it and sends it on the next login)."""
    return "srv-" + secrets.token_urlsafe(18)


def login_with_otp(*, phone: str, code: str, device_id: str = "", ip: str | None = None, with_device: bool = False):
    """(token, user), or (token, user, device_id) with `with_device`. The token is bound to the device: the
    client's own id, or a server-issued one when it sent none; per-device caps (vouchers.DeviceClaim) count
    the device of the token, never a header a bot could change per request."""
    otp_verify(phone=phone, code=code)
    device_id = (device_id or "").strip()[:128] or new_device_id()
    with transaction.atomic(durable=True):
        user = _user_for_phone(phone)
        device, created = Device.objects.get_or_create(user=user, device_id=device_id[:128],
                                                       defaults={"last_ip": ip})
        if not created and ip:
            Device.objects.filter(pk=device.pk).update(last_ip=ip, last_seen=timezone.now())
        token = token_create(user=user, device_id=device_id)
        User.objects.filter(pk=user.pk).update(last_login=timezone.now())
    return (token, user, device_id) if with_device else (token, user)


def token_revoke(*, token: AuthToken) -> None:
    # The tombstone goes first: from here on the token is read from PostgreSQL, and a request that read it
    # before our commit cannot put its copy back (SET NX). A rollback only leaves a short uncached spell.
    token_cache_forget([token.key_hash])
    AuthToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def user_tokens_forget(*, user_id: int) -> None:
    """A user row changed (deactivated, rights, deleted): their tokens' cached copies must not answer any more."""
    token_cache_forget(list(AuthToken.objects.filter(user_id=user_id).values_list("key_hash", flat=True)))
