"""Benchmark of the login/voucher engine (issue 4): three scenarios in one run, side by side.

1. `me`          GET  /api/v1/me                          trivial authenticated DRF GET (baseline)
2. `join-fresh`  POST /api/v1/campaigns/bench/join        every request a user who has no card yet (201)
3. `join-capped` POST /api/v1/campaigns/bench/join        users already holding 21 cards (409 card_limit_reached)

Targets: join-fresh >= 50 % of `me` req/s with p99 < 50 ms; join-capped >= 80 % of `me` req/s.

Users, tokens and the capped users' 21 cards are prepared before the timed run (bulk SQL through
the ORM, ledger-consistent: `reconcile` passes before and after). Each scenario is driven by
`bench/loadgen.py` in separate processes; the server is gunicorn from `bench/server.py`.

    .venv/bin/python bench/engine.py                      # full run: 32 connections, 15 s per scenario
    .venv/bin/python bench/engine.py --smoke              # ~15 s end to end, numbers are only indicative
    .venv/bin/python bench/engine.py --duration 30 --connections 32 --workers 4 --threads 4 --json out.json

Other scenario scripts can reuse `prepare_users`, `run_plans` and `print_table` from here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server import PYTHON, ROOT, BenchConfig, Server, django_call, manage, reset_database

SLUG = "bench"

# --- data preparation (runs inside Django through bench.server.django_call) -------------------


def prepare_users(*, count: int, prefix_digit: int = 3) -> list[str]:
    """Create `count` phone users with one bearer token each; return the raw tokens. Django must be set up."""
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
        [AuthToken(user=u, key_hash=hashlib.sha256(r.encode()).hexdigest(), device_id="bench")
         for u, r in zip(users, raws, strict=True)],
        batch_size=5000,
    )
    return raws


def insert_cards(campaign, users, *, slots: int, source: str, reason: str) -> None:
    """Give each user cards in slots 1..`slots` in bulk, with bucket counters and ledger rows that reconcile.

    Preparation only (not timed): one bulk insert instead of the per-card service calls.
    """
    from collections import defaultdict
    from decimal import Decimal

    from django.db import transaction
    from django.db.models import F
    from django.utils import timezone

    from campaign.models import BudgetBucket, LedgerEntry
    from vouchers.models import Voucher
    from vouchers.services import new_voucher_code

    buckets = list(BudgetBucket.objects.filter(campaign=campaign).order_by("index"))
    expires = timezone.now() + campaign.card_validity
    with transaction.atomic():
        cards = Voucher.objects.bulk_create(
            [Voucher(code=new_voucher_code(), campaign=campaign, user=user, bucket=buckets[user.pk % len(buckets)],
                     slot=slot, cap=campaign.card_cap, source=source, face_value=campaign.face_value,
                     expires_at=expires)
             for user in users for slot in range(1, slots + 1)],
            batch_size=5000,
        )
        per_bucket: dict[int, Decimal] = defaultdict(Decimal)
        for card in cards:
            per_bucket[card.bucket_id] += card.face_value
        for bucket_id in sorted(per_bucket):
            BudgetBucket.objects.filter(pk=bucket_id).update(reserved=F("reserved") + per_bucket[bucket_id])
        LedgerEntry.objects.bulk_create(
            [LedgerEntry(campaign=campaign, bucket_id=c.bucket_id, kind=LedgerEntry.Kind.RESERVE, amount=c.face_value,
                         voucher_id=c.pk, reason=reason) for c in cards],
            batch_size=5000,
        )


def prepare(*, me_users: int = 64, fresh: int = 20000, capped: int = 256) -> dict:
    """Create the bench campaign (live, 3e9 budget, cap 21, 64 buckets) and the users of every scenario."""
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    from accounts.models import AuthToken
    from campaign.models import Campaign
    from campaign.services import CampaignSpec, campaign_create
    from vouchers.models import Voucher

    campaign = Campaign.objects.filter(slug=SLUG).first() or campaign_create(spec=CampaignSpec(
        slug=SLUG, name="压测活动", total_budget=Decimal("3000000000.00"), starts_at=timezone.now() - dt.timedelta(hours=1),
        ends_at=timezone.now() + dt.timedelta(days=30), status=Campaign.Status.LIVE, bucket_count=64,
    ))
    started = time.time()
    me_tokens = prepare_users(count=me_users, prefix_digit=3)
    fresh_tokens = prepare_users(count=fresh, prefix_digit=5)
    capped_tokens = prepare_users(count=capped, prefix_digit=7)
    from accounts.auth import hash_token

    capped_users = [t.user for t in AuthToken.objects.select_related("user").filter(
        key_hash__in=[hash_token(t) for t in capped_tokens])]
    insert_cards(campaign, capped_users, slots=campaign.card_cap, source=Voucher.Source.REFERRAL_INVITEE,
                 reason="bench: 预置满卡用户")
    return {"slug": SLUG, "me": me_tokens, "fresh": fresh_tokens, "capped": capped_tokens,
            "prepare_seconds": round(time.time() - started, 1)}


def stats() -> dict:
    from campaign.models import Campaign
    from vouchers.models import Voucher
    from vouchers.selectors import reconcile

    campaign = Campaign.objects.get(slug=SLUG)
    report = reconcile(campaign=campaign)
    return {"welcome_cards": Voucher.objects.filter(campaign=campaign, source="welcome").count(),
            "cards": Voucher.objects.filter(campaign=campaign).count(), "reconcile": report.as_dict()}


# --- running and printing -----------------------------------------------------------------------


def run_plans(cfg: BenchConfig, plans: list[dict], *, connections: int, duration: float, warmup: float,
              processes: int) -> list[dict]:
    """Run each plan with bench/loadgen.py in its own process, one after the other; return the reports."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for plan in plans:
            path = Path(tmp) / f"{plan['name']}.json"
            path.write_text(json.dumps(plan))
            proc = subprocess.run(
                [PYTHON, str(ROOT / "bench" / "loadgen.py"), "--url", cfg.url, "--plan", str(path),
                 "--connections", str(connections), "--duration", str(duration), "--warmup", str(warmup),
                 "--processes", str(processes)],
                capture_output=True, text=True, check=True,
            )
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def print_table(results: list[dict], *, baseline: str | None = None, file=sys.stdout) -> None:
    base = next((r for r in results if r["scenario"] == baseline), None)
    header = f"{'scenario':<14}{'req/s':>9}{'vs base':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}  status"
    print(header, file=file)
    print("-" * len(header), file=file)
    for r in results:
        ratio = f"{100 * r['rps'] / base['rps']:.0f}%" if base and base["rps"] else "-"
        lat = r["latency_ms"]
        status = " ".join(f"{k}:{v}" for k, v in r["status"].items())
        if r["transport_errors"]:
            status += f" errors:{r['transport_errors']}"
        if r["exhausted_connections"]:
            status += f" (users ran out on {r['exhausted_connections']} conns)"
        print(f"{r['scenario']:<14}{r['rps']:>9.0f}{ratio:>9}{lat['p50']:>9.1f}{lat['p90']:>9.1f}{lat['p99']:>9.1f}"
              f"{lat['max']:>9.1f}  {status}", file=file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", "-c", type=int, default=32)
    parser.add_argument("--duration", "-d", type=float, default=15.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--workers", type=int, default=BenchConfig.workers, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=BenchConfig.threads, help="threads per gthread worker")
    parser.add_argument("--worker-class", default=BenchConfig.worker_class)
    parser.add_argument("--port", type=int, default=BenchConfig.port)
    parser.add_argument("--fresh-users", type=int, default=0, help="default: enough for ~1500 joins/s")
    parser.add_argument("--smoke", action="store_true", help="short run (2 s per scenario) to check the harness")
    parser.add_argument("--json", help="also write the full results here")
    parser.add_argument("--scenarios", default="me,join-fresh,join-capped",
                        help="comma-separated subset/order of: me, join-fresh, join-capped")
    parser.add_argument("--guard", action="store_true", help="keep rate limits and load shedding on (production)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup = 2.0, 0.5

    cfg = BenchConfig(port=args.port, workers=args.workers, threads=args.threads, worker_class=args.worker_class)
    if not args.guard:
        # The engine is measured on its own: all load comes from one IP and 256 users repeat all the time,
        # so per-IP / per-user rate limits and load shedding would answer instead of the engine.
        cfg.extra_env.update({"RATELIMIT_ENABLE": "0", "MIANDAN_SHED_ENABLED": "0"})
    fresh = args.fresh_users or int(1500 * (args.duration + args.warmup)) + 1000
    t0 = time.time()
    reset_database(cfg)
    data = django_call(cfg, "bench.engine:prepare", {"fresh": fresh})
    print(f"prepared in {time.time() - t0:.1f} s: {len(data['me'])} GET users, {len(data['fresh'])} fresh users, "
          f"{len(data['capped'])} users at the cap", file=sys.stderr)
    join = f"/api/v1/campaigns/{SLUG}/join"
    plans = [
        {"name": "me", "method": "GET", "path": "/api/v1/me", "tokens": data["me"], "mode": "cycle"},
        {"name": "join-fresh", "method": "POST", "path": join, "body": {"app_version": "1.0.0"},
         "tokens": data["fresh"], "mode": "once"},
        {"name": "join-capped", "method": "POST", "path": join, "body": {"app_version": "1.0.0"},
         "tokens": data["capped"], "mode": "cycle"},
    ]
    wanted = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    plans = [next(p for p in plans if p["name"] == name) for name in wanted]
    with Server(cfg) as server:
        results = run_plans(cfg, plans, connections=args.connections, duration=args.duration, warmup=args.warmup,
                            processes=args.processes)
        command = " ".join(server.command())
    after = django_call(cfg, "bench.engine:stats")
    reconcile_cmd = manage(cfg, "reconcile", SLUG, check=False)

    print(f"\nserver: {command}")
    print(f"load: {args.connections} connections over {args.processes} processes, {args.duration:g} s measured "
          f"after {args.warmup:g} s warm-up per scenario{' (SMOKE RUN)' if args.smoke else ''}\n")
    print_table(results, baseline="me")
    by = {r["scenario"]: r for r in results}
    print()
    if "me" in by and "join-fresh" in by:
        me, fresh_r = by["me"]["rps"] or 1, by["join-fresh"]
        print(f"join-fresh  >= 50% of me and p99 < 50 ms: {100 * fresh_r['rps'] / me:.0f}%, "
              f"p99 {fresh_r['latency_ms']['p99']:.1f} ms -> "
              f"{'PASS' if fresh_r['rps'] >= 0.5 * me and fresh_r['latency_ms']['p99'] < 50 else 'MISS'}")
    if "me" in by and "join-capped" in by:
        me, capped_r = by["me"]["rps"] or 1, by["join-capped"]
        print(f"join-capped >= 80% of me: {100 * capped_r['rps'] / me:.0f}% -> "
              f"{'PASS' if capped_r['rps'] >= 0.8 * me else 'MISS'}")
    print(f"welcome cards issued: {after['welcome_cards']} (201 answers, warm-up included: see JSON); "
          f"reconcile {after['reconcile']['result']} (manage.py reconcile exit {reconcile_cmd.returncode})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "server": command, "results": results,
                                               "after": after}, ensure_ascii=False, indent=2))
    return 0 if after["reconcile"]["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
