"""Campaign and card endpoints: rules, filters, pagination, 404 for other people's cards, join refusals."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from campaign.models import Campaign, LedgerEntry
from campaign.selectors import campaign_cache_clear
from tests.factories import CampaignFactory, UserFactory
from vouchers.api import VoucherOutput
from vouchers.models import Voucher
from vouchers.services import voucher_issue

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_off")]


@pytest.fixture(autouse=True)
def _fresh_campaign_cache():
    campaign_cache_clear()
    yield
    campaign_cache_clear()


def join(client, campaign, version="1.0.0"):
    return client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": version}, format="json")


def counts():
    return Voucher.objects.count(), LedgerEntry.objects.count()


def test_campaign_list_and_detail(auth_client):
    live = CampaignFactory(total_budget=Decimal("50.00"), bucket_count=2)
    CampaignFactory(status=Campaign.Status.DRAFT)
    listed = auth_client.get("/api/v1/campaigns/").json()
    assert [c["slug"] for c in listed] == [live.slug]
    assert auth_client.get(f"/api/v1/campaigns/{Campaign.objects.get(status='draft').slug}/").status_code == 404
    detail = auth_client.get(f"/api/v1/campaigns/{live.slug}/").json()
    assert detail["face_value"] == "25.00" and detail["card_cap"] == 21 and detail["has_budget"] is True
    assert detail["min_app_version"] == "1.0.0" and detail["is_live"] is True
    voucher_issue(user=UserFactory(), campaign=live, source=Voucher.Source.REFERRAL_INVITEE)
    voucher_issue(user=UserFactory(), campaign=live, source=Voucher.Source.REFERRAL_INVITEE)
    assert auth_client.get(f"/api/v1/campaigns/{live.slug}/").json()["has_budget"] is False


def test_vouchers_list_filters_and_paginates(auth_client):
    mine = auth_client.user
    a, b = CampaignFactory(), CampaignFactory()
    for _ in range(3):
        voucher_issue(user=mine, campaign=a, source=Voucher.Source.REFERRAL_INVITEE)
    voucher_issue(user=mine, campaign=b, source=Voucher.Source.REFERRAL_INVITEE)
    voucher_issue(user=UserFactory(), campaign=a, source=Voucher.Source.REFERRAL_INVITEE)
    Voucher.objects.filter(user=mine, campaign=a, slot=3).update(status="void")
    page = auth_client.get("/api/v1/vouchers/?page_size=2").json()
    assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]
    assert auth_client.get(f"/api/v1/vouchers/?campaign={a.slug}").json()["count"] == 3
    issued = auth_client.get(f"/api/v1/vouchers/?campaign={a.slug}&status=issued").json()
    assert issued["count"] == 2
    card = issued["results"][0]
    assert card["face_value"] == "25.00" and card["campaign"] == a.slug and card["status"] == "issued"


def test_the_card_list_is_voucher_output_byte_for_byte(auth_client):
    """The list renders plain rows (issue 14); each card must read exactly as VoucherOutput renders the model."""
    mine = auth_client.user
    a, b = CampaignFactory(), CampaignFactory()
    cards = [voucher_issue(user=mine, campaign=a, source=Voucher.Source.REFERRAL_INVITEE) for _ in range(4)]
    cards.append(voucher_issue(user=mine, campaign=b, source=Voucher.Source.STAFF, reason="测试发卡"))
    Voucher.objects.filter(pk=cards[1].pk).update(status="locked", order_id=9001)
    Voucher.objects.filter(pk=cards[2].pk).update(status="redeemed", order_id=9002, subsidy=Decimal("12.5"))
    Voucher.objects.filter(pk=cards[3].pk).update(status="void", expires_at=dt.datetime(2030, 1, 1, 0, 0, 0, 123456,
                                                                                       tzinfo=dt.UTC))
    expected = [VoucherOutput(v).data for v in Voucher.objects.filter(user=mine).select_related("campaign")
                .order_by("expires_at", "id")]
    for query in ("", "?page_size=2", "?page_size=2&page=2", "?page_size=2&page=3"):
        response = auth_client.get(f"/api/v1/vouchers/{query}")
        assert response.status_code == 200
        body = response.json()
        first = (int(query.rsplit("page=", 1)[1]) - 1) * 2 if "&page=" in query else 0
        assert body["results"] == expected[first:first + (2 if query else 20)], query
        assert list(body["results"][0]) == list(expected[0])  # the same keys in the same order
    redeemed = next(c for c in expected if c["status"] == "redeemed")
    assert redeemed["subsidy"] == "12.50" and redeemed["order_id"] == 9002 and redeemed["status_display"] == "已使用"
    assert any(c["expires_at"] == "2030-01-01T08:00:00.123456+08:00" for c in expected)
    filtered = auth_client.get(f"/api/v1/vouchers/?campaign={b.slug}&status=issued").json()
    assert filtered["count"] == 1 and filtered["results"] == [c for c in expected if c["campaign"] == b.slug]


def test_the_card_list_reads_one_table_and_names_campaigns_from_the_process_copy(auth_client, monkeypatch):
    """Issue 14: the list statement joins no campaign table; the slug comes from a copy at most CACHE_SECONDS old."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import campaign.selectors as campaign_selectors

    a = CampaignFactory()
    voucher_issue(user=auth_client.user, campaign=a, source=Voucher.Source.REFERRAL_INVITEE)
    with CaptureQueriesContext(connection) as first:
        assert [c["campaign"] for c in auth_client.get("/api/v1/vouchers/").json()["results"]] == [a.slug]
    listed = [q["sql"] for q in first.captured_queries if "vouchers_voucher" in q["sql"]]
    assert listed and not any("campaign_campaign" in sql for sql in listed)
    with CaptureQueriesContext(connection) as again:
        auth_client.get("/api/v1/vouchers/")
    assert not any("campaign_campaign" in q["sql"] for q in again.captured_queries)  # the copy answered
    Campaign.objects.filter(pk=a.pk).update(slug="renamed-tea")
    monkeypatch.setattr(campaign_selectors, "CACHE_SECONDS", 0.0)  # the copy has aged past its window
    assert [c["campaign"] for c in auth_client.get("/api/v1/vouchers/").json()["results"]] == ["renamed-tea"]
    assert auth_client.get("/api/v1/vouchers/?campaign=renamed-tea").json()["count"] == 1
    assert auth_client.get("/api/v1/vouchers/?campaign=no-such-campaign").json() == {
        "count": 0, "next": None, "previous": None, "results": []}


