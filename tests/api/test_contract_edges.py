"""Edge inputs found by probing the running server from outside: each must be a clean 4xx, never 500/503."""

import pytest
from django.test import override_settings

from accounts.models import OtpCode
from orders.models import Order

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_off")]


@pytest.mark.parametrize("code", ["%00", "%E4%BD%A0%00x", "a%00b"])
def test_voucher_code_with_nul_byte_is_404(auth_client, code):
    response = auth_client.get(f"/api/v1/vouchers/{code}/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("phone", ["\\u0000", "\\ud800", "１３９００００００００"])
def test_otp_with_unusable_phone_is_400_invalid(api_client, phone, settings):
    # The guard keys OTP limits on the phone: with its default limits on, it must not choke on these.
    settings.RATELIMIT_ENABLE = True
    settings.MIANDAN_RATELIMITS = {}
    # Raw JSON text: a lone surrogate escape cannot be encoded by the test client's own JSON renderer.
    response = api_client.generic("POST", "/api/v1/auth/otp", f'{{"phone": "{phone}"}}', content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and "phone" in response.json()["fields"]
    assert OtpCode.objects.count() == 0


@pytest.mark.parametrize("text", [123, None, ["一杯奶茶"], {"t": 1}])
def test_chat_text_of_wrong_type_is_400(auth_client, text):
    response = auth_client.post("/api/v1/orders/chat", {"text": text, "lat": 30.2741, "lng": 120.1551}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and "text" in response.json()["fields"]
    assert Order.objects.count() == 0


@override_settings(MIANDAN_PUBLIC_BASE_URL=None)
def test_invite_links_follow_the_request_host_when_no_public_base_is_set(auth_client, campaign):
    response = auth_client.get(f"/api/v1/campaigns/{campaign.slug}/invite", HTTP_HOST="127.0.0.1:8790")
    assert response.status_code == 200
    body = response.json()
    for field in ("url", "qr_png_url", "qr_svg_url"):
        assert body[field].startswith("http://127.0.0.1:8790/invite/"), body[field]


def test_schema_documents_error_statuses_and_paginated_lists(api_client):
    """api.md: /api/schema/ describes all of the contract, errors and list shapes included."""
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    join = paths["/api/v1/campaigns/{slug}/join"]["post"]["responses"]
    assert {"201", "200", "400", "401", "403", "404", "409", "422", "429", "503"} <= set(join)
    for code in ("app_upgrade_required", "campaign_not_live", "budget_exhausted", "card_limit_reached"):
        assert code in join["403"]["description"] + join["409"]["description"]
    chat = paths["/api/v1/orders/chat"]["post"]["responses"]
    assert "not_understood" in chat["422"]["description"] and "no_voucher" in chat["409"]["description"]
    assert "otp_invalid" in paths["/api/v1/auth/token"]["post"]["responses"]["400"]["description"]
    assert "cannot_cancel" in paths["/api/v1/orders/{order_id}/cancel"]["post"]["responses"]["409"]["description"]
    assert "404" in paths["/api/v1/vouchers/{code}/"]["get"]["responses"]
    for path in ("/api/v1/vouchers/", "/api/v1/orders/", "/api/v1/campaigns/{slug}/referrals"):
        ok = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        ref = ok["$ref"].rsplit("/", 1)[-1]
        assert set(schema["components"]["schemas"][ref]["properties"]) == {"count", "next", "previous", "results"}, path


# --- found by contract fuzzing (tests/api/test_fuzz.py) -----------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/vouchers/", "/api/v1/orders/", "/api/v1/campaigns/{slug}/referrals"])
@pytest.mark.parametrize("page", ["0", "-1", "x", "99"])
def test_a_page_that_does_not_exist_is_400_invalid_not_an_undocumented_404(auth_client, campaign, path, page):
    response = auth_client.get(path.format(slug=campaign.slug), {"page": page, "page_size": "0"})
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and "page" in response.json()["fields"]


@pytest.fixture
def menu(db):
    from demo.catalog import catalog_load
    from orders import parser

    catalog_load(stores_per_city=0)
    parser.catalogue_changed()
    yield
    parser.catalogue_changed()


@pytest.mark.parametrize("path", ["/api/v1/orders", "/api/v1/orders/chat"])
def test_orders_name_a_missing_campaign_with_a_documented_404(api_client, auth_client, menu, path):
    body = {"text": "一杯伯牙绝弦", "lat": 30.2741, "lng": 120.1551, "campaign": "no-such-campaign",
            "store": 1, "items": [{"product": 1, "quantity": 1}]}
    response = auth_client.post(path, body, format="json")
    assert response.status_code == 404 and response.json()["code"] == "not_found", response.content
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    documented = schema["paths"][path]["post"]["responses"]
    assert "404" in documented and "not_found" in documented["404"]["description"]
    assert "campaign_not_live" in documented["409"]["description"]


def test_schema_links_chain_campaign_join_card_order_cancel_and_invite_referral(api_client):
    """The OpenAPI links a stateful client (or fuzzer) follows with real resources instead of guessed ids."""
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    ids = {op["operationId"]: (path, method) for path, ops in paths.items() for method, op in ops.items()}

    def follow(path: str, method: str, status: str, name: str) -> tuple[str, str, dict]:
        link = paths[path][method]["responses"][status]["links"][name]
        return (*ids[link["operationId"]], link)

    assert follow("/api/v1/campaigns/", "get", "200", "JoinCampaign")[:2] == ("/api/v1/campaigns/{slug}/join", "post")
    target, _, link = follow("/api/v1/campaigns/{slug}/join", "post", "201", "GetCard")
    assert target == "/api/v1/vouchers/{code}/" and link["parameters"] == {"code": "$response.body#/code"}
    target, _, link = follow("/api/v1/campaigns/{slug}/join", "post", "201", "OrderWithCard")
    assert target == "/api/v1/orders/chat" and link["requestBody"]["campaign"] == "$response.body#/campaign"
    target, _, link = follow("/api/v1/orders/chat", "post", "201", "CancelOrder")
    assert target == "/api/v1/orders/{order_id}/cancel" and link["parameters"] == {"order_id": "$response.body#/id"}
    target, _, link = follow("/api/v1/campaigns/{slug}/invite", "get", "200", "AcceptReferral")
    assert target == "/api/v1/campaigns/{slug}/referrals" and link["requestBody"] == {"code": "$response.body#/code"}


def test_schema_documents_the_servers_414_for_an_overlong_request_line(api_client):
    """Found by contract fuzzing: gunicorn answers a request line over 4094 bytes itself with 414."""
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "414" in operation["responses"], (method, path)


def test_schema_describes_the_operations_endpoints_and_the_idempotency_key_header(api_client):
    """Found by an outside review: api.md says /api/schema/ describes all of the API."""
    from miandan.api.schema import IDEMPOTENT_POSTS

    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "200" in schema["paths"][path]["get"]["responses"], path
    assert "503" in schema["paths"]["/readyz"]["get"]["responses"]
    for path in IDEMPOTENT_POSTS:
        headers = [p["name"] for p in schema["paths"][path]["post"].get("parameters", []) if p["in"] == "header"]
        assert headers == ["Idempotency-Key"], (path, headers)
    # Only the creating POSTs take it.
    assert not any(p["in"] == "header" for p in schema["paths"]["/api/v1/auth/otp"]["post"].get("parameters", []))
