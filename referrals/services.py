"""Writes for invite codes and the referral graph.

How the graph stays a forest without recursion or graph locks:
an invitee must be isolated when it joins (never invited, has invited nobody), and both
facts only change under that user's `("referral", campaign, user)` advisory lock, which
every accept takes for inviter and invitee (ascending id) before re-checking. Adding an
edge to an isolated node cannot close a cycle, so the stored `path`/`root`/`depth` of a
node are fixed forever and ancestry questions are one indexed read.
The UNIQUE(campaign, invitee) constraint is the backstop if a lock is ever skipped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from accounts.models import Device
from campaign.errors import BudgetExhausted, CampaignNotLive
from campaign.models import Campaign
from campaign.services import audit, campaign_is_live
from miandan.api.errors import InvalidInput, Paused
from miandan.db import advisory_lock, retry_on_conflict
from vouchers.errors import CardLimitReached
from vouchers.models import Voucher
from vouchers.services import voucher_issue_in_tx

from .codes import new_invite_code, normalize_code
from .errors import (
    AlreadyReferred,
    InvalidCode,
    ReferralChainTooLong,
    ReferralCycle,
    ReferralNotPending,
    ReviewForbidden,
    SelfReferral,
)
from .models import InviteCode, Referral

PATH_MAX = Referral._meta.get_field("path").max_length
IP_BURST_WINDOW = dt.timedelta(minutes=10)

# Codes stored in Referral.review_reasons, with the text staff read in the review queue.
REVIEW_REASONS = {
    "inviter_hourly_limit": "邀请人一小时内成功邀请次数已达上限",
    "inviter_daily_limit": "邀请人一天内成功邀请次数已达上限",
    "device_shared": "同一设备已被多个账号用于接受邀请或登录",
    "ip_burst": "同一 IP 十分钟内大量新注册账号接受邀请",
}


def _check_open(campaign: Campaign) -> None:
    if not campaign_is_live(campaign):
        raise CampaignNotLive()
    if not campaign.referrals_enabled:
        raise Paused("邀请功能暂时暂停，请稍后再试")


# --- invite codes ---------------------------------------------------------------------

def invite_code_get_or_create(*, user, campaign: Campaign) -> InviteCode:
    """The user's one code for this campaign, created on first use.

    Both unique constraints (one per user, code globally unique) decide races: a concurrent
    create for the same user returns the winner's code, a code collision draws a new one.
    """
    _check_open(campaign)
    existing = InviteCode.objects.filter(campaign=campaign, user=user).first()
    if existing is not None:
        return existing
    for _ in range(5):
        try:
            return _invite_code_create(user=user, campaign=campaign)
        except IntegrityError:
            existing = InviteCode.objects.filter(campaign=campaign, user=user).first()
            if existing is not None:
                return existing
    raise RuntimeError("could not draw a free invite code in 5 attempts")


@transaction.atomic(durable=True)
def _invite_code_create(*, user, campaign: Campaign) -> InviteCode:
    return InviteCode.objects.create(campaign=campaign, user=user, code=new_invite_code())


# --- accepting an invite --------------------------------------------------------------

def _parent_of(campaign: Campaign, user_id: int) -> Referral | None:
    """The referral that brought `user_id` into this campaign's graph, if any."""
    return (
        Referral.objects.filter(campaign=campaign, invitee_id=user_id)
        .only("pk", "path", "root_id", "depth")
        .first()
    )


def _ancestor_ids(node: Referral | None) -> set[int]:
    if node is None:
        return set()
    return {int(part) for part in node.path.strip("/").split("/") if part}


def _check_graph(*, campaign: Campaign, user, inviter_id: int) -> Referral | None:
    """Apply the graph rules in contract order; return the inviter's own referral (its parent edge)."""
    parent = _parent_of(campaign, inviter_id)
    if parent is not None and (user.pk in _ancestor_ids(parent) or parent.root_id == user.pk):
        raise ReferralCycle()
    if Referral.objects.filter(Q(invitee=user) | Q(inviter=user), campaign=campaign).exists():
        raise AlreadyReferred()
    return parent


def _at_least(qs, limit: int) -> bool:
    """`qs.count() >= limit` without counting past the limit (inviters can have millions of rows)."""
    return qs[:limit].count() >= limit if limit > 0 else True


