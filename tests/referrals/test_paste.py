"""The 口令 works as promised: the whole pasted share text (or link) is accepted as the code; the app name is a setting."""

import pytest
from django.test import override_settings

from referrals.codes import extract_code
from referrals.services import invite_code_get_or_create
from referrals.sharing import share_text
from tests.factories import CampaignFactory, UserFactory
from tests.vouchers.conftest import guard_off  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_off")]


@pytest.mark.parametrize("raw, expected", [
    ("【春节请你喝奶茶】好友请你喝奶茶！复制这段话打开千问App，输入邀请码 ABCD2345，我们各得一张25元免单卡", "ABCD2345"),
    ("输入邀请码：abcd2345。", "ABCD2345"),
    ("邀请码ＡＢＣＤ２３４５", "ABCD2345"),  # full-width, typed with a Chinese IME
    ("http://127.0.0.1:8000/invite/abcd2345", "ABCD2345"),
    ("http://127.0.0.1:8000/c/spring-tea/?code=ABCD2345", "ABCD2345"),
    ("abcd 2345", "ABCD2345"),  # a bare code still works as before
    ("复制这段话打开千问App，我们各得一张25元免单卡", None),  # no code in it: "App" and "25" are not codes
    ("邀请码 AB", None), ("邀请码 ABCD2345XYZ0123456", None), ("", None), (None, None), ("x" * 600, None),
])
def test_extract_code(raw, expected):
    assert extract_code(raw) == expected


def test_the_whole_pasted_share_text_is_accepted(make_auth_client):
    campaign = CampaignFactory(name="春节请你喝奶茶")
    inviter = UserFactory()
    invite = invite_code_get_or_create(user=inviter, campaign=campaign)
    pasted = "\n" + share_text(campaign=campaign, code=invite.code) + "\n"
    response = make_auth_client().post(f"/api/v1/campaigns/{campaign.slug}/referrals", {"code": pasted}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["invitee"]["outcome"] == "issued"


def test_a_pasted_text_without_a_code_is_still_invalid_code(make_auth_client, campaign):
    response = make_auth_client().post(f"/api/v1/campaigns/{campaign.slug}/referrals",
                                       {"code": "复制这段话打开千问App，我们各得一张25元免单卡"}, format="json")
    assert response.status_code == 404 and response.json()["code"] == "invalid_code"


@override_settings(MIANDAN_APP_NAME="通义")
def test_the_app_name_comes_from_the_setting(auth_client, campaign, client):
    body = auth_client.get(f"/api/v1/campaigns/{campaign.slug}/invite").json()
    assert "打开通义App" in body["share_text"] and "千问" not in body["share_text"]
    page = client.get(f"/invite/{body['code']}").content.decode()
    assert "打开通义App领取" in page and "千问" not in page


def test_the_browser_invite_page_falls_back_to_the_campaign_page(auth_client, campaign, client):
    code = auth_client.get(f"/api/v1/campaigns/{campaign.slug}/invite").json()["code"]
    page = client.get(f"/invite/{code}").content.decode()
    web = f"/c/{campaign.slug}/?code={code}"
    assert f'href="{web}"' in page and f'data-fallback="{web}"' in page
    assert client.get(web).status_code == 200
    wechat = client.get(f"/invite/{code}", HTTP_USER_AGENT="Mozilla/5.0 MicroMessenger/8.0").content.decode()
    assert "<a " not in wechat  # inside WeChat: no outbound link at all, the 口令 instead
