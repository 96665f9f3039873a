from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import ISO_8601, serializers, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.auth import token_cache_drop, token_local_user_id
from campaign.gate import campaign_require_visible
from campaign.selectors import campaign_get_cached
from miandan.api.fields import StrictCharField
from miandan.api.idempotency import idempotent
from miandan.api.pagination import Pagination, paginated

from . import admission
from .errors import VoucherNotFound
from .models import Voucher
from .selectors import CardRows, voucher_get
from .services import campaign_join


class VoucherOutput(serializers.Serializer):
    code = serializers.CharField()
    campaign = serializers.CharField(source="campaign.slug")
    status = serializers.CharField()
    status_display = serializers.CharField(source="get_status_display")
    source = serializers.CharField()
    source_display = serializers.CharField(source="get_source_display")
    face_value = serializers.DecimalField(max_digits=16, decimal_places=2)
    subsidy = serializers.DecimalField(max_digits=16, decimal_places=2, allow_null=True)
    slot = serializers.IntegerField()
    order_id = serializers.IntegerField(allow_null=True)
    issued_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


_STATUS_LABELS = dict(Voucher.Status.choices)
_SOURCE_LABELS = dict(Voucher.Source.choices)
# The same DRF fields VoucherOutput declares, so values are formatted by the same code (money quantized to
# 2 places as a string, times in the current time zone as ISO 8601).
_MONEY = serializers.DecimalField(max_digits=16, decimal_places=2)
_TIME = serializers.DateTimeField()


def _time_formatter():
    """`_TIME.to_representation` for this request, with the current time zone looked up once per list instead of
    once per value (the lookup through asgiref's Local was ~5 % of the list in-process, issue 14). Anything but
    an aware datetime under ISO 8601 output goes to DRF itself."""
    drf = _TIME.to_representation
    tz = timezone.get_current_timezone() if settings.USE_TZ else None
    if tz is None or str(getattr(_TIME, "format", api_settings.DATETIME_FORMAT)).lower() != ISO_8601:
        return drf

    def time(value):
        if value is None or value.tzinfo is None:
            return drf(value)
        try:
            text = value.astimezone(tz).isoformat()
        except OverflowError:
            return drf(value)  # DRF's own error
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return time


def card_list_output(rows: list[tuple]) -> list[dict]:
    """VoucherOutput's representation of `CardRows` tuples, field for field and in its order.

    The list endpoint's hot path (issue 14): VoucherOutput spent more time walking its fields per card than the
    formatting itself; tests/vouchers/test_api.py holds both side by side on cards in every state.
    """
    money, time = _MONEY.to_representation, _time_formatter()
    return [
        {
            "code": code,
            "campaign": slug,
            "status": status,
            "status_display": _STATUS_LABELS.get(status, status),
            "source": source,
            "source_display": _SOURCE_LABELS.get(source, source),
            "face_value": money(face_value),
            "subsidy": None if subsidy is None else money(subsidy),
            "slot": slot,
            "order_id": order_id,
            "issued_at": time(issued_at),
            "expires_at": time(expires_at),
        }
        for code, slug, status, source, face_value, subsidy, slot, order_id, issued_at, expires_at in rows
    ]


def card_output(card: Voucher, campaign_slug: str) -> dict:
    """VoucherOutput's representation of one card, by the list's code (the join answers with it: the
    serializer's field walk was ~9 % of a fresh join in-process, issue 14)."""
    return card_list_output([(card.code, campaign_slug, card.status, card.source, card.face_value, card.subsidy,
                              card.slot, card.order_id, card.issued_at, card.expires_at)])[0]


