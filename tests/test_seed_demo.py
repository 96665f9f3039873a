"""seed_demo builds the demo the tooling contract promises, and a second run changes nothing."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.utils import timezone

from accounts.models import User
from campaign.models import Campaign, LedgerEntry
from orders.models import Brand, Product, Store
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db

CONTRACT_PRODUCTS = {
    "喜茶": ["多肉葡萄", "芝芝莓莓", "烤黑糖波波牛乳"],
    "奈雪的茶": ["霸气橙子", "霸气芝士草莓"],
    "蜜雪冰城": ["冰鲜柠檬水", "珍珠奶茶", "蜜桃四季春"],
    "茶百道": ["杨枝甘露", "豆乳玉麒麟"],
    "古茗": ["芝士葡萄", "杨枝甘露"],
    "霸王茶姬": ["伯牙绝弦", "青青糯山"],
}
HANGZHOU = (30.2741, 120.1551)


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    return {m._meta.label: m._default_manager.count() for m in apps.get_models()}


def km(lat1, lng1, lat2, lng2) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def test_seed_demo_twice_changes_nothing():
    first_output = seed()
    after_first = counts()
    ledger_ids = list(LedgerEntry.objects.order_by("id").values_list("id", flat=True))
    second_output = seed()
    assert counts() == after_first
    assert list(LedgerEntry.objects.order_by("id").values_list("id", flat=True)) == ledger_ids
    assert "created" in first_output and "already exists" in second_output
    campaign = Campaign.objects.get(slug="spring-tea")
    report = reconcile(campaign=campaign)
    assert report.ok, report.differences


def test_seed_demo_campaign_matches_the_contract():
    seed()
    campaign = Campaign.objects.get(slug="spring-tea")
    now = timezone.now()
    assert campaign.name == "春节请你喝奶茶"
    assert campaign.status == Campaign.Status.LIVE and campaign.starts_at < now < campaign.ends_at
    assert campaign.total_budget == Decimal("3000000000.00")
    assert (campaign.face_value, campaign.card_cap, campaign.min_app_version) == (Decimal("25.00"), 21, "1.0.0")
    assert campaign.buckets.count() == 64
    assert sum(b.allotment for b in campaign.buckets.all()) == Decimal("3000000000.00")
    assert (campaign.ends_at - now).days >= 59


def test_seed_demo_catalogue_matches_the_contract():
    seed()
    assert set(Brand.objects.values_list("name", flat=True)) >= set(CONTRACT_PRODUCTS)
    for brand, products in CONTRACT_PRODUCTS.items():
        names = set(Product.objects.filter(brand__name=brand, active=True).values_list("name", flat=True))
        assert set(products) <= names, (brand, set(products) - names)
        near = [s for s in Store.objects.filter(brand__name=brand, active=True) if km(*HANGZHOU, s.lat, s.lng) <= 3.0]
        assert near, f"no {brand} store within 3 km of {HANGZHOU}"
        assert any(s.open_24h for s in near), f"no 24h {brand} store within 3 km of {HANGZHOU}"
    assert 150 <= Store.objects.count() <= 300


def test_seed_demo_staff_can_log_in_with_the_given_password():
    seed("--staff-password", "another-Secret-9", "--admin-password", "another-Secret-9")
    for name in ("marketing", "finance", "support"):
        user = User.objects.get(username=name)
        assert user.is_staff and not user.is_superuser
        assert list(user.groups.values_list("name", flat=True)) == [name]
        assert authenticate(username=name, password="another-Secret-9") == user
        assert authenticate(username=name, password="miandan-demo") is None
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert authenticate(username="admin", password="another-Secret-9") == admin
    # a re-run with the default resets the passwords (and still creates nothing new)
    before = counts()
    seed()
    assert counts() == before
    assert authenticate(username="finance", password="miandan-demo") is not None


def test_seed_demo_makes_a_superuser_only_with_an_explicit_password(monkeypatch):
    monkeypatch.delenv("MIANDAN_DEMO_ADMIN_PASSWORD", raising=False)
    out = seed()
    assert not User.objects.filter(is_superuser=True).exists()
    assert "superuser: none made" in out
    seed("--admin-password", "Chosen-Admin-7")
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and authenticate(username="admin", password="Chosen-Admin-7") == admin
    assert authenticate(username="admin", password="miandan-demo") is None


def test_seed_demo_app_users_and_cards(client):
    seed()
    app_users = User.objects.filter(phone__startswith="1380000", is_staff=False)
    assert app_users.count() == 20
    assert not any(u.has_usable_password() for u in app_users)  # they log in by OTP only
    cards = Voucher.objects.filter(campaign__slug="spring-tea")
    assert cards.count() == 10 and set(cards.values_list("source", flat=True)) == {"welcome"}
    # staff log in to admin and see the demo campaign
    assert client.login(username="marketing", password="miandan-demo")
    assert client.get("/admin/").status_code == 200


def test_demo_works_with_the_embedded_defaults(tmp_path):
    """`make demo` runs on SQLite with no services: migrate + seed_demo (twice) must work there too."""
    root = Path(__file__).resolve().parent.parent
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite3'}"  # and no REDIS_URL: local-memory cache, eager Celery
    for args in (["migrate", "--noinput"], ["seed_demo"], ["seed_demo"], ["reconcile", "spring-tea"]):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=root, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    assert "PASS" in result.stdout