def test_the_card_list_formats_times_as_drf_does_in_any_current_time_zone(auth_client):
    """The list looks the time zone up once per request (issue 14); it must still follow the active zone."""
    campaign = CampaignFactory()
    card = voucher_issue(user=auth_client.user, campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    Voucher.objects.filter(pk=card.pk).update(expires_at=dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC))
    for zone in ("UTC", "Asia/Shanghai", "America/New_York"):
        with timezone.override(zone):
            expected = [VoucherOutput(v).data for v in Voucher.objects.filter(user=auth_client.user)
                        .select_related("campaign")]
            assert auth_client.get("/api/v1/vouchers/").json()["results"] == expected, zone
    with timezone.override("UTC"):
        assert auth_client.get("/api/v1/vouchers/").json()["results"][0]["expires_at"] == "2031-05-06T07:08:09Z"


def test_the_card_list_builds_no_model_instances(auth_client):
    """Issue 14: the ORM's query compilation and one model per card cost more than the query itself."""
    from django.db.models.signals import post_init

    for _ in range(3):
        voucher_issue(user=auth_client.user, campaign=CampaignFactory(), source=Voucher.Source.REFERRAL_INVITEE)
    built = []

    def count(sender, **kwargs):
        built.append(sender)

    post_init.connect(count, sender=Voucher, weak=False)
    try:
        body = auth_client.get("/api/v1/vouchers/").json()
    finally:
        post_init.disconnect(count, sender=Voucher)
    assert body["count"] == 3 and built == []


def test_the_plain_card_list_builds_no_filter_serializer_and_bad_filters_are_still_400(auth_client, monkeypatch):
    from vouchers.api import VoucherListApi

    voucher_issue(user=auth_client.user, campaign=CampaignFactory(), source=Voucher.Source.REFERRAL_INVITEE)
    made = []
    real = VoucherListApi.FilterSerializer.__init__

    def counting(self, *args, **kwargs):
        made.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(VoucherListApi.FilterSerializer, "__init__", counting)
    assert auth_client.get("/api/v1/vouchers/?page_size=5").json()["count"] == 1
    assert made == []
    bad = auth_client.get("/api/v1/vouchers/?status=nope")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid" and made == [1]
    assert auth_client.get("/api/v1/vouchers/?campaign=a%20b").status_code == 400


