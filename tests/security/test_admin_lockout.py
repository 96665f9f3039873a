"""Admin login throttling (django-axes): lockout after AXES_FAILURE_LIMIT, a log line, an unlock path in admin;
the API's one-time-code login is not affected."""

import logging

import pytest
from axes.models import AccessAttempt
from django.test import Client

from tests.factories import StaffFactory

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests-123"  # StaffFactory's


def _login(client: Client, username: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_wrong_passwords_lock_the_admin_login_until_support_unlocks_it(settings, caplog):
    assert settings.AXES_ENABLED  # the defence under test is on
    settings.AXES_FAILURE_LIMIT = 3
    staff = StaffFactory(username="fin-lock", groups=["finance"])
    client = Client()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert _login(client, "fin-lock", "wrong-guess").status_code == 200  # the form again, with its error
        assert _login(client, "fin-lock", "wrong-guess").status_code == 429  # the third: locked
        locked = _login(client, "fin-lock", PASSWORD)  # even the right password now
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    assert any(r.name == "miandan.security" and "locked out: username=fin-lock" in r.getMessage()
               for r in caplog.records), caplog.text
    # Another username from the same address is not locked (the pair is).
    other = StaffFactory(username="mk-ok", groups=["marketing"])
    assert _login(Client(), other.username, PASSWORD).status_code == 302
    # Unlock: a superuser deletes the attempt in admin ("Access attempts").
    root = StaffFactory(username="root-unlock", is_superuser=True)
    admin = Client()
    admin.force_login(root)
    attempt = AccessAttempt.objects.get(username="fin-lock")
    assert admin.get("/admin/axes/accessattempt/").status_code == 200
    response = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert _login(client, "fin-lock", PASSWORD).status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_the_api_code_login_is_not_throttled_by_axes(settings, api_client, guard_off,
                                                     django_capture_on_commit_callbacks):
    from tests.accounts.outbox import last_code

    settings.AXES_FAILURE_LIMIT = 1
    settings.MIANDAN_SMS_BACKEND = "tests.accounts.outbox.OutboxBackend"
    phone = "13912349999"
    with django_capture_on_commit_callbacks(execute=True):  # the code is sent after commit
        assert api_client.post("/api/v1/auth/otp", {"phone": phone}, format="json").status_code in (200, 202)
    for _ in range(2):
        assert api_client.post("/api/v1/auth/token", {"phone": phone, "code": "000000", "device_id": "d"},
                               format="json").status_code == 400
    ok = api_client.post("/api/v1/auth/token", {"phone": phone, "code": last_code(phone), "device_id": "d"},
                         format="json")
    assert ok.status_code == 200, ok.content
