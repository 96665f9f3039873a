"""Every error in the api.md shape; no input yields a 500; bad input writes nothing."""

import json

import pytest
from django.test import Client

from accounts.models import AuthToken, OtpCode, User
from campaign.models import LedgerEntry
from miandan.api.models import IdempotencyRecord
from vouchers.models import Voucher

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_off")]


def counts():
    return (Voucher.objects.count(), LedgerEntry.objects.count(), IdempotencyRecord.objects.count(),
            User.objects.count(), AuthToken.objects.count(), OtpCode.objects.count())


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_unknown_api_url_is_json_404(api_client, settings):
    assert settings.DEBUG is False
    assert_error(api_client.get("/api/v1/nope"), 404, "not_found")
    assert_error(api_client.post("/api/v2/campaigns/x/join"), 404, "not_found")


def test_unhandled_errors_are_json_500(settings):
    settings.ROOT_URLCONF = "tests.api.boom_urls"
    client = Client(raise_request_exception=False)
    assert_error(client.get("/api/v1/test-boom-plain"), 500, "server_error")
    assert_error(client.get("/api/v1/test-boom-drf"), 500, "server_error")


def test_database_unavailable_is_503_busy_with_retry_after_not_500(settings):
    """Found by the chaos run: PostgreSQL unreachable for a moment gave 500s; it is transient, so 503 + Retry-After."""
    settings.ROOT_URLCONF = "tests.api.boom_urls"
    client = Client(raise_request_exception=False)
    for path in ("/api/v1/test-db-down-plain", "/api/v1/test-db-down-drf"):
        response = client.get(path)
        assert_error(response, 503, "busy")
        assert response["Retry-After"] == "2" and response.json()["retry_after"] == 2
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/"):
                assert "busy" in operation["responses"]["503"]["description"], (method, path)


def test_method_not_allowed_and_auth_errors(auth_client, api_client, campaign):
    assert_error(auth_client.get(f"/api/v1/campaigns/{campaign.slug}/join"), 405, "method_not_allowed")
    assert_error(api_client.get("/api/v1/vouchers/"), 401, "not_authenticated")
    api_client.credentials(HTTP_AUTHORIZATION="Bearer nope")
    assert_error(api_client.get("/api/v1/vouchers/"), 401, "not_authenticated")
    api_client.credentials(HTTP_AUTHORIZATION="Bearer a b c")
    assert_error(api_client.get("/api/v1/vouchers/"), 401, "not_authenticated")


def join(client, slug, body: bytes, content_type="application/json", **extra):
    return client.generic("POST", f"/api/v1/campaigns/{slug}/join", body, content_type=content_type, **extra)


def test_one_megabyte_body_is_413_and_writes_nothing(auth_client, campaign):
    before = counts()
    big = json.dumps({"app_version": "1.0.0", "pad": "x" * (1024 * 1024)}).encode()
    assert_error(join(auth_client, campaign.slug, big), 413, "payload_too_large")
    assert_error(join(auth_client, campaign.slug, big, HTTP_IDEMPOTENCY_KEY="k1"), 413, "payload_too_large")
    otp = Client().generic("POST", "/api/v1/auth/otp", json.dumps({"phone": "13800138000", "p": "x" * 2**20}),
                           content_type="application/json")
    assert_error(otp, 413, "payload_too_large")
    assert counts() == before


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"app_version": "1.0.0"', "application/json", 400, "invalid"),
        (b"not json", "application/json", 400, "invalid"),
        (b'{"app_version": NaN}', "application/json", 400, "invalid"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "invalid"),
        (b"\xff\xfe\x00", "application/json", 400, "invalid"),
        (b'["1.0.0"]', "application/json", 400, "invalid"),
        (b'"1.0.0"', "application/json", 400, "invalid"),
        (b"null", "application/json", 400, "invalid"),
        (b"app_version=1.0.0", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"app_version=1.0.0", "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies_are_4xx_and_write_nothing(auth_client, campaign, body, content_type, status, code):
    before = counts()
    assert_error(join(auth_client, campaign.slug, body, content_type), status, code)
    assert_error(join(auth_client, campaign.slug, body, content_type, HTTP_IDEMPOTENCY_KEY="k2"), status, code)
    assert counts() == before


@pytest.mark.parametrize("value", [123, 1.5, True, [], ["1.0.0"], None, {}, {"v": "1.0.0"}, "", "   ", "x" * 33])
def test_wrong_json_types_for_app_version(auth_client, campaign, value):
    before = counts()
    body = assert_error(auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": value},
                                         format="json"), 400, "invalid")
    assert "app_version" in body["fields"]
    assert counts() == before


@pytest.mark.parametrize("value", ["abc", "1.0.0-", "1..0", "v1.x", "1.0.0; drop table", "１.０.０"])
def test_bad_version_strings(auth_client, campaign, value):
    before = counts()
    body = assert_error(auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": value},
                                         format="json"), 400, "invalid")
    assert "app_version" in body["fields"]
    assert counts() == before


def test_unknown_campaign_is_404(auth_client):
    before = counts()
    assert_error(auth_client.post("/api/v1/campaigns/no-such-campaign/join", {"app_version": "1.0.0"}), 404, "not_found")
    assert_error(auth_client.get("/api/v1/campaigns/no-such-campaign/"), 404, "not_found")
    assert counts() == before


def test_validation_error_shape_has_fields(auth_client):
    body = assert_error(auth_client.get("/api/v1/vouchers/?status=bogus"), 400, "invalid")
    assert "status" in body["fields"]