def test_someone_elses_card_is_404_and_nothing_changes(auth_client, campaign):
    theirs = voucher_issue(user=UserFactory(), campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    mine = voucher_issue(user=auth_client.user, campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    before = counts()
    response = auth_client.get(f"/api/v1/vouchers/{theirs.code}/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert auth_client.get(f"/api/v1/vouchers/{'X' * 200}/").status_code == 404
    assert auth_client.get(f"/api/v1/vouchers/{mine.code.lower()}/").json()["code"] == mine.code
    assert counts() == before


def test_join_refusals(make_auth_client):
    client = make_auth_client()
    before = counts()
    not_started = CampaignFactory(starts_at=timezone.now() + dt.timedelta(hours=1),
                                  ends_at=timezone.now() + dt.timedelta(days=1))
    ended = CampaignFactory(starts_at=timezone.now() - dt.timedelta(days=2),
                            ends_at=timezone.now() - dt.timedelta(days=1))
    draft = CampaignFactory(status=Campaign.Status.DRAFT)
    for campaign in (not_started, ended):
        response = join(client, campaign)
        assert response.status_code == 409 and response.json()["code"] == "campaign_not_live"
    response = join(client, draft)  # a draft is not announced: it does not exist (issue 16)
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    upgrade = join(client, CampaignFactory(min_app_version="2.10.0"), "2.9.99")
    assert upgrade.status_code == 403 and upgrade.json()["code"] == "app_upgrade_required"
    assert upgrade.json()["min_app_version"] == "2.10.0"
    assert counts()[0] == before[0]


def test_join_at_the_cap_without_welcome_card(make_auth_client):
    client = make_auth_client()
    campaign = CampaignFactory(card_cap=2)
    for _ in range(2):
        voucher_issue(user=client.user, campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE)
    for _ in range(2):  # the second answer comes from the Redis fast path
        response = join(client, campaign)
        assert response.status_code == 409 and response.json()["code"] == "card_limit_reached"
    assert Voucher.objects.filter(user=client.user).count() == 2


def test_join_records_app_version_once(auth_client, campaign):
    assert join(auth_client, campaign, "1.4.2").status_code == 201
    auth_client.user.refresh_from_db()
    assert auth_client.user.joined_app_version == "1.4.2"
    assert join(auth_client, CampaignFactory(), "3.0.0").status_code == 201
    auth_client.user.refresh_from_db()
    assert auth_client.user.joined_app_version == "1.4.2"


def test_me(auth_client):
    body = auth_client.get("/api/v1/me").json()
    assert body["id"] == auth_client.user.pk and body["phone"] == auth_client.user.phone


def test_the_join_answers_voucher_output_byte_for_byte(auth_client):
    """The join renders its card with the list's code (issue 14): the same keys, order and values as VoucherOutput."""
    campaign = CampaignFactory()
    first = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
    again = auth_client.post(f"/api/v1/campaigns/{campaign.slug}/join", {"app_version": "1.0.0"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    card = Voucher.objects.select_related("campaign").get(code=first.json()["code"])
    expected = VoucherOutput(card).data
    for answer in (first, again):
        assert answer.json() == expected
        assert list(answer.json()) == list(expected)


@pytest.mark.parametrize("body", [
    {"app_version": "1.0.0"}, {"app_version": "  1.2.3 "}, {"app_version": "1" * 32}, {"app_version": " " + "1" * 32},
    {"app_version": "1" * 33}, {"app_version": ""}, {"app_version": "   "}, {"app_version": 123},
    {"app_version": None}, {"app_version": ["1.0.0"]}, {}, {"app_version": "1.0\x00"}, {"app_version": "１.０"},
    {"app_version": "1.0.0\n"}, {"app_version": "abc"}, ["1.0.0"],
], ids=repr)
def test_the_join_reads_its_input_as_its_serializer_does(make_auth_client, body):
    """The join takes a plain version without building its serializer (issue 14): every answer must be the one
    the serializer gives (status, code, fields), the fast path's inputs included."""
    from vouchers.api import CampaignJoinApi

    campaign = CampaignFactory()
    answer = make_auth_client().post(f"/api/v1/campaigns/{campaign.slug}/join", body, format="json")
    serializer = CampaignJoinApi.InputSerializer(data=body)
    if not serializer.is_valid():
        assert answer.status_code == 400 and answer.json()["code"] == "invalid"
        assert answer.json()["fields"] == {k: [str(e) for e in v] for k, v in serializer.errors.items()} or \
            "non_field_errors" in serializer.errors
        return
    version = serializer.validated_data["app_version"]
    from vouchers.services import parse_app_version

    try:
        parse_app_version(version)
    except Exception:
        assert answer.status_code == 400 and answer.json()["code"] == "invalid"
        return
    assert answer.status_code == 201, answer.json()
    from accounts.models import User

    assert User.objects.get(pk=answer.wsgi_request.user.pk).joined_app_version == version[:32]
