import hashlib
import time

from django.http import HttpResponse, HttpResponseNotModified
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import BearerTokenAuthentication
from miandan.api.negotiation import PLAIN_ACCEPTS

from .errors import CampaignNotFound
from .gate import campaign_is_live, campaign_require_visible
from .models import Campaign
from .selectors import (
    CACHE_SECONDS,
    DETAIL_CACHE,
    DETAIL_EXACT_BELOW_CARDS,
    budget_totals,
    campaign_get,
    campaign_get_cached,
    campaign_list_live,
)


class CampaignOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    is_live = serializers.SerializerMethodField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    face_value = serializers.DecimalField(max_digits=16, decimal_places=2)
    card_cap = serializers.IntegerField()
    max_subsidy = serializers.SerializerMethodField()
    min_app_version = serializers.CharField()
    card_validity_days = serializers.SerializerMethodField()
    has_budget = serializers.SerializerMethodField()
    switches = serializers.SerializerMethodField()

    def get_is_live(self, obj: Campaign) -> bool:
        return campaign_is_live(obj)

    def get_max_subsidy(self, obj: Campaign) -> str:
        return f"{obj.face_value * obj.card_cap:.2f}"

    def get_card_validity_days(self, obj: Campaign) -> int:
        return obj.card_validity.days

    def get_has_budget(self, obj: Campaign) -> bool:
        available = budget_totals(campaign_id=obj.pk)["available"]
        self.context["cacheable"] = available >= obj.face_value * DETAIL_EXACT_BELOW_CARDS
        return available >= obj.face_value

    def get_switches(self, obj: Campaign) -> dict[str, bool]:
        return {"claims": obj.claims_enabled, "referrals": obj.referrals_enabled, "orders": obj.orders_enabled}


def campaign_or_404(slug: str) -> Campaign:
    # A draft is not announced yet: app users must not learn of it (ended ones stay visible for their cards).
    return campaign_require_visible(campaign_get(slug=slug))


class CampaignListApi(APIView):
    @extend_schema(responses=CampaignOutput(many=True), summary="Live campaigns")
    def get(self, request):
        return Response(CampaignOutput(campaign_list_live(), many=True).data)


class CampaignDetailApi(APIView):
    """The page every app open polls: the same bytes for every user, so rendered once per process.

    The rendered detail is kept for CACHE_SECONDS (the kill-switch staleness bound), with an ETag
    (`If-None-Match` -> 304, no body) and `Cache-Control: public, max-age=1` so the app and a CDN in
    front can answer repeats; it holds nothing user-specific. Near the end of a budget (fewer than
    DETAIL_EXACT_BELOW_CARDS cards left) it is rendered per request, so `has_budget` turns exactly.
    """

    def dispatch(self, request, *args, **kwargs):
        """The app's poll in a short way: a GET with a bearer token, a plain `Accept` and the detail already
        rendered in this process is answered here, without DRF's request wrapping, negotiation and response
        finalising (~15 % of this page in-process, issue 14). Anything else (no or a bad token, a staff token,
        a miss, HEAD, OPTIONS, another Accept) goes through DRF as before; tests/api/test_campaign_fast_path.py
        holds the two answers equal header for header."""
        fast = self._fast(request, kwargs.get("slug", ""))
        return fast if fast is not None else super().dispatch(request, *args, **kwargs)

    def _fast(self, request, slug: str):
        if request.method != "GET" or "format" in request.GET or \
                request.META.get("HTTP_ACCEPT", "*/*").strip() not in PLAIN_ACCEPTS:
            return None
        hit = self._fresh(slug)
        if hit is None:
            return None
        try:
            found = BearerTokenAuthentication().authenticate(request)
        except Exception:  # 401/403, a database error (503 busy): DRF answers it, from the start
            return None
        if found is None:
            return None  # no bearer token: DRF's other authenticators and its 401
        request.user, request.auth = found
        response = self._answer(request, hit)
        response["Allow"] = ", ".join(self.allowed_methods)  # what DRF's finalize_response adds
        return response

    @staticmethod
    def _fresh(slug: str):
        """The detail rendered in this process within CACHE_SECONDS, or None."""
        hit = DETAIL_CACHE.get(slug)
        return hit if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS else None

    @extend_schema(responses=CampaignOutput, summary="One campaign with its rules")
    def get(self, request, slug: str):
        hit = self._fresh(slug)
        if hit is None:
            now = time.monotonic()
            campaign = campaign_get_cached(slug=slug)
            if campaign is None or campaign.status == Campaign.Status.DRAFT:
                raise CampaignNotFound()
            output = CampaignOutput(campaign, context={})
            body = JSONRenderer().render(output.data)
            hit = (now, body, '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"')
            if output.context.get("cacheable"):
                if len(DETAIL_CACHE) > 1000:
                    DETAIL_CACHE.clear()
                DETAIL_CACHE[slug] = hit
        return self._answer(request, hit)

    @staticmethod
    def _answer(request, hit) -> HttpResponse:
        _, body, etag = hit
        if etag in request.META.get("HTTP_IF_NONE_MATCH", ""):
            response = HttpResponseNotModified()
        else:
            response = HttpResponse(body, content_type="application/json")
        response["ETag"] = etag
        response["Cache-Control"] = "public, max-age=1"
        return response