def _abuse_reasons(*, campaign: Campaign, inviter_id: int, user, device_id: str, ip: str | None) -> list[str]:
    now = timezone.now()
    reasons: list[str] = []
    # One indexed range scan for both windows; accepted rows per inviter and day are bounded by the
    # daily limit itself (past it, new ones are held), so this never counts far.
    hour_ago = now - dt.timedelta(hours=1)
    recent = Referral.objects.filter(
        campaign=campaign, inviter_id=inviter_id, status=Referral.Status.ACCEPTED,
        created_at__gte=now - dt.timedelta(days=1),
    ).aggregate(day=Count("id"), hour=Count("id", filter=Q(created_at__gte=hour_ago)))
    if recent["hour"] >= campaign.referral_inviter_hourly_limit:
        reasons.append("inviter_hourly_limit")
    if recent["day"] >= campaign.referral_inviter_daily_limit:
        reasons.append("inviter_daily_limit")
    if device_id:
        limit = campaign.referral_device_max_accounts
        invited_here = Referral.objects.filter(campaign=campaign, device_id=device_id).exclude(invitee=user)
        logged_in_here = Device.objects.filter(device_id=device_id).exclude(user=user).values("user_id").distinct()
        if _at_least(invited_here, limit) or _at_least(logged_in_here, limit):
            reasons.append("device_shared")
    joined = getattr(user, "date_joined", None)
    if ip and joined is not None and joined >= now - IP_BURST_WINDOW:
        since = now - IP_BURST_WINDOW
        burst = Referral.objects.filter(campaign=campaign, ip=ip, created_at__gte=since, invitee__date_joined__gte=since)
        if _at_least(burst, campaign.referral_ip_burst_limit):
            reasons.append("ip_burst")
    return reasons


def _reward(*, referral: Referral, campaign: Campaign, actor=None, reason: str = "") -> None:
    """Issue both cards in the caller's transaction, each side capped and budgeted on its own.

    `voucher_issue_in_tx` runs in a savepoint, so a refusal for one side is recorded as that
    side's outcome and the other side still gets its card.
    """
    sides = [
        ("inviter", referral.inviter, Voucher.Source.REFERRAL_INVITER),
        ("invitee", referral.invitee, Voucher.Source.REFERRAL_INVITEE),
    ]
    # Slot locks in ascending user id, one global order for every two-card transaction.
    for side, who, source in sorted(sides, key=lambda s: s[1].pk):
        voucher = None
        try:
            voucher = voucher_issue_in_tx(user=who, campaign=campaign, source=source, actor=actor,
                                          reason=reason or f"邀请奖励：邀请记录 #{referral.pk}")
            outcome = Referral.Outcome.ISSUED
        except CardLimitReached:
            outcome = Referral.Outcome.CARD_LIMIT_REACHED
        except BudgetExhausted:
            outcome = Referral.Outcome.BUDGET_EXHAUSTED
        except CampaignNotLive:
            outcome = Referral.Outcome.NOT_LIVE
        setattr(referral, f"{side}_outcome", outcome)
        setattr(referral, f"{side}_voucher", voucher)
    referral.save(update_fields=["inviter_outcome", "invitee_outcome", "inviter_voucher", "invitee_voucher"])


def referral_accept(*, user, campaign: Campaign, code: object, device_id: str = "", ip: str | None = None) -> Referral:
    """The caller accepts an invite code. Returns the referral: accepted (cards issued) or under review.

    Refusals in contract order: invalid_code, self_referral, referral_cycle, already_referred.
    """
    _check_open(campaign)
    normalized = normalize_code(code)
    if normalized is None:
        raise InvalidCode()
    invite = InviteCode.objects.select_related("user").filter(code=normalized, campaign=campaign).first()
    if invite is None:
        raise InvalidCode()
    if invite.user_id == user.pk:
        raise SelfReferral()
    # Unlocked pre-check: the hopeless (repeats, bots replaying many codes) never queue for the locks.
    _check_graph(campaign=campaign, user=user, inviter_id=invite.user_id)
    try:
        return _accept_db(user=user, campaign=campaign, invite=invite, device_id=(device_id or "")[:128], ip=ip)
    except IntegrityError as exc:
        if "referral_one_per_invitee" in str(exc):
            raise AlreadyReferred() from exc
        raise


