"""Create a campaign from the command line (tooling contract in api.md)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug
from django.db import IntegrityError
from django.utils import timezone

from campaign.errors import InvalidCampaign
from campaign.models import MONEY, Campaign
from campaign.services import CampaignSpec, campaign_create

# The largest amount a MONEY column holds; bigger values would fail in the database, not here.
MAX_MONEY = Decimal(10) ** (MONEY["max_digits"] - MONEY["decimal_places"]) - Decimal("0.01")


def money(name: str, raw: str) -> Decimal:
    try:
        value = Decimal(raw.strip())
    except (InvalidOperation, AttributeError) as exc:
        raise CommandError(f"--{name}: {raw!r} is not an amount (e.g. 250.00)") from exc
    if not value.is_finite():
        raise CommandError(f"--{name}: {raw!r} is not an amount (e.g. 250.00)")
    if value > MAX_MONEY:
        raise CommandError(f"--{name}: {raw} is larger than the maximum {MAX_MONEY}")
    return value


class Command(BaseCommand):
    help = "Create a campaign (draft, or live for 30 days with --live) with its budget buckets; prints the slug."

    def add_arguments(self, parser):
        parser.add_argument("--slug", required=True, help="URL identifier, e.g. spring-tea")
        parser.add_argument("--name", required=True, help="display name, e.g. 春节请你喝奶茶")
        parser.add_argument("--budget", required=True, help="total budget in yuan, e.g. 250.00")
        parser.add_argument("--face", default="25.00", help="card face value in yuan (default 25.00)")
        parser.add_argument("--cap", type=int, default=21, help="cards per user, 1..100 (default 21)")
        parser.add_argument("--min-app-version", default="1.0.0", help="oldest app version that may join (default 1.0.0)")
        parser.add_argument("--buckets", type=int, default=None,
                            help="budget buckets, 1..1024 (default MIANDAN_BUDGET_BUCKETS, 64)")
        parser.add_argument("--live", action="store_true", help="status live, from now for 30 days (default: draft)")

    def handle(self, *args, slug, name, budget, face, cap, min_app_version, buckets, live, **options):
        slug = slug.strip()
        try:
            validate_slug(slug)
        except ValidationError as exc:
            raise CommandError(f"--slug: {slug!r} may only contain letters, digits, '-' and '_'") from exc
        if len(slug) > Campaign._meta.get_field("slug").max_length:
            raise CommandError("--slug: at most 64 characters")
        name = name.strip()
        if not name or len(name) > Campaign._meta.get_field("name").max_length:
            raise CommandError("--name: must be 1 to 128 characters")
        now = timezone.now()
        spec = CampaignSpec(
            slug=slug, name=name, total_budget=money("budget", budget), face_value=money("face", face),
            card_cap=cap, min_app_version=min_app_version.strip(), bucket_count=buckets,
            starts_at=now, ends_at=now + dt.timedelta(days=30),
            status=Campaign.Status.LIVE if live else Campaign.Status.DRAFT,
        )
        try:
            campaign = campaign_create(spec=spec)
        except InvalidCampaign as exc:
            fields = exc.extra.get("fields") or {}
            detail = "; ".join(f"{k}: {v}" for k, v in fields.items()) or str(exc.detail)
            raise CommandError(f"invalid campaign: {detail}") from exc
        except IntegrityError as exc:  # a concurrent create took the slug between the check and the insert
            raise CommandError(f"could not create campaign {slug!r}: {exc}") from exc
        self.stdout.write(campaign.slug)
