"""The event stream as JSON Lines for finance / data teams (docs/events.md), streamed in constant memory."""

import sys
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from events.services import export_lines

SHANGHAI = ZoneInfo("Asia/Shanghai")  # dates without a zone are Beijing time, like the reports


def parse_when(value: str | None):
    if not value:
        return None
    when = parse_datetime(value) or parse_datetime(value + "T00:00:00")
    if when is None:
        raise ValueError(f"not a date/time: {value!r} (use 2026-11-30 or 2026-11-30T12:00:00+08:00)")
    return when if when.tzinfo else when.replace(tzinfo=SHANGHAI)


class Command(BaseCommand):
    help = "导出事件流（JSON Lines），可按活动和时间段"

    def add_arguments(self, parser):
        parser.add_argument("--campaign", type=int, help="campaign id")
        parser.add_argument("--since", help="from (inclusive), e.g. 2026-11-30 or 2026-11-30T12:00:00+08:00")
        parser.add_argument("--until", help="to (exclusive)")
        parser.add_argument("--out", help="file to write (default: stdout)")

    def handle(self, *args, campaign, since, until, out, **options):
        try:
            since_at, until_at = parse_when(since), parse_when(until)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        stream = open(out, "wb") if out else sys.stdout.buffer
        try:
            for chunk in export_lines(campaign_id=campaign, since=since_at, until=until_at):
                stream.write(chunk)
        finally:
            if out:
                stream.close()
            else:
                stream.flush()
