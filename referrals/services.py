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
import hashlib
import logging
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.utils import timezone

from accounts.models import Device
from campaign.errors import BudgetExhausted, CampaignNotLive
from campaign.gate import campaign_require_open
from campaign.models import Campaign
from campaign.services import audit
from events.models import EventType
from events.services import event_record
from miandan.api.errors import InvalidInput
from miandan.db import is_postgres, retry_on_conflict
from vouchers.errors import CardLimitReached
from vouchers.models import DeviceClaim, Voucher
from vouchers.services import device_claim, voucher_issue_in_tx, voucher_void_in_tx

from .codes import extract_code, new_invite_code
from .errors import (
    AlreadyReferred,
    InvalidCode,
    ReferralChainTooLong,
    ReferralCycle,
    ReferralNotPending,
    ReviewForbidden,
    SelfReferral,
)
from .models import Clawback, InviteCode, Referral

logger = logging.getLogger(__name__)
PATH_MAX = Referral._meta.get_field("path").max_length
IP_BURST_WINDOW = dt.timedelta(minutes=10)

# Codes stored in Referral.review_reasons, with the text staff read in the review queue.
REVIEW_REASONS = {
    "inviter_hourly_limit": "邀请人一小时内成功邀请次数已达上限",
    "inviter_daily_limit": "邀请人一天内成功邀请次数已达上限",
    "device_shared": "同一设备已被多个账号用于接受邀请或登录",
    "ip_burst": "同一 IP 十分钟内大量新注册账号接受邀请",
    "inviter_flagged": "邀请人自己的邀请记录待审核或已被拒绝（可疑链条）",
    "ip_daily": "同一 IP 一天内接受邀请次数已达上限（不论账号新旧）",
    "subnet_daily": "同一网段一天内接受邀请次数已达上限（不论账号新旧）",
    "device_reward_cap": "同一设备获得的邀请奖励已达上限",
}


