"""Benchmark of accepting invites (issue 5), in the same run as the trivial authenticated GET.

1. `me`              GET  /api/v1/me                              trivial authenticated DRF GET (baseline)
2. `referral-accept` POST /api/v1/campaigns/bench-ref/referrals   a fresh invitee accepts an inviter's code (201:
                                                                  graph locks, abuse checks, two cards, ledger)
3. `referral-repeat` POST same                                    invitees who already accepted try again
                                                                  (409 already_referred: the bot-replay path)

Prepared before the timed run: inviters with invite codes (each gets ~3 invitees, so the inviter lock
is sometimes contended, as in real life), invitees with their own bearer token and device id, and 256
users who already accepted (through the real service, so `reconcile` passes).

All load comes from 127.0.0.1, so the per-IP abuse rule (new accounts from one IP) and the per-IP and
per-user rate limits are switched off for this campaign/server: the run measures the accept path, not
the limiter in front of it. Shedding (503 busy) stays on and shows up in the status counts.

    .venv/bin/python bench/referrals.py                  # 32 connections, 2 s warm-up + 15 s per scenario
    .venv/bin/python bench/referrals.py --smoke          # 0.5 + 2 s per scenario: checks the harness only
    .venv/bin/python bench/referrals.py --connections 32 --duration 30 --workers 4 --threads 4 --json out.json

Each request of a plan needs its own body (the invitee's code): the plans use loadgen's per-item `bodies`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine import print_table, run_plans
from bench.server import BenchConfig, Server, django_call, manage, reset_database

SLUG = "bench-ref"
PATH = f"/api/v1/campaigns/{SLUG}/referrals"


# --- data preparation (runs inside Django through bench.server.django_call) -------------------

def _users(*, count: int, prefix_digit: int, device_prefix: str) -> tuple[list, list[str]]:
    """Phone users with one bearer token each, every token on its own device id."""
    import hashlib
    import secrets

    from django.db.models import Max

    from accounts.models import AuthToken, User

    base = (User.objects.aggregate(m=Max("id"))["m"] or 0) + 1
    users = User.objects.bulk_create(
        [User(username=f"1{prefix_digit}{base + i:09d}", phone=f"1{prefix_digit}{base + i:09d}", password="!")
         for i in range(count)],
        batch_size=5000,
    )
    raws = [secrets.token_urlsafe(32) for _ in users]
    AuthToken.objects.bulk_create(
        [AuthToken(user=u, key_hash=hashlib.sha256(r.encode()).hexdigest(), device_id=f"{device_prefix}-{u.pk}")
         for u, r in zip(users, raws, strict=True)],
        batch_size=5000,
    )
    return users, raws


def prepare(*, invitees: int = 20000, per_inviter: int = 3, repeat: int = 256, me_users: int = 64) -> dict:
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    from campaign.models import Campaign
    from campaign.services import CampaignSpec, campaign_create
    from referrals.codes import new_invite_code
    from referrals.models import InviteCode
    from referrals.services import referral_accept

    started = time.time()
    campaign = Campaign.objects.filter(slug=SLUG).first() or campaign_create(spec=CampaignSpec(
        slug=SLUG, name="邀请压测活动", total_budget=Decimal("3000000000.00"),
        starts_at=timezone.now() - dt.timedelta(hours=1), ends_at=timezone.now() + dt.timedelta(days=30),
        status=Campaign.Status.LIVE, bucket_count=64,
    ))
    # Every request comes from 127.0.0.1: the new-accounts-per-IP rule would hold everything for review.
    Campaign.objects.filter(pk=campaign.pk).update(referral_ip_burst_limit=1_000_000)
    campaign.refresh_from_db()

    _, me_tokens = _users(count=me_users, prefix_digit=3, device_prefix="me")
    inviters, _ = _users(count=max(1, invitees // per_inviter) + repeat, prefix_digit=4, device_prefix="inviter")
    codes = InviteCode.objects.bulk_create(
        [InviteCode(campaign=campaign, user=u, code=new_invite_code()) for u in inviters], batch_size=5000
    )
    _, invitee_tokens = _users(count=invitees, prefix_digit=6, device_prefix="invitee")
    repeaters, repeat_tokens = _users(count=repeat, prefix_digit=8, device_prefix="repeat")
    repeat_codes = [c.code for c in codes[-repeat:]] if repeat else []
    for user, code in zip(repeaters, repeat_codes, strict=True):
        referral_accept(user=user, campaign=campaign, code=code)
    fresh_codes = [c.code for c in codes[: len(codes) - repeat]]
    # Invitee i takes inviter i mod n: neighbours in time (items g, g+C, ...) mostly hit different inviters.
    return {
        "me": me_tokens,
        "invitees": invitee_tokens,
        "invitee_codes": [fresh_codes[i % len(fresh_codes)] for i in range(invitees)],
        "repeat": repeat_tokens,
        "repeat_codes": [fresh_codes[i % len(fresh_codes)] for i in range(repeat)],
        "prepare_seconds": round(time.time() - started, 1),
    }


def stats() -> dict:
    from django.db.models import Count

    from campaign.models import Campaign
    from referrals.models import Referral
    from vouchers.models import Voucher
    from vouchers.selectors import reconcile

    campaign = Campaign.objects.get(slug=SLUG)
    by_status = dict(Referral.objects.filter(campaign=campaign).values_list("status").annotate(n=Count("id")))
    return {
        "referrals": by_status,
        "cards": Voucher.objects.filter(campaign=campaign).count(),
        "reconcile": reconcile(campaign=campaign).as_dict(),
    }


def _require_free_port(port: int) -> None:
    """Server() waits for /healthz: another process on the port would silently be benchmarked instead."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SystemExit(f"port {port} is in use ({exc}); pass --port") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", "-c", type=int, default=32)
    parser.add_argument("--duration", "-d", type=float, default=15.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--workers", type=int, default=BenchConfig.workers, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=BenchConfig.threads, help="threads per gthread worker")
    parser.add_argument("--worker-class", default=BenchConfig.worker_class)
    parser.add_argument("--port", type=int, default=8771, help="not another bench script's port: they may run together")
    parser.add_argument("--invitees", type=int, default=0, help="default: enough for ~1000 accepts/s")
    parser.add_argument("--smoke", action="store_true", help="short run (2 s per scenario) to check the harness")
    parser.add_argument("--json", help="also write the full results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup = 2.0, 0.5

    # Own database and Redis prefix: reset_database() drops the database, and other bench scripts may run.
    cfg = BenchConfig(port=args.port, workers=args.workers, threads=args.threads, worker_class=args.worker_class,
                      database_url=os.environ.get("BENCH_REF_DATABASE_URL",
                                                  "postgres://postgres@127.0.0.1:5432/miandan_bench_referrals"),
                      redis_prefix="bench-ref",
                      # Like bench/engine.py: measure the accept path, not the shedder (all load is one IP).
                      extra_env={"MIANDAN_RATELIMITS": "referral_user=off,referral_ip=off", "MIANDAN_SHED_ENABLED": "0"})
    _require_free_port(cfg.port)
    invitees = args.invitees or int(1000 * (args.duration + args.warmup)) + 1000
    t0 = time.time()
    reset_database(cfg)
    data = django_call(cfg, "bench.referrals:prepare", {"invitees": invitees})
    print(f"prepared in {time.time() - t0:.1f} s: {len(data['invitees'])} invitees, {len(data['repeat'])} repeaters",
          file=sys.stderr)
    plans = [
        {"name": "me", "method": "GET", "path": "/api/v1/me", "tokens": data["me"], "mode": "cycle"},
        {"name": "referral-accept", "method": "POST", "path": PATH, "tokens": data["invitees"],
         "bodies": [{"code": c} for c in data["invitee_codes"]], "mode": "once"},
        {"name": "referral-repeat", "method": "POST", "path": PATH, "tokens": data["repeat"],
         "bodies": [{"code": c} for c in data["repeat_codes"]], "mode": "cycle"},
    ]
    with Server(cfg) as server:
        results = run_plans(cfg, plans, connections=args.connections, duration=args.duration, warmup=args.warmup,
                            processes=args.processes)
        command = " ".join(server.command())
    after = django_call(cfg, "bench.referrals:stats")
    reconcile_cmd = manage(cfg, "reconcile", SLUG, check=False)

    print(f"\nserver: {command}")
    print(f"load: {args.connections} connections over {args.processes} processes, {args.duration:g} s measured "
          f"after {args.warmup:g} s warm-up per scenario{' (SMOKE RUN)' if args.smoke else ''}\n")
    print_table(results, baseline="me")
    print(f"\nreferrals by status: {after['referrals']}; cards: {after['cards']}; "
          f"reconcile {after['reconcile']['result']} (manage.py reconcile exit {reconcile_cmd.returncode})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "server": command, "results": results,
                                               "after": after}, ensure_ascii=False, indent=2))
    return 0 if after["reconcile"]["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
