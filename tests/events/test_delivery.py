"""Delivery to webhook endpoints: signed, at least once, in order per campaign, retried, dead-lettered, replayed."""

import json
import time

import pytest

from events.models import Cursor, DeadLetter, Delivery, Endpoint, Event
from events.services import backoff_seconds, delivery_replay, events_deliver, export_lines, verify
from tests.events.receiver import Receiver
from tests.factories import CampaignFactory, StaffFactory, UserFactory, VoucherFactory

pytestmark = pytest.mark.django_db
SECRET = "test-secret-1234"


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.MIANDAN_EVENTS_BACKOFF_BASE_SECONDS = 0.01
    settings.MIANDAN_EVENTS_BACKOFF_MAX_SECONDS = 0.05
    settings.MIANDAN_EVENTS_HTTP_TIMEOUT = 5


def drain(until, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "delivery did not finish"
        events_deliver(batch=25)
        time.sleep(0.02)


def _cards(campaign, n):
    users = [UserFactory() for _ in range(3)]
    for i in range(n):
        VoucherFactory(campaign=campaign, user=users[i % 3])


def test_a_failing_receiver_gets_every_event_once_in_order_per_campaign():
    one, two = CampaignFactory(), CampaignFactory()
    _cards(one, 12)
    _cards(two, 6)
    ids = list(Event.objects.order_by("id").values_list("pk", flat=True))
    # Fails the first 3 requests, then the first attempt of two events in the middle of the stream.
    with Receiver(secret=SECRET, fail_first=3, fail_once={ids[5], ids[14]}) as receiver:
        Endpoint.objects.create(name="数据平台", url=receiver.url, secret=SECRET)
        drain(lambda: len(receiver.unique()) == len(ids))
        time.sleep(0.1)
        events_deliver()  # nothing left: a further pass sends nothing again
    assert receiver.bad_signatures == 0
    got = receiver.accepted
    assert len(got) == len(ids) == len({d["id"] for d in got})  # every event once (no crash: no duplicates)
    for campaign in (one, two):
        mine = [d for d in got if d["campaign_id"] == campaign.pk]
        expected = list(Event.objects.filter(campaign_id=campaign.pk).order_by("seq").values_list("pk", flat=True))
        assert [d["id"] for d in mine] == expected
        assert [d["seq"] for d in mine] == sorted(d["seq"] for d in mine)
    failed = Delivery.objects.filter(outcome="failed")
    assert failed.count() == 5 and set(failed.values_list("status_code", flat=True)) == {500, 503}
    assert Delivery.objects.filter(outcome="delivered").count() == len(ids)
    assert all(d.latency_ms >= 0 for d in Delivery.objects.all())
    assert set(Cursor.objects.values_list("attempts", flat=True)) == {0}


def test_the_reference_receiver_refuses_a_wrong_signature():
    campaign = CampaignFactory()
    _cards(campaign, 2)
    with Receiver(secret=SECRET) as receiver:
        Endpoint.objects.create(name="错误密钥", url=receiver.url, secret="not-the-receivers-secret")
        events_deliver()
    assert receiver.bad_signatures == 1 and receiver.accepted == []  # stopped at the first event: order kept
    assert Delivery.objects.get().status_code == 401
    cursor = Cursor.objects.get()
    assert cursor.last_seq == 0 and cursor.attempts == 1 and cursor.next_attempt_at > cursor.first_failed_at


def test_the_signature_is_hmac_sha256_over_timestamp_and_body():
    body = b'{"id":1}'
    from events.services import sign

    signature = sign(secret=SECRET, timestamp=1700000000, body=body)
    assert verify(secret=SECRET, timestamp="1700000000", body=body, signature=signature, now=1700000010)
    assert not verify(secret=SECRET, timestamp="1700000000", body=body + b" ", signature=signature, now=1700000010)
    assert not verify(secret=SECRET, timestamp="1700000000", body=body, signature=signature, now=1700009999)


def test_backoff_doubles_up_to_the_cap(settings):
    settings.MIANDAN_EVENTS_BACKOFF_BASE_SECONDS = 10
    settings.MIANDAN_EVENTS_BACKOFF_MAX_SECONDS = 3600
    assert [backoff_seconds(n) for n in (1, 2, 3, 4, 10, 30)] == [10, 20, 40, 80, 3600, 3600]


def test_after_the_retry_window_an_event_is_dead_lettered_and_can_be_replayed(settings):
    settings.MIANDAN_EVENTS_RETRY_SECONDS = 0  # the window is over at the second attempt
    campaign = CampaignFactory()
    _cards(campaign, 3)
    first, *rest = Event.objects.order_by("id")
    with Receiver(secret=SECRET, fail_once={first.pk}) as receiver:
        receiver.fail_once = {first.pk}
        endpoint = Endpoint.objects.create(name="财务", url=receiver.url, secret=SECRET)
        # The first event fails for good: make every attempt at it fail.
        receiver.handle_orig = receiver.handle

        def always_fail_first(headers, body):
            if json.loads(body)["id"] == first.pk:
                return 500
            return receiver.handle_orig(headers, body)

        receiver.handle = always_fail_first
        drain(lambda: len(receiver.unique()) == len(rest))
        assert [d["id"] for d in receiver.unique()] == [e.pk for e in rest]  # the stream moved on, in order
        dead = DeadLetter.objects.get(outcome="dead")
        assert dead.event_id == first.pk and dead.attempt == 2
        # Replay from admin once the receiver is fixed.
        receiver.handle = receiver.handle_orig
        receiver.fail_once = set()
        record = delivery_replay(delivery=dead, actor=StaffFactory())
        assert record.outcome == "replayed"
        dead.refresh_from_db()
        assert dead.replayed_at is not None
        assert receiver.accepted[-1]["id"] == first.pk
    assert Cursor.objects.get(endpoint=endpoint).last_seq == Event.objects.order_by("-seq").first().seq


def test_filters_skip_types_and_campaigns_the_endpoint_did_not_subscribe_to():
    one, two = CampaignFactory(), CampaignFactory()
    from campaign.services import campaign_set_switches

    _cards(one, 2)
    campaign_set_switches(campaign=one, actor=StaffFactory(), orders_enabled=False)
    _cards(two, 2)
    with Receiver(secret=SECRET) as receiver:
        Endpoint.objects.create(name="只要开关", url=receiver.url, secret=SECRET, campaign_ids=[one.pk],
                                event_types=["campaign.switches_changed"])
        drain(lambda: len(receiver.accepted) == 1)
        events_deliver()
    assert [d["type"] for d in receiver.accepted] == ["campaign.switches_changed"]


def test_the_export_is_json_lines_by_campaign_and_time_and_staff_only(client):
    one, two = CampaignFactory(), CampaignFactory()
    _cards(one, 3)
    _cards(two, 2)
    lines = b"".join(export_lines(campaign_id=one.pk, chunk=2)).decode().splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["id"] for d in docs] == list(Event.objects.filter(campaign_id=one.pk).order_by("id")
                                            .values_list("pk", flat=True))
    assert {d["type"] for d in docs} == {"card.issued"} and all(d["campaign_id"] == one.pk for d in docs)
    assert b"".join(export_lines(campaign_id=one.pk, since=Event.objects.latest("id").created_at)) == b""

    url = "/admin/events/event/export.jsonl"
    assert client.get(url, {"campaign": one.pk}).status_code == 302  # to the admin login
    client.force_login(StaffFactory(is_superuser=True))
    response = client.get(url, {"campaign": one.pk, "since": "2000-01-01"})
    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content).decode().splitlines() == lines
    assert client.get(url, {"campaign": "x"}).status_code == 400


def test_export_command_writes_the_same_lines(tmp_path):
    from django.core.management import call_command

    campaign = CampaignFactory()
    _cards(campaign, 2)
    out = tmp_path / "events.jsonl"
    call_command("events_export", "--campaign", str(campaign.pk), "--since", "2000-01-01", "--out", str(out))
    assert out.read_bytes() == b"".join(export_lines(campaign_id=campaign.pk))
    assert len(out.read_bytes().splitlines()) == 2


def test_the_beat_task_runs_one_pass():
    from events.tasks import events_deliver_task

    campaign = CampaignFactory()
    _cards(campaign, 1)
    assert events_deliver_task()["sequenced"] == 1
    assert Event.objects.get().seq == 1
