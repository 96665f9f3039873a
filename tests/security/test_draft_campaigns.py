"""A draft campaign does not exist for app users and the public: 404 on every door (campaign/gate.py)."""

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from campaign.models import Campaign
from demo.catalog import HANGZHOU_CENTER
from tests.factories import CampaignFactory, InviteCodeFactory

pytestmark = pytest.mark.django_db
LAT, LNG = HANGZHOU_CENTER


@pytest.fixture
def draft():
    now = timezone.now()  # inside its window: only the status keeps it hidden
    return CampaignFactory(status=Campaign.Status.DRAFT, starts_at=now - dt.timedelta(hours=1),
                           ends_at=now + dt.timedelta(days=1))


def _doors(client, public: Client, slug: str, code: str) -> dict[str, int]:
    return {
        "detail": client.get(f"/api/v1/campaigns/{slug}/").status_code,
        "join": client.post(f"/api/v1/campaigns/{slug}/join", {"app_version": "9.9.9"}, format="json").status_code,
        "invite": client.get(f"/api/v1/campaigns/{slug}/invite").status_code,
        "referrals": client.get(f"/api/v1/campaigns/{slug}/referrals").status_code,
        "order": client.post("/api/v1/orders/chat", {"text": "一杯蜜雪冰城珍珠奶茶", "lat": LAT, "lng": LNG,
                                                     "campaign": slug, "preview": True}, format="json").status_code,
        "page": public.get(f"/c/{slug}/").status_code,
        "landing": public.get(f"/invite/{code}").status_code,
        "qr": public.get(f"/invite/{code}/qr.png").status_code,
    }


def test_a_draft_is_404_on_every_door(auth_client, draft, guard_off, catalogue):
    code = InviteCodeFactory(campaign=draft).code
    doors = _doors(auth_client, Client(), draft.slug, code)
    assert doors == dict.fromkeys(doors, 404), doors
    assert auth_client.post(f"/api/v1/campaigns/{draft.slug}/join", {"app_version": "9.9.9"},
                            format="json").json()["code"] == "not_found"  # the same answer as an unknown slug
    assert draft.slug not in auth_client.get("/api/v1/campaigns/").content.decode()


def test_the_same_doors_open_once_it_is_live(auth_client, draft, guard_off, catalogue):
    Campaign.objects.filter(pk=draft.pk).update(status=Campaign.Status.LIVE)
    from campaign.selectors import _CACHE

    _CACHE.clear()  # the half-second per-process copy
    code = InviteCodeFactory(campaign=draft).code
    doors = _doors(auth_client, Client(), draft.slug, code)
    assert all(status != 404 for status in doors.values()), doors
