"""Reads over invite codes and the referral graph (API lists, landing page, admin chain views)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet

from campaign.models import Campaign

from .codes import normalize_code
from .models import InviteCode, Referral


def invite_code_get(*, code: object) -> InviteCode | None:
    """A code as typed or pasted (any case, spaces), with its campaign and owner; None if unknown."""
    normalized = normalize_code(code)
    if normalized is None:
        return None
    return InviteCode.objects.select_related("campaign", "user").filter(code=normalized).first()


def referral_list_for_inviter(*, user, campaign: Campaign) -> QuerySet[Referral]:
    """The caller's invitees in one campaign, newest first."""
    return (
        Referral.objects.filter(campaign=campaign, inviter=user)
        .select_related("invitee", "inviter_voucher")
        .order_by("-id")
    )


def mask_phone(phone: str | None) -> str:
    """138****1234: an inviter sees who joined without learning their number."""
    if not phone:
        return "匿名用户"
    if len(phone) >= 7:
        return f"{phone[:3]}****{phone[-4:]}"
    return "****"


@dataclass
class Chain:
    user: object
    campaign: Campaign
    referral: Referral | None  # how `user` joined this campaign's graph (None: a root or not in the graph)
    ancestors: list = field(default_factory=list)  # root first, direct inviter last
    invitees: list[Referral] = field(default_factory=list)
    subtree_size: int = 0
    subtree_by_status: dict[str, int] = field(default_factory=dict)


def referral_chain(*, user, campaign: Campaign, invitee_limit: int = 200) -> Chain:
    """A user's place in the graph: ancestors from the stored path, direct invitees, subtree size.

    Every answer is an indexed read; the subtree is `path LIKE '<user's path><user id>/%'`.
    """
    referral = Referral.objects.select_related("inviter", "root").filter(campaign=campaign, invitee=user).first()
    chain = Chain(user=user, campaign=campaign, referral=referral)
    if referral is not None:
        ids = [int(part) for part in referral.path.strip("/").split("/") if part]
        users = get_user_model().objects.in_bulk(ids)
        chain.ancestors = [users[i] for i in ids if i in users]
    prefix = f"{referral.path if referral else '/'}{user.pk}/"
    chain.invitees = list(
        Referral.objects.filter(campaign=campaign, inviter=user).select_related("invitee").order_by("-id")[:invitee_limit]
    )
    rows = Referral.objects.filter(campaign=campaign, path__startswith=prefix).values("status").annotate(n=Count("id"))
    chain.subtree_by_status = {row["status"]: row["n"] for row in rows}
    chain.subtree_size = sum(chain.subtree_by_status.values())
    return chain


def top_inviters(*, campaign: Campaign | None = None, limit: int = 50) -> list[dict]:
    """Inviters ranked by invitees (all statuses), with how many were accepted / held / rejected."""
    qs = Referral.objects.all()
    if campaign is not None:
        qs = qs.filter(campaign=campaign)
    rows = list(
        qs.values("campaign_id", "inviter_id")
        .annotate(
            total=Count("id"),
            accepted=Count("id", filter=Q(status=Referral.Status.ACCEPTED)),
            under_review=Count("id", filter=Q(status=Referral.Status.UNDER_REVIEW)),
            rejected=Count("id", filter=Q(status=Referral.Status.REJECTED)),
        )
        .order_by("-total", "inviter_id")[:limit]
    )
    users = get_user_model().objects.in_bulk([r["inviter_id"] for r in rows])
    campaigns = Campaign.objects.in_bulk([r["campaign_id"] for r in rows])
    for row in rows:
        row["inviter"] = users.get(row["inviter_id"])
        row["campaign"] = campaigns.get(row["campaign_id"])
    return rows
