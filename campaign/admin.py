"""Staff screens for campaigns and their budget.

Money never changes through a form field: creating a campaign calls `campaign_create`, the
budget changes through `campaign_budget_change` (its own page, with a reason), switches through
`campaign_set_switches`. Buckets, ledger and audit log are read-only. The report, dashboard and
export buttons are added by `reports.admin` (reports sits above campaign and may read cards/orders).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import DecimalField, F, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from miandan.api.admin import ReadOnlyAdminMixin
from miandan.api.admin_scale import LargeTableAdminMixin, digits
from miandan.api.errors import DomainError
from miandan.display import duration_cn, money_html, signed_yuan

from . import pacing
from .errors import InvalidCampaign
from .gate import PAUSED_RETRY_AFTER, PAUSED_TEXT
from .models import AuditLog, BudgetBucket, Campaign, LedgerEntry, PaceMode
from .selectors import bucket_spread, budget_totals, pace_overview, pace_overviews
from .services import (
    CampaignSpec,
    audit,
    campaign_budget_change,
    campaign_budget_rebalance,
    campaign_create,
    campaign_set_switches,
    validate_spec,
)

MONEY = DecimalField(max_digits=16, decimal_places=2)
# Issue 20: the spend plan and the daily caps, on the campaign's change page.
CONTROL_FIELDS = ["pace_mode", "pace_even_daily", "pace_points", "pace_throttle_from", "pace_alert_margin",
                  "daily_card_cap", "store_daily_subsidy_cap", "brand_daily_subsidy_cap"]
ZERO = Decimal("0.00")
SWITCHES = {"claims_enabled": "领卡", "referrals_enabled": "邀请", "orders_enabled": "下单"}
SWITCH_FEATURES = {"claims_enabled": "claims", "referrals_enabled": "referrals", "orders_enabled": "orders"}
# What a user sees in the app and on the campaign page while a switch is off (the help of the switches page).
SWITCH_EFFECT = {
    "claims_enabled": "新用户点“领取免单卡”时",
    "referrals_enabled": "用户接受好友邀请（输入邀请码或粘贴口令）时",
    "orders_enabled": "用户一句话点单或下单时",
}
SWITCH_KEEPS = {
    "claims_enabled": "已领的卡照常可用，邀请和下单不受影响。",
    "referrals_enabled": "已发的卡照常可用；用户仍能看到自己的邀请码。",
    "orders_enabled": "进行中的订单照常配送，卡不会丢失；用户仍能领卡和邀请。",
}
MONEY_FIELDS = ("total_budget", "face_value", "card_cap", "bucket_count")
READ_ONLY_DISPLAY = {f: f"{f}_display" for f in MONEY_FIELDS}
# validate_spec's error keys -> form fields.
SPEC_FIELDS = {"budget": "total_budget", "face": "face_value", "cap": "card_cap", "ends_at": "ends_at",
               "bucket_count": "bucket_count", "min_app_version": "min_app_version", "slug": "slug"}


def yuan(value: Decimal | None) -> str:
    return f"{(value or ZERO):,.2f}"


def _skip_constraint_messages(instance: Campaign) -> None:
    """The CHECK constraints are re-stated in the forms' clean() with messages staff can act on;
    Django's generic "constraint violated" text would only duplicate them. The database still enforces them."""
    instance.validate_constraints = lambda *args, **kwargs: None


class ValidityDaysField(forms.IntegerField):
    """The card validity as whole days ("30"), not Django's "30 days, 0:00:00"."""

    def __init__(self, **kwargs):
        kwargs.pop("max_length", None)
        super().__init__(min_value=1, max_value=3650, label="卡有效期（天）", help_text="每张卡自发放起有效的天数",
                         error_messages={"min_value": "有效期至少 1 天", "max_value": "有效期最多 3650 天",
                                         "invalid": "请输入整数天数", "required": "请填写有效期天数"}, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, dt.timedelta):
            return value.days
        if isinstance(value, str) and " " in value:  # "30 00:00:00" from an old form
            return value.split(" ", 1)[0]
        return value

    def to_python(self, value):
        if isinstance(value, str) and " " in value.strip():
            value = value.strip().split(" ", 1)[0]
        days = super().to_python(value)
        return None if days is None else dt.timedelta(days=days)

    def validate(self, value):
        forms.Field.validate(self, value)

    def run_validators(self, value):
        if value is not None:
            super().run_validators(value.days)


