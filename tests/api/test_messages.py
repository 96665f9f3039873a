"""The Chinese of a few messages Django and DRF get wrong or lack (locale/zh_Hans; found by an outside review)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_a_nul_in_a_string_says_so_in_chinese(api_client):
    response = api_client.post("/api/v1/auth/otp", {"phone": "1380000\x00000"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert "不能包含空字符（\\0）。" in response.json()["fields"]["phone"], response.json()


def test_a_null_body_says_so_in_chinese(api_client):
    response = api_client.post("/api/v1/auth/otp", "null", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert response.json()["fields"]["non_field_errors"] == ["没有提供数据"]