def subnet_of(ip: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) a client address belongs to: one home, office or small NAT pool."""
    import ipaddress

    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


# --- invite codes ---------------------------------------------------------------------

def invite_code_get_or_create(*, user, campaign: Campaign) -> InviteCode:
    """The user's one code for this campaign, created on first use.

    Both unique constraints (one per user, code globally unique) decide races: a concurrent
    create for the same user returns the winner's code, a code collision draws a new one.
    """
    campaign_require_open(campaign=campaign, feature="referrals")
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

def _ancestor_ids(node: Referral | None) -> set[int]:
    if node is None:
        return set()
    return {int(part) for part in node.path.strip("/").split("/") if part}


def _check_graph(*, campaign: Campaign, user, inviter_id: int) -> Referral | None:
    """Apply the graph rules in contract order; return the inviter's own referral (its parent edge).

    One indexed query answers both questions: the inviter's parent edge (sorted first) and whether
    the caller already has any edge, as invitee or as inviter (a second row is enough to know).
    """
    rows = list(
        Referral.objects.filter(Q(invitee_id=inviter_id) | Q(invitee=user) | Q(inviter=user), campaign=campaign)
        .annotate(is_parent=Case(When(invitee_id=inviter_id, then=Value(1)), default=Value(0),
                                 output_field=IntegerField()))
        .order_by("-is_parent")
        .only("pk", "path", "root_id", "depth", "status", "inviter_id", "invitee_id")[:2]
    )
    parent = rows[0] if rows and rows[0].invitee_id == inviter_id else None
    if parent is not None and (user.pk in _ancestor_ids(parent) or parent.root_id == user.pk):
        raise ReferralCycle()
    if any(user.pk in (row.invitee_id, row.inviter_id) for row in rows):
        raise AlreadyReferred()
    return parent


def _abuse_reasons(
    *, campaign: Campaign, inviter_id: int, parent: Referral | None, user, device_id: str, ip: str | None
) -> list[str]:
    """Which abuse rules this accept trips. Two queries: one conditional aggregate over the campaign's
    referrals (each branch of the OR is an indexed range), one over the devices table."""
    now = timezone.now()
    hour_ago, day_ago, since = now - dt.timedelta(hours=1), now - dt.timedelta(days=1), now - IP_BURST_WINDOW
    # Accepted rows per inviter and day are bounded by the daily limit itself (past it, new ones are held).
    by_inviter = Q(inviter_id=inviter_id, status=Referral.Status.ACCEPTED, created_at__gte=day_ago)
    scope = by_inviter
    counts = {"day": Count("id", filter=by_inviter), "hour": Count("id", filter=by_inviter & Q(created_at__gte=hour_ago))}
    if device_id:
        on_device = Q(device_id=device_id) & ~Q(invitee=user)
        scope |= on_device
        counts["device"] = Count("id", filter=on_device)
    if ip and campaign.referral_ip_daily_limit:
        # Age-independent: aged accounts bought in bulk behind one address count too.
        same_ip = Q(ip=ip, created_at__gte=day_ago)
        scope |= same_ip
        counts["ip_day"] = Count("id", filter=same_ip)
    joined = getattr(user, "date_joined", None)
    if ip and joined is not None and joined >= since:
        from_ip = Q(ip=ip, created_at__gte=since)
        scope |= from_ip
        # Only brand-new accounts count towards a burst; the join stays out of the WHERE clause.
        counts["burst"] = Count("id", filter=from_ip & Q(invitee__date_joined__gte=since))
    seen = Referral.objects.filter(scope, campaign=campaign).aggregate(**counts)

    reasons: list[str] = []
    if seen["hour"] >= campaign.referral_inviter_hourly_limit:
        reasons.append("inviter_hourly_limit")
    if seen["day"] >= campaign.referral_inviter_daily_limit:
        reasons.append("inviter_daily_limit")
    if device_id:
        limit = campaign.referral_device_max_accounts
        other_logins = Device.objects.filter(device_id=device_id).exclude(user=user).values("user_id").distinct()
        if seen["device"] >= limit or other_logins[:max(limit, 1)].count() >= limit:
            reasons.append("device_shared")
    if "burst" in seen and seen["burst"] >= campaign.referral_ip_burst_limit:
        reasons.append("ip_burst")
    if "ip_day" in seen and seen["ip_day"] >= campaign.referral_ip_daily_limit:
        reasons.append("ip_daily")
    subnet = subnet_of(ip) if ip and campaign.referral_subnet_daily_limit else None
    if subnet and connection.vendor == "postgresql":
        # `ip <<= subnet` is a range of the (campaign, ip, created_at) index in PostgreSQL.
        in_subnet = (Referral.objects.filter(campaign=campaign, created_at__gte=day_ago)
                     .extra(where=["ip <<= %s::inet"], params=[subnet]))
        if in_subnet[:campaign.referral_subnet_daily_limit].count() >= campaign.referral_subnet_daily_limit:
            reasons.append("subnet_daily")
    # A suspicious chain grows under review: an inviter who is held (or was refused) cannot pay out
    # to new invitees before staff have looked at the inviter.
    if parent is not None and parent.status != Referral.Status.ACCEPTED:
        reasons.append("inviter_flagged")
    return reasons


def _reward(*, inviter, invitee, campaign: Campaign, actor=None, reason: str = "") -> dict[str, Any]:
    """Issue both cards in the caller's transaction, each side capped and budgeted on its own.

    `voucher_issue_in_tx` runs in a savepoint, so a refusal for one side is recorded as that
    side's outcome and the other side still gets its card. Returns the Referral fields to store.
    """
    sides = [
        ("inviter", inviter, Voucher.Source.REFERRAL_INVITER),
        ("invitee", invitee, Voucher.Source.REFERRAL_INVITEE),
    ]
    fields: dict[str, Any] = {}
    # Slot locks in ascending user id, one global order for every two-card transaction.
    for side, who, source in sorted(sides, key=lambda s: s[1].pk):
        voucher = None
        try:
            voucher = voucher_issue_in_tx(user=who, campaign=campaign, source=source, actor=actor, reason=reason)
            outcome = Referral.Outcome.ISSUED
        except CardLimitReached:
            outcome = Referral.Outcome.CARD_LIMIT_REACHED
        except BudgetExhausted:
            outcome = Referral.Outcome.BUDGET_EXHAUSTED
        except CampaignNotLive:
            outcome = Referral.Outcome.NOT_LIVE
        fields[f"{side}_outcome"] = outcome
        fields[f"{side}_voucher"] = voucher
    return fields


def _lock_all(*keys: tuple) -> None:
    """Several transaction-scoped advisory locks in one round trip, taken in the order given.

    Same key derivation as `miandan.db.advisory_lock`, so both can guard the same keys.
    """
    if not is_postgres():
        return
    ids = [
        int.from_bytes(hashlib.blake2b(":".join(map(str, key)).encode(), digest_size=8).digest(), "big", signed=True)
        for key in keys
    ]
    with connection.cursor() as cursor:
        # PostgreSQL evaluates a target list left to right, so the locks are taken in this order.
        cursor.execute("SELECT " + ", ".join(["pg_advisory_xact_lock(%s)"] * len(ids)), ids)


def referral_accept(*, user, campaign: Campaign, code: object, device_id: str = "", ip: str | None = None) -> Referral:
    """The caller accepts an invite code. Returns the referral: accepted (cards issued) or under review.

    Refusals in contract order: invalid_code, self_referral, referral_cycle, already_referred.
    """
    campaign_require_open(campaign=campaign, feature="referrals")
    normalized = extract_code(code)  # a bare code, or the whole 口令 / link the user pasted
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
    keys = [("referral", campaign.pk, user_id) for user_id in sorted({user.pk, inviter.pk})]
    if device_id:
        # After the user locks (one global order): serialises accounts sharing a device, so a
        # bot farm on one phone cannot slip N parallel accepts past the device rule.
        keys.append(("referral-device", campaign.pk, device_id))
    _lock_all(*keys)
    parent = _check_graph(campaign=campaign, user=user, inviter_id=inviter.pk)
    if parent is None:
        path, root_id, depth = f"/{inviter.pk}/", inviter.pk, 1
    else:
        path, root_id, depth = f"{parent.path}{inviter.pk}/", parent.root_id, parent.depth + 1
    if len(path) > PATH_MAX:
        raise ReferralChainTooLong()
    reasons = _abuse_reasons(campaign=campaign, inviter_id=inviter.pk, parent=parent, user=user, device_id=device_id,
                             ip=ip)
    # Cards first, then the referral row with both outcomes in one INSERT (the budget rows the cards
    # locked are held for one statement less).
    if not reasons and not device_claim(campaign=campaign, device_id=device_id, kind=DeviceClaim.Kind.REFERRAL):
        reasons.append("device_reward_cap")  # the device's rewards are counted in this same transaction
    rewards = {} if reasons else _reward(inviter=inviter, invitee=user, campaign=campaign)
    referral = Referral.objects.create(
        campaign=campaign, invite_code=invite, inviter=inviter, invitee=user, root_id=root_id, depth=depth,
        path=path, status=Referral.Status.UNDER_REVIEW if reasons else Referral.Status.ACCEPTED,
        review_reasons=reasons, device_id=device_id, ip=ip or None, **rewards,
    )
    _referral_event(referral, EventType.REFERRAL_HELD if reasons else EventType.REFERRAL_ACCEPTED)
    return referral


def _referral_event(ref: Referral, event_type: str, **extra: Any) -> None:
    """The referral's event of the stream, in the caller's transaction (docs/events.md)."""
    event_record(type=event_type, campaign_id=ref.campaign_id, data={
        "referral_id": ref.pk, "inviter_id": ref.inviter_id, "invitee_id": ref.invitee_id, "status": ref.status,
        "inviter_outcome": ref.inviter_outcome, "invitee_outcome": ref.invitee_outcome,
        "inviter_voucher_id": ref.inviter_voucher_id, "invitee_voucher_id": ref.invitee_voucher_id,
        "review_reasons": ref.review_reasons or [], **extra,
    })


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
    _lock_all(*[("referral", row.campaign_id, user_id) for user_id in sorted({row.inviter_id, row.invitee_id})])
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
    for field, value in _reward(inviter=ref.inviter, invitee=ref.invitee, campaign=ref.campaign, actor=actor,
                                reason=f"审核通过邀请记录 #{ref.pk}").items():
        setattr(ref, field, value)
    ref.save(update_fields=["status", "reviewed_by", "reviewed_at", "review_note", "inviter_outcome", "invitee_outcome",
                            "inviter_voucher", "invitee_voucher"])
    audit(actor=actor, action="referral.approve", obj=ref, campaign=ref.campaign, before=before,
          after=_snapshot(ref), reason=note)
    _referral_event(ref, EventType.REFERRAL_ACCEPTED, reviewed=True, note=note)
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
    _referral_event(ref, EventType.REFERRAL_REJECTED, after_the_fact=False, note=note)
    return ref


# --- rejecting after the fact: clawback -------------------------------------------------

def _claw_one(*, ref: Referral, side: str, voucher_id: int, enabled: bool, actor, note: str) -> Clawback:
    """Decide and record what happens to one reward card. The card row is locked first (a concurrent order
    either locked it before, and it is reported as in use, or finds it void)."""
    card = Voucher.objects.select_for_update().get(pk=voucher_id)
    S = Voucher.Status
    order_id = card.order_id
    if not enabled:
        action = Clawback.Action.KEPT
        amount = (card.subsidy or Decimal("0.00")) if card.status == S.REDEEMED else card.face_value
    elif card.status == S.ISSUED:
        # The one void path: release ledger row, budget back in the card's bucket, card.voided event, audit.
        voucher_void_in_tx(card=card, actor=actor, reason=f"邀请 #{ref.pk} 事后拒绝：{note}", ledger_prefix="收回奖励")
        action, amount = Clawback.Action.VOIDED, card.face_value
    elif card.status == S.REDEEMED:
        action, amount = Clawback.Action.USED, card.subsidy or Decimal("0.00")
    elif card.status == S.LOCKED:
        action, amount = Clawback.Action.IN_USE, card.face_value
    else:
        action, amount, order_id = Clawback.Action.ALREADY_CLOSED, Decimal("0.00"), None
    return Clawback.objects.create(referral=ref, side=side, voucher=card, action=action, amount=amount,
                                   order_id=order_id, actor=actor if getattr(actor, "pk", None) else None, note=note)


@retry_on_conflict()
@transaction.atomic(durable=True)
def referral_revoke(*, referral: Referral, actor, note: str) -> tuple[Referral, list[Clawback]]:
    """Support rejects an accepted referral after the fact (fraud found later) and claws its rewards back.

    Per reward card, if the campaign's `referral_clawback` is on: unused -> voided through the one void path
    (release ledger row, face value back in its bucket); used -> reported (subsidy paid, order) for follow-up;
    in an order in flight -> reported. Off: the cards are kept and listed. Every card gets a Clawback row,
    the referral an audit row and a `referral.rejected` event (after_the_fact) carrying the clawback.
    """
    note = _check_reviewer(actor, note)
    row = Referral.objects.only("campaign_id", "inviter_id", "invitee_id").get(pk=referral.pk)
    _lock_all(*[("referral", row.campaign_id, user_id) for user_id in sorted({row.inviter_id, row.invitee_id})])
    ref = Referral.objects.select_for_update().select_related("campaign").get(pk=referral.pk)
    if ref.status != Referral.Status.ACCEPTED:
        raise ReferralNotPending(f"邀请记录 #{ref.pk} 当前状态为「{ref.get_status_display()}」，只有已接受的邀请可以事后拒绝")
    before = _snapshot(ref)
    enabled = ref.campaign.referral_clawback
    clawbacks = [
        _claw_one(ref=ref, side=side, voucher_id=voucher_id, enabled=enabled, actor=actor, note=note)
        for side, voucher_id in (("inviter", ref.inviter_voucher_id), ("invitee", ref.invitee_voucher_id))
        if voucher_id is not None
    ]
    ref.status = Referral.Status.REJECTED
    ref.reviewed_by, ref.reviewed_at, ref.review_note = actor, timezone.now(), note
    ref.save(update_fields=["status", "reviewed_by", "reviewed_at", "review_note"])
    report = [{"side": c.side, "voucher_id": c.voucher_id, "action": str(c.action), "amount": str(c.amount),
               "order_id": c.order_id} for c in clawbacks]
    audit(actor=actor, action="referral.revoke", obj=ref, campaign=ref.campaign, before=before,
          after={**_snapshot(ref), "clawback": report}, reason=note)
    for c in clawbacks:
        if c.action in (Clawback.Action.USED, Clawback.Action.IN_USE):
            logger.warning("referral %s rejected after the fact: %s card %s already used (%s yuan, order %s)",
                           ref.pk, c.side, c.voucher_id, c.amount, c.order_id)
    logger.info("referral %s rejected after the fact by %s: %s", ref.pk, getattr(actor, "username", actor), report)
    _referral_event(ref, EventType.REFERRAL_REJECTED, after_the_fact=True, note=note, clawback=report)
    return ref, clawbacks
