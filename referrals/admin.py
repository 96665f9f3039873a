"""Staff screens for referrals: codes, the referral list, the review queue, chains and top inviters.

Everything here is read-only except the review actions, which call the services
(`referral_approve` / `referral_reject`): cards and outcomes are never edited by hand.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from campaign.models import Campaign
from miandan.api.admin import ReadOnlyAdminMixin
from miandan.api.admin_scale import LargeTableAdminMixin, digits, ids_or_none, phone_prefix
from miandan.api.errors import DomainError

from .errors import ReferralNotPending
from .models import Clawback, InviteCode, PendingReferral, Referral
from .selectors import mask_phone, referral_chain, top_inviters
from .services import REVIEW_REASONS, referral_approve, referral_reject, referral_revoke


def _who(user) -> str:
    """App users by masked phone (138****1234): reviewers judge patterns, they do not need the number."""
    if user is None:
        return "-"
    phone = getattr(user, "phone", None)
    return mask_phone(phone) if phone else getattr(user, "username", "")


def chain_url(user_id: int, campaign_id: int | None = None) -> str:
    url = reverse("admin:referrals_referral_chain", args=[user_id])
    return f"{url}?campaign={campaign_id}" if campaign_id else url


@admin.register(InviteCode)
class InviteCodeAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    # Codes are created by the app on first use; staff only look them up.
    list_display = ("code", "owner", "campaign", "invitee_count", "created_at")
    list_filter = ("campaign",)
    search_fields = ("code", "user__phone", "user__username")
    list_select_related = ("user", "campaign")
    readonly_fields = ("code", "user", "campaign", "created_at")
    ordering = ("-id",)
    search_help_text = "邀请码，或邀请人手机号（可只输前几位）"
    show_full_result_count = False

    def search_q(self, request, term: str) -> Q | None:
        if digits(term):
            if not phone_prefix(term):
                return None
            users = ids_or_none(get_user_model().objects.filter(phone__startswith=term).values_list("pk", flat=True))
            return Q(user_id__in=users) if users else None
        staff = ids_or_none(get_user_model().objects.filter(username=term).values_list("pk", flat=True))
        return Q(code=term.upper()) | Q(user_id__in=staff)

    def get_queryset(self, request):
        # A correlated count per listed row (FK index), not a GROUP BY over the whole join: the list
        # stays fast with millions of codes.
        invitees = (
            Referral.objects.filter(invite_code=OuterRef("pk")).order_by().values("invite_code")
            .annotate(n=Count("id")).values("n")
        )
        return super().get_queryset(request).annotate(_invitees=Coalesce(Subquery(invitees), 0))

    @admin.display(description="邀请人")
    def owner(self, obj: InviteCode):
        return format_html('<a href="{}">{}</a>', chain_url(obj.user_id, obj.campaign_id), _who(obj.user))

    @admin.display(description="邀请人数", ordering="_invitees")
    def invitee_count(self, obj: InviteCode) -> int:
        return obj._invitees



class ClawbackInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The referral's detail page: what happened to each reward card when it was rejected after the fact."""

    model = Clawback
    extra = 0
    can_delete = False
    verbose_name_plural = "奖励收回记录（事后拒绝）"
    fields = ("side", "voucher", "action", "amount", "order_id", "actor", "note", "created_at")
    readonly_fields = fields

    def has_view_permission(self, request, obj=None) -> bool:
        # Part of the referral's page: whoever may see the referral sees what was clawed back.
        return request.user.has_perm("referrals.view_referral") or request.user.has_perm("referrals.review_referral")


