"""Demo data: the live "春节请你喝奶茶" campaign, the tea catalogue, staff and app users.

Idempotent by construction: every row is looked up by its natural key first, the campaign's
budget is created once (through `campaign_create`, so its buckets and opening ledger exist),
and demo cards come from `campaign_join`, which hands back the same welcome card on a repeat.
A second run changes no row counts and writes no ledger entries (passwords are re-set).
"""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from campaign.gate import campaign_is_live
from campaign.models import Campaign
from campaign.services import CampaignSpec, campaign_create
from demo.catalog import catalog_load
from miandan.api.errors import DomainError
from vouchers.services import campaign_join

SLUG = "spring-tea"
NAME = "春节请你喝奶茶"
BUDGET = Decimal("3000000000.00")
STAFF = {
    "marketing": ("marketing", "市场"),
    "finance": ("finance", "财务"),
    "support": ("support", "客服"),
}
DEMO_USERS = 20
DEMO_USERS_WITH_CARD = 10  # the other ten have not joined yet, so staff can watch them join
DEMO_APP_VERSION = "1.2.0"


def demo_phone(i: int) -> str:
    return f"1380000{i:04d}"


class Command(BaseCommand):
    help = "Create the demo campaign `spring-tea`, its brands/stores, staff users and demo app users (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--staff-password", default="miandan-demo",
            help="password for the staff users marketing/finance/support (default miandan-demo)",
        )
        parser.add_argument(
            "--admin-password", default=None,
            help="create (or reset) the superuser `admin` with this password; without it (or "
                 "MIANDAN_DEMO_ADMIN_PASSWORD in the environment) no superuser is made: a known superuser "
                 "password must always be a deliberate choice. `make demo` passes miandan-demo and prints it.",
        )

    def handle(self, *args, staff_password: str, admin_password: str | None = None, **options):
        if not staff_password:
            raise CommandError("--staff-password must not be empty")
        admin_password = admin_password if admin_password is not None else os.environ.get("MIANDAN_DEMO_ADMIN_PASSWORD")
        if admin_password is not None and not admin_password:
            raise CommandError("--admin-password must not be empty")
        campaign = self._campaign()
        self._catalogue()
        self._staff(staff_password, admin_password)
        self._app_users(campaign)
        self.stdout.write(self.style.SUCCESS(f"seed_demo: done (campaign {campaign.slug}: {campaign.name})"))

    def _campaign(self) -> Campaign:
        existing = Campaign.objects.filter(slug=SLUG).first()
        if existing is not None:
            self.stdout.write(f"campaign: {SLUG} already exists ({existing.get_status_display()}), left as it is")
            if not campaign_is_live(existing):
                self.stdout.write(self.style.WARNING(f"campaign: {SLUG} is not live right now"))
            return existing
        now = timezone.now()
        campaign = campaign_create(spec=CampaignSpec(
            slug=SLUG, name=NAME, total_budget=BUDGET, starts_at=now - dt.timedelta(days=1),
            ends_at=now + dt.timedelta(days=60), face_value=Decimal("25.00"), card_cap=21, min_app_version="1.0.0",
            status=Campaign.Status.LIVE,
        ))
        self.stdout.write(f"campaign: created {SLUG} ({NAME}), budget {BUDGET}, face 25.00, cap 21, "
                          f"{campaign.bucket_count} buckets")
        return campaign

    def _catalogue(self) -> None:
        created = catalog_load()
        self.stdout.write(
            f"catalogue: {created['brands']} brands, {created['products']} products, {created['stores']} stores created"
        )

    @transaction.atomic
    def _staff(self, password: str, admin_password: str | None) -> None:
        made = 0
        for username, (group_name, label) in STAFF.items():
            group = Group.objects.filter(name=group_name).first()
            if group is None:
                raise CommandError(f"group {group_name!r} is missing: run `manage.py migrate` first")
            user, created = User.objects.get_or_create(username=username, defaults={"first_name": label})
            user.is_staff = True
            user.is_active = True
            user.set_password(password)
            user.save()
            user.groups.add(group)
            made += created
        names = "marketing, finance, support"
        if admin_password is not None:
            admin, created = User.objects.get_or_create(username="admin", defaults={"first_name": "管理员"})
            admin.is_staff = admin.is_superuser = admin.is_active = True
            admin.set_password(admin_password)
            admin.save()
            made += created
            names += ", admin"
        else:
            self.stdout.write("superuser: none made (pass --admin-password or set MIANDAN_DEMO_ADMIN_PASSWORD)")
        self.stdout.write(f"staff: {names} ready ({made} created; passwords set)")

    def _app_users(self, campaign: Campaign) -> None:
        made = cards = 0
        for i in range(1, DEMO_USERS + 1):
            phone = demo_phone(i)
            user, created = User.objects.get_or_create(
                phone=phone, defaults={"username": phone, "joined_app_version": DEMO_APP_VERSION}
            )
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
                made += 1
            if i <= DEMO_USERS_WITH_CARD and campaign_is_live(campaign):
                # A repeat join returns the existing welcome card: no second reservation, no new ledger row.
                try:
                    _, issued = campaign_join(user=user, campaign=campaign, app_version=DEMO_APP_VERSION)
                except DomainError as exc:  # e.g. claims paused by staff, budget used up
                    self.stdout.write(self.style.WARNING(f"app users: no card for {phone}: {exc.detail}"))
                    continue
                cards += issued
        self.stdout.write(
            f"app users: {DEMO_USERS} demo phones {demo_phone(1)}..{demo_phone(DEMO_USERS)} "
            f"({made} created, {cards} welcome cards issued)"
        )