class CampaignAddForm(forms.ModelForm):
    """Validates what `campaign_create` will check, with messages staff can act on."""

    card_validity = ValidityDaysField(initial=30)

    class Meta:
        model = Campaign
        fields = ["slug", "name", "status", "starts_at", "ends_at", "face_value", "card_cap", "min_app_version",
                  "card_validity", "total_budget", "bucket_count"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "bucket_count" in self.fields:
            self.fields["bucket_count"].initial = settings.MIANDAN_BUDGET_BUCKETS

    def clean(self):
        data = super().clean()
        # Check the rules ourselves first: the model's CHECK constraints would only say "violated".
        starts, ends = data.get("starts_at"), data.get("ends_at")
        if starts and ends and ends <= starts:
            self.add_error("ends_at", "结束时间必须晚于开始时间")
        face = data.get("face_value")
        if face is not None and face <= 0:
            self.add_error("face_value", "面额必须大于 0 元")
        cap = data.get("card_cap")
        if cap is not None and not 1 <= cap <= 100:
            self.add_error("card_cap", "每人卡数上限必须在 1 到 100 之间")
        budget = data.get("total_budget")
        if budget is not None and budget < 0:
            # A new campaign has nothing reserved or spent yet: committed is 0.
            self.add_error("total_budget", "预算不能低于已预留与已花费之和（0.00 元）")
        if self.errors:
            return data
        try:
            validate_spec(self.spec())
        except InvalidCampaign as exc:
            for key, message in exc.extra.get("fields", {}).items():
                self.add_error(SPEC_FIELDS.get(key), message)
        return data

    def validate_unique(self):
        return None  # validate_spec reports a taken slug in Chinese

    def _post_clean(self):
        _skip_constraint_messages(self.instance)
        super()._post_clean()

    def spec(self) -> CampaignSpec:
        d = self.cleaned_data
        return CampaignSpec(
            slug=d["slug"], name=d["name"], total_budget=d["total_budget"], starts_at=d["starts_at"],
            ends_at=d["ends_at"], face_value=d["face_value"], card_cap=d["card_cap"],
            min_app_version=d["min_app_version"], card_validity=d["card_validity"], status=d["status"],
            bucket_count=d["bucket_count"],
        )


class PacePointsField(forms.CharField):
    """The plan curve as marketing types it: one "time, share or amount" a line (campaign.pacing)."""

    def __init__(self, **kwargs):
        example = "2026-02-01 10:00, 20%\n2026-02-03 00:00, 60%\n2026-02-07 00:00, 100%"
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 5, "cols": 60, "placeholder": example}))
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "投放计划曲线")
        kwargs.setdefault("help_text", "每行一个点：“时间（北京时间）, 累计比例% 或 累计金额（元）”，点与点之间按直线；"
                                       "活动开始时为 0。勾选“按天平均投放”时不用填。")
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, list):
            return pacing.plan_text(value)
        if isinstance(value, str) and value.startswith("["):
            import json

            try:
                return pacing.plan_text(json.loads(value))
            except (ValueError, TypeError):
                return value
        return value

    def to_python(self, value):
        if isinstance(value, list):
            return value
        try:
            return pacing.parse_plan_text(value or "")
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


