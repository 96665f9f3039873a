from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import token_cache_drop
from campaign.gate import campaign_require_visible
from campaign.selectors import campaign_get_cached
from miandan.api.fields import StrictCharField
from miandan.api.idempotency import idempotent
from miandan.api.pagination import Pagination, paginated

from .errors import VoucherNotFound
from .models import Voucher
from .selectors import voucher_get, voucher_list
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
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        campaign = campaign_require_visible(campaign_get_cached(slug=slug))
        first_version = not request.user.joined_app_version
        voucher, created = campaign_join(user=request.user, campaign=campaign,
                                         app_version=data.validated_data["app_version"],
                                         device_id=getattr(request.auth, "device_id", "") or "")
        if created and first_version:
            # The join recorded the user's first app version: the cached copy of this token would not show it.
            token_cache_drop(request.auth)
        voucher.campaign = campaign
        return Response(VoucherOutput(voucher).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


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
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = voucher_list(
            user=request.user,
            campaign_slug=filters.validated_data.get("campaign"),
            status=filters.validated_data.get("status"),
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(VoucherOutput(page, many=True).data)


class VoucherDetailApi(APIView):
    @extend_schema(responses=VoucherOutput, summary="One of the caller's cards")
    def get(self, request, code: str):
        # Only a plausible code reaches the database (a NUL byte is a DataError in PostgreSQL).
        plausible = 0 < len(code) <= 32 and code.isascii() and code.isalnum()
        voucher = voucher_get(user=request.user, code=code) if plausible else None
        if voucher is None:
            raise VoucherNotFound()
        return Response(VoucherOutput(voucher).data)


