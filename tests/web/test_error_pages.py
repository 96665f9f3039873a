"""Pages outside the API answer their errors in Chinese, in the site's look (found by an outside review: Django's
English "Not Found" and CSRF pages)."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_an_unknown_page_is_a_chinese_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    page = response.content.decode()
    assert "这个页面找不到了" in page and 'lang="zh-CN"' in page and "Not Found" not in page


def test_an_api_404_keeps_the_error_shape(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_a_form_post_without_the_csrf_token_is_a_chinese_403():
    response = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403
    page = response.content.decode()
    assert "页面已过期" in page and "CSRF" not in page


def test_the_500_page_is_chinese_and_self_contained():
    from django.template.loader import render_to_string

    page = render_to_string("500.html")
    assert "服务开小差了" in page and "{%" not in page
