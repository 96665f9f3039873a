"""Admin screens that need cards, orders and referrals: the live dashboard, report downloads, export jobs.

The campaign admin itself lives in `campaign.admin`; this module re-registers it with the extra
pages because `campaign` must not import the apps above it.
"""

from __future__ import annotations

import logging
import threading
from itertools import islice

from django.contrib import admin, messages
from django.contrib.admin.sites import NotRegistered
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.db.models import OuterRef, Subquery
from django.http import FileResponse, Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from campaign.admin import CampaignAdmin, LedgerEntryAdmin
from campaign.models import Campaign, LedgerEntry
from miandan.api.errors import DomainError
from orders.models import Order
from vouchers.models import Voucher

from . import svg
from .api import can_view_budget_report
from .exports import GROUP_TITLES, report_sections
from .models import ExportJob
from .selectors import GROUP_BY, SHANGHAI, budget_report_cached, dashboard
from .services import export_job_request, export_path, ledger_rollup_advance

STATE_LABELS_ORDERS = dict(Order.Status.choices)
UNIT_LABELS = {"minute": "分钟", "hour": "小时", "day": "天"}
REFRESH_SECONDS = 10
REPORT_PAGE_ROWS = 400  # on screen; the downloads carry every row
# The dashboard is served from one shared copy (issue 14: at 5 M cards computing it takes over a second):
# younger than DASHBOARD_FRESH_SECONDS it is served as is; older, it is still served at once while ONE
# viewer's process recomputes it in a background thread (a Redis flag makes it one across processes), so no
# viewer waits for the computation except the first after DASHBOARD_KEEP_SECONDS without any. The page shows
# the data's time (数据时间).
DASHBOARD_FRESH_SECONDS = 3
DASHBOARD_KEEP_SECONDS = 300
DASHBOARD_REFRESH_FLAG_SECONDS = 60  # a refresh that died lets the next one start after this long

logger = logging.getLogger(__name__)


def _fresh_dashboard(campaign: Campaign):
    # Move the ledger rollup forward first (beat does it every 30 s too), so the burn line reads
    # per-minute sums plus only the newest ledger rows.
    ledger_rollup_advance(campaign=campaign)
    return dashboard(campaign=campaign)


def _dashboard_key(campaign_id: int) -> str:
    return f"reports:dashboard:{campaign_id}"


def _refresh_dashboard(campaign_id: int) -> None:
    """Recompute the shared copy (a background thread's body: its own database connection, closed at the end)."""
    try:
        cache.set(_dashboard_key(campaign_id), _fresh_dashboard(Campaign.objects.get(pk=campaign_id)),
                  DASHBOARD_KEEP_SECONDS)
    except Exception:
        logger.exception("dashboard refresh failed for campaign %s", campaign_id)
    finally:
        try:
            cache.delete(_dashboard_key(campaign_id) + ":refresh")
        except Exception:
            pass
        connections.close_all()  # this thread's connections only (they are per thread)


def _spawn_refresh(campaign_id: int) -> threading.Thread:
    thread = threading.Thread(target=_refresh_dashboard, args=(campaign_id,), name="dashboard-refresh", daemon=True)
    thread.start()
    return thread


def cached_dashboard(campaign: Campaign):
    """The shared copy of the campaign's dashboard, refreshed behind the viewers (see DASHBOARD_FRESH_SECONDS)."""
    key = _dashboard_key(campaign.pk)
    try:
        data = cache.get(key)
    except Exception:  # a cache outage must not take the dashboard down
        return _fresh_dashboard(campaign)
    if data is None:
        data = _fresh_dashboard(campaign)
        try:
            cache.set(key, data, DASHBOARD_KEEP_SECONDS)
        except Exception:
            pass
        return data
    if (timezone.now() - data.generated_at).total_seconds() >= DASHBOARD_FRESH_SECONDS:
        try:
            first = cache.add(key + ":refresh", 1, DASHBOARD_REFRESH_FLAG_SECONDS)
        except Exception:
            first = False
        if first:
            _spawn_refresh(campaign.pk)
    return data


def dashboard_context(campaign: Campaign) -> dict:
    data = cached_dashboard(campaign)
    fmt = {"minute": "%H:%M", "hour": "%m-%d %H:00", "day": "%m-%d"}[data.burn_unit]
    burn_labels = [t.astimezone(SHANGHAI).strftime(fmt) for t, _, _ in data.burn]
    return {
        "data": data,
        "burn_svg": svg.line_chart(
            [("已承诺（预留+花费）", "#c0392b", [float(c) for _, c, _ in data.burn]),
             ("已花费", "#2980b9", [float(s) for _, _, s in data.burn]),
             *([("投放计划", "#27ae60", [float(p) for p in data.plan_line])] if data.plan_line else [])],
            burn_labels, title=f"预算消耗（累计，元；每{UNIT_LABELS[data.burn_unit]}一点）",
        ),
        "cards_svg": svg.column_chart(
            [n for _, n in data.cards_per_minute], [m.strftime("%H:%M") for m, _ in data.cards_per_minute],
            title="每分钟发卡数（最近 60 分钟）",
        ),
        "orders_svg": svg.bar_chart([(STATE_LABELS_ORDERS[k], v) for k, v in data.orders_by_state.items()],
                                    title="订单状态"),
        "stores_svg": svg.bar_chart(
            [(f"{s['store__brand__name']} {s['store__name']}"[:14], s["orders"]) for s in data.top_stores],
            title="订单最多的门店（前 10）", colour="#8e44ad"),
        "funnel_svg": svg.bar_chart(data.referral_funnel, title="邀请漏斗", colour="#d35400"),
        "in_flight": [(STATE_LABELS_ORDERS[k], v) for k, v in data.orders_in_flight.items()],
        "in_flight_total": sum(data.orders_in_flight.values()),
        "refresh_seconds": REFRESH_SECONDS,
    }