class CampaignChangeForm(forms.ModelForm):
    card_validity = ValidityDaysField()
    pace_points = PacePointsField()

    class Meta:
        model = Campaign
        fields = ["slug", "name", "status", "starts_at", "ends_at", "face_value", "card_cap", "min_app_version",
                  "card_validity", "total_budget", "bucket_count", "claims_enabled", "referrals_enabled",
                  "orders_enabled", "referral_inviter_hourly_limit", "referral_inviter_daily_limit",
                  "referral_device_max_accounts", "referral_ip_burst_limit", "referral_clawback",
                  *CONTROL_FIELDS]

    def _post_clean(self):
        _skip_constraint_messages(self.instance)
        super()._post_clean()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A post without the control fields (older scripts, a trimmed form) keeps the campaign's values.
        for name in ("pace_mode", "pace_throttle_from", "pace_alert_margin"):
            if name in self.fields:
                self.fields[name].required = False

    @property
    def changed_data(self):
        # Fields the post left out kept their values: not a change (nor an audit entry).
        return [name for name in super().changed_data
                if not (name in ("pace_mode", "pace_throttle_from", "pace_alert_margin") and name not in self.data)]

    def clean(self):
        data = super().clean()
        for name in ("pace_mode", "pace_throttle_from", "pace_alert_margin"):
            if name in self.fields and data.get(name) in (None, ""):
                data[name] = getattr(self.instance, name)
        starts = data.get("starts_at", self.instance.starts_at)
        ends = data.get("ends_at", self.instance.ends_at)
        if starts and ends and ends <= starts:
            self.add_error("ends_at", "结束时间必须晚于开始时间")
        mode = data.get("pace_mode")
        if mode and mode != PaceMode.NONE and not data.get("pace_even_daily") and not data.get("pace_points"):
            self.add_error("pace_points", "启用投放节奏控制时，请填写计划曲线或勾选“按天平均投放”")
        for name in ("pace_throttle_from", "pace_alert_margin"):
            value = data.get(name)
            if value is not None and not 0 <= value <= 1:
                self.add_error(name, "请填写 0 到 1 之间的比例，例如 0.9")
        cap = data.get("daily_card_cap")
        if cap is not None and cap < 1:
            self.add_error("daily_card_cap", "每日发卡上限至少 1 张；不限请留空")
        for name in ("store_daily_subsidy_cap", "brand_daily_subsidy_cap"):
            value = data.get(name)
            if value is not None and value < 0:
                self.add_error(name, "补贴上限不能为负数；不限请留空")
        return data


class BudgetChangeForm(forms.Form):
    new_total = forms.DecimalField(label="新的总预算（元）", max_digits=16, decimal_places=2, min_value=Decimal("0"),
                                   error_messages={"invalid": "请输入金额，最多两位小数",
                                                   "min_value": "预算不能为负数",
                                                   "max_decimal_places": "金额最多两位小数",
                                                   "required": "请填写新的总预算"})
    reason = forms.CharField(label="调整原因", max_length=255, error_messages={"required": "调整预算必须填写原因"})


class SwitchesForm(forms.Form):
    claims_enabled = forms.BooleanField(label="允许领卡", required=False)
    referrals_enabled = forms.BooleanField(label="允许邀请", required=False)
    orders_enabled = forms.BooleanField(label="允许下单", required=False)


def _switch_action(field: str, value: bool):
    verb = "恢复" if value else "暂停"

    @admin.action(description=f"{verb}{SWITCHES[field]}", permissions=["toggle_switches"])
    def action(modeladmin, request, queryset):
        for campaign in queryset.order_by("pk"):
            campaign_set_switches(campaign=campaign, actor=request.user, **{field: value})
        modeladmin.message_user(request, f"已{verb}{queryset.count()} 个活动的{SWITCHES[field]}", messages.SUCCESS)

    action.__name__ = f"{'enable' if value else 'disable'}_{field}"
    return action


