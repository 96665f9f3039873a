"""Kill switches, as the guard sees them: a lookup the campaign app registers (miandan imports no domain app).

The campaign app registers `campaign.gate.guard_switch_check(slug, feature)` in its AppConfig.ready();
it answers from a half-second per-process cache of the campaign row, with the same pause texts the
services use (one gate, campaign/gate.py).
"""

from __future__ import annotations

from collections.abc import Callable

from miandan.api.errors import DomainError
from miandan.options import RoutePolicy

from .client import json_body

SwitchCheck = Callable[[str, str], DomainError | None]
_check: SwitchCheck | None = None


def register_switch_check(check: SwitchCheck) -> None:
    """`check(slug, feature)` returns the error to answer when the feature is paused for that campaign."""
    global _check
    _check = check


def campaign_slug(policy: RoutePolicy, request, view_kwargs) -> str | None:
    """Join and referrals name the campaign in the path; a chat order may name it in the body (`campaign`).

    An order that names none is left to the order service, which finds the campaign of the user's card
    with a fresh read and answers the same 503 `paused` through the same gate.
    """
    slug = view_kwargs.get("slug")
    if slug is None and policy.switch == "orders":
        named = json_body(request).get("campaign")
        slug = named if isinstance(named, str) and 0 < len(named) <= 64 else None
    return slug


def paused(policy: RoutePolicy, request, view_kwargs) -> DomainError | None:
    """The `paused` error when the policy's feature is switched off for the campaign of this request."""
    if policy.switch is None or _check is None:
        return None
    slug = campaign_slug(policy, request, view_kwargs)
    if slug is None:
        return None
    return _check(slug, policy.switch)