@admin.register(Referral)
class ReferralAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    change_list_template = "referrals/admin/referral_change_list.html"
    list_display = ("id", "campaign", "inviter_link", "invitee_link", "status", "inviter_outcome", "invitee_outcome",
                    "depth", "reasons", "created_at")
    list_filter = ("status", "campaign", "inviter_outcome", "invitee_outcome")
    search_fields = ("inviter__phone", "invitee__phone", "invite_code__code", "device_id")
    list_select_related = ("campaign", "inviter", "invitee")
    actions = ("approve_selected", "reject_selected", "revoke_selected")
    inlines = (ClawbackInline,)
    # No raw graph fields (root, the materialised path "/5/19/"): the chain is shown as people, masked.
    readonly_fields = (
        "campaign", "invite_code", "inviter_link", "invitee_link", "chain_col", "status",
        "inviter_outcome", "invitee_outcome", "inviter_voucher", "invitee_voucher", "reasons", "device_id", "ip",
        "reviewed_by", "reviewed_at", "review_note", "created_at",
    )
    fields = readonly_fields
    change_form_template = "referrals/admin/referral_change_form.html"
    search_help_text = "手机号（邀请人或受邀人，可只输前几位）、邀请码或设备号"
    show_full_result_count = False
    list_per_page = 50

    def search_q(self, request, term: str) -> Q | None:
        # Phones resolved to user ids first: then both sides are FK indexes PostgreSQL can OR together.
        if digits(term):
            if not phone_prefix(term):
                return None
            users = ids_or_none(get_user_model().objects.filter(phone__startswith=term).values_list("pk", flat=True))
            return Q(inviter_id__in=users) | Q(invitee_id__in=users) if users else None
        codes = ids_or_none(InviteCode.objects.filter(code=term.upper()).values_list("pk", flat=True))
        return Q(invite_code_id__in=codes) | Q(device_id=term)

    @admin.display(description="邀请人", ordering="inviter__phone")
    def inviter_link(self, obj: Referral):
        return format_html('<a href="{}">{}</a>', chain_url(obj.inviter_id, obj.campaign_id), _who(obj.inviter))

    @admin.display(description="受邀人", ordering="invitee__phone")
    def invitee_link(self, obj: Referral):
        return format_html('<a href="{}">{}</a>', chain_url(obj.invitee_id, obj.campaign_id), _who(obj.invitee))

    @admin.display(description="邀请链")
    def chain_col(self, obj: Referral):
        ids = [int(part) for part in obj.path.strip("/").split("/") if part]
        users = get_user_model().objects.in_bulk(ids)
        links = [format_html('<a href="{}">{}</a>', chain_url(i, obj.campaign_id), _who(users.get(i))) for i in ids]
        links.append(format_html("<strong>{}</strong>", _who(obj.invitee)))
        return format_html("{}（第 {} 层）", format_html_join(" → ", "{}", ((link,) for link in links)), obj.depth)

    @admin.display(description="可疑原因")
    def reasons(self, obj: Referral) -> str:
        return "；".join(REVIEW_REASONS.get(r, r) for r in obj.review_reasons or []) or "-"


    def has_review_permission(self, request) -> bool:
        return request.user.has_perm("referrals.review_referral")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # A held referral can be decided from its own page (the same confirm-with-a-note step as the bulk actions).
        obj = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        extra_context["can_review"] = (obj is not None and obj.status == Referral.Status.UNDER_REVIEW
                                       and self.has_review_permission(request))
        extra_context["can_revoke"] = (obj is not None and obj.status == Referral.Status.ACCEPTED
                                       and self.has_review_permission(request))
        extra_context["action_checkbox_name"] = helpers.ACTION_CHECKBOX_NAME
        return super().change_view(request, object_id, form_url, extra_context)

    # --- bulk review --------------------------------------------------------------------

    @admin.action(description="通过所选待审核邀请（发卡，仍受上限与预算约束）", permissions=["review"])
    def approve_selected(self, request, queryset):
        return self._review(request, queryset, approve=True)

    @admin.action(description="拒绝所选待审核邀请（不发卡）", permissions=["review"])
    def reject_selected(self, request, queryset):
        return self._review(request, queryset, approve=False)

    @admin.action(description="事后拒绝所选已接受邀请（作弊查实：收回未使用的奖励卡，已使用的列出）",
                  permissions=["review"])
    def revoke_selected(self, request, queryset):
        return self._review(request, queryset, approve=False, revoke=True)

    def _review(self, request, queryset, *, approve: bool, revoke: bool = False):
        """First POST shows a confirmation page asking why; the second (confirm=yes) decides."""
        action = "revoke_selected" if revoke else "approve_selected" if approve else "reject_selected"
        error = ""
        if request.POST.get("confirm") == "yes":
            note = request.POST.get("note", "").strip()
            if note:
                if revoke:
                    self._revoke(request, queryset, note=note)
                else:
                    self._decide(request, queryset, approve=approve, note=note)
                return None  # back to the change list
            error = "请填写审核说明（会记入审计日志）"
        wanted = Referral.Status.ACCEPTED if revoke else Referral.Status.UNDER_REVIEW
        pending = list(queryset.filter(status=wanted).select_related("inviter", "invitee", "campaign"))
        for referral in pending:
            referral.reason_text = self.reasons(referral)
            referral.inviter_name, referral.invitee_name = _who(referral.inviter), _who(referral.invitee)
        context = {
            **self.admin_site.each_context(request),
            "title": "事后拒绝邀请（收回奖励）" if revoke else "批量通过邀请" if approve else "批量拒绝邀请",
            "revoke": revoke,
            "opts": self.model._meta,
            "approve": approve,
            "action": action,
            "queryset": queryset,
            "pending": pending,
            "skipped": queryset.count() - len(pending),
            "error": error,
            "note": request.POST.get("note", ""),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "referrals/admin/review_confirm.html", context)

    def _decide(self, request, queryset, *, approve: bool, note: str) -> None:
        service = referral_approve if approve else referral_reject
        done = skipped = 0
        failures: list[str] = []
        # One transaction per referral: a failure on one does not undo the others.
        for referral in queryset.order_by("pk"):
            try:
                service(referral=referral, actor=request.user, note=note)
                done += 1
            except ReferralNotPending:
                skipped += 1
            except DomainError as exc:
                failures.append(f"#{referral.pk}: {exc.detail}")
        verb = "通过" if approve else "拒绝"
        if done:
            messages.success(request, f"已{verb} {done} 条邀请。")
        if skipped:
            messages.warning(request, f"{skipped} 条邀请不在待审核状态，已跳过。")
        for failure in failures[:20]:
            messages.error(request, failure)

    def _revoke(self, request, queryset, *, note: str) -> None:
        done = skipped = 0
        voided: list[Clawback] = []
        used: list[Clawback] = []
        for referral in queryset.order_by("pk"):
            try:
                _, clawbacks = referral_revoke(referral=referral, actor=request.user, note=note)
            except ReferralNotPending:
                skipped += 1
                continue
            except DomainError as exc:
                messages.error(request, f"#{referral.pk}: {exc.detail}")
                continue
            done += 1
            voided += [c for c in clawbacks if c.action == Clawback.Action.VOIDED]
            used += [c for c in clawbacks if c.action in (Clawback.Action.USED, Clawback.Action.IN_USE)]
        if done:
            messages.success(request, f"已事后拒绝 {done} 条邀请，作废未使用的奖励卡 {len(voided)} 张"
                                      f"（退回预算 {sum(c.amount for c in voided)} 元）。")
        for c in used[:20]:
            messages.warning(request, f"邀请 #{c.referral_id} 的{c.get_side_display()}奖励卡 #{c.voucher_id} "
                                      f"{c.get_action_display()}：{c.amount} 元，订单 #{c.order_id}，请跟进。")
        if skipped:
            messages.warning(request, f"{skipped} 条邀请不是“已接受”状态，已跳过。")

    # --- chain and top inviters -----------------------------------------------------------

    def get_urls(self):
        custom = [
            path("chain/<int:user_id>/", self.admin_site.admin_view(self.chain_view), name="referrals_referral_chain"),
            path("top-inviters/", self.admin_site.admin_view(self.top_inviters_view),
                 name="referrals_referral_top_inviters"),
        ]
        return custom + super().get_urls()

    def _require_view(self, request) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def chain_view(self, request, user_id: int):
        self._require_view(request)
        user = get_object_or_404(get_user_model(), pk=user_id)
        campaign_ids = set(Referral.objects.filter(invitee=user).values_list("campaign_id", flat=True))
        campaign_ids |= set(Referral.objects.filter(inviter=user).values_list("campaign_id", flat=True))
        wanted = request.GET.get("campaign", "")
        if wanted.isdigit():
            campaign_ids = {int(wanted)}
        campaigns = Campaign.objects.filter(pk__in=campaign_ids).order_by("-starts_at")
        chains = [referral_chain(user=user, campaign=c) for c in campaigns]
        for chain in chains:
            chain.ancestor_links = format_html_join(
                " → ", '<a href="{}">{}</a>', ((chain_url(a.pk, chain.campaign.pk), _who(a)) for a in chain.ancestors)
            )
            chain.invitee_rows = [
                (r, chain_url(r.invitee_id, chain.campaign.pk), _who(r.invitee)) for r in chain.invitees
            ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"邀请链：{_who(user)}",
            "opts": self.model._meta,
            "subject": user,
            "subject_name": _who(user),
            "chains": chains,
            "status_labels": dict(Referral.Status.choices),
        }
        return TemplateResponse(request, "referrals/admin/chain.html", context)

    def top_inviters_view(self, request):
        self._require_view(request)
        campaigns = list(Campaign.objects.order_by("-starts_at")[:100])
        wanted = request.GET.get("campaign", "")
        campaign = next((c for c in campaigns if str(c.pk) == wanted), None)
        rows = top_inviters(campaign=campaign, limit=100)
        for row in rows:
            row["chain_url"] = chain_url(row["inviter_id"], row["campaign_id"])
            row["name"] = _who(row["inviter"])
        context = {
            **self.admin_site.each_context(request),
            "title": "邀请排行榜",
            "opts": self.model._meta,
            "campaigns": campaigns,
            "campaign": campaign,
            "rows": rows,
        }
        return TemplateResponse(request, "referrals/admin/top_inviters.html", context)


