"""The campaign page end to end in Chromium at 390 x 844, as a newcomer uses it.

Log in with the code the demo shows, join, invite a friend (who pastes the whole 口令), order a
drink with one sentence, confirm the preview and follow the order until it is delivered; the
busy answer of a real shedding server shows 活动太火爆了 and retries by itself. Screenshots go to
test-artifacts/campaign-*.png.

Playwright's sync API runs an event loop and Django refuses ORM calls inside one, so the data is
set up before the browser starts and checked after it closes.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from campaign.models import Campaign
from demo.catalog import catalog_load
from orders.models import Order
from referrals.models import Referral
from tests.factories import CampaignFactory
from tests.web.conftest import PHONE, launch, shot, watch
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = [pytest.mark.browser, pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

ALICE, BOB = "13912340001", "13912340002"


@pytest.fixture
def scene(settings):
    settings.DEBUG = True  # the demo: DEBUG with the console SMS backend shows the one-time code on the page
    settings.MIANDAN_SMS_BACKEND = "console"
    settings.RATELIMIT_ENABLE = False
    settings.MIANDAN_SHED_ENABLED = True  # the busy step below is a real shed answer
    settings.MIANDAN_PROXY_COUNT = 1  # as behind the load balancer: its X-Request-Start is trusted (shed when late)
    settings.MIANDAN_SHED_RETRY_AFTER = 2
    catalog_load(stores_per_city=30)
    return CampaignFactory(slug="spring-tea", name="春节请你喝奶茶", total_budget=Decimal("100000.00"))


def _login(page, base: str, phone: str, name: str | None = None) -> None:
    page.goto(f"{base}/c/spring-tea/")
    page.fill("#phone", phone)
    page.click("#send-code")
    page.wait_for_selector("#demo-code:not([hidden])")
    code = page.inner_text("#demo-code-value")
    assert len(code) == 6 and code.isdigit()
    if name:
        shot(page, name)
    page.click("#fill-code")
    assert page.input_value("#code") == code
    page.click("#login-btn")
    page.wait_for_selector("#app:not([hidden])")
    assert page.is_hidden("#login")


def test_newcomer_joins_invites_and_orders_a_drink_to_completed(live_server, scene, fulfilment):
    from playwright.sync_api import sync_playwright

    base = live_server.url
    with sync_playwright() as p:
        browser = launch(p)
        alice_ctx = browser.new_context(**PHONE)
        alice_ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        seen = watch(alice_ctx, base)
        page = alice_ctx.new_page()

        # 1. The page before login: what the campaign is, and the login form.
        response = page.goto(f"{base}/c/spring-tea/")
        assert response.status == 200
        assert "春节请你喝奶茶" in page.inner_text(".hero") and page.is_visible("#login")
        shot(page, "campaign-01-login.png")

        # 2. Log in with the code the demo shows on the page.
        _login(page, base, ALICE, "campaign-02-code-shown.png")
        assert page.inner_text("#me-phone") == "139****0001"

        # 3. Join: the welcome card.
        page.wait_for_selector("#join:not([hidden])")
        assert page.inner_text("#card-count").startswith("0")
        page.click("#join")
        page.wait_for_selector(".ticket")
        assert page.inner_text("#card-count").replace(" ", "") == "1/21张"
        assert "领取成功" in page.inner_text("#join-msg")
        assert page.is_hidden("#join")
        ticket = page.inner_text(".ticket")
        assert "25" in ticket and "可使用" in ticket and "有效期至" in ticket
        shot(page, "campaign-03-joined.png")

        # 4. Invite: code, QR, share text; copy the 口令.
        page.wait_for_function("document.getElementById('share-text').value.length > 0")
        code = page.inner_text("#invite-code")
        share = page.input_value("#share-text")
        assert code in share and "千问App" in share
        assert page.locator("#invite-qr").evaluate("img => img.complete && img.naturalWidth > 0")
        page.click("#copy-share")
        page.wait_for_function("document.getElementById('copy-share').textContent.indexOf('已复制') >= 0")
        assert page.evaluate("navigator.clipboard.readText()") == share
        page.locator("#invite").scroll_into_view_if_needed()
        shot(page.locator("#invite"), "campaign-04-invite.png")

        # 5. A friend on another phone pastes the whole 口令: both get a card.
        bob_ctx = browser.new_context(**PHONE)
        bob_seen = watch(bob_ctx, base)
        bob = bob_ctx.new_page()
        _login(bob, base, BOB)
        bob.fill("#accept-code", share)
        bob.click("#accept-btn")
        bob.wait_for_selector("#accept-msg.ok")
        assert "各得一张免单卡" in bob.inner_text("#accept-msg")
        bob.wait_for_function("document.getElementById('card-count').textContent.indexOf('1') === 0")
        shot(bob, "campaign-05-friend-accepted.png")
        bob_ctx.close()
        page.reload()
        page.wait_for_selector("#app:not([hidden])")
        page.wait_for_function("document.getElementById('card-count').textContent.indexOf('2') === 0")
        page.wait_for_function("document.getElementById('invitees').textContent.indexOf('139****0002') >= 0")

        # 6. One sentence -> a preview (store, items, price, card, to pay). The first try meets a real
        #    shedding server (the request is marked as having queued 5 s at the proxy): the banner says
        #    活动太火爆了 and retries after Retry-After by itself.
        shed_once = {"left": 1}

        def late_at_the_proxy(route, request):
            if shed_once["left"] and request.method == "POST":
                shed_once["left"] -= 1
                route.continue_(headers={**request.headers, "x-request-start": f"t={time.time() - 5:.3f}"})
            else:
                route.continue_()

        page.route("**/api/v1/orders/chat", late_at_the_proxy)
        page.fill("#chat-text", "帮我点一杯少冰的杨枝甘露")
        page.click("#chat-send")
        page.wait_for_selector("#banner:not([hidden])")
        assert "活动太火爆了，请稍后再试" in page.inner_text("#banner")
        assert "秒后自动重试" in page.inner_text("#banner")
        shot(page, "campaign-06-busy.png")
        page.wait_for_selector("#confirm-order", timeout=15_000)
        assert page.is_hidden("#banner")
        preview = page.inner_text("#chat-thread")
        assert "杨枝甘露" in preview and "少冰" in preview and "距你" in preview
        assert "免单卡抵扣" in preview and "还需支付" in preview
        page.locator("#chat").scroll_into_view_if_needed()
        shot(page, "campaign-07-preview.png")

        # 7. Confirm and follow the order live until it is delivered.
        page.click("#confirm-order")
        page.wait_for_selector("#chat-thread .steps")
        seen_states = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not page.is_visible("#order-done"):
            status = page.locator("#chat-thread .reply").get_attribute("data-status")
            if status and status not in seen_states:
                seen_states.add(status)
                if status in {"sent_to_store", "accepted", "delivering"} and len(seen_states) <= 3:
                    shot(page.locator("#chat"), "campaign-08-following.png")  # a step on the way
            time.sleep(0.2)
        assert page.is_visible("#order-done"), f"order did not complete; states seen: {seen_states}"
        assert "已送达" in page.inner_text("#order-done")
        assert page.locator("#chat-thread .steps li.done").count() == 5
        shot(page.locator("#chat"), "campaign-09-completed.png")

        # 8. My orders and my cards follow.
        page.wait_for_function("document.querySelector('#order-list li .pill.completed') !== null")
        assert "实付 ¥0.00" in page.inner_text("#order-list")
        page.wait_for_function("document.querySelector('.ticket .st-redeemed') !== null")
        shot(page, "campaign-10-full.png")

        assert seen["outside"] == [] and bob_seen["outside"] == [], (seen, bob_seen)  # no CDN, nothing external
        assert seen["errors"] == [] and bob_seen["errors"] == []
        alice_ctx.close()
        browser.close()

    campaign = Campaign.objects.get(slug="spring-tea")
    order = Order.objects.get(user__phone=ALICE)
    assert order.status == Order.Status.COMPLETED and order.amount_to_pay == Decimal("0.00")
    assert Voucher.objects.filter(user__phone=ALICE, status=Voucher.Status.REDEEMED).count() == 1
    assert Referral.objects.get(invitee__phone=BOB).inviter.phone == ALICE
    assert reconcile(campaign=campaign).ok


def test_the_code_is_never_on_the_page_without_debug(live_server, settings):
    """The other side of the demo shortcut: DEBUG off, the page says the code was sent and shows nothing else."""
    from playwright.sync_api import sync_playwright

    settings.DEBUG = False
    settings.RATELIMIT_ENABLE = False
    CampaignFactory(slug="spring-tea", name="春节请你喝奶茶")
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(**PHONE).new_page()
        page.goto(f"{live_server.url}/c/spring-tea/")
        page.fill("#phone", ALICE)
        page.click("#send-code")
        page.wait_for_selector("#login-msg.ok")
        assert "验证码已发送" in page.inner_text("#login-msg")
        assert page.is_hidden("#demo-code") and page.inner_text("#demo-code-value") == ""
        shot(page, "campaign-11-code-not-shown.png")
        browser.close()


def test_a_paused_feature_says_so_and_counts_down_to_a_retry(live_server, settings):
    """Staff paused ordering: the page shows the pause text users are meant to read, with the automatic retry."""
    from playwright.sync_api import sync_playwright

    settings.DEBUG, settings.MIANDAN_SMS_BACKEND, settings.RATELIMIT_ENABLE = True, "console", False
    CampaignFactory(slug="spring-tea", name="春节请你喝奶茶", orders_enabled=False)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(**PHONE).new_page()
        _login(page, live_server.url, ALICE)
        page.fill("#chat-text", "帮我点一杯奶茶")
        page.click("#chat-send")
        page.wait_for_selector("#banner:not([hidden])")
        text = page.inner_text("#banner")
        assert "下单功能暂时暂停，请稍后再试" in text and "秒后自动重试" in text
        seconds = int(page.inner_text("#banner b"))
        assert 20 < seconds <= 30  # the server's Retry-After (30 s for a pause), counted down
        shot(page, "campaign-12-paused.png")
        browser.close()
