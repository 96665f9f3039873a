"""The one campaign gate: is a campaign open for a feature, and what users see when it is not.

Join (vouchers), invites (referrals), orders and the flash-crowd guard all ask here, so "live" is
defined once (`Campaign.objects.live()` is the same rule as a query) and every pause answers the
same words with the same Retry-After.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from miandan.api.errors import DomainError, Paused

from .errors import CampaignNotFound, CampaignNotLive
from .models import Campaign
from .selectors import campaign_get_cached

# feature -> the Campaign switch that pauses it (staff flip these in admin).
SWITCHES: dict[str, str] = {"claims": "claims_enabled", "referrals": "referrals_enabled", "orders": "orders_enabled"}
# What an app user reads while a feature is switched off.
PAUSED_TEXT: dict[str, str] = {
    "claims": "领卡功能暂时暂停，请稍后再试",
    "referrals": "邀请功能暂时暂停，请稍后再试",
    "orders": "下单功能暂时暂停，请稍后再试",
}
PAUSED_RETRY_AFTER = 30  # seconds: a pause is a staff decision, not a blip; clients should not hammer


def campaign_is_visible(campaign: Campaign | None) -> bool:
    """Whether app users and the public may learn the campaign exists: a draft is not announced, so join,
    invites (API, landing page, QR), orders and the campaign detail/page all answer 404 for it, the same
    404 as an unknown slug (ended campaigns stay visible: people still hold their cards)."""
    return campaign is not None and campaign.status != Campaign.Status.DRAFT


def campaign_require_visible(campaign: Campaign | None) -> Campaign:
    """The campaign, or CampaignNotFound (404 not_found) for an unknown slug or a draft."""
    if not campaign_is_visible(campaign):
        raise CampaignNotFound()
    return campaign


def campaign_is_live(campaign: Campaign, now: datetime | None = None) -> bool:
    """Live status and inside its window (the Python twin of `Campaign.objects.live()`)."""
    now = now or timezone.now()
    return campaign.status == Campaign.Status.LIVE and campaign.starts_at <= now < campaign.ends_at


def campaign_paused(campaign: Campaign, feature: str) -> Paused | None:
    """The `paused` error users get while staff switched `feature` off, else None."""
    if getattr(campaign, SWITCHES[feature]):
        return None
    return Paused(PAUSED_TEXT[feature], retry_after=PAUSED_RETRY_AFTER)


def campaign_require_open(*, campaign: Campaign, feature: str, now: datetime | None = None) -> None:
    """Raise CampaignNotFound for a draft, CampaignNotLive outside the window, Paused while switched off."""
    campaign_require_visible(campaign)
    if not campaign_is_live(campaign, now):
        raise CampaignNotLive()
    error = campaign_paused(campaign, feature)
    if error is not None:
        raise error


def guard_switch_check(slug: str, feature: str) -> DomainError | None:
    """For the guard (registered in CampaignConfig.ready): the switch only, from a 0.5 s per-process cache.

    Liveness is left to the view, which answers 404 / 409 with a fresh read.
    """
    campaign = campaign_get_cached(slug=slug)
    return campaign_paused(campaign, feature) if campaign is not None else None