@admin.register(PendingReferral)
class PendingReferralAdmin(ReferralAdmin):
    """Held referrals only: the queue staff work through with the bulk actions."""

    list_filter = ("campaign",)
    ordering = ("id",)  # oldest first: first held, first decided

    def get_changelist(self, request, **kwargs):
        # Only the list is narrowed to held referrals: a detail page (e.g. linked from an audit row)
        # still opens after the referral has been decided.
        base = super().get_changelist(request, **kwargs)

        class QueueChangeList(base):
            def get_queryset(self, request, exclude_parameters=None):
                return super().get_queryset(request, exclude_parameters).filter(status=Referral.Status.UNDER_REVIEW)

        return QueueChangeList

    def get_urls(self):
        return admin.ModelAdmin.get_urls(self)

    # The proxy has no permissions of its own: whoever may see or review referrals sees the queue.
    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("referrals.view_referral") or self.has_review_permission(request)

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)


@admin.register(Clawback)
class ClawbackAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Follow-up list: reward cards of referrals rejected after the fact (used ones need someone to act)."""

    list_display = ("id", "referral", "side", "voucher", "action", "amount", "order_id", "actor", "created_at")
    list_filter = ("action",)
    list_select_related = ("referral", "voucher", "actor")
    search_fields = ("=referral__id", "=order_id")
    search_help_text = "邀请记录号或订单号"
    show_full_result_count = False

