"""Issue 20: what the campaign controls cost the join, same server, same run, interleaved A/B.

Two live campaigns in one database, both 3e9 yuan in 64 buckets:
- `bench` (A): no plan, no daily cap — the hot path as before (no extra query, no extra condition);
- `bench-ctl` (B): a spend plan in "refuse" mode (0 at the start, linear to 100 % at the end: the plan's
  bound is in every reserve statement) and a daily card cap (10 M: counted on the bucket row the same
  statement reserves in). Neither binds during the run, so B measures the checks, not refusals.

Fresh users join (201) from a load generator in its own process(es) (bench/loadgen.py, keep-alive
connections, closed loop) against gunicorn with the production shape; the scenarios alternate A, B, A, B, …
in the order A B, B A, A B, B A (so that a drift over the run, from other load on the box or the growing
tables, falls on both sides alike). Afterwards `reconcile` runs on both (PASS includes the
daily counters equal to the cards counted in them).

    .venv/bin/python bench/controls.py                              # 4 rounds A/B, 10 s each after 2 s warm-up
    .venv/bin/python bench/controls.py --rounds 3 --duration 15 --json /tmp/controls.json
    .venv/bin/python bench/controls.py --smoke                      # harness check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine import _ips, ok_rps, run_plans
from bench.server import BenchConfig, Server, django_call, reset_database

PLAIN, CONTROLLED = "bench", "bench-ctl"


def prepare(*, per_run: int, runs: int) -> dict:
    """Both campaigns and `runs` pools of fresh users with tokens (Django set up by bench.server.django_call)."""
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    from bench.engine import prepare_users
    from campaign.models import Campaign, PaceMode
    from campaign.services import CampaignSpec, campaign_create

    for slug in (PLAIN, CONTROLLED):
        campaign_create(spec=CampaignSpec(
            slug=slug, name="压测活动", total_budget=Decimal("3000000000.00"),
            starts_at=timezone.now() - dt.timedelta(hours=1), ends_at=timezone.now() + dt.timedelta(days=30),
            status=Campaign.Status.LIVE, bucket_count=64,
        ))
    ctl = Campaign.objects.get(slug=CONTROLLED)
    Campaign.objects.filter(pk=ctl.pk).update(
        pace_mode=PaceMode.REFUSE, pace_points=[[ctl.ends_at.isoformat(), "100%"]], daily_card_cap=10_000_000)
    started = time.time()
    pools = [prepare_users(count=per_run, prefix_digit=5 + (i % 4)) for i in range(runs)]
    return {"pools": pools, "prepare_seconds": round(time.time() - started, 1)}


def stats() -> dict:
    from django.utils import timezone

    from campaign import pacing
    from campaign.models import BudgetBucket, Campaign
    from vouchers.models import Voucher
    from vouchers.selectors import reconcile

    out = {}
    for slug in (PLAIN, CONTROLLED):
        campaign = Campaign.objects.get(slug=slug)
        out[slug] = {
            "cards": Voucher.objects.filter(campaign=campaign).count(),
            "day_counters": sum(BudgetBucket.objects.filter(campaign=campaign, day_on__isnull=False)
                                .values_list("day_cards", flat=True)),
            "planned_now": str(pacing.planned_amount(campaign, timezone.now())),
            "reconcile": reconcile(campaign=campaign).as_dict(),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="A/B pairs")
    parser.add_argument("--connections", "-c", type=int, default=32)
    parser.add_argument("--duration", "-d", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--users-per-run", type=int, default=0, help="default: enough for ~1,000 joins/s")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8830")))
    parser.add_argument("--guard", action="store_true",
                        help="keep rate limits and load shedding on (default off: the engine's cost, not the shedder's)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5

    cfg = BenchConfig(port=args.port)
    cfg.database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/miandan_bench_controls")
    cfg.redis_prefix = os.environ.get("BENCH_REDIS_PREFIX", "bench-controls")
    cfg.celery_queue = os.environ.get("BENCH_CELERY_QUEUE", "bench-controls")
    cfg.extra_env.update({"MIANDAN_PROXY_COUNT": "1", "MIANDAN_RATELIMITS": "join_user=6000/m"})
    if not args.guard:
        cfg.extra_env.update({"RATELIMIT_ENABLE": "0", "MIANDAN_SHED_ENABLED": "0"})
    per_run = args.users_per_run or int(1000 * (args.duration + 1.2 * args.warmup + 2)) + 500
    runs = 2 * args.rounds + 1  # the first pool warms the server up (both campaigns), unmeasured
    t0 = time.time()
    reset_database(cfg)
    data = django_call(cfg, "bench.controls:prepare", {"per_run": per_run, "runs": runs})
    print(f"prepared {runs} x {per_run} users in {time.time() - t0:.1f} s", file=sys.stderr)
    body = {"app_version": "1.0.0"}
    warm = data["pools"][0]
    plans = [{"name": "warm-up", "method": "POST", "path": f"/api/v1/campaigns/{slug}/join", "body": body,
              "tokens": warm[k::2], "ips": _ips(len(warm[k::2]), 9 - k), "mode": "once"}
             for k, slug in enumerate((PLAIN, CONTROLLED))]
    for i in range(runs - 1):
        # A B, B A, A B, B A, …: a drift over the run (other load on the box, the tables growing) falls on
        # both sides alike instead of always on the second run of a pair.
        first_is_plain = (i // 2) % 2 == 0
        slug = PLAIN if (i % 2 == 0) == first_is_plain else CONTROLLED
        tokens = data["pools"][i + 1]
        plans.append({"name": f"{'A-plain' if slug == PLAIN else 'B-controls'}-{i // 2 + 1}", "method": "POST",
                      "path": f"/api/v1/campaigns/{slug}/join", "body": body, "tokens": tokens,
                      "ips": _ips(len(tokens), 10 + i), "mode": "once"})
    with Server(cfg) as server:
        results = run_plans(cfg, plans, connections=args.connections, duration=args.duration, warmup=args.warmup,
                            processes=args.processes, loadgen="python")
        command = " ".join(server.command())
    plans, results = plans[2:], results[2:]
    after = django_call(cfg, "bench.controls:stats")

    print(f"\nserver: {command}")
    print(f"load: bench/loadgen.py in {args.processes} process(es), {args.connections} connections, "
          f"{args.duration:g} s measured after {args.warmup:g} s warm-up per run{' (SMOKE RUN)' if args.smoke else ''}\n")
    print(f"{'run':<16}{'201/s':>9}{'p50 ms':>9}{'p99 ms':>9}  status")
    rows = []
    for plan, r in zip(plans, results, strict=True):
        rate = ok_rps(r, ("201",))
        lat = r["latency_ms"]
        rows.append({"run": plan["name"], "ok_rps": rate, "p50": lat["p50"], "p99": lat["p99"], "status": r["status"]})
        print(f"{plan['name']:<16}{rate:>9.1f}{lat['p50']:>9.1f}{lat['p99']:>9.1f}  {r['status']}")
    a = [row["ok_rps"] for row in rows if row["run"].startswith("A")]
    b = [row["ok_rps"] for row in rows if row["run"].startswith("B")]
    pairs = [bb / aa for aa, bb in zip(a, b, strict=True) if aa]  # round i: its A and its B (order alternates)
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    cost = 1 - mean_b / mean_a if mean_a else 0.0
    print(f"\nmean A (no controls) {mean_a:.1f}/s, mean B (plan + daily cap) {mean_b:.1f}/s: "
          f"B/A = {mean_b / mean_a:.3f}, controls cost {cost * 100:.1f} % (target < 10 %); "
          f"per pair B/A: {', '.join(f'{p:.3f}' for p in pairs)}")
    five = sum(n for r in results for s, n in r["status"].items() if s.startswith("5") and s != "503")
    ok = all(v["reconcile"]["result"] == "PASS" for v in after.values())
    ctl = after[CONTROLLED]
    print(f"5xx other than 503: {five}; reconcile {'PASS' if ok else 'FAIL'}; cards A {after[PLAIN]['cards']}, B {ctl['cards']} "
          f"(day counter {ctl['day_counters']}, plan allows {ctl['planned_now']} yuan now)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "server": command, "rows": rows, "after": after,
                                               "mean_a": mean_a, "mean_b": mean_b, "cost": cost},
                                              ensure_ascii=False, indent=2))
    return 0 if ok and five == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
