"""Runtime options of the flash-crowd guard: which route gets which rate limits, shedding and switch.

One table, so an operator reads in one place what protects each endpoint (docs/operations.md
renders the same table). Routes are matched by URL name first; the path pattern from api.md is
the fallback, so an endpoint is covered even if its URL name changes.

Rates use django-ratelimit's syntax ("10/m", "5/10m", "100/h") and can be overridden per name
from the environment: MIANDAN_RATELIMITS="join_user=10/m,join_ip=60/m".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

# name -> default rate. "_user" keys the bearer token (or the phone on the login endpoints), "_ip" the client IP.
DEFAULT_RATES: dict[str, str] = {
    "otp_phone": "5/10m",
    "otp_ip": "30/m",
    "login_phone": "10/m",
    "login_ip": "60/m",
    "join_user": "10/m",
    "join_ip": "120/m",
    "referral_user": "10/m",
    "referral_ip": "60/m",
    "order_user": "20/m",
    "order_ip": "240/m",
}


RATE_PATTERN = re.compile(r"^\d+/\d*[smhd]$")
DISABLED = ("", "off", "none")


def rate(name: str) -> str | None:
    """The configured rate for a limit name; "" or "off" disables that one limit.

    The system check miandan.E001 reports malformed overrides (manage.py refuses to run with one); a
    malformed value that reaches a running server anyway falls back to the default, so it can never
    turn into errors on every request.
    """
    value = settings.MIANDAN_RATELIMITS.get(name, DEFAULT_RATES[name]).strip()
    if value in DISABLED:
        return None
    return value if RATE_PATTERN.match(value) else DEFAULT_RATES[name]


@dataclass(frozen=True)
class RoutePolicy:
    key: str  # stable label for metrics and logs
    names: frozenset[str]  # URL names (resolver_match.url_name)
    path: re.Pattern  # fallback: the api.md path
    methods: frozenset[str]
    limits: tuple[tuple[str, str], ...]  # (rate name, key kind: "user" | "ip" | "phone")
    shed: bool  # goes through the adaptive concurrency limiter
    switch: str | None  # campaign feature a kill switch pauses ("claims", "referrals", "orders"; campaign/gate.py)
    redis_down: str  # "open" (let it through, PostgreSQL enforces the rules) or "closed" (refuse)


POLICIES: tuple[RoutePolicy, ...] = (
    RoutePolicy(
        key="auth-otp", names=frozenset({"auth-otp"}), path=re.compile(r"^/api/v1/auth/otp/?$"),
        methods=frozenset({"POST"}), limits=(("otp_phone", "phone"), ("otp_ip", "ip")),
        shed=False, switch=None, redis_down="closed",
    ),
    RoutePolicy(
        key="auth-token", names=frozenset({"auth-token"}), path=re.compile(r"^/api/v1/auth/token/?$"),
        methods=frozenset({"POST"}), limits=(("login_phone", "phone"), ("login_ip", "ip")),
        shed=False, switch=None, redis_down="open",
    ),
    RoutePolicy(
        key="campaign-join", names=frozenset({"campaign-join"}),
        path=re.compile(r"^/api/v1/campaigns/(?P<slug>[-\w]+)/join/?$"),
        methods=frozenset({"POST"}), limits=(("join_user", "user"), ("join_ip", "ip")),
        shed=True, switch="claims", redis_down="open",
    ),
    RoutePolicy(
        key="referral-accept",
        names=frozenset({"referral-list", "referral-accept"}),  # one route: GET lists, POST accepts
        path=re.compile(r"^/api/v1/campaigns/(?P<slug>[-\w]+)/referrals/?$"),
        methods=frozenset({"POST"}), limits=(("referral_user", "user"), ("referral_ip", "ip")),
        shed=True, switch="referrals", redis_down="open",
    ),
    RoutePolicy(
        key="order-chat", names=frozenset({"order-chat", "orders-chat"}), path=re.compile(r"^/api/v1/orders/chat/?$"),
        methods=frozenset({"POST"}), limits=(("order_user", "user"), ("order_ip", "ip")),
        shed=True, switch="orders", redis_down="open",
    ),
    RoutePolicy(
        key="order-create", names=frozenset({"order-create"}), path=re.compile(r"^/api/v1/orders/?$"),
        methods=frozenset({"POST"}), limits=(("order_user", "user"), ("order_ip", "ip")),
        shed=True, switch="orders", redis_down="open",
    ),
    RoutePolicy(
        key="order-cancel", names=frozenset({"order-cancel"}), path=re.compile(r"^/api/v1/orders/(?P<id>\d+)/cancel/?$"),
        methods=frozenset({"POST"}), limits=(("order_user", "user"),),
        shed=False, switch=None, redis_down="open",
    ),
)


def policy_for(*, url_name: str | None, path: str, method: str) -> RoutePolicy | None:
    for policy in POLICIES:
        if method not in policy.methods:
            continue
        if url_name in policy.names or policy.path.match(path):
            return policy
    return None