def _pace_banner(campaign: Campaign, pace: dict) -> str:
    return (f"【投放超计划】{campaign.name}：已承诺 {yuan(pace['committed'])} 元，计划此刻只允许 {yuan(pace['planned'])} 元"
            f"（超出 {yuan(pace['ahead'])} 元，超过告警阈值 {pace['margin'] * 100:.1f}%）。请检查投放节奏或调整计划。")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    # Fits 1366 px: name and slug share a cell, the window is one cell, money reads as 万/亿 (exact in the tooltip).
    list_display = ["name_col", "status", "window_col", "total_col", "reserved_col", "spent_col", "remaining_col",
                    "used_col", "switches_col"]
    list_filter = ["status", "claims_enabled", "referrals_enabled", "orders_enabled"]
    search_fields = ["name", "slug"]
    # No bucket inline: 64 rows of counters say nothing at a glance. The change page shows the
    # buckets summarised (totals, spread) with a link to the bucket list ("查看预算桶").
    inlines: list = []
    actions = [*(_switch_action(f, v) for f in SWITCHES for v in (False, True)), "rebalance_buckets"]
    change_form_template = "admin/campaign/campaign/change_form.html"
    form = CampaignChangeForm
    add_form = CampaignAddForm

    # --- list ------------------------------------------------------------------
    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":
            # The pace alert as an admin banner: live campaigns with a plan only (a handful of rows).
            for campaign, pace in pace_overviews():
                if pace["alert"]:
                    messages.warning(request, _pace_banner(campaign, pace))
        return super().changelist_view(request, extra_context)

    def get_queryset(self, request):
        # Counters come from the buckets (the truth), not from a cached column on the campaign.
        return super().get_queryset(request).annotate(
            reserved_sum=Coalesce(Sum("buckets__reserved"), Value(ZERO), output_field=MONEY),
            spent_sum=Coalesce(Sum("buckets__spent"), Value(ZERO), output_field=MONEY),
        ).annotate(remaining_sum=F("total_budget") - F("reserved_sum") - F("spent_sum"))

    @admin.display(description="活动", ordering="name")
    def name_col(self, obj):
        return format_html('{}<br><small class="md-muted">{}</small>', obj.name, obj.slug)

    @admin.display(description="活动时间", ordering="starts_at")
    def window_col(self, obj):
        starts, ends = timezone.localtime(obj.starts_at), timezone.localtime(obj.ends_at)
        return format_html('<span class="md-nowrap">{}</span><br><span class="md-nowrap">至 {}</span>',
                           starts.strftime("%Y-%m-%d %H:%M"), ends.strftime("%Y-%m-%d %H:%M"))

    @admin.display(description="总预算（元）", ordering="total_budget")
    def total_col(self, obj):
        return money_html(obj.total_budget, short=True)

    @admin.display(description="已预留", ordering="reserved_sum")
    def reserved_col(self, obj):
        return money_html(obj.reserved_sum, short=True)

    @admin.display(description="已花费", ordering="spent_sum")
    def spent_col(self, obj):
        return money_html(obj.spent_sum, short=True)

    @admin.display(description="剩余", ordering="remaining_sum")
    def remaining_col(self, obj):
        return money_html(obj.remaining_sum, short=True)

    @admin.display(description="已用比例")
    def used_col(self, obj):
        pct = (obj.reserved_sum + obj.spent_sum) * 100 / obj.total_budget if obj.total_budget else Decimal(0)
        return format_html(
            '<span class="md-bar" title="{}%"><span style="width:{}%"></span></span> {}%',
            f"{pct:.2f}", f"{min(pct, Decimal(100)):.1f}", f"{pct:.1f}",
        )

    @admin.display(description="开关")
    def switches_col(self, obj):
        return format_html_join(
            " ", '<span class="md-switch {}" title="{}">{}</span>',
            (("on" if getattr(obj, f) else "off", f"{label}{'开启' if getattr(obj, f) else '已暂停'}", label)
             for f, label in SWITCHES.items()),
        )

    @admin.action(description="预算桶再平衡（均分各桶可用额度）", permissions=["change_budget"])
    def rebalance_buckets(self, request, queryset):
        for campaign in queryset.order_by("pk"):
            moved = campaign_budget_rebalance(campaign=campaign, actor=request.user)
            self.message_user(request, f"{campaign.name}：调整了 {moved} 个预算桶", messages.SUCCESS)

    # --- forms: money read-only once the campaign exists ---------------------------
    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return CampaignAddForm.Meta.fields
        # Read-only money reads with separators and 万/亿, not "3000000000.00".
        # Django appends the read-only fields after the form's own, so a mapped money field would show twice.
        return list(dict.fromkeys(READ_ONLY_DISPLAY.get(f, f) for f in super().get_fields(request, obj)))

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [*READ_ONLY_DISPLAY.values(), *SWITCHES, "created_at", "updated_at"]

    @admin.display(description="总预算（元）")
    def total_budget_display(self, obj):
        return money_html(obj.total_budget)

    @admin.display(description="单张面额（元）")
    def face_value_display(self, obj):
        return money_html(obj.face_value)

    @admin.display(description="每人最多卡数")
    def card_cap_display(self, obj):
        return f"{obj.card_cap} 张（每人最多可得 {obj.face_value * obj.card_cap:,.2f} 元）"

    @admin.display(description="预算分桶数")
    def bucket_count_display(self, obj):
        return f"{obj.bucket_count} 个"

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger references campaigns; end them instead

    def has_toggle_switches_permission(self, request, obj=None):
        return request.user.has_perm("campaign.toggle_switches")

    def has_change_budget_permission(self, request, obj=None):
        return request.user.has_perm("campaign.change_budget")

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if object_id is None:
            # Adding goes through campaign_create, a durable service that cannot run inside the
            # atomic() Django wraps this view in; it owns its transaction (campaign, buckets, ledger, audit).
            return self._changeform_view(request, object_id, form_url, extra_context)
        # Changing keeps Django's transaction, so the row and its audit entry commit together.
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        if change:
            before = {f: str(form.initial.get(f)) for f in form.changed_data}
            super().save_model(request, obj, form, change)
            if form.changed_data:
                audit(actor=request.user, action="campaign.update", obj=obj, campaign=obj, before=before,
                      after={f: str(form.cleaned_data.get(f)) for f in form.changed_data})
            return
        created = campaign_create(spec=form.spec(), actor=request.user)
        for field in created._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding = False
        obj._state.db = created._state.db

    # --- change page buttons and extra pages ---------------------------------------
    def object_buttons(self, request, obj: Campaign) -> list[tuple[str, str]]:
        """(label, url) shown on the change page; reports.admin adds its own."""
        buttons = []
        if self.has_change_budget_permission(request, obj):
            buttons.append(("调整预算", reverse("admin:campaign_campaign_budget", args=[obj.pk])))
        if self.has_toggle_switches_permission(request, obj):
            buttons.append(("功能开关", reverse("admin:campaign_campaign_switches", args=[obj.pk])))
        if request.user.has_perm("campaign.view_ledgerentry"):
            buttons.append(("预算流水", reverse("admin:campaign_ledgerentry_changelist") + f"?campaign__id__exact={obj.pk}"))
        if request.user.has_perm("campaign.view_auditlog"):
            buttons.append(("审计日志", reverse("admin:campaign_auditlog_changelist") + f"?campaign__id__exact={obj.pk}"))
        return buttons

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, object_id)
        if obj is not None:
            extra_context["object_buttons"] = self.object_buttons(request, obj)
            extra_context["budget"] = budget_totals(campaign_id=obj.pk)
            extra_context["spread"] = bucket_spread(campaign=obj)
            extra_context["committed"] = extra_context["budget"]["reserved"] + extra_context["budget"]["spent"]
            extra_context["pace"] = pace = pace_overview(campaign=obj, committed=extra_context["committed"])
            if pace and pace["alert"] and request.method == "GET":
                messages.warning(request, _pace_banner(obj, pace))
            extra_context["validity"] = duration_cn(obj.card_validity)
            if request.user.has_perm("campaign.view_budgetbucket"):
                extra_context["buckets_url"] = (reverse("admin:campaign_budgetbucket_changelist")
                                                + f"?campaign__id__exact={obj.pk}")
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        own = [
            path("<int:pk>/budget/", self.admin_site.admin_view(self.budget_view), name="campaign_campaign_budget"),
            path("<int:pk>/switches/", self.admin_site.admin_view(self.switches_view), name="campaign_campaign_switches"),
        ]
        return own + super().get_urls()

    def _page(self, request, campaign, title, template, **context):
        return TemplateResponse(request, template, {
            **self.admin_site.each_context(request), "opts": self.model._meta, "original": campaign,
            "campaign": campaign, "title": title, **context,
        })

    def budget_view(self, request, pk: int):
        """Two steps: the form (new total and reason), then "from X to Y (Δ)" to confirm; only the confirm writes."""
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_change_budget_permission(request, campaign):
            raise PermissionDenied
        form = BudgetChangeForm(request.POST or None, initial={"new_total": campaign.total_budget})
        totals = budget_totals(campaign_id=campaign.pk)
        committed = totals["reserved"] + totals["spent"]
        context = {"form": form, "totals": totals, "committed": committed}
        if request.method == "POST" and form.is_valid():
            new_total = form.cleaned_data["new_total"]
            if new_total == campaign.total_budget:
                form.add_error("new_total", "新的总预算与当前相同，无需调整")
            elif new_total < committed:
                form.add_error("new_total", f"预算不能低于已预留与已花费之和（{committed:,.2f} 元）")
            elif request.POST.get("confirm") != "yes":
                return self._page(request, campaign, f"确认调整预算：{campaign.name}",
                                  "admin/campaign/campaign/budget_confirm.html", **context,
                                  old_total=campaign.total_budget, new_total=new_total,
                                  delta=new_total - campaign.total_budget,
                                  available_after=new_total - committed, reason=form.cleaned_data["reason"])
            else:
                try:
                    campaign_budget_change(campaign=campaign, new_total=new_total, actor=request.user,
                                           reason=form.cleaned_data["reason"])
                except DomainError as exc:
                    form.add_error(None, exc.detail)
                else:
                    self.message_user(request, f"总预算已从 {yuan(campaign.total_budget)} 元调整为 {yuan(new_total)} 元"
                                               f"（{signed_yuan(new_total - campaign.total_budget)} 元）", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:campaign_campaign_change", args=[campaign.pk]))
        return self._page(request, campaign, f"调整预算：{campaign.name}", "admin/campaign/campaign/budget_change.html",
                          **context)

    def switches_view(self, request, pk: int):
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_toggle_switches_permission(request, campaign):
            raise PermissionDenied
        initial = {f: getattr(campaign, f) for f in SWITCHES}
        form = SwitchesForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            changed = {f: form.cleaned_data[f] for f in SWITCHES if form.cleaned_data[f] != initial[f]}
            if changed:
                campaign_set_switches(campaign=campaign, actor=request.user, **changed)
                self.message_user(request, "开关已更新：" + "，".join(
                    f"{SWITCHES[f]}{'开启' if v else '关闭'}" for f, v in changed.items()), messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:campaign_campaign_change", args=[campaign.pk]))
        effects = [
            {"field": form[f], "label": SWITCHES[f], "on": initial[f], "when": SWITCH_EFFECT[f],
             "text": PAUSED_TEXT[SWITCH_FEATURES[f]], "keeps": SWITCH_KEEPS[f]}
            for f in SWITCHES
        ]
        return self._page(request, campaign, f"功能开关：{campaign.name}", "admin/campaign/campaign/switches.html",
                          form=form, effects=effects, retry_after=PAUSED_RETRY_AFTER)


@admin.register(BudgetBucket)
class BudgetBucketAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["campaign", "index_col", "allotment_col", "reserved_col", "spent_col", "free_col", "used_col"]
    list_filter = ["campaign"]
    list_select_related = ["campaign"]
    ordering = ["campaign", "index"]
    list_per_page = 100

    @admin.display(description="桶", ordering="index")
    def index_col(self, obj):
        return f"#{obj.index}"

    @admin.display(description="额度（元）", ordering="allotment")
    def allotment_col(self, obj):
        return money_html(obj.allotment)

    @admin.display(description="已预留", ordering="reserved")
    def reserved_col(self, obj):
        return money_html(obj.reserved)

    @admin.display(description="已花费", ordering="spent")
    def spent_col(self, obj):
        return money_html(obj.spent)

    @admin.display(description="可用")
    def free_col(self, obj):
        return money_html(obj.available)

    @admin.display(description="已用比例")
    def used_col(self, obj):
        pct = (obj.reserved + obj.spent) * 100 / obj.allotment if obj.allotment else Decimal(0)
        return f"{pct:.1f}%"


@admin.register(LedgerEntry)
class LedgerEntryAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """reports.admin re-registers this with card codes and holders (campaign cannot read cards)."""

    list_display = ["id", "created_at", "campaign", "bucket_index", "kind", "amount_col", "voucher_id", "order_id",
                    "actor", "reason"]
    list_filter = ["kind", "campaign"]
    search_fields = ["=voucher_id", "=order_id", "reason"]
    list_select_related = ["campaign", "bucket", "actor"]
    search_help_text = "卡 ID 或订单 ID；其他文字在工作人员填写的原因中查找"
    show_full_result_count = False  # the ledger grows to millions of rows; skip the second COUNT(*)
    date_hierarchy = None

    def search_q(self, request, term: str) -> Q | None:
        # Ids through their indexes (BitmapOr); free text only among the rows a person made (ledger_staff_rows):
        # the system's own reasons are a handful of fixed texts the kind filter already separates.
        if digits(term):
            n = int(term) if len(term) <= 18 else -1
            return Q(voucher_id=n) | Q(order_id=n)
        return Q(actor__isnull=False, reason__icontains=term)

    @admin.display(description="预算桶", ordering="bucket__index")
    def bucket_index(self, obj):
        return f"#{obj.bucket.index}"

    @admin.display(description="金额（元）", ordering="amount")
    def amount_col(self, obj):
        return money_html(obj.amount)


# What staff read instead of the machine action names (services write `<entity>.<verb>`).
ACTION_LABELS = {
    "campaign.create": "创建活动",
    "campaign.update": "修改活动",
    "campaign.budget_change": "调整预算",
    "campaign.budget_rebalance": "预算桶再平衡",
    "campaign.switches": "切换功能开关",
    "voucher.issue": "人工发卡",
    "voucher.void": "作废免单卡",
    "referral.approve": "通过邀请审核",
    "referral.reject": "拒绝邀请审核",
    "order.cancel": "取消订单",
    "order.resend": "重新发送订单",
}
# Labels of keys that are not model fields (or read better in a sentence).
KEY_LABELS = {"total_budget": "总预算", "available": "各桶可用", "code": "卡号", "status": "状态", "note": "审核说明"}


class ActionFilter(admin.SimpleListFilter):
    title = "动作"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        seen = AuditLog.objects.order_by().values_list("action", flat=True).distinct()
        return [(a, ACTION_LABELS.get(a, a)) for a in sorted(seen)]

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


def _model(object_type: str):
    try:
        return apps.get_model(object_type)
    except (LookupError, ValueError):
        return None


def _label(model, key: str) -> str:
    if key in KEY_LABELS:
        return KEY_LABELS[key]
    try:
        return str(model._meta.get_field(key).verbose_name) if model is not None else key
    except Exception:
        return key


def _value(key: str, value) -> str:
    if isinstance(value, bool):
        if key in SWITCHES:
            return "开启" if value else "关闭"
        return "是" if value else "否"
    if value is None or value == "":
        return "（空）"
    if isinstance(value, list):
        return "、".join(_value(key, v) for v in value[:8]) + ("…" if len(value) > 8 else "")
    if key in {"total_budget", "face_value"}:
        try:
            return f"{Decimal(str(value)):,.2f} 元"
        except Exception:
            return str(value)
    if key == "card_validity" and isinstance(value, str) and "day" in value:
        return value.replace(" days, 0:00:00", " 天").replace(" day, 0:00:00", " 天")
    return str(value)


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "actor_col", "action_col", "object_col", "campaign", "reason", "diff_col"]
    list_filter = [ActionFilter, "campaign"]
    search_fields = ["action", "object_id", "reason", "actor__username"]
    list_select_related = ["actor", "campaign"]
    fields = ["created_at", "actor_col", "action_col", "object_col", "campaign", "diff_col", "reason"]
    readonly_fields = fields

    @admin.display(description="操作人", ordering="actor__username")
    def actor_col(self, obj):
        return str(obj.actor) if obj.actor_id else "系统（命令行或自动任务）"

    @admin.display(description="动作", ordering="action")
    def action_col(self, obj):
        return ACTION_LABELS.get(obj.action, obj.action)

    @admin.display(description="对象")
    def object_col(self, obj):
        model = _model(obj.object_type)
        name = str(model._meta.verbose_name) if model is not None else obj.object_type
        app_label, _, model_name = obj.object_type.partition(".")
        try:
            url = reverse(f"admin:{app_label}_{model_name}_change", args=[obj.object_id])
        except NoReverseMatch:
            return f"{name} #{obj.object_id}"
        return format_html('<a href="{}">{} #{}</a>', url, name, obj.object_id)

    @admin.display(description="变更")
    def diff_col(self, obj):
        before, after = obj.before or {}, obj.after or {}
        keys = list(dict.fromkeys([*before, *after]))
        if not keys:
            return "-"
        model = _model(obj.object_type)
        rows = format_html_join(
            "", '<tr><th>{}</th><td class="md-before">{}</td><td>→</td><td class="md-after">{}</td></tr>',
            ((_label(model, k), _value(k, before.get(k)) if k in before else "—",
              _value(k, after.get(k)) if k in after else "—") for k in keys),
        )
        return format_html('<table class="md-diff">{}</table>', rows)
