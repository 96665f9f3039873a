"""Deliver the event stream in a loop (or once): the same pass as the `events.deliver` beat task.

Safe to run several at once and to kill at any moment (cursors are leased and only move after a recorded
outcome; see events/services.py).
"""

import time

from django.core.management.base import BaseCommand

from events.services import events_deliver


class Command(BaseCommand):
    help = "推送事件流到已配置的推送地址（循环运行，或 --once 只跑一轮）"

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds to sleep when a pass found nothing")
        parser.add_argument("--batch", type=int, default=100, help="events per cursor per pass")

    def handle(self, *args, once: bool, interval: float, batch: int, **options):
        while True:
            totals = events_deliver(batch=batch)
            if once:
                self.stdout.write(str(totals))
                return
            if not (totals["sequenced"] or totals["delivered"] or totals["failed"] or totals["dead"]):
                time.sleep(interval)
