"""Admin screens that need cards, orders and referrals: the live dashboard, report downloads, export jobs.

The campaign admin itself lives in `campaign.admin`; this module re-registers it with the extra
pages because `campaign` must not import the apps above it.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.sites import NotRegistered
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from campaign.admin import CampaignAdmin
from campaign.models import Campaign
from miandan.api.errors import DomainError
from orders.models import Order

from . import svg
from .api import can_view_budget_report
from .models import ExportJob
from .selectors import SHANGHAI, dashboard
from .services import export_job_request, export_path, ledger_rollup_advance

STATE_LABELS_ORDERS = dict(Order.Status.choices)
UNIT_LABELS = {"minute": "分钟", "hour": "小时", "day": "天"}
REFRESH_SECONDS = 10
DASHBOARD_CACHE_SECONDS = 3


def _fresh_dashboard(campaign: Campaign):
    # Move the ledger rollup forward first (beat does it every 30 s too), so the burn line reads
    # per-minute sums plus only the newest ledger rows.
    ledger_rollup_advance(campaign=campaign)
    return dashboard(campaign=campaign)


def cached_dashboard(campaign: Campaign):
    """Every open dashboard refreshes itself; viewers share one computation per few seconds."""
    try:
        return cache.get_or_set(f"reports:dashboard:{campaign.pk}", lambda: _fresh_dashboard(campaign),
                                DASHBOARD_CACHE_SECONDS)
    except Exception:  # a cache outage must not take the dashboard down
        return _fresh_dashboard(campaign)


def dashboard_context(campaign: Campaign) -> dict:
    data = cached_dashboard(campaign)
    fmt = {"minute": "%H:%M", "hour": "%m-%d %H:00", "day": "%m-%d"}[data.burn_unit]
    burn_labels = [t.astimezone(SHANGHAI).strftime(fmt) for t, _, _ in data.burn]
    return {
        "data": data,
        "burn_svg": svg.line_chart(
            [("已承诺（预留+花费）", "#c0392b", [float(c) for _, c, _ in data.burn]),
             ("已花费", "#2980b9", [float(s) for _, _, s in data.burn])],
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
        "refresh_seconds": REFRESH_SECONDS,
    }


class CampaignReportAdmin(CampaignAdmin):
    def object_buttons(self, request, obj):
        buttons = [("实时看板", reverse("admin:campaign_campaign_dashboard", args=[obj.pk]))]
        buttons += super().object_buttons(request, obj)
        if can_view_budget_report(request.user):
            base = reverse("report-budget", args=[obj.slug])
            buttons += [("下载报表 CSV", f"{base}?format=csv&group_by=day"),
                        ("下载报表 XLSX", f"{base}?format=xlsx&group_by=day"),
                        ("按品牌 CSV", f"{base}?format=csv&group_by=brand"),
                        ("按城市 CSV", f"{base}?format=csv&group_by=city")]
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
            "referral_funnel": dict(data.referral_funnel),
            "switches": data.switches,
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
        if obj.status != ExportJob.Status.DONE:
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
        if not file.is_file():
            raise Http404
        stamp = timezone.localtime(job.finished_at).strftime("%Y%m%d-%H%M%S")
        return FileResponse(open(file, "rb"), as_attachment=True,
                            filename=f"{job.kind}-{job.campaign.slug}-{stamp}.{job.format}")
