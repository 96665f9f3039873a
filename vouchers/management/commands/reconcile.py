from django.core.management.base import BaseCommand, CommandError

from campaign.models import Campaign
from vouchers.selectors import reconcile


class Command(BaseCommand):
    help = "Prove ledger sums == budget bucket counters == card states for a campaign (exit 1 on any difference)."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="campaign slug, e.g. spring-tea")

    def handle(self, *args, slug: str, **options):
        campaign = Campaign.objects.filter(slug=slug).first()
        if campaign is None:
            raise CommandError(f"活动不存在：{slug}")
        report = reconcile(campaign=campaign)
        if report.as_of is not None:
            self.stdout.write(f"{'snapshot':>16}: {report.as_of.isoformat()} (one read-only REPEATABLE READ transaction)")
        for name, value in report.totals.items():
            self.stdout.write(f"{name:>16}: {value}")
        if report.ok:
            self.stdout.write(self.style.SUCCESS(f"PASS {slug}: ledger == buckets == cards"))
            return
        for line in report.differences:
            self.stderr.write(line)
        raise CommandError(f"FAIL {slug}: {len(report.differences)} difference(s)")
