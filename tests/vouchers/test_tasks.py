"""Beat tasks: expiry in batches returns reservations; idempotency records are purged after 24 h."""

import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from miandan.api.models import IdempotencyRecord
from tests.factories import CampaignFactory, UserFactory
from vouchers.models import Voucher
from vouchers.selectors import reconcile
from vouchers.services import voucher_issue
from vouchers.tasks import idempotency_records_purge, vouchers_expire

pytestmark = pytest.mark.django_db


def test_tasks_are_registered_with_project_defaults_and_scheduled():
    for task in (vouchers_expire, idempotency_records_purge):
        assert task.acks_late is True and task.max_retries >= 1 and task.time_limit
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"vouchers.expire_batch", "api.idempotency_purge"} <= scheduled


def test_expiry_task_runs_in_batches_until_done():
    campaign = CampaignFactory()
    users = [UserFactory() for _ in range(7)]
    cards = [voucher_issue(user=u, campaign=campaign, source=Voucher.Source.REFERRAL_INVITEE) for u in users]
    Voucher.objects.filter(pk__in=[c.pk for c in cards[:5]]).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    assert vouchers_expire.apply(kwargs={"batch_size": 2}).get() == 5
    assert Voucher.objects.filter(status="expired").count() == 5
    assert vouchers_expire.apply(kwargs={"batch_size": 2}).get() == 0  # running again changes nothing
    report = reconcile(campaign=campaign)
    assert report.ok and report.totals["reserved"] == 50


def test_expiry_task_bounds_its_work():
    campaign = CampaignFactory()
    cards = [voucher_issue(user=UserFactory(), campaign=campaign, source=Voucher.Source.STAFF, reason="t")
             for _ in range(5)]
    Voucher.objects.filter(pk__in=[c.pk for c in cards]).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    assert vouchers_expire.apply(kwargs={"batch_size": 2, "max_batches": 1}).get() == 2


def test_idempotency_purge_deletes_only_old_records(user):
    old = IdempotencyRecord.objects.create(user=user, scope="POST /x", key="old", fingerprint="f", status_code=201)
    IdempotencyRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(hours=25))
    IdempotencyRecord.objects.create(user=user, scope="POST /x", key="new", fingerprint="f", status_code=201)
    assert idempotency_records_purge.apply().get() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
