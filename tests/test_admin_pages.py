"""Every registered admin renders for a superuser: changelist (plain and searched), add page, change page.

The model list comes from `admin.site._registry`, so admins added by any app are covered
without touching this file; objects come from `tests.factories` (one per model).
"""

from __future__ import annotations

import inspect

import factory
import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse

from accounts.models import AuthToken
from campaign.models import Campaign
from miandan.api.models import IdempotencyRecord
from tests import factories as f
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db


def _factories_by_model() -> dict:
    found = {}
    for _, obj in inspect.getmembers(f, inspect.isclass):
        if issubclass(obj, factory.base.Factory) and obj._meta.model is not None and obj.__module__ == f.__name__:
            found.setdefault(obj._meta.model, obj)
    return found


@pytest.fixture
def world(db):
    """One object of every model (so change pages and related lookups have something to show)."""
    campaign = f.CampaignFactory(slug="admin-pages")
    card = f.VoucherFactory(campaign=campaign)
    order = f.OrderFactory(user=card.user, campaign=campaign)
    f.OrderItemFactory(order=order)
    f.OrderEventFactory(order=order)
    f.ReferralFactory(campaign=campaign)
    f.DeviceFactory(user=card.user)
    f.OtpCodeFactory()
    f.AuthTokenFactory(user=card.user)
    f.AuditLogFactory(campaign=campaign)
    IdempotencyRecord.objects.create(user=card.user, key="k-1", scope="POST /x", fingerprint="0" * 64, status_code=201,
                                     response_body='{"ok": true}')
    by_model = _factories_by_model()
    for model in admin.site._registry:
        if not model._default_manager.exists() and model in by_model:
            by_model[model]()
    return campaign


@pytest.fixture
def superuser_client(client, django_user_model):
    user = django_user_model.objects.create_superuser(username="root", password="pw-for-tests-123", email="r@example.com")
    client.force_login(user)
    client.user = user
    return client


def _models():
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def test_every_admin_page_renders(world, superuser_client):
    rf = RequestFactory()
    problems = []
    for model, model_admin in _models():
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        changelist = reverse(f"{name}_changelist")
        for url in (changelist, changelist + "?q=1", changelist + "?q=%E5%96%9C%E8%8C%B6"):
            status = superuser_client.get(url).status_code
            if status != 200:
                problems.append(f"{url}: {status}")
        request = rf.get("/")
        request.user = superuser_client.user
        add_status = superuser_client.get(reverse(f"{name}_add")).status_code
        expected = 200 if model_admin.has_add_permission(request) else 403
        if add_status != expected:
            problems.append(f"{model._meta.label} add: {add_status} (expected {expected})")
        obj = model._default_manager.order_by("pk").first()
        if obj is None:
            problems.append(f"{model._meta.label}: no factory made an object, change page untested")
            continue
        url = reverse(f"{name}_change", args=[obj.pk])
        status = superuser_client.get(url).status_code
        if status != 200:
            problems.append(f"{url}: {status}")
    assert not problems, "\n".join(problems)


def test_core_models_are_registered():
    registered = {m._meta.label for m in admin.site._registry}
    expected = {
        "accounts.User", "accounts.Device", "accounts.OtpCode", "accounts.AuthToken", "vouchers.Voucher",
        "api.IdempotencyRecord",
    }
    assert expected <= registered, expected - registered


def test_voucher_admin_is_read_only(world, superuser_client):
    card = Voucher.objects.first()
    url = reverse("admin:vouchers_voucher_change", args=[card.pk])
    page = superuser_client.get(url)
    assert page.status_code == 200
    assert b'name="status"' not in page.content and b'name="face_value"' not in page.content
    # a forged POST changes nothing
    assert superuser_client.post(url, {"status": "redeemed", "face_value": "1.00"}).status_code == 403
    card.refresh_from_db()
    assert card.status == Voucher.Status.ISSUED and str(card.face_value) == "25.00"
    assert superuser_client.get(reverse("admin:vouchers_voucher_add")).status_code == 403
    assert superuser_client.post(reverse("admin:vouchers_voucher_delete", args=[card.pk]), {"post": "yes"}).status_code == 403
    assert Voucher.objects.filter(pk=card.pk).exists()


def _void_post(client, cards, **extra):
    data = {"action": "void", "_selected_action": [c.pk for c in cards], **extra}
    return client.post(reverse("admin:vouchers_voucher_changelist"), data)


