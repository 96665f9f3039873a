"""Public HTML and image views of an invite: the landing page and its QR codes (no login).

They are DRF views only so that /api/schema/ documents them with the rest of the contract; they
return plain Django responses (HTML, PNG, SVG), whatever the client's Accept header says.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer
from rest_framework.views import APIView

from campaign.gate import campaign_is_live, campaign_is_visible

from . import sharing
from .selectors import invite_code_get


def _printable(text: str) -> str:
    """What the visitor typed, for showing back: control characters (a NUL from /invite/%00) left out."""
    return "".join(ch for ch in text if ch.isprintable())


QR_MAX_AGE = 7 * 24 * 3600  # the image of a code never changes unless the public URL does (new ETag)


class _Passthrough(BaseRenderer):
    """Never used to render (the views return finished responses); names the media type for DRF and the schema."""

    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class HtmlRenderer(_Passthrough):
    media_type, format, charset = "text/html", "html", "utf-8"


class PngRenderer(_Passthrough):
    media_type, format = "image/png", "png"


class SvgRenderer(_Passthrough):
    media_type, format = "image/svg+xml", "svg"


class FirstRenderer(BaseContentNegotiation):
    """A phone's image or page request must never get 406 over its Accept header."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class _PublicView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    content_negotiation_class = FirstRenderer
    http_method_names = ["get", "head", "options"]


def is_wechat(request: HttpRequest) -> bool:
    return "micromessenger" in request.headers.get("User-Agent", "").lower()


CODE_PARAM = OpenApiParameter("code", str, OpenApiParameter.PATH, description="邀请码（不区分大小写，可含空格）")


class InviteLandingView(_PublicView):
    renderer_classes = [HtmlRenderer]

    @extend_schema(
        parameters=[CODE_PARAM],
        responses={
            (200, "text/html"): OpenApiResponse(OpenApiTypes.STR, description="手机落地页；微信内（UA 含 MicroMessenger）"
                                                                              "显示口令与复制按钮而不是跳转链接"),
            (404, "text/html"): OpenApiResponse(OpenApiTypes.STR, description="邀请码不存在：友好的 404 页面"),
        },
        auth=[],
        summary="Invite landing page (HTML)",
        tags=["invite"],
    )
    def get(self, request, code: str) -> HttpResponse:
        invite = invite_code_get(code=code)
        if invite is None or not campaign_is_visible(invite.campaign):  # a draft's invite does not exist yet
            response = render(request._request, "referrals/not_found.html",
                              {"code": _printable(code)[:32], "app_name": settings.MIANDAN_APP_NAME}, status=404)
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
            "app_name": settings.MIANDAN_APP_NAME,
            # No app installed: the campaign page (web) takes the same code in the browser.
            "web_url": f"{reverse('web-campaign', args=[campaign.slug])}?code={invite.code}",
            "wechat": is_wechat(request),
            "live": campaign_is_live(campaign) and campaign.referrals_enabled,
        }
        response = render(request._request, "referrals/landing.html", context)
        # Same URL, different page inside WeChat: caches must key on the User-Agent.
        patch_vary_headers(response, ["User-Agent"])
        patch_cache_control(response, private=True, max_age=60)
        return response


def _qr(request: HttpRequest, code: str, kind: str) -> HttpResponse:
    invite = invite_code_get(code=code)
    if invite is None or not campaign_is_visible(invite.campaign):
        return HttpResponse("邀请码不存在", status=404, content_type="text/plain; charset=utf-8")
    etag = sharing.qr_etag(invite.code, kind, request)
    client_etags = parse_etags(request.headers.get("If-None-Match", ""))
    if etag in client_etags or "*" in client_etags:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(sharing.qr_render(invite.code, kind, request), content_type=sharing.QR_KINDS[kind])
    response["ETag"] = etag
    patch_cache_control(response, public=True, max_age=QR_MAX_AGE)
    return response


def _qr_schema(kind: str, media_type: str):
    return extend_schema(
        parameters=[CODE_PARAM, OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER, required=False)],
        responses={
            (200, media_type): OpenApiResponse(OpenApiTypes.BINARY, description="二维码（内容为落地页绝对地址），"
                                                                                "带 ETag 与 Cache-Control: public"),
            (304, media_type): OpenApiResponse(description="If-None-Match 命中，未修改"),
            (404, "text/plain"): OpenApiResponse(description="邀请码不存在"),
        },
        auth=[],
        summary=f"QR code of an invite ({kind.upper()})",
        tags=["invite"],
    )


class InviteQrPngView(_PublicView):
    renderer_classes = [PngRenderer]

    @_qr_schema("png", "image/png")
    def get(self, request, code: str) -> HttpResponse:
        return _qr(request, code, "png")


class InviteQrSvgView(_PublicView):
    renderer_classes = [SvgRenderer]

    @_qr_schema("svg", "image/svg+xml")
    def get(self, request, code: str) -> HttpResponse:
        return _qr(request, code, "svg")
