"""What an invite looks like outside the app: absolute link, QR codes, and the copyable 口令.

WeChat blocks share links it deems 诱导分享, so every invite must also survive as a QR image
and as plain text that carries the code with no link at all.
"""

from __future__ import annotations

import hashlib
import io
from decimal import Decimal

from django.conf import settings
from django.urls import reverse

from campaign.models import Campaign

QR_VERSION = "1"  # bump when the rendering below changes, so cached images (ETag) are refreshed
QR_KINDS = {"png": "image/png", "svg": "image/svg+xml"}


def public_url(path: str, request=None) -> str:
    """Absolute URL: MIANDAN_PUBLIC_BASE_URL when set (production, behind a CDN or proxy), otherwise the
    host the request came in on, so a server on any port hands out links that work."""
    base = settings.MIANDAN_PUBLIC_BASE_URL
    if not base and request is not None:
        return request.build_absolute_uri(path)
    return (base or "http://127.0.0.1:8000").rstrip("/") + path


def invite_url(code: str, request=None) -> str:
    return public_url(reverse("invite-landing", args=[code]), request)


def qr_url(code: str, kind: str, request=None) -> str:
    return public_url(reverse(f"invite-qr-{kind}", args=[code]), request)


def app_link(code: str) -> str:
    """Deep link that opens the app on the accept screen (configurable; never shown inside WeChat)."""
    # replace(), not format(): a stray brace in the environment value must not break the page.
    return settings.MIANDAN_APP_INVITE_LINK.replace("{code}", code)


def yuan(amount: Decimal) -> str:
    """25.00 -> "25", 12.50 -> "12.5": how people write prices in a chat message."""
    text = f"{amount.normalize():f}"
    return text


def share_text(*, campaign: Campaign, code: str) -> str:
    """The 口令: readable on its own, survives being pasted anywhere, no URL in it."""
    return (
        f"【{campaign.name}】好友请你喝奶茶！复制这段话打开{settings.MIANDAN_APP_NAME}App，输入邀请码 {code}，"
        f"我们各得一张{yuan(campaign.face_value)}元免单卡"
    )


def qr_etag(code: str, kind: str, request=None) -> str:
    """Derived from everything the image depends on, so a 304 needs no rendering."""
    digest = hashlib.sha256(f"{QR_VERSION}|{kind}|{invite_url(code, request)}".encode()).hexdigest()[:32]
    return f'"{digest}"'


def qr_render(code: str, kind: str, request=None) -> bytes:
    """The QR image, rendered once per code (and link base) and then served from the cache.

    Rendering a PNG costs milliseconds of CPU; a popular invite shared in a big group chat is scanned
    thousands of times, and a flood of QR requests must not be a cheap way to burn the web workers' CPU.
    """
    from django.core.cache import cache

    url = invite_url(code, request)
    cache_key = f"qr:{kind}:{code}:{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    seconds = settings.MIANDAN_QR_CACHE_SECONDS
    if seconds > 0:
        try:
            hit = cache.get(cache_key)
        except Exception:
            hit = None
        if hit is not None:
            return hit
    data = _qr_bytes(code, kind, url)
    if seconds > 0:
        try:
            cache.set(cache_key, data, seconds)
        except Exception:
            pass
    return data


def _qr_bytes(code: str, kind: str, url: str) -> bytes:
    import segno  # about 11 MB resident: only processes that draw a QR code carry it (issue 12's RSS budget)

    qr = segno.make(url, error="m")
    buf = io.BytesIO()
    if kind == "png":
        qr.save(buf, kind="png", scale=10, border=2)
    else:
        qr.save(buf, kind="svg", scale=10, border=2, xmldecl=False, title=f"邀请码 {code}")
    return buf.getvalue()
