"""The invite landing page in a real browser (Debian's chromium driven by Playwright).

Screenshots go to test-artifacts/ (gitignored) so a human can look at what each user agent saw.
"""

import os
from pathlib import Path

import pytest
from django.conf import settings

from referrals.services import invite_code_get_or_create
from referrals.sharing import share_text
from tests.factories import CampaignFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
ANDROID_CHROME = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/126.0.0.0 Mobile Safari/537.36")
WECHAT = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
          "Chrome/126.0.0.0 Mobile Safari/537.36 XWEB/1260059 MMWEBSDK/20240404 MMWEBID/1234 "
          "MicroMessenger/8.0.49.2600(0x28003133) WeChat/arm64 Weixin NetType/WIFI Language/zh_CN ABI/arm64")


@pytest.fixture
def browser():
    """Request it last: Playwright's sync API runs an event loop, and Django refuses ORM calls inside one."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def _phone(browser, user_agent, base_url):
    context = browser.new_context(user_agent=user_agent, viewport={"width": 390, "height": 844},
                                  device_scale_factor=2, is_mobile=True, has_touch=True, locale="zh-CN")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    # Any request that leaves the test server would be an external CDN: record it.
    outside = []
    context.on("request", lambda req: outside.append(req.url) if not req.url.startswith(base_url) else None)
    return context, outside


@pytest.fixture
def invite(db):
    campaign = CampaignFactory(name="春节请你喝奶茶")
    code = invite_code_get_or_create(user=UserFactory(), campaign=campaign).code
    return campaign, code


def test_landing_page_in_a_phone_browser(live_server, invite, browser):
    campaign, code = invite
    ARTIFACTS.mkdir(exist_ok=True)
    context, outside = _phone(browser, ANDROID_CHROME, live_server.url)
    page = context.new_page()
    response = page.goto(f"{live_server.url}/invite/{code.lower()}")
    assert response.status == 200
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(ARTIFACTS / "invite-landing-browser.png"), full_page=True)

    assert page.locator("#invite-code").inner_text() == code
    assert "好友送你一张 25 元免单卡" in page.locator("h1").inner_text()
    open_app = page.locator("#open-app")
    assert open_app.is_visible()
    assert open_app.get_attribute("href").endswith(f"code={code}")
    assert page.locator("#copy-btn").count() == 0 and page.locator("#share-text").count() == 0
    qr_width = page.locator("#qr-card img").evaluate("img => img.complete ? img.naturalWidth : 0")
    assert qr_width > 0  # the QR SVG actually loaded
    assert outside == []
    context.close()


def test_landing_page_inside_wechat_shows_the_share_text_and_copies_it(live_server, invite, browser):
    campaign, code = invite
    ARTIFACTS.mkdir(exist_ok=True)
    context, outside = _phone(browser, WECHAT, live_server.url)
    page = context.new_page()
    response = page.goto(f"{live_server.url}/invite/{code}")
    assert response.status == 200
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(ARTIFACTS / "invite-landing-wechat.png"), full_page=True)

    expected = share_text(campaign=campaign, code=code)
    assert page.locator("#wechat-notice").is_visible()
    assert page.locator("#share-text").input_value() == expected
    assert page.locator("#open-app").count() == 0
    assert page.locator("a").count() == 0  # no outbound link at all inside WeChat
    button = page.locator("#copy-btn")
    assert button.inner_text() == "复制口令"
    button.click()
    page.wait_for_function("document.getElementById('copy-btn').textContent.indexOf('已复制') >= 0")
    assert page.evaluate("navigator.clipboard.readText()") == expected
    page.screenshot(path=str(ARTIFACTS / "invite-landing-wechat-copied.png"), full_page=True)
    assert outside == []
    context.close()


def test_unknown_code_page_in_a_browser(live_server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    context, _ = _phone(browser, WECHAT, live_server.url)
    page = context.new_page()
    response = page.goto(f"{live_server.url}/invite/NOPE2345")
    assert response.status == 404
    assert "这个邀请码找不到了" in page.locator("h1").inner_text()
    page.screenshot(path=str(ARTIFACTS / "invite-landing-not-found.png"), full_page=True)
    context.close()