@retry_on_conflict()
@transaction.atomic(durable=True)
def _accept_db(*, user, campaign: Campaign, invite: InviteCode, device_id: str, ip: str | None) -> Referral:
    inviter = invite.user
    for user_id in sorted({user.pk, inviter.pk}):
        advisory_lock("referral", campaign.pk, user_id)
    if device_id:
        # After the user locks (one global order): serialises accounts sharing a device, so a
        # bot farm on one phone cannot slip N parallel accepts past the device rule.
        advisory_lock("referral-device", campaign.pk, device_id)
    parent = _check_graph(campaign=campaign, user=user, inviter_id=inviter.pk)
    if parent is None:
        path, root_id, depth = f"/{inviter.pk}/", inviter.pk, 1
    else:
        path, root_id, depth = f"{parent.path}{inviter.pk}/", parent.root_id, parent.depth + 1
    if len(path) > PATH_MAX:
        raise ReferralChainTooLong()
    reasons = _abuse_reasons(campaign=campaign, inviter_id=inviter.pk, user=user, device_id=device_id, ip=ip)
    referral = Referral.objects.create(
        campaign=campaign, invite_code=invite, inviter=inviter, invitee=user, root_id=root_id, depth=depth,
        path=path, status=Referral.Status.UNDER_REVIEW if reasons else Referral.Status.ACCEPTED,
        review_reasons=reasons, device_id=device_id, ip=ip or None,
    )
    if not reasons:
        _reward(referral=referral, campaign=campaign)
    return referral


# --- staff review ---------------------------------------------------------------------

def _check_reviewer(actor, note: str) -> str:
    if actor is None or not actor.has_perm("referrals.review_referral"):
        raise ReviewForbidden()
    note = (note or "").strip()
    if not note:
        raise InvalidInput("审核必须填写说明", extra={"fields": {"note": ["必填"]}})
    return note[:255]


def _lock_pending(referral: Referral) -> Referral:
    row = Referral.objects.only("campaign_id", "inviter_id", "invitee_id").get(pk=referral.pk)
    for user_id in sorted({row.inviter_id, row.invitee_id}):
        advisory_lock("referral", row.campaign_id, user_id)
    locked = Referral.objects.select_for_update().get(pk=referral.pk)
    if locked.status != Referral.Status.UNDER_REVIEW:
        raise ReferralNotPending(f"邀请记录 #{locked.pk} 当前状态为「{locked.get_status_display()}」，无需审核")
    return locked


def _snapshot(referral: Referral) -> dict[str, Any]:
    return {
        "status": referral.status,
        "inviter_outcome": referral.inviter_outcome,
        "invitee_outcome": referral.invitee_outcome,
    }


@retry_on_conflict()
@transaction.atomic(durable=True)
def referral_approve(*, referral: Referral, actor, note: str) -> Referral:
    """Release a held referral: issue both cards now (still capped and budgeted), record who and why."""
    note = _check_reviewer(actor, note)
    ref = _lock_pending(referral)
    before = _snapshot(ref)
    ref.status = Referral.Status.ACCEPTED
    ref.reviewed_by, ref.reviewed_at, ref.review_note = actor, timezone.now(), note
    ref.save(update_fields=["status", "reviewed_by", "reviewed_at", "review_note"])
    _reward(referral=ref, campaign=ref.campaign, actor=actor, reason=f"审核通过邀请记录 #{ref.pk}")
    audit(actor=actor, action="referral.approve", obj=ref, campaign=ref.campaign, before=before,
          after=_snapshot(ref), reason=note)
    return ref


@retry_on_conflict()
@transaction.atomic(durable=True)
def referral_reject(*, referral: Referral, actor, note: str) -> Referral:
    """Refuse a held referral: no cards for either side. The invitee stays in the graph (accepts once)."""
    note = _check_reviewer(actor, note)
    ref = _lock_pending(referral)
    before = _snapshot(ref)
    ref.status = Referral.Status.REJECTED
    ref.inviter_outcome = ref.invitee_outcome = Referral.Outcome.REJECTED
    ref.reviewed_by, ref.reviewed_at, ref.review_note = actor, timezone.now(), note
    ref.save(update_fields=["status", "inviter_outcome", "invitee_outcome", "reviewed_by", "reviewed_at", "review_note"])
    audit(actor=actor, action="referral.reject", obj=ref, campaign=ref.campaign, before=before,
          after=_snapshot(ref), reason=note)
    return ref
