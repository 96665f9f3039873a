"""The home page, the campaign page shell, the demo's one-time code (both ways) and the offline API docs."""

from __future__ import annotations

import re

import pytest

from campaign.models import Campaign
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def test_home_links_everything_a_newcomer_needs(client, settings):
    settings.DEBUG, settings.MIANDAN_SMS_BACKEND = True, "console"
    live = CampaignFactory(name="春节请你喝奶茶")
    page = client.get("/").content.decode()
    for needle in (f'href="/c/{live.slug}/"', 'href="/admin/"', 'href="/api/docs/"', 'href="/healthz"',
                   'href="/readyz"', 'href="/metrics"', "13800000001", "13800000020", "miandan-demo", "一句话"):
        assert needle in page, needle


def test_home_never_shows_the_demo_password_outside_the_demo(client, settings):
    settings.DEBUG = False
    page = client.get("/").content.decode()
    assert client.get("/").status_code == 200
    assert "miandan-demo" not in page and "演示环境" not in page


def test_campaign_page_shell_and_its_404(client):
    campaign = CampaignFactory(name="春节请你喝奶茶", card_cap=21)
    response = client.get(f"/c/{campaign.slug}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "春节请你喝奶茶" in page and "/static/web/campaign.js" in page and "每人最多 21 张" in page
    assert not re.search(r"""(src|href)=["']https?://""", page)  # nothing from a CDN
    draft = CampaignFactory(status=Campaign.Status.DRAFT)
    for slug in (draft.slug, "no-such-campaign"):
        missing = client.get(f"/c/{slug}/")
        assert missing.status_code == 404 and "这个活动找不到了" in missing.content.decode()
    assert client.get("/static/web/campaign.js").status_code == 200
    assert client.get("/static/web/site.css").status_code == 200


@pytest.mark.parametrize("debug, backend, shown", [
    (True, "console", True),
    (False, "console", False),
    (True, "fixed", False),
    (True, "tests.accounts.outbox.OutboxBackend", False),
])
def test_the_one_time_code_is_in_the_answer_only_with_debug_and_the_console_backend(api_client, settings, debug, backend,
                                                                                     shown):
    settings.DEBUG, settings.MIANDAN_SMS_BACKEND, settings.MIANDAN_FIXED_OTP = debug, backend, "246810"
    settings.RATELIMIT_ENABLE = False
    response = api_client.post("/api/v1/auth/otp", {"phone": "13912345678"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert ("debug_code" in body) is shown
    if shown:
        token = api_client.post("/api/v1/auth/token", {"phone": "13912345678", "code": body["debug_code"],
                                                       "device_id": "d1"}, format="json")
        assert token.status_code == 200  # it is the real code


def test_campaign_page_config_says_whether_the_code_is_shown(client, settings):
    campaign = CampaignFactory()
    settings.DEBUG = False
    assert '"showCode": false' in client.get(f"/c/{campaign.slug}/").content.decode()
    settings.DEBUG = True
    assert '"showCode": true' in client.get(f"/c/{campaign.slug}/").content.decode()


def test_api_docs_are_served_offline(client):
    """Swagger UI from the pinned sidecar package: every asset the page loads is ours and answers."""
    page = client.get("/api/docs/").content.decode()
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "swagger-ui-bundle.js" in page
