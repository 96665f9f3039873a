"""GET /api/v1/reports/campaigns/{slug}/budget — the finance budget report (json, csv, xlsx)."""

from __future__ import annotations

import tempfile
from decimal import Decimal

from django.http import FileResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from campaign.selectors import campaign_get
from miandan.api.errors import NotFound

from .exports import budget_report_csv, budget_report_xlsx
from .selectors import FORMATS, GROUP_BY, BudgetReport, budget_report_cached

REPORT_PERMISSION = "campaign.view_budget_report"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def can_view_budget_report(user) -> bool:
    """Finance (the permission) and superusers. Everyone else must not learn the report exists."""
    return bool(user and user.is_authenticated and user.is_active and user.has_perm(REPORT_PERMISSION))


class IgnoreFormatNegotiation(BaseContentNegotiation):
    """`?format=` is this endpoint's own parameter (csv/xlsx), not DRF's renderer override."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class BudgetReportInput(serializers.Serializer):
    format = serializers.ChoiceField(choices=FORMATS, default="json")
    group_by = serializers.ChoiceField(choices=GROUP_BY, default="day")


class ReconciliationOutput(serializers.Serializer):
    result = serializers.ChoiceField(choices=["PASS", "FAIL"])
    differences = serializers.ListField(child=serializers.CharField())
    totals = serializers.DictField(child=serializers.CharField())


class BudgetReportOutput(serializers.Serializer):
    campaign = serializers.DictField(child=serializers.CharField())
    generated_at = serializers.DateTimeField()
    currency = serializers.CharField()
    group_by = serializers.CharField()
    summary = serializers.DictField(help_text="金额为两位小数的字符串，数量为整数")
    cards_by_source = serializers.DictField(child=serializers.IntegerField())
    cards_by_state = serializers.DictField(child=serializers.IntegerField())
    orders_by_state = serializers.DictField(child=serializers.IntegerField())
    columns = serializers.ListField(child=serializers.DictField())
    rows = serializers.ListField(child=serializers.DictField())
    reconciliation = ReconciliationOutput()


def _json_value(value):
    return f"{value:.2f}" if isinstance(value, Decimal) else value


def report_as_json(report: BudgetReport) -> dict:
    c = report.campaign
    return {
        "campaign": {"slug": c.slug, "name": c.name, "status": c.status},
        "generated_at": report.generated_at.isoformat(),
        "currency": "CNY",
        "group_by": report.group_by,
        "summary": {k: _json_value(v) for k, v in report.summary.items()},
        "cards_by_source": report.cards_by_source,
        "cards_by_state": report.cards_by_state,
        "orders_by_state": report.orders_by_state,
        "columns": [{"key": col.key, "label": col.label, "kind": col.kind} for col in report.columns],
        "rows": [{k: _json_value(v) for k, v in row.items()} for row in report.rows()],
        "reconciliation": report.reconciliation.as_dict(),
    }


def _filename(report: BudgetReport, ext: str) -> str:
    stamp = timezone.localtime(report.generated_at).strftime("%Y%m%d-%H%M%S")
    return f"budget-{report.campaign.slug}-{report.group_by}-{stamp}.{ext}"


def report_response(report: BudgetReport, fmt: str):
    """Shared by the API and the admin download buttons."""
    if fmt == "csv":
        response = StreamingHttpResponse(budget_report_csv(report), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{_filename(report, "csv")}"'
        return response
    if fmt == "xlsx":
        # Write-only openpyxl needs a real file to zip into; a temp file keeps memory flat.
        tmp = tempfile.TemporaryFile()
        budget_report_xlsx(report, tmp)
        tmp.seek(0)
        return FileResponse(tmp, as_attachment=True, filename=_filename(report, "xlsx"), content_type=XLSX_TYPE)
    return Response(report_as_json(report))


class BudgetReportApi(APIView):
    # IsAuthenticated: no or a bad token is 401 (api.md); a signed-in non-finance caller gets 404 in get().
    content_negotiation_class = IgnoreFormatNegotiation

    @extend_schema(
        operation_id="reports_campaign_budget",
        tags=["reports"],
        summary="活动预算报表（财务）",
        description="仅财务组与超级用户可见；未登录 401，其他已登录用户得到 404 not_found。"
        "format=csv 为带 BOM 的 UTF-8 流式下载，"
        "format=xlsx 为 Excel 文件（金额格式 #,##0.00）。",
        parameters=[
            OpenApiParameter("format", str, enum=list(FORMATS), default="json"),
            OpenApiParameter("group_by", str, enum=list(GROUP_BY), default="day"),
        ],
        responses={
            200: OpenApiResponse(BudgetReportOutput, description="JSON；csv/xlsx 时为文件下载"),
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, XLSX_TYPE): OpenApiTypes.BINARY,
            400: OpenApiResponse(description="invalid：format 或 group_by 不合法"),
            404: OpenApiResponse(description="not_found：活动不存在或无权查看"),
        },
    )
    def get(self, request, slug: str):
        if not can_view_budget_report(request.user):
            raise NotFound()
        campaign = campaign_get(slug=slug)
        if campaign is None:
            raise NotFound("活动不存在")
        params = BudgetReportInput(data=request.query_params)
        params.is_valid(raise_exception=True)
        report = budget_report_cached(campaign=campaign, group_by=params.validated_data["group_by"])
        return report_response(report, params.validated_data["format"])
