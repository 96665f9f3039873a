"""Login by phone: random hashed codes, 5-minute life, 5 tries, resend interval, per-IP floor, revocable tokens."""

import datetime as dt

import pytest
from django.utils import timezone

from accounts.models import AuthToken, Device, OtpCode, User
from tests.accounts.outbox import OUTBOX, last_code

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_off", "outbox")]
PHONE = "13800138000"


@pytest.fixture
def outbox(settings):
    settings.MIANDAN_SMS_BACKEND = "tests.accounts.outbox.OutboxBackend"
    OUTBOX.clear()
    return OUTBOX


@pytest.fixture
def send(api_client, django_capture_on_commit_callbacks):
    def send(phone=PHONE, **extra):
        with django_capture_on_commit_callbacks(execute=True):
            return api_client.post("/api/v1/auth/otp", {"phone": phone}, format="json", **extra)

    return send


def login(client, phone=PHONE, code=None, device_id="iphone-1", **extra):
    return client.post("/api/v1/auth/token", {"phone": phone, "code": code or last_code(phone), "device_id": device_id},
                       format="json", **extra)


def test_code_is_random_hashed_and_logs_in(api_client, send):
    assert send().status_code == 202
    code = last_code(PHONE)
    otp = OtpCode.objects.get(phone=PHONE)
    assert len(code) == 6 and code.isdigit()
    assert code not in otp.code_hash and len(otp.code_hash) == 64
    assert abs((otp.expires_at - otp.created_at) - dt.timedelta(minutes=5)) < dt.timedelta(seconds=1)

    response = login(api_client)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["user"]["phone"] == PHONE
    user = User.objects.get(phone=PHONE)
    assert Device.objects.filter(user=user, device_id="iphone-1").exists()
    assert AuthToken.objects.get(user=user).device_id == "iphone-1"
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert api_client.get("/api/v1/me").json()["phone"] == PHONE
    # Only the hash of the token is stored.
    assert not AuthToken.objects.filter(key_hash=body["token"]).exists()


def test_codes_differ_between_requests(api_client, send):
    codes = set()
    for i in range(5):
        phone = f"1380013{i:04d}"
        send(phone)
        codes.add(last_code(phone))
    assert len(codes) > 1


def test_code_works_once(api_client, send):
    send()
    code = last_code(PHONE)
    assert login(api_client, code=code).status_code == 200
    again = login(api_client, code=code)
    assert again.status_code == 400
    assert again.json()["code"] == "otp_invalid"


def test_wrong_code_400_then_429_after_five_tries(api_client, send):
    send()
    good = last_code(PHONE)
    wrong = "000000" if good != "000000" else "111111"
    for left in range(4, -1, -1):
        response = login(api_client, code=wrong)
        assert response.status_code == 400
        assert response.json()["code"] == "otp_invalid"
        assert response.json()["attempts_left"] == left
    blocked = login(api_client, code=good)  # even the right code: the code is burnt
    assert blocked.status_code == 429
    assert blocked.json()["code"] == "rate_limited"
    assert blocked["Retry-After"]
    assert not User.objects.filter(phone=PHONE).exists()
    assert AuthToken.objects.count() == 0


def test_expired_code_is_refused(api_client, send):
    send()
    OtpCode.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = login(api_client)
    assert response.status_code == 400
    assert response.json()["code"] == "otp_invalid"


def test_resend_interval_per_phone(send):
    assert send().status_code == 202
    again = send()
    assert again.status_code == 429
    assert again.json()["code"] == "rate_limited"
    assert int(again["Retry-After"]) > 0
    assert OtpCode.objects.filter(phone=PHONE).count() == 1
    assert send("13800138001").status_code == 202  # another phone is not affected


def test_hourly_cap_per_phone(send):
    for _ in range(10):
        OtpCode.objects.create(phone=PHONE, code_hash="x", expires_at=timezone.now(), used_at=timezone.now())
    response = send()
    assert response.status_code == 429
    assert OtpCode.objects.filter(phone=PHONE).count() == 10


def test_per_ip_limit_on_otp_and_token(api_client, send, settings):
    settings.MIANDAN_AUTH_IP_LIMITS = {"otp": (2, 600), "token": (2, 600)}
    assert send("13800000001", REMOTE_ADDR="10.0.0.1").status_code == 202
    assert send("13800000002", REMOTE_ADDR="10.0.0.1").status_code == 202
    third = send("13800000003", REMOTE_ADDR="10.0.0.1")
    assert third.status_code == 429
    assert third.json()["code"] == "rate_limited"
    assert 0 < int(third["Retry-After"]) <= 600
    assert not OtpCode.objects.filter(phone="13800000003").exists()
    assert send("13800000003", REMOTE_ADDR="10.0.0.2").status_code == 202

    for _ in range(2):
        login(api_client, phone="13800000001", code="000000", REMOTE_ADDR="10.0.0.9")
    limited = login(api_client, phone="13800000001", REMOTE_ADDR="10.0.0.9")
    assert limited.status_code == 429


def test_logout_revokes_only_that_token(api_client, send):
    send()
    code = last_code(PHONE)
    from django.conf import settings as dj_settings

    assert dj_settings.MIANDAN_SMS_BACKEND.endswith("OutboxBackend")
    token = login(api_client, code=code).json()["token"]
    other = AuthToken.objects.count()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api_client.post("/api/v1/auth/logout").status_code == 204
    response = api_client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert AuthToken.objects.filter(revoked_at__isnull=False).count() == 1 == other


@pytest.mark.parametrize(
    "payload",
    [
        {"phone": "12345"},
        {"phone": "23800138000"},
        {"phone": "138001380001"},
        {"phone": 13800138000},
        {"phone": None},
        {"phone": ["13800138000"]},
        {"phone": {"n": "13800138000"}},
        {},
    ],
)
def test_malformed_phone_is_400_and_writes_nothing(send, api_client, payload):
    with_phone = api_client.post("/api/v1/auth/otp", payload, format="json")
    assert with_phone.status_code == 400
    assert with_phone.json()["code"] == "invalid"
    assert "phone" in with_phone.json()["fields"]
    assert OtpCode.objects.count() == 0 and not OUTBOX


@pytest.mark.parametrize(
    "payload",
    [
        {"phone": PHONE, "code": "12345", "device_id": "d"},
        {"phone": PHONE, "code": 123456, "device_id": "d"},
        {"phone": PHONE, "code": "123456", "device_id": ""},
        {"phone": PHONE, "code": "123456", "device_id": 7},
        # (no device_id at all is a valid login since issue 16: the server issues one)
    ],
)
def test_malformed_token_request_is_400_and_writes_nothing(api_client, payload):
    response = api_client.post("/api/v1/auth/token", payload, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert User.objects.count() == 0 and AuthToken.objects.count() == 0 and Device.objects.count() == 0
