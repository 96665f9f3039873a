"""Public HTML and image views of an invite: the landing page and its QR codes (no login)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import parse_etags
from django.views.decorators.http import require_safe

from campaign.services import campaign_is_live

from . import sharing
from .selectors import invite_code_get

QR_MAX_AGE = 7 * 24 * 3600  # the image of a code never changes unless the public URL does (new ETag)


def is_wechat(request: HttpRequest) -> bool:
    return "micromessenger" in request.headers.get("User-Agent", "").lower()


@require_safe
def invite_landing(request: HttpRequest, code: str) -> HttpResponse:
    invite = invite_code_get(code=code)
    if invite is None:
        response = render(request, "referrals/not_found.html", {"code": code[:32]}, status=404)
        patch_cache_control(response, private=True, max_age=60)
        return response
    campaign = invite.campaign
    context = {
        "campaign": campaign,
        "code": invite.code,
        "face": sharing.yuan(campaign.face_value),
        "share_text": sharing.share_text(campaign=campaign, code=invite.code),
        # Same-origin path: the page may be served from a host other than the public base URL.
        "qr_svg_url": reverse("invite-qr-svg", args=[invite.code]),
        "app_link": sharing.app_link(invite.code),
        "wechat": is_wechat(request),
        "live": campaign_is_live(campaign) and campaign.referrals_enabled,
    }
    response = render(request, "referrals/landing.html", context)
    # Same URL, different page inside WeChat: caches must key on the User-Agent.
    patch_vary_headers(response, ["User-Agent"])
    patch_cache_control(response, private=True, max_age=60)
    return response


def _qr(request: HttpRequest, code: str, kind: str) -> HttpResponse:
    invite = invite_code_get(code=code)
    if invite is None:
        return HttpResponse("邀请码不存在", status=404, content_type="text/plain; charset=utf-8")
    etag = sharing.qr_etag(invite.code, kind)
    client_etags = parse_etags(request.headers.get("If-None-Match", ""))
    if etag in client_etags or "*" in client_etags:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(sharing.qr_render(invite.code, kind), content_type=sharing.QR_KINDS[kind])
    response["ETag"] = etag
    patch_cache_control(response, public=True, max_age=QR_MAX_AGE)
    return response


@require_safe
def invite_qr_png(request: HttpRequest, code: str) -> HttpResponse:
    return _qr(request, code, "png")


@require_safe
def invite_qr_svg(request: HttpRequest, code: str) -> HttpResponse:
    return _qr(request, code, "svg")
