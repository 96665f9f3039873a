"""Invite QR images are rendered once per code and then served from the cache (issue 16)."""

import pytest
from django.test import Client

from referrals import sharing
from tests.factories import InviteCodeFactory

pytestmark = pytest.mark.django_db


def test_qr_png_is_rendered_once_per_code(monkeypatch, settings):
    calls = []
    real = sharing._qr_bytes

    def counting(code, kind, url):
        calls.append((code, kind))
        return real(code, kind, url)

    monkeypatch.setattr(sharing, "_qr_bytes", counting)
    first, second = InviteCodeFactory(), InviteCodeFactory()
    client = Client()
    bodies = {client.get(f"/invite/{first.code}/qr.png").content for _ in range(5)}
    assert len(bodies) == 1 and next(iter(bodies)).startswith(b"\x89PNG")
    assert calls == [(first.code, "png")]
    client.get(f"/invite/{second.code}/qr.png")
    client.get(f"/invite/{first.code}/qr.svg")
    assert calls == [(first.code, "png"), (second.code, "png"), (first.code, "svg")]
    settings.MIANDAN_QR_CACHE_SECONDS = 0  # off: rendered each time
    client.get(f"/invite/{first.code}/qr.png")
    assert len(calls) == 4
