"""The merchant callback endpoint in-process: signatures, staleness, idempotency, ordering, concurrency.

POST /api/v1/merchants/{merchant}/events through Django's full stack (middleware, DRF, the error handler),
against PostgreSQL. The end to end runs with real processes are in test_fulfilment.py.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.test import Client

from campaign.models import LedgerEntry
from orders.merchant import sign
from orders.models import MerchantEvent, Order, OrderEvent
from tests.concurrency import run_threads
from tests.factories import VoucherFactory
from tests.orders.conftest import LAT, LNG
from vouchers.models import Voucher
from vouchers.selectors import reconcile

URL = "/api/v1/merchants/sim/events"


def event(order_id: int, kind: str, *, event_id: str | None = None, **extra) -> dict:
    return {"id": event_id or f"evt-{order_id}-{kind}", "type": kind, "order": order_id, "ref": f"SIM-{order_id}",
            "occurred_at": datetime.now(UTC).isoformat(), **extra}


def post(payload, *, secret: str, ts: int | None = None, url: str = URL, raw: bytes | None = None,
         headers: dict | None = None, client: Client | None = None):
    body = raw if raw is not None else json.dumps(payload).encode()
    signed = sign(body, secret=secret, timestamp=ts) if headers is None else headers
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in signed.items()}
    return (client or Client()).post(url, data=body, content_type="application/json", **meta)


@pytest.fixture
def secret(settings):
    settings.MIANDAN_MERCHANT_SECRET = "test-merchant-secret-0123456789"
    return settings.MIANDAN_MERCHANT_SECRET


@pytest.fixture
def placed(catalogue, auth_client, campaign):
    """One chat order, placed (nothing listens at the merchant URL, so nobody advances it but the test)."""
    card = VoucherFactory(user=auth_client.user, campaign=campaign)
    r = auth_client.post("/api/v1/orders/chat", {"text": "一杯伯牙绝弦", "lat": LAT, "lng": LNG}, format="json")
    assert r.status_code == 201, r.content
    order = Order.objects.get(pk=r.json()["id"])
    assert order.status == "placed" and order.merchant == "sim"
    order.card = card
    return order


def chain(order_id: int) -> list[str]:
    return list(OrderEvent.objects.filter(order_id=order_id).order_by("id").values_list("to_status", flat=True))


def spends(card) -> int:
    return LedgerEntry.objects.filter(voucher_id=card.pk, kind="spend").count()


@pytest.mark.django_db
def test_signed_events_complete_the_order_and_redeem_the_card_once(placed, secret, campaign):
    for kind, status in [("accepted", "accepted"), ("dispatched", "delivering"), ("delivered", "completed")]:
        r = post(event(placed.pk, kind), secret=secret)
        assert r.status_code == 200, r.content
        assert r.json() == {"result": "applied", "order": placed.pk, "status": status}
    assert chain(placed.pk) == ["placed", "accepted", "delivering", "completed"]
    placed.card.refresh_from_db()
    assert placed.card.status == Voucher.Status.REDEEMED and placed.card.subsidy == Decimal("18.00")
    moves = list(LedgerEntry.objects.filter(voucher_id=placed.card.pk).order_by("id").values_list("kind", "amount"))
    assert moves == [("reserve", Decimal("25.00")), ("spend", Decimal("18.00")), ("release", Decimal("7.00"))]
    order = Order.objects.get(pk=placed.pk)
    assert order.next_check_at is None and order.merchant_ref == f"SIM-{placed.pk}"
    assert MerchantEvent.objects.filter(order=order, outcome="applied").count() == 3
    assert reconcile(campaign=campaign).ok


@pytest.mark.django_db
def test_forged_signature_is_401_and_changes_nothing(placed, secret):
    payload = event(placed.pk, "delivered")
    body = json.dumps(payload).encode()
    for headers in [sign(body, secret="not-the-secret"), {}, {"X-Miandan-Timestamp": str(int(time.time()))},
                    {**sign(body, secret=secret), "X-Miandan-Signature": "v1=" + "0" * 64}]:
        r = post(payload, secret=secret, headers=headers)
        assert r.status_code == 401, r.content
        assert r.json()["code"] == "bad_signature"
    # A valid signature over another body does not carry over to this one.
    other = sign(json.dumps(event(placed.pk, "accepted")).encode(), secret=secret)
    assert post(payload, secret=secret, headers=other).json()["code"] == "bad_signature"
    assert Order.objects.get(pk=placed.pk).status == "placed"
    assert not MerchantEvent.objects.exists()


@pytest.mark.django_db
def test_stale_or_future_timestamp_is_refused(placed, secret):
    # 303 s, not 301: the header is whole seconds, so a +301 stamped late in a second is only ~300.1 s ahead
    # of the server's clock by the time it is checked (the flake seen under load).
    for skew in (-303, 303, -3600):
        r = post(event(placed.pk, "accepted"), secret=secret, ts=int(time.time()) + skew)
        assert r.status_code == 401 and r.json()["code"] == "stale_event", r.content
    assert post(event(placed.pk, "accepted"), secret=secret, ts=int(time.time()) - 290).status_code == 200
    assert Order.objects.get(pk=placed.pk).status == "accepted"


@pytest.mark.django_db
def test_replayed_event_id_is_acknowledged_and_changes_nothing_twice(placed, secret):
    payload = event(placed.pk, "delivered")
    assert post(payload, secret=secret).json()["result"] == "applied"
    before = (chain(placed.pk), spends(placed.card), LedgerEntry.objects.count())
    for _ in range(3):
        r = post(payload, secret=secret)  # fresh signature, same event
        assert r.status_code == 200 and r.json() == {"result": "duplicate", "order": placed.pk, "status": "completed"}
    assert (chain(placed.pk), spends(placed.card), LedgerEntry.objects.count()) == before
    assert MerchantEvent.objects.count() == 1


@pytest.mark.django_db
def test_event_id_reused_for_a_different_event_is_409(placed, secret):
    assert post(event(placed.pk, "accepted", event_id="e1"), secret=secret).status_code == 200
    r = post(event(placed.pk, "rejected", event_id="e1", reason="售罄"), secret=secret)
    assert r.status_code == 409 and r.json()["code"] == "event_id_reused"
    assert Order.objects.get(pk=placed.pk).status == "accepted"


@pytest.mark.django_db
def test_unknown_order_unknown_merchant_and_malformed_body(placed, secret):
    r = post(event(placed.pk + 999, "accepted"), secret=secret)
    assert r.status_code == 404 and r.json()["code"] == "unknown_order"
    Order.objects.filter(pk=placed.pk).update(merchant="othermerchant")
    r = post(event(placed.pk, "accepted"), secret=secret)
    assert r.status_code == 404 and r.json()["code"] == "unknown_order"  # not this merchant's order
    Order.objects.filter(pk=placed.pk).update(merchant="sim")
    r = post(event(placed.pk, "accepted"), secret=secret, url="/api/v1/merchants/meituan/events")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = post(None, secret=secret, raw=b"{not json")
    assert r.status_code == 400 and r.json()["code"] == "invalid"
    r = post({"id": "x", "type": "eaten", "order": "7", "occurred_at": "yesterday"}, secret=secret)
    assert r.status_code == 400 and set(r.json()["fields"]) == {"type", "order", "occurred_at"}
    r = post({**event(placed.pk, "accepted"), "occurred_at": "2026-01-01T10:00:00"}, secret=secret)  # no zone
    assert r.status_code == 400 and "occurred_at" in r.json()["fields"]
    assert Order.objects.get(pk=placed.pk).status == "placed"
    assert not MerchantEvent.objects.exists()


@pytest.mark.django_db
def test_events_for_a_final_order_are_acknowledged_and_ignored(placed, secret, campaign):
    assert post(event(placed.pk, "rejected", reason="门店打烊"), secret=secret).json()["status"] == "failed"
    order = Order.objects.get(pk=placed.pk)
    assert order.failure_reason == "门店拒单：门店打烊"
    placed.card.refresh_from_db()
    assert placed.card.status == Voucher.Status.ISSUED and placed.card.order_id is None  # the card is back
    for kind in ("accepted", "dispatched", "delivered"):
        r = post(event(placed.pk, kind), secret=secret)
        assert r.status_code == 200 and r.json() == {"result": "ignored", "order": placed.pk, "status": "failed"}
    assert chain(placed.pk) == ["placed", "failed"]
    assert spends(placed.card) == 0
    assert reconcile(campaign=campaign).ok


@pytest.mark.django_db
def test_out_of_order_delivery_before_acceptance_completes_once(placed, secret, campaign):
    assert post(event(placed.pk, "delivered"), secret=secret).json()["status"] == "completed"
    assert post(event(placed.pk, "accepted"), secret=secret).json()["result"] == "ignored"
    assert post(event(placed.pk, "dispatched"), secret=secret).json()["result"] == "ignored"
    assert chain(placed.pk) == ["placed", "completed"]
    assert spends(placed.card) == 1
    assert reconcile(campaign=campaign).ok


@pytest.mark.django_db(transaction=True)
def test_duplicate_and_out_of_order_events_under_concurrency_one_transition_each(
        catalogue, make_auth_client, campaign, secret):
    """Per order, 12 threads at once: accept x4 (one id), accept with another id, dispatch x3, deliver x3, a
    second delivery id. Whatever the interleaving, each state is entered at most once and the card is spent once."""
    orders = []
    for _ in range(3):
        client = make_auth_client()
        VoucherFactory(user=client.user, campaign=campaign)
        r = client.post("/api/v1/orders/chat", {"text": "一杯伯牙绝弦", "lat": LAT, "lng": LNG}, format="json")
        assert r.status_code == 201, r.content
        orders.append(r.json()["id"])
    calls = []
    for order_id in orders:
        calls += [event(order_id, "accepted")] * 4 + [event(order_id, "accepted", event_id=f"again-{order_id}")]
        calls += [event(order_id, "dispatched")] * 3 + [event(order_id, "delivered")] * 3
        calls += [event(order_id, "delivered", event_id=f"redeliver-{order_id}")]
    results = run_threads(lambda payload: post(payload, secret=secret), len(calls), [(c,) for c in calls])
    assert all(r.ok for r in results), [r.trace for r in results if not r.ok][:1]
    assert {r.value.status_code for r in results} == {200}, [r.value.content for r in results if r.value.status_code != 200]
    for order_id in orders:
        outcomes = [r.value.json()["result"] for r, c in zip(results, calls, strict=True) if c["order"] == order_id]
        assert Order.objects.get(pk=order_id).status == "completed"
        steps = chain(order_id)
        assert len(steps) == len(set(steps)) and steps[0] == "placed" and steps[-1] == "completed"
        applied = outcomes.count("applied")
        assert applied == len(steps) - 1  # one transition per applied event, never two for one event
        assert MerchantEvent.objects.filter(order_id=order_id).count() == 5  # five distinct event ids
        assert outcomes.count("duplicate") == len(outcomes) - 5
        assert LedgerEntry.objects.filter(order_id=order_id, kind="spend").count() == 1
    assert reconcile(campaign=campaign).ok


@pytest.mark.django_db
def test_schema_documents_the_callback_and_its_error_codes(api_client):
    schema = api_client.get("/api/schema/?format=json").json()
    op = schema["paths"]["/api/v1/merchants/{merchant}/events"]["post"]
    text = json.dumps(op["responses"], ensure_ascii=False)
    for code in ("bad_signature", "stale_event", "unknown_order", "event_id_reused", "invalid", "not_found"):
        assert code in text, code
    assert {"200", "400", "401", "404", "409"} <= set(op["responses"])
    assert op.get("security") in ([], [{}]) or "security" not in op or op["security"] == []
    headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
    assert headers == {"X-Miandan-Timestamp", "X-Miandan-Signature"}


@pytest.mark.django_db
def test_metrics_and_dashboard_show_orders_in_flight_and_callback_lag(placed, secret, catalogue, make_auth_client,
                                                                      campaign):
    import datetime as dt

    from django.urls import reverse

    from tests.factories import StaffFactory

    second = make_auth_client()
    VoucherFactory(user=second.user, campaign=campaign)
    r = second.post("/api/v1/orders/chat", {"text": "一杯伯牙绝弦", "lat": LAT, "lng": LNG}, format="json")
    other = r.json()["id"]
    # One order accepted 2 s after the merchant's event happened, the other still placed.
    late = (datetime.now(UTC) - dt.timedelta(seconds=2)).isoformat()
    assert post(event(placed.pk, "accepted", occurred_at=late), secret=secret).json()["status"] == "accepted"
    text = Client().get("/metrics").content.decode()
    assert 'miandan_orders_in_flight{state="accepted"} 1.0' in text
    assert 'miandan_orders_in_flight{state="placed"} 1.0' in text
    assert 'miandan_orders_in_flight{state="delivering"} 0.0' in text
    lag = [line for line in text.splitlines() if line.startswith('miandan_merchant_callback_lag_seconds{quantile="0.5"}')]
    assert lag and 2.0 <= float(lag[0].split()[-1]) < 10, lag
    assert "miandan_orders_oldest_in_flight_seconds" in text

    staff = StaffFactory(username="root-ops", is_superuser=True)
    client = Client()
    client.force_login(staff)
    html = client.get(reverse("admin:campaign_campaign_dashboard", args=[campaign.pk])).content.decode()
    assert '<div class="value" id="md-in-flight">2</div>' in html
    assert "门店已接单" in html and "门店回调延迟" in html
    data = client.get(reverse("admin:campaign_campaign_dashboard_json", args=[campaign.pk])).json()
    assert data["orders_in_flight"] == {"placed": 1, "sent_to_store": 0, "accepted": 1, "delivering": 0}
    assert data["callback_lag"]["events"] == 1 and data["callback_lag"]["p50"] >= 2.0
    assert other
