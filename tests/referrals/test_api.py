import re

import pytest
from django.conf import settings
from django.test import Client, override_settings

from campaign.models import Campaign
from campaign.selectors import campaign_cache_clear
from referrals.models import InviteCode, Referral
from tests.factories import CampaignFactory
from tests.referrals.conftest import relax
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db

BASE = "https://m.example.cn"


def invite_of(client, campaign):
    response = client.get(f"/api/v1/campaigns/{campaign.slug}/invite")
    assert response.status_code == 200, response.content
    return response.json()


def accept(client, campaign, code, **headers):
    return client.post(f"/api/v1/campaigns/{campaign.slug}/referrals", {"code": code}, format="json", **headers)


# --- GET invite -----------------------------------------------------------------------------

@override_settings(MIANDAN_PUBLIC_BASE_URL=BASE + "/")
def test_invite_returns_code_links_qr_and_share_text(client_for, campaign):
    client = client_for()
    body = invite_of(client, campaign)
    code = body["code"]
    assert len(code) == 8
    assert body["url"] == f"{BASE}/invite/{code}"
    assert body["qr_png_url"] == f"{BASE}/invite/{code}/qr.png"
    assert body["qr_svg_url"] == f"{BASE}/invite/{code}/qr.svg"
    # The 口令 carries the code and works with no link at all.
    assert code in body["share_text"]
    assert "http" not in body["share_text"] and "25元免单卡" in body["share_text"]
    assert invite_of(client, campaign)["code"] == code  # one code per user and campaign
    assert InviteCode.objects.get(user=client.user, campaign=campaign).code == code


def test_invite_errors(client_for, api_client, campaign):
    client = client_for()
    assert client.get("/api/v1/campaigns/nope/invite").json()["code"] == "not_found"
    assert api_client.get(f"/api/v1/campaigns/{campaign.slug}/invite").status_code == 401
    Campaign.objects.filter(pk=campaign.pk).update(referrals_enabled=False)
    campaign_cache_clear()
    paused = client.get(f"/api/v1/campaigns/{campaign.slug}/invite")
    assert (paused.status_code, paused.json()["code"]) == (503, "paused")
    Campaign.objects.filter(pk=campaign.pk).update(referrals_enabled=True, status=Campaign.Status.DRAFT)
    campaign_cache_clear()
    draft = client.get(f"/api/v1/campaigns/{campaign.slug}/invite")
    assert (draft.status_code, draft.json()["code"]) == (404, "not_found")  # a draft does not exist (issue 16)
    assert not InviteCode.objects.exists()


# --- POST referrals -------------------------------------------------------------------------

def test_accept_201_states_both_outcomes(client_for, campaign):
    inviter, invitee = client_for(), client_for()
    code = invite_of(inviter, campaign)["code"]
    response = accept(invitee, campaign, code.lower())
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "accepted" and body["depth"] == 1
    assert body["invitee"]["outcome"] == "issued"
    assert body["invitee"]["voucher_code"] == Voucher.objects.get(user=invitee.user).code
    assert body["inviter"]["outcome"] == "issued"
    assert body["inviter"]["voucher_code"] is None  # never another user's card
    assert "各得一张" in body["detail"]
    assert Voucher.objects.get(user=inviter.user).source == "referral_inviter"
    assert reconcile(campaign=campaign).ok


def test_accept_records_device_and_ip(client_for, campaign):
    inviter, invitee = client_for(), client_for(device_id="iphone-abc")
    accept(invitee, campaign, invite_of(inviter, campaign)["code"], REMOTE_ADDR="10.1.2.3")
    referral = Referral.objects.get()
    assert (referral.device_id, referral.ip) == ("iphone-abc", "10.1.2.3")


def test_capped_inviter_is_reported_in_the_body(client_for):
    campaign = relax(CampaignFactory(card_cap=1))
    inviter, invitee = client_for(), client_for()
    assert inviter.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}).status_code == 201
    body = accept(invitee, campaign, invite_of(inviter, campaign)["code"]).json()
    assert body["inviter"]["outcome"] == "card_limit_reached"
    assert body["invitee"]["outcome"] == "issued"
    assert "好友未获得" in body["detail"]


