"""Staff screens for campaigns and their budget.

Money never changes through a form field: creating a campaign calls `campaign_create`, the
budget changes through `campaign_budget_change` (its own page, with a reason), switches through
`campaign_set_switches`. Buckets, ledger and audit log are read-only. The report, dashboard and
export buttons are added by `reports.admin` (reports sits above campaign and may read cards/orders).
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import DecimalField, F, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from miandan.api.admin import ReadOnlyAdminMixin
from miandan.api.admin_scale import LargeTableAdminMixin, digits
from miandan.api.errors import DomainError

from .errors import InvalidCampaign
from .models import AuditLog, BudgetBucket, Campaign, LedgerEntry
from .selectors import budget_totals
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
ZERO = Decimal("0.00")
SWITCHES = {"claims_enabled": "领卡", "referrals_enabled": "邀请", "orders_enabled": "下单"}
MONEY_FIELDS = ("total_budget", "face_value", "card_cap", "bucket_count")
# validate_spec's error keys -> form fields.
SPEC_FIELDS = {"budget": "total_budget", "face": "face_value", "cap": "card_cap", "ends_at": "ends_at",
               "bucket_count": "bucket_count", "min_app_version": "min_app_version", "slug": "slug"}


def yuan(value: Decimal | None) -> str:
    return f"{(value or ZERO):,.2f}"


def _skip_constraint_messages(instance: Campaign) -> None:
    """The CHECK constraints are re-stated in the forms' clean() with messages staff can act on;
    Django's generic "constraint violated" text would only duplicate them. The database still enforces them."""
    instance.validate_constraints = lambda *args, **kwargs: None


class CampaignAddForm(forms.ModelForm):
    """Validates what `campaign_create` will check, with messages staff can act on."""

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


class CampaignChangeForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = ["slug", "name", "status", "starts_at", "ends_at", "face_value", "card_cap", "min_app_version",
                  "card_validity", "total_budget", "bucket_count", "claims_enabled", "referrals_enabled",
                  "orders_enabled", "referral_inviter_hourly_limit", "referral_inviter_daily_limit",
                  "referral_device_max_accounts", "referral_ip_burst_limit"]

    def _post_clean(self):
        _skip_constraint_messages(self.instance)
        super()._post_clean()

    def clean(self):
        data = super().clean()
        starts = data.get("starts_at", self.instance.starts_at)
        ends = data.get("ends_at", self.instance.ends_at)
        if starts and ends and ends <= starts:
            self.add_error("ends_at", "结束时间必须晚于开始时间")
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