def join_prefetch(request, pipe):
    """Registered with the guard (miandan.api.guard.register_prefetch): a join whose token this process holds
    (accounts/token_local.py: the user is known before authentication) reads what Redis knows of the user
    and the budget in the guard's rate-limit round trip, so a join Redis refuses (card cap, budget exhausted)
    costs one round trip instead of two. Only a read: the view still authenticates, and uses the answer only
    for the same campaign and user."""
    match = request.resolver_match
    if request.method != "POST" or match is None or match.url_name != "campaign-join":
        return None
    user_id = token_local_user_id(request)
    campaign = campaign_get_cached(slug=match.kwargs.get("slug", ""))
    if user_id is None or campaign is None:
        return None
    added = admission.precheck_commands(pipe, campaign.pk, user_id)

    def consume(replies: list) -> None:
        request._join_precheck = (campaign.pk, user_id, admission.precheck_result(replies))

    return added, consume


class CampaignJoinApi(APIView):
    class InputSerializer(serializers.Serializer):
        app_version = StrictCharField(max_length=32, error_messages={"required": "请提供 App 版本号"})

    @extend_schema(
        request=InputSerializer,
        responses={201: VoucherOutput, 200: VoucherOutput},
        summary="Join a campaign and get the welcome card (200 with the same card when repeated)",
    )
    @idempotent
    def post(self, request, slug: str):
        body = request.data
        version = body.get("app_version") if isinstance(body, dict) else None
        if isinstance(version, str) and version.isascii() and version.isprintable() and 0 < len(version.strip()) <= 32:
            # What InputSerializer returns for a plain printable version (trimmed, at most 32 characters),
            # without building the serializer per join (~6 % of a refused join in-process, issue 14).
            app_version = version.strip()
        else:  # anything else gets the serializer and its exact 400
            data = self.InputSerializer(data=body)
            data.is_valid(raise_exception=True)
            app_version = data.validated_data["app_version"]
        campaign = campaign_require_visible(campaign_get_cached(slug=slug))
        first_version = not request.user.joined_app_version
        prefetched = getattr(request._request, "_join_precheck", None)
        known = prefetched[2] if prefetched and prefetched[:2] == (campaign.pk, request.user.pk) else None
        voucher, created = campaign_join(user=request.user, campaign=campaign,
                                         app_version=app_version,
                                         device_id=getattr(request.auth, "device_id", "") or "", known=known)
        if created and first_version:
            # The join recorded the user's first app version: the cached copy of this token would not show it.
            token_cache_drop(request.auth)
        return Response(card_output(voucher, campaign.slug),
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class VoucherListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        campaign = serializers.SlugField(required=False, max_length=64)
        status = serializers.ChoiceField(choices=Voucher.Status.choices, required=False)

    @extend_schema(
        parameters=[
            OpenApiParameter("campaign", str, description="campaign slug"),
            OpenApiParameter("status", str, enum=Voucher.Status.values),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        operation_id="api_v1_vouchers_list",
        responses=paginated(VoucherOutput, "PaginatedVoucherList"),
        summary="The caller's cards",
    )
    def get(self, request):
        params = request.query_params
        if "campaign" in params or "status" in params:
            filters = self.FilterSerializer(data=params)
            filters.is_valid(raise_exception=True)
            campaign_slug, status = filters.validated_data.get("campaign"), filters.validated_data.get("status")
        else:
            # Both filters are optional and nothing else is read from the query here (page and page_size are the
            # paginator's): the plain list, what the app asks for, skips building the serializer's fields
            # (~0.1 ms of DRF field copies per request, measured in-process).
            campaign_slug = status = None
        rows = CardRows(user_id=request.user.pk, campaign_slug=campaign_slug, status=status)
        paginator = Pagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(card_list_output(page))


class VoucherDetailApi(APIView):
    @extend_schema(responses=VoucherOutput, summary="One of the caller's cards")
    def get(self, request, code: str):
        # Only a plausible code reaches the database (a NUL byte is a DataError in PostgreSQL).
        plausible = 0 < len(code) <= 32 and code.isascii() and code.isalnum()
        voucher = voucher_get(user=request.user, code=code) if plausible else None
        if voucher is None:
            raise VoucherNotFound()
        return Response(VoucherOutput(voucher).data)


