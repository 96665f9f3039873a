"""`manage.py simulate`: replay the seed's day and print the invariant report (demo/simulation.py does the work)."""

from __future__ import annotations

import json
import random
import time
import uuid

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from campaign.models import Campaign
from demo.simulation import (
    InFlightSampler,
    InProcess,
    OverHttp,
    Simulation,
    SimUser,
    Tally,
    fulfilment_report,
    invariant_report,
    phone_width,
    pool_run,
    sim_phone,
    wait_for_orders,
)
from orders.models import Order


class Command(BaseCommand):
    help = "Replay the seed's day (login, join, invite, chat orders) and print an invariant report."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=100)
        parser.add_argument("--orders", type=int, default=100)
        parser.add_argument("--concurrency", type=int, default=8)
        parser.add_argument("--url", default="", help="a running server; in-process when omitted")
        parser.add_argument("--campaign", default="spring-tea")
        parser.add_argument("--otp", default="", help="the fixed one-time code (default MIANDAN_FIXED_OTP or 246810)")
        parser.add_argument("--invite-ratio", type=float, default=0.7, help="share of users who accept a friend's invite")
        parser.add_argument("--retries", type=int, default=3, help="retries after 429/503 busy")
        parser.add_argument("--max-backoff", type=float, default=2.0, help="cap on one Retry-After wait (s)")
        parser.add_argument("--wait", type=float, default=300.0, help="deadline for orders to reach a final state (s)")
        parser.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout per request (s)")
        parser.add_argument("--seed", type=int, default=20260101)
        parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")

    def handle(self, *args, **opts):
        if opts["users"] < 1 or opts["orders"] < 0 or opts["concurrency"] < 1:
            raise CommandError("--users and --concurrency must be >= 1, --orders >= 0")
        if opts["users"] > 10**9:
            raise CommandError("at most 10^9 users")
        campaign = Campaign.objects.filter(slug=opts["campaign"]).first()
        if campaign is None:
            raise CommandError(f"campaign {opts['campaign']!r} not found (run seed_demo or create_campaign)")
        otp = opts["otp"] or settings.MIANDAN_FIXED_OTP or "246810"
        if opts["url"]:
            transport = OverHttp(opts["url"], opts["timeout"])
        else:
            # In-process, the command is the server: switch it to the fixed code for this run only.
            settings.MIANDAN_SMS_BACKEND = "fixed"
            settings.MIANDAN_FIXED_OTP = otp
            transport = InProcess()
        tally = Tally()
        sim = Simulation(transport=transport, campaign=campaign.slug, otp=otp, retries=opts["retries"],
                         max_backoff=opts["max_backoff"], tally=tally, seed=opts["seed"])
        quiet = opts["quiet"] or opts["json"]
        run = uuid.uuid4().int % 10**6  # fresh phones per run, so repeated runs are new users
        rng = random.Random(opts["seed"])
        users = [
            SimUser(index=i, phone=sim_phone(run, i, opts["users"]),
                    ip=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", device=f"sim-{run}-{i}")
            for i in range(opts["users"])
        ]
        since = timezone.now()
        # This run's orders: its users' phones share the run prefix, and none existed before `since`.
        prefix = sim_phone(run, 0, opts["users"])[:11 - phone_width(opts["users"])]
        run_orders = Order.objects.filter(user__phone__startswith=prefix, created_at__gte=since)
        started = time.monotonic()
        with InFlightSampler(run_orders, interval=2.0) as sampler:
            pool_run(sim.onboard, users, opts["concurrency"], "users", quiet)
            pairs = [(users[i], users[rng.randrange(i)]) for i in range(1, len(users))
                     if rng.random() < opts["invite_ratio"]]
            pool_run(sim.accept, pairs, opts["concurrency"], "referrals", quiet)
            with_token = [u for u in users if u.token] or users
            orders = [(with_token[n % len(with_token)], n) for n in range(opts["orders"])]
            ordering_started = time.monotonic()
            pool_run(sim.order, orders, opts["concurrency"], "orders", quiet)
            requests_done = time.monotonic() - started
            ordering = time.monotonic() - ordering_started
            transport.close()
            open_orders = wait_for_orders(run_orders, opts["wait"], quiet)
        elapsed = time.monotonic() - started
        report = invariant_report(campaign=campaign, orders=run_orders, open_orders=open_orders, tally=tally)
        report["fulfilment"] = {**fulfilment_report(orders=run_orders), "peak_in_flight": sampler.peak,
                                "peak_held_by_merchant": sampler.peak_held}
        report["run"] = {
            "users": len(users), "logged_in": sum(1 for u in users if u.token), "joined": sum(1 for u in users if u.joined),
            "referral_attempts": len(pairs), "orders_requested": opts["orders"], "orders_placed": sim.orders_placed,
            "requests": sum(tally.statuses.values()), "seconds_requests": round(requests_done, 2),
            "seconds_total": round(elapsed, 2),
            "orders_per_second_end_to_end": round(sim.orders_placed / elapsed, 2) if elapsed else None,
            "seconds_ordering": round(ordering, 2),
            "orders_placed_per_second": round(sim.orders_placed / ordering, 2) if ordering else None,
            "mode": opts["url"] or "in-process", "concurrency": opts["concurrency"],
        }
        if opts["json"]:
            self.stdout.write(json.dumps(report, ensure_ascii=False))
        else:
            self._print(report)
        if not report["ok"]:
            failed = [name for name, c in report["checks"].items() if not c["ok"]]
            raise CommandError("invariants FAILED: " + ", ".join(failed))

    def _print(self, report: dict) -> None:
        w = self.stdout.write
        run = report["run"]
        w(f"\nsimulate {report['campaign']} ({run['mode']}, concurrency {run['concurrency']})")
        w(f"  users {run['users']}  logged in {run['logged_in']}  joined {run['joined']}  "
          f"referral attempts {run['referral_attempts']}  orders placed {run['orders_placed']}/{run['orders_requested']}")
        w(f"  {run['requests']} requests in {run['seconds_requests']} s; end to end {run['seconds_total']} s "
          f"({run['orders_per_second_end_to_end']} orders/s)")
        f = report.get("fulfilment") or {}
        if f.get("completed"):
            w(f"  placement: {run['orders_placed_per_second']} orders/s over {run['seconds_ordering']} s; peak in flight "
              f"{f['peak_in_flight']} (held by the merchant {f['peak_held_by_merchant']})")
            for key, label in [("placement_to_completion_s", "placement -> completion"),
                               ("merchant_own_s", "merchant's own delays"), ("platform_overhead_s", "platform overhead"),
                               ("placement_to_sent_s", "placement -> sent to store")]:
                p = f[key]
                w(f"  {label:28s} p50 {p['p50']} s  p99 {p['p99']} s  max {p['max']} s")
        w("\ninvariants:")
        for name, check in report["checks"].items():
            details = ", ".join(f"{k}={v}" for k, v in check.items() if k != "ok")
            w(f"  [{'PASS' if check['ok'] else 'FAIL'}] {name}: {details}")
        w("\nanswers by operation:code")
        for key, n in report["codes"].items():
            w(f"  {key:40s} {n}")
        w(f"\nbudget: {report['budget']}")
        w(f"\nRESULT: {'PASS' if report['ok'] else 'FAIL'}")
