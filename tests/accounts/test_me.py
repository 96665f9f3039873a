"""GET /api/v1/me renders the user without building its serializer (issue 14): the same body as UserOutput."""

import pytest
from rest_framework.test import APIClient

from accounts.api import UserOutput, user_output
from accounts.services import token_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("fields", [{}, {"joined_app_version": "2.3.4"}, {"phone": None, "username": "no-phone"}])
def test_me_is_user_output_byte_for_byte(fields):
    user = UserFactory(**fields)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, device_id='d')}")
    answer = client.get("/api/v1/me")
    assert answer.status_code == 200
    expected = UserOutput(user).data
    assert answer.json() == expected and list(answer.json()) == list(expected)
    assert user_output(user) == expected
