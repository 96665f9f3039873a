"""The short way through content negotiation (miandan/api/negotiation.py) gives DRF's own answers."""

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from miandan.api.negotiation import AppNegotiation

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", " application/json ", "text/html",
                                    "application/json; indent=4", "application/*", "text/html, */*;q=0.1"])
@pytest.mark.parametrize("query", ["", "?format=json", "?format=xml"])
def test_the_same_renderer_and_media_type_as_drf(accept, query):
    factory = APIRequestFactory()
    extra = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(factory.get(f"/api/v1/me{query}", **extra))

    def outcome(negotiation):
        try:
            renderer, media_type = negotiation.select_renderer(request, [JSONRenderer()])
            return type(renderer), media_type
        except Exception as exc:  # 406 / 404 from DRF: the same exception type either way
            return type(exc)

    assert outcome(AppNegotiation()) == outcome(DefaultContentNegotiation())


def test_the_api_uses_it(auth_client):
    from rest_framework.settings import api_settings

    assert api_settings.DEFAULT_CONTENT_NEGOTIATION_CLASS is AppNegotiation
    assert auth_client.get("/api/v1/me", HTTP_ACCEPT="*/*").status_code == 200
    assert auth_client.get("/api/v1/me", HTTP_ACCEPT="text/html").status_code == 406
