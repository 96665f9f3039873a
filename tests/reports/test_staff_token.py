import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from tests.factories import CampaignFactory, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_staff_token_downloads_the_report(capsys):
    campaign = CampaignFactory()
    StaffFactory(username="fin-cli", groups=["finance"])
    call_command("staff_token", "fin-cli")
    token = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.get(f"/api/v1/reports/campaigns/{campaign.slug}/budget?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")


def test_staff_token_refuses_app_users_and_unknown_names():
    UserFactory(username="13900000001")
    with pytest.raises(CommandError):
        call_command("staff_token", "13900000001")
    with pytest.raises(CommandError):
        call_command("staff_token", "nobody")