def test_void_action_asks_for_a_reason_then_voids_through_the_service(world, superuser_client):
    campaign = Campaign.objects.get(slug="admin-pages")
    cards = [f.VoucherFactory(campaign=campaign), f.VoucherFactory(campaign=campaign)]

    page = _void_post(superuser_client, cards)
    assert page.status_code == 200
    assert "作废原因".encode() in page.content and cards[0].code.encode() in page.content
    assert all(Voucher.objects.get(pk=c.pk).status == Voucher.Status.ISSUED for c in cards)

    blank = _void_post(superuser_client, cards, apply="1", reason="   ")
    assert blank.status_code == 200  # the intermediate page again, with the error
    assert all(Voucher.objects.get(pk=c.pk).status == Voucher.Status.ISSUED for c in cards)

    done = _void_post(superuser_client, cards, apply="1", reason="用户申请注销")
    assert done.status_code == 302
    for card in cards:
        card.refresh_from_db()
        assert card.status == Voucher.Status.VOID
        assert card.void_reason == "用户申请注销"
    assert reconcile(campaign=campaign).ok
    ledger = campaign.ledger.filter(kind="release", voucher_id__in=[c.pk for c in cards])
    assert ledger.count() == 2 and all(e.actor_id == superuser_client.user.pk for e in ledger)


def test_void_action_skips_cards_that_are_not_issued(world, superuser_client):
    campaign = Campaign.objects.get(slug="admin-pages")
    card = f.VoucherFactory(campaign=campaign)
    Voucher.objects.filter(pk=card.pk).update(status=Voucher.Status.LOCKED, order_id=999999)
    response = _void_post(superuser_client, [card], apply="1", reason="测试")
    assert response.status_code == 302
    card.refresh_from_db()
    assert card.status == Voucher.Status.LOCKED
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any(card.code in m for m in messages), messages


def test_void_action_needs_the_void_permission(world, client):
    from django.contrib.auth.models import Permission

    card = Voucher.objects.first()
    viewer = f.StaffFactory(groups=["finance"])  # finance may view cards but not void them
    client.force_login(viewer)
    page = client.get(reverse("admin:vouchers_voucher_changelist"))
    assert page.status_code == 200
    assert b'value="void"' not in page.content
    _void_post(client, [card], apply="1", reason="x")
    card.refresh_from_db()
    assert card.status == Voucher.Status.ISSUED

    support = f.StaffFactory(groups=["support"])  # support has vouchers.void_voucher
    assert Permission.objects.filter(codename="void_voucher", group__name="support").exists()
    client.force_login(support)
    assert b'value="void"' in client.get(reverse("admin:vouchers_voucher_changelist")).content
    assert _void_post(client, [card], apply="1", reason="客服处理").status_code == 302
    card.refresh_from_db()
    assert card.status == Voucher.Status.VOID


def test_manual_issue_goes_through_the_ledger(world, superuser_client):
    campaign = Campaign.objects.get(slug="admin-pages")
    user = f.UserFactory()
    url = reverse("admin:vouchers_voucher_issue")
    assert superuser_client.get(url).status_code == 200
    missing_reason = superuser_client.post(url, {"campaign": campaign.pk, "phone": user.phone, "reason": " "})
    assert missing_reason.status_code == 200 and not Voucher.objects.filter(user=user).exists()
    unknown = superuser_client.post(url, {"campaign": campaign.pk, "phone": "13900000000", "reason": "补偿"})
    assert unknown.status_code == 200
    response = superuser_client.post(url, {"campaign": campaign.pk, "phone": user.phone, "reason": "客诉补偿"})
    assert response.status_code == 302
    card = Voucher.objects.get(user=user)
    assert card.source == Voucher.Source.STAFF
    assert campaign.ledger.filter(kind="reserve", voucher_id=card.pk, actor=superuser_client.user).exists()
    assert reconcile(campaign=campaign).ok


def test_manual_issue_needs_permission(world, client):
    client.force_login(f.StaffFactory(groups=["finance"]))
    assert client.get(reverse("admin:vouchers_voucher_issue")).status_code == 403


def test_revoke_token_action(world, superuser_client):
    token = AuthToken.objects.first()
    response = superuser_client.post(
        reverse("admin:accounts_authtoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_secrets_never_shown(world, superuser_client):
    token = AuthToken.objects.first()
    page = superuser_client.get(reverse("admin:accounts_authtoken_change", args=[token.pk]))
    assert token.key_hash.encode() not in page.content
    from accounts.models import OtpCode

    otp = OtpCode.objects.first()
    page = superuser_client.get(reverse("admin:accounts_otpcode_change", args=[otp.pk]))
    assert page.status_code == 200 and b"code_hash" not in page.content


def test_every_admin_filter_choice_renders(world, superuser_client):
    """Click through each list filter (first few choices) of every changelist: no filter may crash."""
    problems = []
    for model, _ in _models():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = superuser_client.get(url)
        cl = response.context["cl"]
        for spec in cl.filter_specs:
            for choice in list(spec.choices(cl))[:4]:
                query = choice["query_string"]
                status = superuser_client.get(url + query).status_code
                if status != 200:
                    problems.append(f"{url}{query}: {status}")
    assert not problems, "\n".join(problems)
