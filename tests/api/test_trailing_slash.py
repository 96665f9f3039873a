"""One trailing-slash rule for the whole API: every path answers with and without the slash.

Found by a newcomer: `GET /api/v1/orders` was 405, `POST /api/v1/orders/` 405, `…/join/` and
`…/invite/` 404, and with DEBUG on a POST to a slash-less `/api/v1/campaigns` was a 500.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from referrals.services import invite_code_get_or_create
from tests.factories import OrderFactory, VoucherFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_off")]


def _routes(resolver: URLResolver, prefix: str = "") -> list[tuple[str, URLPattern]]:
    out = []
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            out += _routes(pattern, route)
        else:
            out.append((route, pattern))
    return out


def _concrete(route: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "7" if m.group(1).endswith("id") else "ab2c", route)


def test_every_api_route_has_its_twin_with_the_same_view_and_name():
    missing = []
    for route, _pattern in _routes(get_resolver()):
        if not route.startswith("api/v1/"):
            continue
        path = _concrete(route)
        twin = path[:-1] if path.endswith("/") else path + "/"
        here, there = resolve(path), resolve(twin)  # Resolver404 would fail the test: no twin at all
        if here.func.cls is not there.func.cls or here.url_name != there.url_name:
            missing.append(f"{path} -> {here.func.cls.__name__}/{here.url_name}, {twin} -> "
                           f"{there.func.cls.__name__}/{there.url_name}")
    assert not missing, "\n".join(missing)


def _documented(api_client) -> list[tuple[str, str]]:
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return [(method.upper(), path) for path, ops in schema["paths"].items() for method in ops
            if method in {"get", "post", "put", "patch", "delete"} and path.startswith("/api/v1/")]


def test_every_documented_path_answers_both_ways(api_client, make_auth_client, campaign):
    from orders.merchant import get_merchant

    client = make_auth_client()
    user = client.user
    user.groups.add(Group.objects.get(name="finance"))
    card = VoucherFactory(user=user, campaign=campaign)
    invite_code_get_or_create(user=user, campaign=campaign)
    values = {"slug": campaign.slug, "code": card.code, "merchant": get_merchant().name}
    documented = _documented(api_client)
    assert len(documented) >= 18
    answers = []
    for method, path in documented:
        params = {**values, "order_id": str(OrderFactory(user=user).pk)}
        concrete = re.sub(r"\{(\w+)\}", lambda m, params=params: params[m.group(1)], path)
        twin = concrete[:-1] if concrete.endswith("/") else concrete + "/"
        for url in (concrete, twin):
            # Logging out revokes the token: that call gets a token of its own.
            caller = make_auth_client(user) if path.endswith("/logout") else client
            response = caller.generic(method, url, "{}", content_type="application/json")
            body = response.json() if response.get("Content-Type", "").startswith("application/json") else {}
            answers.append((method, url, response.status_code, body.get("code") if isinstance(body, dict) else None))
    wrong = [a for a in answers if a[2] in (301, 302, 405, 500) or (a[2] == 404 and a[3] == "not_found")]
    assert not wrong, wrong
    # The two spellings give the same answer (a fresh order per path, so cancel is 200 both times... per spelling).
    by_path: dict[tuple[str, str], set[int]] = {}
    for method, url, status, _ in answers:
        by_path.setdefault((method, url.rstrip("/")), set()).add(status)
    differing = {k: v for k, v in by_path.items() if len(v) > 1 and not k[1].endswith("/cancel")}
    assert not differing, differing


def test_the_reported_traps(make_auth_client, campaign):
    client = make_auth_client()
    assert client.get("/api/v1/orders").status_code == 200
    assert client.get("/api/v1/orders/").status_code == 200
    response = client.post("/api/v1/orders/", {}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    joined = client.post(f"/api/v1/campaigns/{campaign.slug}/join/", {"app_version": "1.2.0"}, format="json")
    assert joined.status_code == 201
    assert client.get(f"/api/v1/campaigns/{campaign.slug}/invite/").status_code == 200
    assert client.get("/api/v1/campaigns").status_code == 200
    assert client.get(f"/api/v1/vouchers/{joined.json()['code']}").status_code == 200


def test_a_post_without_the_slash_is_never_a_debug_500(make_auth_client, campaign, settings):
    settings.DEBUG = True  # APPEND_SLASH raises RuntimeError for a POST it cannot redirect
    client = make_auth_client()
    assert client.post("/api/v1/campaigns", {}, format="json").status_code == 405  # GET-only, answered as such
    assert client.post(f"/api/v1/campaigns/{campaign.slug}", {}, format="json").status_code == 405


def test_the_guard_covers_both_spellings(make_auth_client, campaign):
    """A paused feature is paused under either spelling (the guard matches routes by name)."""
    from campaign.models import Campaign

    Campaign.objects.filter(pk=campaign.pk).update(orders_enabled=False, claims_enabled=False)
    client = make_auth_client()
    for url in (f"/api/v1/campaigns/{campaign.slug}/join", f"/api/v1/campaigns/{campaign.slug}/join/"):
        response = client.post(url, {"app_version": "1.2.0"}, format="json")
        assert response.status_code == 503 and response.json()["code"] == "paused", url
    for url in ("/api/v1/orders", "/api/v1/orders/"):
        response = client.post(url, {"store": 1, "items": [{"product": 1, "quantity": 1}], "campaign": campaign.slug},
                               format="json")
        assert response.status_code == 503 and response.json()["code"] == "paused", url


def test_an_idempotency_key_covers_both_spellings(make_auth_client, campaign):
    client = make_auth_client()
    first = client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.2.0"}, format="json",
                        HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post(f"/api/v1/campaigns/{campaign.slug}/join/", {"app_version": "1.2.0"}, format="json",
                        HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
