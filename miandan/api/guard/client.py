"""Who is asking: the client address behind trusted proxies, and request facts the guard keys on.

One helper for the whole project: rate-limit keys, the login's per-IP floor and the referral
fraud rules all see the same address (accounts and referrals import `client_inet` from here).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json

from django.conf import settings


def client_ip(request) -> str:
    """REMOTE_ADDR, or the address MIANDAN_PROXY_COUNT trusted proxies put in X-Forwarded-For."""
    count = settings.MIANDAN_PROXY_COUNT
    if count > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= count:
            return hops[-count][:64]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def client_inet(request) -> str | None:
    """`client_ip` when it is a valid IP address (for inet columns), else None."""
    try:
        return str(ipaddress.ip_address(client_ip(request)))
    except ValueError:
        return None


def bearer_key(request) -> str | None:
    """The bearer token's hash: identifies the caller without a database lookup before the view."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer " and len(header) > 7:
        return "t:" + hashlib.sha256(header[7:].strip().encode()).hexdigest()[:32]
    return None


def json_body(request) -> dict:
    """The JSON object body, parsed once per request; {} for anything else (the view answers 400 itself)."""
    if getattr(request, "_guard_body", None) is not None:
        return request._guard_body
    body: dict = {}
    if request.content_type == "application/json":
        try:
            parsed = json.loads(request.body or b"{}")
            body = parsed if isinstance(parsed, dict) else {}
        except Exception:  # malformed JSON or too big: the view answers 400 itself
            body = {}
    request._guard_body = body
    return body
