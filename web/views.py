"""The pages people see: the demo's home (/) and the campaign page (/c/<slug>/).

Both are plain server-rendered shells. The campaign page does everything else in the browser
through the public JSON API, exactly like the app would (static/web/campaign.js), so what it
shows is what any client gets. The server side only reads what it renders.
"""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_cache_control

from accounts.sms import code_shown_to_client
from campaign.gate import PAUSED_TEXT, campaign_is_live, campaign_is_visible
from campaign.selectors import campaign_get, campaign_list_live
from demo.management.commands import seed_demo
from referrals.sharing import yuan

# Where the page orders from until the user shares their location: the demo stores' point (West Lake, Hangzhou).
DEFAULT_PLACE = {"lat": 30.2741, "lng": 120.1551, "label": "杭州·西湖附近"}
CHAT_EXAMPLES = ["帮我点一杯少冰的杨枝甘露", "来杯喜茶多肉葡萄，少糖", "两杯蜜雪冰城珍珠奶茶，去冰", "老样子"]


def demo_mode() -> bool:
    """The demo extras (one-time code on screen, staff passwords on the home page): DEBUG with the console SMS."""
    return code_shown_to_client()


def home(request):
    campaigns = campaign_list_live()
    demo = demo_mode()
    context = {
        "campaigns": campaigns,
        "demo": demo,
        "staff": [(username, label) for username, (_, label) in seed_demo.STAFF.items()] if demo else [],
        "staff_password": "miandan-demo" if demo else "",
        "demo_phones": (seed_demo.demo_phone(1), seed_demo.demo_phone(seed_demo.DEMO_USERS)),
        "demo_with_card": (seed_demo.demo_phone(1), seed_demo.demo_phone(seed_demo.DEMO_USERS_WITH_CARD)),
        "demo_without_card": (seed_demo.demo_phone(seed_demo.DEMO_USERS_WITH_CARD + 1),
                              seed_demo.demo_phone(seed_demo.DEMO_USERS)),
        "app_name": settings.MIANDAN_APP_NAME,
    }
    response = render(request, "web/home.html", context)
    patch_cache_control(response, private=True, max_age=60)
    return response


def campaign_page(request, slug: str):
    campaign = campaign_get(slug=slug)
    if not campaign_is_visible(campaign):
        response = render(request, "web/campaign_missing.html", {"slug": slug[:64]}, status=404)
        patch_cache_control(response, private=True, max_age=60)
        return response
    face = yuan(campaign.face_value)
    config = {
        "slug": campaign.slug,
        "name": campaign.name,
        "face": face,
        "cap": campaign.card_cap,
        "live": campaign_is_live(campaign),
        "appName": settings.MIANDAN_APP_NAME,
        "minAppVersion": campaign.min_app_version,
        "showCode": demo_mode(),
        "place": DEFAULT_PLACE,
        "examples": CHAT_EXAMPLES,
        "paused": {feature: PAUSED_TEXT[feature] for feature in PAUSED_TEXT},
        "api": "/api/v1",
        "home": reverse("web-home"),
    }
    context = {
        "campaign": campaign,
        "face": face,
        "max_total": yuan(campaign.face_value * campaign.card_cap),
        "validity_days": campaign.card_validity.days,
        "config": config,
        "app_name": settings.MIANDAN_APP_NAME,
        "live": config["live"],
    }
    response = render(request, "web/campaign.html", context)
    # The page holds no user data (that comes from the API with the user's token): a short shared cache is fine.
    patch_cache_control(response, public=True, max_age=30)
    return response