class BudgetBucketInline(admin.TabularInline):
    model = BudgetBucket
    fields = ["index", "allotment", "reserved", "spent", "free"]
    readonly_fields = fields
    can_delete = False
    extra = 0
    max_num = 0
    show_change_link = False
    verbose_name_plural = "预算桶（只读：预算只能通过“调整预算”修改）"

    @admin.display(description="可用")
    def free(self, obj: BudgetBucket) -> str:
        return yuan(obj.available)

    def get_queryset(self, request):
        # Each row's title names its campaign: one join instead of a query per bucket (64 by default).
        return super().get_queryset(request).select_related("campaign")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def _switch_action(field: str, value: bool):
    verb = "恢复" if value else "暂停"

    @admin.action(description=f"{verb}{SWITCHES[field]}", permissions=["toggle_switches"])
    def action(modeladmin, request, queryset):
        for campaign in queryset.order_by("pk"):
            campaign_set_switches(campaign=campaign, actor=request.user, **{field: value})
        modeladmin.message_user(request, f"已{verb}{queryset.count()} 个活动的{SWITCHES[field]}", messages.SUCCESS)

    action.__name__ = f"{'enable' if value else 'disable'}_{field}"
    return action


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "status", "starts_at", "ends_at", "total_col", "reserved_col", "spent_col",
                    "remaining_col", "used_col", "switches_col"]
    list_filter = ["status", "claims_enabled", "referrals_enabled", "orders_enabled"]
    search_fields = ["name", "slug"]
    inlines = [BudgetBucketInline]
    actions = [*(_switch_action(f, v) for f in SWITCHES for v in (False, True)), "rebalance_buckets"]
    change_form_template = "admin/campaign/campaign/change_form.html"
    form = CampaignChangeForm
    add_form = CampaignAddForm

    # --- list ------------------------------------------------------------------
    def get_queryset(self, request):
        # Counters come from the buckets (the truth), not from a cached column on the campaign.
        return super().get_queryset(request).annotate(
            reserved_sum=Coalesce(Sum("buckets__reserved"), Value(ZERO), output_field=MONEY),
            spent_sum=Coalesce(Sum("buckets__spent"), Value(ZERO), output_field=MONEY),
        ).annotate(remaining_sum=F("total_budget") - F("reserved_sum") - F("spent_sum"))

    @admin.display(description="总预算", ordering="total_budget")
    def total_col(self, obj):
        return yuan(obj.total_budget)

    @admin.display(description="已预留", ordering="reserved_sum")
    def reserved_col(self, obj):
        return yuan(obj.reserved_sum)

    @admin.display(description="已花费", ordering="spent_sum")
    def spent_col(self, obj):
        return yuan(obj.spent_sum)

    @admin.display(description="剩余", ordering="remaining_sum")
    def remaining_col(self, obj):
        return yuan(obj.remaining_sum)

    @admin.display(description="已用比例")
    def used_col(self, obj):
        pct = (obj.reserved_sum + obj.spent_sum) * 100 / obj.total_budget if obj.total_budget else Decimal(0)
        return format_html(
            '<span title="{}%" style="display:inline-block;width:80px;height:8px;background:#eee;vertical-align:middle">'
            '<span style="display:block;height:8px;width:{}px;background:#c0392b"></span></span> {}%',
            f"{pct:.1f}", int(min(pct, 100) * Decimal("0.8")), f"{pct:.1f}",
        )

    @admin.display(description="开关")
    def switches_col(self, obj):
        return format_html(
            "{}",
            " ".join(f"{label}{'✓' if getattr(obj, f) else '✗'}" for f, label in SWITCHES.items()),
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
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [*MONEY_FIELDS, *SWITCHES, "created_at", "updated_at"]

    def get_inline_instances(self, request, obj=None):
        return super().get_inline_instances(request, obj) if obj is not None else []

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
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_change_budget_permission(request, campaign):
            raise PermissionDenied
        form = BudgetChangeForm(request.POST or None, initial={"new_total": campaign.total_budget})
        if request.method == "POST" and form.is_valid():
            try:
                campaign_budget_change(campaign=campaign, new_total=form.cleaned_data["new_total"],
                                       actor=request.user, reason=form.cleaned_data["reason"])
            except DomainError as exc:
                form.add_error(None, exc.detail)
            else:
                self.message_user(request, f"总预算已调整为 {yuan(form.cleaned_data['new_total'])} 元", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:campaign_campaign_change", args=[campaign.pk]))
        totals = budget_totals(campaign_id=campaign.pk)
        return self._page(request, campaign, f"调整预算：{campaign.name}", "admin/campaign/campaign/budget_change.html",
                          form=form, totals=totals, committed=totals["reserved"] + totals["spent"])

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
        return self._page(request, campaign, f"功能开关：{campaign.name}", "admin/campaign/campaign/switches.html",
                          form=form)


@admin.register(BudgetBucket)
class BudgetBucketAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["campaign", "index", "allotment", "reserved", "spent"]
    list_filter = ["campaign"]
    list_select_related = ["campaign"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "created_at", "campaign", "bucket_index", "kind", "amount", "voucher_id", "order_id", "actor",
                    "reason"]
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


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "object_type", "object_id", "campaign", "reason", "change_summary"]
    list_filter = ["action", "campaign"]
    search_fields = ["action", "object_id", "reason", "actor__username"]
    list_select_related = ["actor", "campaign"]
    fields = ["created_at", "actor", "action", "object_type", "object_id", "campaign", "before", "after", "reason"]
    readonly_fields = fields

    @admin.display(description="变更")
    def change_summary(self, obj):
        return f"{obj.before or {}} → {obj.after or {}}"