class CampaignReportAdmin(CampaignAdmin):
    def object_buttons(self, request, obj):
        buttons = [("实时看板", reverse("admin:campaign_campaign_dashboard", args=[obj.pk]))]
        buttons += super().object_buttons(request, obj)
        if can_view_budget_report(request.user):
            # One button: the report on screen, with every download (CSV / XLSX by day, brand, city) on it.
            buttons.append(("预算报表", reverse("admin:campaign_campaign_report", args=[obj.pk])))
        return buttons

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        extra_context["can_export"] = can_view_budget_report(request.user) and request.user.has_perm(
            "reports.add_exportjob")
        extra_context["export_url"] = reverse("admin:campaign_campaign_export", args=[object_id]) if object_id else ""
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        own = [
            path("<int:pk>/dashboard/", self.admin_site.admin_view(self.dashboard_view),
                 name="campaign_campaign_dashboard"),
            path("<int:pk>/dashboard.json", self.admin_site.admin_view(self.dashboard_json),
                 name="campaign_campaign_dashboard_json"),
            path("<int:pk>/export/", self.admin_site.admin_view(self.export_view), name="campaign_campaign_export"),
            path("<int:pk>/report/", self.admin_site.admin_view(self.report_view), name="campaign_campaign_report"),
        ]
        return own + super().get_urls()

    def _campaign_for_view(self, request, pk: int) -> Campaign:
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_view_permission(request, campaign):
            raise PermissionDenied
        return campaign

    def dashboard_view(self, request, pk: int):
        campaign = self._campaign_for_view(request, pk)
        return TemplateResponse(request, "reports/dashboard.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "original": campaign,
            "campaign": campaign, "title": f"实时看板：{campaign.name}", **dashboard_context(campaign),
        })

    def report_view(self, request, pk: int):
        """The budget report on screen for finance: figures, reconciliation, grouped rows, and its downloads."""
        if not can_view_budget_report(request.user):
            raise Http404  # like the API: others must not learn the report exists
        campaign = get_object_or_404(Campaign, pk=pk)
        group_by = request.GET.get("group_by", "day")
        if group_by not in GROUP_BY:
            group_by = "day"
        report = budget_report_cached(campaign=campaign, group_by=group_by)
        rows = list(islice(report.rows(), REPORT_PAGE_ROWS + 1))
        base = reverse("report-budget", args=[campaign.slug])
        downloads = [(GROUP_TITLES[g], [(fmt.upper(), f"{base}?format={fmt}&group_by={g}") for fmt in ("csv", "xlsx")])
                     for g in GROUP_BY]
        return TemplateResponse(request, "reports/report.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "original": campaign,
            "campaign": campaign, "title": f"预算报表：{campaign.name}", "report": report,
            "sections": report_sections(report), "group_by": group_by, "group_title": GROUP_TITLES[group_by],
            "groupings": [(g, GROUP_TITLES[g]) for g in GROUP_BY], "columns": report.columns,
            "rows": [[(row[c.key], c.kind) for c in report.columns] for row in rows[:REPORT_PAGE_ROWS]],
            "truncated": len(rows) > REPORT_PAGE_ROWS, "downloads": downloads,
            "json_url": f"{base}?format=json&group_by={group_by}",
            "can_export": request.user.has_perm("reports.add_exportjob"),
            "export_url": reverse("admin:campaign_campaign_export", args=[campaign.pk]),
        })

    def dashboard_json(self, request, pk: int):
        campaign = self._campaign_for_view(request, pk)
        data = cached_dashboard(campaign)
        return JsonResponse({
            "generated_at": data.generated_at.isoformat(),
            "totals": {k: f"{v:.2f}" for k, v in data.totals.items()},
            "percent_used": f"{data.percent_used}",
            "cards_issued": data.cards_issued,
            "cards_by_state": data.cards_by_state,
            "orders_by_state": data.orders_by_state,
            "orders_in_flight": data.orders_in_flight,
            "callback_lag": data.callback_lag,
            "referral_funnel": dict(data.referral_funnel),
            "switches": data.switches,
            "pace": None if data.pace is None else {
                "mode": data.pace["mode"], "planned": f"{data.pace['planned']:.2f}",
                "committed": f"{data.pace['committed']:.2f}", "ahead": f"{data.pace['ahead']:.2f}",
                "alert": data.pace["alert"],
            },
            "runout_at": data.runout["at"].isoformat() if data.runout.get("at") else None,
        }, json_dumps_params={"ensure_ascii": False})

    def export_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = get_object_or_404(Campaign, pk=pk)
        if not (can_view_budget_report(request.user) and request.user.has_perm("reports.add_exportjob")):
            raise PermissionDenied
        try:
            job = export_job_request(campaign=campaign, kind=request.POST.get("kind", "ledger"),
                                     fmt=request.POST.get("format", "csv"), actor=request.user,
                                     group_by=request.POST.get("group_by", "day"))
        except DomainError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:campaign_campaign_change", args=[campaign.pk]))
        self.message_user(request, f"已创建导出任务 #{job.pk}，完成后可在此下载", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:reports_exportjob_changelist"))


try:
    admin.site.unregister(Campaign)
except NotRegistered:  # pragma: no cover - campaign.admin always registers it first
    pass
admin.site.register(Campaign, CampaignReportAdmin)


class LedgerEntryReadableAdmin(LedgerEntryAdmin):
    """The ledger list with the card's code and holder instead of bare ids (campaign cannot read cards)."""

    # Fits 1366 px: the campaign is the filter on the right; the time is one compact cell.
    list_display = ["id", "time_col", "bucket_index", "kind", "amount_col", "card_col", "holder_col", "order_col",
                    "actor", "reason"]
    search_fields = ["=voucher_id", "=order_id", "reason"]

    def get_queryset(self, request):
        card = Voucher.objects.filter(pk=OuterRef("voucher_id"))
        return super().get_queryset(request).annotate(
            card_code=Subquery(card.values("code")[:1]), holder=Subquery(card.values("user__username")[:1]))

    def get_search_results(self, request, queryset, search_term):
        # Finance searches by what they read: a card code finds its rows.
        queryset, dupes = super().get_search_results(request, queryset, search_term)
        term = search_term.strip().upper()
        if term and term.isalnum() and not term.isdigit():
            ids = Voucher.objects.filter(code=term).values_list("pk", flat=True)[:1]
            queryset = queryset | self.get_queryset(request).filter(voucher_id__in=list(ids))
        return queryset, dupes

    @admin.display(description="时间", ordering="created_at")
    def time_col(self, obj):
        return format_html('<span class="md-nowrap">{}</span>', timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M:%S"))

    @admin.display(description="卡号")
    def card_col(self, obj):
        if not obj.voucher_id:
            return "-"
        return format_html('<a href="{}">{}</a>', reverse("admin:vouchers_voucher_change", args=[obj.voucher_id]),
                           obj.card_code or f"#{obj.voucher_id}")

    @admin.display(description="持卡人")
    def holder_col(self, obj):
        return obj.holder or "-"

    @admin.display(description="订单")
    def order_col(self, obj):
        if not obj.order_id:
            return "-"
        return format_html('<a href="{}">#{}</a>', reverse("admin:orders_order_change", args=[obj.order_id]), obj.order_id)


admin.site.unregister(LedgerEntry)
admin.site.register(LedgerEntry, LedgerEntryReadableAdmin)


@admin.register(ExportJob)
class ExportJobAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "kind", "format", "status", "progress", "rows_done", "rows_total", "requested_by",
                    "created_at", "finished_at", "download"]
    list_filter = ["status", "kind", "format", "campaign"]
    list_select_related = ["campaign", "requested_by"]
    readonly_fields = [f.name for f in ExportJob._meta.fields]
    change_list_template = "admin/reports/exportjob/change_list.html"

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        return qs if can_view_budget_report(request.user) else qs.none()

    def has_add_permission(self, request):
        return False  # jobs are requested from the campaign page

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="进度")
    def progress(self, obj: ExportJob):
        return format_html(
            '<span style="display:inline-block;width:100px;height:8px;background:#eee">'
            '<span style="display:block;height:8px;width:{}px;background:#27ae60"></span></span> {}%',
            obj.percent, obj.percent,
        )

    @admin.display(description="下载")
    def download(self, obj: ExportJob):
        if obj.status != ExportJob.Status.DONE or not obj.file:
            return "-"
        return format_html('<a href="{}">下载（{} KB）</a>', reverse("admin:reports_exportjob_download", args=[obj.pk]),
                           max(1, obj.file_size // 1024))

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        extra_context["jobs_running"] = self.get_queryset(request).filter(
            status__in=[ExportJob.Status.PENDING, ExportJob.Status.RUNNING]).exists()
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path("<int:pk>/download/", self.admin_site.admin_view(self.download_view), name="reports_exportjob_download"),
        ] + super().get_urls()

    def download_view(self, request, pk: int):
        if not (can_view_budget_report(request.user) and self.has_view_permission(request)):
            raise Http404
        job = get_object_or_404(ExportJob, pk=pk, status=ExportJob.Status.DONE)
        file = export_path(job)
        if file is None or not file.is_file():
            raise Http404
        stamp = timezone.localtime(job.finished_at).strftime("%Y%m%d-%H%M%S")
        return FileResponse(open(file, "rb"), as_attachment=True,
                            filename=f"{job.kind}-{job.campaign.slug}-{stamp}.{job.format}")