@pytest.mark.parametrize("payload", [
    {"code": ""}, {"code": "   "}, {"code": "\u3000"}, {"code": "ZZZZZZZZ"}, {"code": "' OR '1'='1' --"},
    {"code": "x'); DELETE FROM referrals_referral; --"}, {"code": "<script>alert(1)</script>"},
    {"code": "<b>ABCD2345</b>"}, {"code": "A" * 200}, {"code": 12345678},
])
def test_bad_codes_are_404_invalid_code_and_write_nothing(client_for, campaign, payload):
    client_for()  # someone else's code exists
    response = client_for().post(f"/api/v1/campaigns/{campaign.slug}/referrals", payload, format="json")
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "invalid_code"
    assert "<" not in response.json()["detail"]
    assert not Referral.objects.exists() and not Voucher.objects.exists()


@pytest.mark.parametrize("payload", [{}, {"code": None}, {"code": ["ABCD2345"]}, {"code": {"x": 1}}, {"code": "A" * 501}])
def test_missing_or_wrong_type_is_400(client_for, campaign, payload):
    response = client_for().post(f"/api/v1/campaigns/{campaign.slug}/referrals", payload, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and "code" in response.json()["fields"]
    assert not Referral.objects.exists()


def test_non_json_body_is_400(client_for, campaign):
    response = client_for().post(f"/api/v1/campaigns/{campaign.slug}/referrals", data="{not json",
                                 content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"


def test_contract_error_codes(client_for, campaign):
    a, b, c = client_for(), client_for(), client_for()
    code_a, code_b = invite_of(a, campaign)["code"], invite_of(b, campaign)["code"]
    own = accept(a, campaign, code_a)
    assert (own.status_code, own.json()["code"]) == (409, "self_referral")
    assert accept(b, campaign, code_a).status_code == 201  # a -> b
    cycle = accept(a, campaign, code_b)
    assert (cycle.status_code, cycle.json()["code"]) == (409, "referral_cycle")
    assert accept(c, campaign, code_b).status_code == 201  # a -> b -> c
    deep_cycle = accept(a, campaign, invite_of(c, campaign)["code"])
    assert (deep_cycle.status_code, deep_cycle.json()["code"]) == (409, "referral_cycle")
    again = accept(c, campaign, code_a)
    assert (again.status_code, again.json()["code"]) == (409, "already_referred")
    other_campaign = relax(CampaignFactory())
    foreign = accept(c, campaign, invite_of(client_for(), other_campaign)["code"])
    assert (foreign.status_code, foreign.json()["code"]) == (404, "invalid_code")
    missing = accept(c, Campaign(slug="no-such-campaign"), code_a)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert Referral.objects.count() == 2 and Voucher.objects.count() == 4
    assert reconcile(campaign=campaign).ok


def test_accept_requires_auth(api_client, campaign):
    response = api_client.post(f"/api/v1/campaigns/{campaign.slug}/referrals", {"code": "ABCD2345"}, format="json")
    assert response.status_code == 401


def test_paused_and_not_live(client_for, campaign):
    inviter, invitee = client_for(), client_for()
    code = invite_of(inviter, campaign)["code"]
    Campaign.objects.filter(pk=campaign.pk).update(referrals_enabled=False)
    campaign_cache_clear()
    paused = accept(invitee, campaign, code)
    assert (paused.status_code, paused.json()["code"]) == (503, "paused")
    Campaign.objects.filter(pk=campaign.pk).update(referrals_enabled=True, status=Campaign.Status.ENDED)
    campaign_cache_clear()
    ended = accept(invitee, campaign, code)
    assert (ended.status_code, ended.json()["code"]) == (409, "campaign_not_live")
    assert not Referral.objects.exists()


def test_under_review_is_202_without_cards(client_for, campaign):
    relax(campaign, referral_device_max_accounts=1)
    assert accept(client_for(device_id="farm-phone"), campaign, invite_of(client_for(), campaign)["code"]).status_code == 201
    response = accept(client_for(device_id="farm-phone"), campaign, invite_of(client_for(), campaign)["code"])
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["code"] == "under_review" and body["detail"]
    held = Referral.objects.get(pk=body["referral"])
    assert held.status == "under_review" and held.review_reasons == ["device_shared"]
    assert Voucher.objects.count() == 2
    assert reconcile(campaign=campaign).ok


def test_idempotency_key_replays_the_original_answer(client_for, campaign):
    inviter, invitee = client_for(), client_for()
    code = invite_of(inviter, campaign)["code"]
    first = accept(invitee, campaign, code, HTTP_IDEMPOTENCY_KEY="accept-1")
    again = accept(invitee, campaign, code, HTTP_IDEMPOTENCY_KEY="accept-1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again["Idempotent-Replayed"] == "true"
    other_body = accept(invitee, campaign, "ZZZZZZZZ", HTTP_IDEMPOTENCY_KEY="accept-1")
    assert (other_body.status_code, other_body.json()["code"]) == (422, "idempotency_key_reused")
    no_key = accept(invitee, campaign, code)
    assert no_key.json()["code"] == "already_referred"
    assert Referral.objects.count() == 1 and Voucher.objects.count() == 2


# --- GET referrals --------------------------------------------------------------------------

def test_list_shows_my_invitees_masked_and_paginated(client_for, campaign):
    inviter = client_for()
    code = invite_of(inviter, campaign)["code"]
    invitees = [client_for() for _ in range(3)]
    for client in invitees:
        assert accept(client, campaign, code).status_code == 201
    outsider = client_for()
    accept(outsider, campaign, invite_of(client_for(), campaign)["code"])

    page = inviter.get(f"/api/v1/campaigns/{campaign.slug}/referrals?page_size=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    first = page["results"][0]
    phone = invitees[-1].user.phone
    assert first["invitee"] == f"{phone[:3]}****{phone[-4:]}"
    assert phone not in str(page)
    assert first["status"] == "accepted"
    assert first["reward"]["outcome"] == "issued"
    assert Voucher.objects.get(code=first["reward"]["voucher_code"]).user == inviter.user
    rest = inviter.get(f"/api/v1/campaigns/{campaign.slug}/referrals?page_size=2&page=2").json()
    assert len(rest["results"]) == 1
    # An invitee sees no invitees of their own; nobody sees other people's lists.
    assert invitees[0].get(f"/api/v1/campaigns/{campaign.slug}/referrals").json()["count"] == 0
    assert inviter.get("/api/v1/campaigns/nope/referrals").status_code == 404


def test_schema_documents_the_referral_endpoints(client_for):
    schema = client_for().get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    for fragment in ("/api/v1/campaigns/{slug}/invite", "/api/v1/campaigns/{slug}/referrals", "under_review"):
        assert fragment in schema


# --- landing page and QR --------------------------------------------------------------------

WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN")
PHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.0 Mobile/15E148 Safari/604.1")


def test_landing_page_normal_browser_links_to_the_app(client_for, campaign):
    code = invite_of(client_for(), campaign)["code"]
    response = Client().get(f"/invite/{code}", HTTP_USER_AGENT=PHONE_UA)
    assert response.status_code == 200
    html = response.content.decode()
    assert code in html and campaign.name in html
    assert 'id="open-app"' in html and f"code={code}" in html
    assert 'id="copy-btn"' not in html
    assert "User-Agent" in response["Vary"]
    # No external CDN: the only resource loaded is our own QR image.
    assert "<link" not in html
    assert re.findall(r'src="([^"]*)"', html) == [f"/invite/{code}/qr.svg"]


def test_landing_page_in_wechat_offers_the_share_text_not_a_link(client_for, campaign):
    body = invite_of(client_for(), campaign)
    response = Client().get(f"/invite/{body['code'].lower()}", HTTP_USER_AGENT=WECHAT_UA)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="copy-btn"' in html and body["share_text"] in html
    assert 'id="open-app"' not in html and "qianwen://" not in html and "<a " not in html


def test_unknown_code_gets_a_friendly_404_page(db):
    for path in ("/invite/ZZZZZZZZ", "/invite/%3Cscript%3E"):
        response = Client().get(path)
        assert response.status_code == 404
        html = response.content.decode()
        assert "找不到" in html and "<script>" not in html


@pytest.mark.parametrize("kind, content_type, magic", [("png", "image/png", b"\x89PNG"), ("svg", "image/svg+xml", b"<svg")])
def test_qr_codes_are_cacheable(client_for, campaign, kind, content_type, magic):
    code = invite_of(client_for(), campaign)["code"]
    url = f"/invite/{code}/qr.{kind}"
    response = Client().get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response.content.startswith(magic)
    etag = response["ETag"]
    assert etag.startswith('"') and "max-age" in response["Cache-Control"] and "public" in response["Cache-Control"]
    cached = Client().get(url, HTTP_IF_NONE_MATCH=etag)
    assert cached.status_code == 304 and cached.content == b"" and cached["ETag"] == etag
    stale = Client().get(url, HTTP_IF_NONE_MATCH='"something-else"')
    assert stale.status_code == 200
    with override_settings(MIANDAN_PUBLIC_BASE_URL="https://elsewhere.example"):
        assert Client().get(url)["ETag"] != etag  # the encoded URL changed, so must the validator
    assert Client().get(f"/invite/ZZZZZZZZ/qr.{kind}").status_code == 404


def test_qr_encodes_the_absolute_invite_url(client_for, campaign):
    import io

    import segno

    code = invite_of(client_for(), campaign)["code"]
    expected = io.BytesIO()
    base = (settings.MIANDAN_PUBLIC_BASE_URL or "http://testserver").rstrip("/")  # unset: the request's host
    segno.make(f"{base}/invite/{code}", error="m").save(expected, kind="png", scale=10, border=2)
    assert Client().get(f"/invite/{code}/qr.png").content == expected.getvalue()


def test_landing_page_says_when_invites_are_closed(client_for, campaign):
    code = invite_of(client_for(), campaign)["code"]
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.ENDED)
    html = Client().get(f"/invite/{code}").content.decode()
    assert 'id="not-live"' in html and code in html


def test_public_pages_ignore_the_accept_header_and_answer_head(client_for, campaign):
    code = invite_of(client_for(), campaign)["code"]
    page = Client().get(f"/invite/{code}", HTTP_ACCEPT="application/json")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    image = Client().get(f"/invite/{code}/qr.png", HTTP_ACCEPT="image/webp")
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    head = Client().head(f"/invite/{code}/qr.svg")
    assert head.status_code == 200 and head["ETag"]
    assert Client().post(f"/invite/{code}").status_code == 405


def test_schema_documents_the_public_invite_pages(client_for):
    schema = client_for().get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    for fragment in ("/invite/{code}", "/invite/{code}/qr.png", "/invite/{code}/qr.svg", "image/svg+xml"):
        assert fragment in schema


@override_settings(MIANDAN_PROXY_COUNT=1)
def test_ip_comes_from_the_trusted_proxy_header(client_for, campaign):
    accept(client_for(), campaign, invite_of(client_for(), campaign)["code"], REMOTE_ADDR="10.0.0.1",
           HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert Referral.objects.get().ip == "203.0.113.9"


@override_settings(MIANDAN_APP_INVITE_LINK="https://app.example.cn/open?invite={code}&x={y}")
def test_app_deep_link_is_configurable(client_for, campaign):
    code = invite_of(client_for(), campaign)["code"]
    html = Client().get(f"/invite/{code}", HTTP_USER_AGENT=PHONE_UA).content.decode()
    assert f"https://app.example.cn/open?invite={code}&amp;x={{y}}" in html


@pytest.mark.django_db
def test_an_unknown_invite_with_control_characters_is_shown_back_without_them():
    """Found by an outside review: /invite/%00 echoed a raw NUL byte into the page."""
    response = Client().get("/invite/AB%00C%07D")
    assert response.status_code == 404
    page = response.content.decode()
    assert "\x00" not in page and "\x07" not in page and "ABCD" in page
