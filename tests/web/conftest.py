"""Fixtures for the page tests: a phone-sized Chromium and the order fulfilment chain.

`fulfilment` is the ONE place that decides how an order placed in a browser test reaches
`completed`: a real Celery worker (tests/celery_worker.py) submits it to the simulated merchant, a
process of its own that calls the live server back with signed events.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings

from tests.celery_worker import celery_worker  # noqa: F401  (fixture)

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True,
         "locale": "zh-CN", "timezone_id": "Asia/Shanghai"}
DESKTOP = {"viewport": {"width": 1366, "height": 900}, "locale": "zh-CN"}


@pytest.fixture
def fulfilment(celery_worker, live_server, settings, tmp_path):  # noqa: F811
    """Orders advance placed -> sent_to_store -> accepted -> delivering -> completed on their own.

    As in production: a Celery worker submits the order to the simulated merchant (its own process), which
    calls the live server back with signed events.
    """
    from tests.fulfilment import SECRET, MerchantProcess

    settings.MIANDAN_MERCHANT_SECRET = SECRET
    # 0.5-1 s per step: slow enough that the page shows the steps one by one, fast enough for a test.
    merchant = MerchantProcess(tmp_path, {**os.environ, "MIANDAN_MERCHANT_SECRET": SECRET,
                                          "MIANDAN_MERCHANT_ACCEPT_SECONDS": "0.5-1",
                                          "MIANDAN_MERCHANT_DELIVER_SECONDS": "0.5-1"})
    settings.MIANDAN_MERCHANT_URL = merchant.url
    worker = celery_worker.start(MIANDAN_MERCHANT_SECRET=SECRET, MIANDAN_MERCHANT_URL=merchant.url)
    merchant.start("--callback-url", live_server.url)
    yield worker
    merchant.stop()


def launch(playwright):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    return playwright.chromium.launch(executable_path=CHROMIUM,
                                      args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])


def watch(context, base_url: str) -> dict:
    """Record what a page does wrong: requests leaving the test server (a CDN) and script errors."""
    seen = {"outside": [], "errors": []}
    context.on("request", lambda req: seen["outside"].append(req.url)
               if not req.url.startswith((base_url, "data:", "blob:")) else None)
    context.on("page", lambda page: page.on("pageerror", lambda exc: seen["errors"].append(str(exc))))
    return seen


def shot(target, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    target.screenshot(path=str(path), **({"full_page": True} if hasattr(target, "goto") else {}))
    return path
