import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from campaign.models import AuditLog
from referrals.models import Referral
from referrals.services import invite_code_get_or_create, referral_accept
from tests.factories import StaffFactory, UserFactory
from tests.referrals.conftest import relax
from vouchers.models import Voucher
from vouchers.selectors import reconcile

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/referrals/referral/"
QUEUE = "/admin/referrals/pendingreferral/"


def accept(invitee, inviter, campaign, **kwargs):
    code = invite_code_get_or_create(user=inviter, campaign=campaign).code
    return referral_accept(user=invitee, campaign=campaign, code=code, **kwargs)


def staff_client(*perms, superuser=False):
    staff = StaffFactory(is_superuser=superuser)
    for codename in perms:
        staff.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="referrals"))
    client = Client()
    client.force_login(staff)
    client.staff = staff
    return client


@pytest.fixture
def held(campaign):
    """One accepted referral and three held ones (same device)."""
    relax(campaign, referral_device_max_accounts=1)
    accept(UserFactory(), UserFactory(), campaign, device_id="farm")
    return [accept(UserFactory(), UserFactory(), campaign, device_id="farm") for _ in range(3)]


def test_lists_filters_search_and_queue(campaign, held):
    client = staff_client("view_referral", "view_invitecode")
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert "审核队列" in page.content.decode() and "邀请排行榜" in page.content.decode()
    filtered = client.get(CHANGELIST, {"status__exact": "under_review"})
    assert filtered.context["cl"].result_count == 3
    phone = held[0].invitee.phone
    assert client.get(CHANGELIST, {"q": phone}).context["cl"].result_count == 1
    code = held[0].invite_code.code
    assert client.get(CHANGELIST, {"q": code}).context["cl"].result_count == 1
    queue = client.get(QUEUE)
    assert queue.status_code == 200
    assert {r.pk for r in queue.context["cl"].result_list} == {r.pk for r in held}
    assert "同一设备" in queue.content.decode()
    assert client.get("/admin/referrals/invitecode/").status_code == 200
    assert client.get(f"{CHANGELIST}{held[0].pk}/change/").status_code == 200
    # A viewer without the review permission is offered no review actions.
    assert "approve_selected" not in queue.content.decode()


def test_bulk_approve_asks_why_then_issues_cards(campaign, held):
    client = staff_client("view_referral", "review_referral")
    ids = [str(r.pk) for r in held[:2]]
    confirm = client.post(QUEUE, {"action": "approve_selected", "_selected_action": ids})
    assert confirm.status_code == 200 and "审核说明" in confirm.content.decode()
    no_note = client.post(QUEUE, {"action": "approve_selected", "_selected_action": ids, "confirm": "yes", "note": " "})
    assert no_note.status_code == 200 and "请填写审核说明" in no_note.content.decode()
    assert Referral.objects.filter(status="under_review").count() == 3

    done = client.post(QUEUE, {"action": "approve_selected", "_selected_action": ids, "confirm": "yes",
                               "note": "电话回访确认是真人"})
    assert done.status_code == 302
    approved = Referral.objects.filter(pk__in=ids)
    assert set(approved.values_list("status", "inviter_outcome", "invitee_outcome")) == {("accepted", "issued", "issued")}
    assert set(approved.values_list("reviewed_by", flat=True)) == {client.staff.pk}
    assert AuditLog.objects.filter(action="referral.approve", reason="电话回访确认是真人").count() == 2
    assert Voucher.objects.filter(campaign=campaign).count() == 2 + 4
    assert reconcile(campaign=campaign).ok


def test_bulk_reject(campaign, held):
    client = staff_client("view_referral", "review_referral")
    ids = [str(r.pk) for r in held]
    response = client.post(QUEUE, {"action": "reject_selected", "_selected_action": ids, "confirm": "yes",
                                   "note": "设备农场"})
    assert response.status_code == 302
    assert set(Referral.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"rejected"}
    assert AuditLog.objects.filter(action="referral.reject").count() == 3
    assert Voucher.objects.filter(campaign=campaign).count() == 2


def test_review_actions_need_the_permission(campaign, held):
    client = staff_client("view_referral")
    client.post(QUEUE, {"action": "approve_selected", "_selected_action": [held[0].pk], "confirm": "yes", "note": "x"})
    assert Referral.objects.filter(status="under_review").count() == 3
    assert not AuditLog.objects.filter(action__startswith="referral.").exists()


def test_chain_and_top_inviters(campaign):
    a, b, c, d = (UserFactory() for _ in range(4))
    accept(b, a, campaign)
    accept(c, b, campaign)
    accept(d, b, campaign)
    client = staff_client(superuser=True)
    page = client.get(f"{CHANGELIST}chain/{b.pk}/", {"campaign": campaign.pk})
    html = page.content.decode()
    assert page.status_code == 200
    masked = [f"{u.phone[:3]}****{u.phone[-4:]}" for u in (a, c, d)]
    assert all(m in html for m in masked) and not any(u.phone in html for u in (a, b, c, d))
    assert page.context["chains"][0].subtree_size == 2
    root = client.get(f"{CHANGELIST}chain/{a.pk}/")
    assert root.context["chains"][0].subtree_size == 3
    assert "是链条起点" in root.content.decode()
    top = client.get(f"{CHANGELIST}top-inviters/", {"campaign": campaign.pk})
    assert top.status_code == 200
    assert [(row["inviter"], row["total"]) for row in top.context["rows"]] == [(b, 2), (a, 1)]
    outsider = staff_client()
    assert outsider.get(f"{CHANGELIST}chain/{b.pk}/").status_code == 403


def test_invite_code_list_counts_invitees(campaign):
    inviter = UserFactory()
    accept(UserFactory(), inviter, campaign)
    accept(UserFactory(), inviter, campaign)
    invite_code_get_or_create(user=UserFactory(), campaign=campaign)
    page = staff_client("view_invitecode").get("/admin/referrals/invitecode/", {"o": "-3"})  # by invitees, desc
    assert page.status_code == 200
    assert [code._invitees for code in page.context["cl"].result_list] == [2, 0]


def test_review_detail_has_approve_and_reject_masks_phones_and_hides_internal_paths(held):
    referral = held[0]
    url = f"{CHANGELIST}{referral.pk}/change/"
    reviewer = staff_client("view_referral", "review_referral")
    html = reviewer.get(url).content.decode()
    assert 'id="approve"' in html and 'id="reject"' in html
    for user in (referral.inviter, referral.invitee):
        assert user.phone not in html and f"{user.phone[:3]}****{user.phone[-4:]}" in html
    assert f"readonly\">{referral.path}" not in html and "邀请链" in html and "第 1 层" in html
    # The button leads to the confirm-with-a-note page, then decides.
    confirm = reviewer.post(CHANGELIST, {"action": "approve_selected", "_selected_action": [referral.pk], "index": "0"})
    assert confirm.status_code == 200 and "审核说明" in confirm.content.decode()
    assert referral.invitee.phone not in confirm.content.decode()
    reviewer.post(CHANGELIST, {"action": "approve_selected", "_selected_action": [referral.pk], "index": "0",
                               "confirm": "yes", "note": "同一家人，放行"})
    referral.refresh_from_db()
    assert referral.status == "accepted"
    assert 'id="approve"' not in reviewer.get(url).content.decode()  # decided: no buttons any more
    # Someone who may look but not review never sees the buttons.
    assert 'id="approve"' not in staff_client("view_referral").get(f"{CHANGELIST}{held[1].pk}/change/").content.decode()
