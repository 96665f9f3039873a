"""Staff screens for the event stream: endpoints (the one editable table), the stream itself with its JSON Lines
download, delivery progress, the delivery log and the dead letters with a replay action."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.urls import path
from django.utils import timezone

from miandan.api.admin import ReadOnlyAdminMixin

from .management.commands.events_export import parse_when
from .models import Cursor, DeadLetter, Delivery, Endpoint, Event, EventType
from .services import delivery_replay, endpoint_start_seq, export_lines


class EndpointForm(forms.ModelForm):
    url = forms.URLField(label="推送地址", max_length=500, assume_scheme="https")
    event_types = forms.MultipleChoiceField(label="事件类型", choices=EventType.choices, required=False,
                                            widget=forms.CheckboxSelectMultiple, help_text="不选表示全部类型")
    campaign_ids = forms.CharField(label="活动 ID", required=False, help_text="多个用逗号分隔；留空表示全部活动")

    class Meta:
        model = Endpoint
        fields = ("name", "url", "secret", "event_types", "campaign_ids", "active")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["campaign_ids"] = ",".join(str(c) for c in self.instance.campaign_ids or [])

    def clean_campaign_ids(self) -> list[int]:
        raw = self.cleaned_data.get("campaign_ids") or ""
        try:
            return sorted({int(part) for part in raw.replace("，", ",").split(",") if part.strip()})
        except ValueError as exc:
            raise forms.ValidationError("活动 ID 必须是数字，用逗号分隔") from exc


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ("name", "url", "active", "types_col", "campaigns_col", "start_seq", "created_at")
    list_filter = ("active",)

    @admin.display(description="事件类型")
    def types_col(self, obj: Endpoint) -> str:
        return "、".join(EventType(t).label for t in obj.event_types if t in EventType.values) or "全部"

    @admin.display(description="活动")
    def campaigns_col(self, obj: Endpoint) -> str:
        return ", ".join(str(c) for c in obj.campaign_ids) or "全部"

    def save_model(self, request, obj: Endpoint, form, change: bool) -> None:
        if not change:
            obj.start_seq = endpoint_start_seq()  # pushes start with the events after it was created
        super().save_model(request, obj, form, change)


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "type", "campaign_id", "seq", "created_at")
    list_filter = ("type",)
    search_fields = ("=id", "=campaign_id")
    search_help_text = "事件 ID 或活动 ID"
    fields = ("id", "type", "campaign_id", "seq", "created_at", "data")
    show_full_result_count = False
    change_list_template = "admin/events/event/change_list.html"

    def get_urls(self):
        return [path("export.jsonl", self.admin_site.admin_view(self.export_view), name="events_event_export"),
                *super().get_urls()]

    def export_view(self, request):
        """Staff-only (admin_view + view permission) JSON Lines download, streamed."""
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied
            raise PermissionDenied
        try:
            campaign = int(request.GET["campaign"]) if request.GET.get("campaign") else None
            since, until = parse_when(request.GET.get("since")), parse_when(request.GET.get("until"))
        except ValueError:
            return HttpResponseBadRequest("参数有误：campaign 为活动 ID，since/until 为日期，如 2026-11-30".encode())
        response = StreamingHttpResponse(export_lines(campaign_id=campaign, since=since, until=until),
                                         content_type="application/x-ndjson; charset=utf-8")
        name = f"events-{campaign or 'all'}-{timezone.localtime():%Y%m%d%H%M%S}.jsonl"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


@admin.register(Cursor)
class CursorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("endpoint", "campaign_id", "last_seq", "attempts", "first_failed_at", "next_attempt_at",
                    "leased_until")
    list_filter = ("endpoint",)
    list_select_related = ("endpoint",)


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "endpoint", "event_id", "event_type", "attempt", "outcome", "status_code", "latency_ms",
                    "error", "created_at")
    list_filter = ("outcome", "endpoint")
    list_select_related = ("endpoint", "event")
    search_fields = ("=event__id",)
    search_help_text = "事件 ID"
    show_full_result_count = False

    @admin.display(description="事件类型")
    def event_type(self, obj: Delivery) -> str:
        return obj.event.get_type_display()


@admin.register(DeadLetter)
class DeadLetterAdmin(DeliveryAdmin):
    list_display = ("id", "endpoint", "event_id", "event_type", "attempt", "status_code", "error", "created_at",
                    "replayed_at")
    list_filter = ("endpoint",)
    actions = ("replay_selected",)

    def get_queryset(self, request):
        return super().get_queryset(request).filter(outcome=Delivery.Outcome.DEAD)

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("events.change_deadletter")

    @admin.action(description="重新投递所选死信", permissions=["change"])
    def replay_selected(self, request, queryset):
        ok = failed = 0
        for dead in queryset.select_related("endpoint", "event")[:200]:
            record = delivery_replay(delivery=dead, actor=request.user)
            if record.outcome == Delivery.Outcome.REPLAYED:
                ok += 1
            else:
                failed += 1
        self.message_user(request, f"重新投递：成功 {ok} 条，失败 {failed} 条（见投递记录）",
                          messages.SUCCESS if not failed else messages.WARNING)
