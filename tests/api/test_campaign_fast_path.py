"""The campaign page's short way (CampaignDetailApi.dispatch): the same answers as DRF's, header for header."""

import pytest
from django.core.handlers.wsgi import WSGIHandler

from accounts.services import token_create
from campaign.api import CampaignDetailApi
from miandan.api.stack import ApiCallsFirst
from tests.api.test_api_stack import call
from tests.factories import CampaignFactory, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db
VOLATILE = {"X-Request-ID", "Server-Timing"}


@pytest.fixture(scope="module")
def app():
    return ApiCallsFirst(WSGIHandler())


def _answers(app, monkeypatch, method, path, headers):
    fast = call(app, method, path, headers=headers)
    with monkeypatch.context() as patched:
        patched.setattr(CampaignDetailApi, "_fast", lambda self, request, slug: None)
        slow = call(app, method, path, headers=headers)
    return fast, slow


def test_the_short_way_answers_as_drf_does(app, monkeypatch):
    campaign = CampaignFactory()
    path = f"/api/v1/campaigns/{campaign.slug}/"
    token = token_create(user=UserFactory(), device_id="fast")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    first = call(app, "GET", path, headers=bearer)  # renders and keeps the detail
    assert first["status"] == 200
    etag = first["headers"]["ETag"]
    staff = token_create(user=StaffFactory(), device_id="staff")
    cases = [
        bearer,
        {**bearer, "HTTP_ACCEPT": "*/*"},
        {**bearer, "HTTP_ACCEPT": "application/json", "HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.9"},
        {**bearer, "HTTP_IF_NONE_MATCH": etag},  # 304
        {**bearer, "HTTP_ACCEPT": "text/html"},  # 406 from DRF
        {"HTTP_AUTHORIZATION": "Bearer not-a-token"},  # 401
        {},  # 401
        {"HTTP_AUTHORIZATION": f"Bearer {staff}"},  # refused: staff tokens only open the reports
    ]
    taken = []
    real = CampaignDetailApi._answer
    monkeypatch.setattr(CampaignDetailApi, "_answer", staticmethod(lambda request, hit: taken.append(1) or
                                                                   real(request, hit)))
    for headers in cases:
        fast, slow = _answers(app, monkeypatch, "GET", path, headers)
        assert fast["status"] == slow["status"], headers
        assert fast["body"] == slow["body"], headers
        assert {k: v for k, v in fast["headers"].items() if k not in VOLATILE} == \
            {k: v for k, v in slow["headers"].items() if k not in VOLATILE}, headers
    assert [c["status"] for c in (call(app, "GET", path, headers=h) for h in cases)] == \
        [200, 200, 200, 304, 406, 401, 401, 404]
    assert len(taken) >= 4  # the short way did answer the plain ones


def test_an_unknown_or_draft_campaign_is_a_404_either_way(app, monkeypatch):
    draft = CampaignFactory(status="draft")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token_create(user=UserFactory(), device_id='fast')}"}
    for path in (f"/api/v1/campaigns/{draft.slug}/", "/api/v1/campaigns/no-such-campaign/"):
        fast, slow = _answers(app, monkeypatch, "GET", path, bearer)
        assert fast["status"] == slow["status"] == 404
        assert fast["body"] == slow["body"]
