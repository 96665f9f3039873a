"""Support report of likely bot farms in one campaign: devices and networks behind many accepted invites.

    manage.py suspicious_clusters spring-tea [--min 5] [--hours 24]

Lists (1) devices whose accepts span at least --min invitee accounts, (2) /24 (IPv4) or /48 (IPv6) networks
with at least --min accepts in the last --hours, (3) devices at their welcome-card or reward cap. Each line
says how many of those referrals wait in the review queue, so support knows where to look first.
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from campaign.models import Campaign
from referrals.models import Referral
from vouchers.models import DeviceClaim


class Command(BaseCommand):
    help = "List devices and networks behind many invite accepts in a campaign (possible bot farms)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--min", type=int, default=5, help="smallest cluster shown (accounts or accepts)")
        parser.add_argument("--hours", type=int, default=24, help="window of the network counts")

    def handle(self, *args, slug: str, min: int, hours: int, **options):
        campaign = Campaign.objects.filter(slug=slug).first()
        if campaign is None:
            raise CommandError(f"no campaign {slug!r}")
        since = timezone.now() - dt.timedelta(hours=hours)
        held = Q(status=Referral.Status.UNDER_REVIEW)
        w = self.stdout.write
        w(f"Suspicious clusters in {campaign.slug} (at least {min}; networks over the last {hours} h)")
        w("\n[devices] device_id  accounts  under_review")
        devices = (Referral.objects.filter(campaign=campaign).exclude(device_id="").values("device_id")
                   .annotate(accounts=Count("invitee", distinct=True), held=Count("id", filter=held))
                   .filter(accounts__gte=min).order_by("-accounts")[:100])
        for row in devices:
            w(f"  {row['device_id']}  {row['accounts']}  {row['held']}")
        w("\n[networks] subnet  accepts  under_review")
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute(
                    "SELECT network(set_masklen(ip, CASE WHEN family(ip) = 4 THEN 24 ELSE 48 END)) AS net, count(*), "
                    "count(*) FILTER (WHERE status = %s) FROM referrals_referral "
                    "WHERE campaign_id = %s AND ip IS NOT NULL AND created_at >= %s "
                    "GROUP BY net HAVING count(*) >= %s ORDER BY count(*) DESC LIMIT 100",
                    [Referral.Status.UNDER_REVIEW, campaign.pk, since, min])
                for net, accepts, waiting in cur.fetchall():
                    w(f"  {net}  {accepts}  {waiting}")
        else:
            w("  (PostgreSQL only)")
        w("\n[device caps reached] device_id  kind  count")
        caps = {DeviceClaim.Kind.WELCOME: campaign.device_welcome_cap, DeviceClaim.Kind.REFERRAL: campaign.device_reward_cap}
        for claim in DeviceClaim.objects.filter(campaign=campaign).order_by("-count")[:500]:
            cap = caps.get(claim.kind) or 0
            if cap and claim.count >= cap:
                w(f"  {claim.device_id}  {claim.kind}  {claim.count}")
