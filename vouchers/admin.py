"""Staff screens for cards. Everything is read-only: a card's money moves only through services.

Two staff operations go through `vouchers.services` (and so through the ledger):
- "作废（需填写原因）": an action with an intermediate page asking for the reason (`voucher_void`);
- "人工发卡": a small form on the changelist (`voucher_issue` with source=staff, reason required).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from accounts.models import User
from campaign.models import Campaign
from miandan.api.admin import ReadOnlyAdminMixin
from miandan.api.admin_scale import LargeTableAdminMixin, digits, ids_or_none, phone_prefix
from miandan.api.errors import DomainError

from .models import DeviceClaim, Voucher
from .services import voucher_issue, voucher_void


class VoidForm(forms.Form):
    reason = forms.CharField(label="作废原因", max_length=255, widget=forms.TextInput(attrs={"size": 60}))

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("请填写作废原因")
        return reason


class IssueForm(forms.Form):
    campaign = forms.ModelChoiceField(label="活动", queryset=Campaign.objects.order_by("-starts_at"))
    phone = forms.CharField(label="用户手机号", max_length=11)
    reason = forms.CharField(label="发卡原因", max_length=255, widget=forms.TextInput(attrs={"size": 60}))

    def clean_phone(self):
        phone = self.cleaned_data["phone"].strip()
        user = User.objects.filter(phone=phone).first()
        if user is None:
            raise forms.ValidationError("没有这个手机号的用户")
        self.cleaned_data["user"] = user
        return phone

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("请填写发卡原因")
        return reason


@admin.register(Voucher)
class VoucherAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("code", "user", "campaign", "source", "status", "face_value", "subsidy", "expires_at")
    list_filter = ("campaign", "status", "source")
    search_fields = ("=code", "user__phone")  # "=code" is iexact: staff may type codes in lower case
    list_select_related = ("user", "campaign")
    date_hierarchy = "issued_at"
    raw_id_fields = ("user", "campaign", "bucket")
    fields = (
        "code", "campaign", "user", "source", "status", "slot", "cap", "bucket", "face_value", "subsidy", "order_id",
        "issued_at", "expires_at", "locked_at", "redeemed_at", "closed_at", "void_reason",
    )
    actions = ["void"]
    search_help_text = "卡号（完整），或手机号（可只输前几位）"
    show_full_result_count = False  # the card table is the biggest in the system

    def search_q(self, request, term: str) -> Q | None:
        # Indexed lookups only (LargeTableAdminMixin): the code's unique index, the phone's prefix index.
        if digits(term):
            if not phone_prefix(term):
                return None
            users = ids_or_none(User.objects.filter(phone__startswith=term).values_list("pk", flat=True))
            return Q(user_id__in=users) if users else None
        return Q(code=term.upper())
    change_list_template = "admin/vouchers/voucher/change_list.html"

    # --- void ------------------------------------------------------------------------

    def has_void_permission(self, request):
        return request.user.has_perm("vouchers.void_voucher")

    @admin.action(description="作废（需填写原因）", permissions=["void"])
    def void(self, request, queryset):
        form = VoidForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            reason = form.cleaned_data["reason"]
            done, refused = 0, []
            for card in queryset.order_by("pk"):
                try:
                    voucher_void(voucher=card, actor=request.user, reason=reason)
                    done += 1
                except DomainError as exc:
                    refused.append(f"{card.code}：{exc.detail}")
            if done:
                self.message_user(request, f"已作废 {done} 张卡，预留金额已退回预算。", messages.SUCCESS)
            for line in refused:
                self.message_user(request, f"未作废 {line}", messages.WARNING)
            return None  # back to the changelist
        context = {
            **self.admin_site.each_context(request),
            "title": "作废免单卡",
            "opts": self.model._meta,
            "form": form,
            "cards": queryset.select_related("user", "campaign").order_by("pk")[:200],
            "count": queryset.count(),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/vouchers/voucher/void_confirmation.html", context)

    # --- manual issue ----------------------------------------------------------------------

    def has_issue_permission(self, request):
        return request.user.has_perm("vouchers.issue_voucher")

    def get_urls(self):
        extra = [path("issue/", self.admin_site.admin_view(self.issue_view), name="vouchers_voucher_issue")]
        return extra + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_issue": self.has_issue_permission(request)}
        return super().changelist_view(request, extra_context=extra_context)

    def issue_view(self, request):
        if not self.has_issue_permission(request):
            raise PermissionDenied
        form = IssueForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                card = voucher_issue(user=form.cleaned_data["user"], campaign=form.cleaned_data["campaign"],
                                     source=Voucher.Source.STAFF, actor=request.user, reason=form.cleaned_data["reason"])
            except DomainError as exc:
                form.add_error(None, str(exc.detail))
            else:
                self.message_user(request, f"已发卡 {card.code}（{card.face_value} 元）给 {card.user}。", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:vouchers_voucher_change", args=[card.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "人工发卡",
            "opts": self.model._meta,
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/vouchers/voucher/issue.html", context)


@admin.register(DeviceClaim)
class DeviceClaimAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Support: which devices took how many welcome cards / referral rewards (bot-farm clusters; see also
    `manage.py suspicious_clusters`). Written only by vouchers.services.device_claim."""

    list_display = ("device_id", "campaign", "kind", "count", "updated_at")
    list_filter = ("kind", "campaign")
    search_fields = ("=device_id",)
    ordering = ("-count", "-id")
