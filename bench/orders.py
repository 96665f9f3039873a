"""Benchmark of one-sentence ordering (issue 6).

1. `parse`        chat parser sentences/s on one core: a pure Python loop over tests/data/intents.jsonl
                  (target >= 20,000/s, issue 13), in one process with Django set up on the bench database.
2. `me`           GET  /api/v1/me            trivial authenticated DRF GET (baseline, same run)
3. `chat-order`   POST /api/v1/orders/chat   "一杯伯牙绝弦" at the Hangzhou check point, each request a
                  different user holding one card (201), gunicorn + one prefork Celery worker sending the
                  orders to the simulated merchant process (`manage.py simulated_merchant`), which accepts
                  after --latency-ms and delivers after twice that (default 20 ms), calling back with signed events.

After the load, the script waits for the queue to drain and reports, from the database:
orders placed, completed, failed, the time from placement to completion (p50, p99; from
Order.created_at to the `completed` OrderEvent) and completed orders/s, then `reconcile`.

Store capacity is raised to 100,000/minute for the run so the number measures the platform, not
the simulated stores' limits (the capacity logic itself is covered by tests/orders/test_concurrency.py).

    .venv/bin/python bench/orders.py                     # 32 connections, 2 s warm-up + 15 s per scenario
    .venv/bin/python bench/orders.py --smoke             # ~20 s end to end: checks the harness only
    .venv/bin/python bench/orders.py --parse-only        # just the parser rate
    .venv/bin/python bench/orders.py --celery-concurrency 4 --latency-ms 50 --json /tmp/orders.json

Uses bench/server.py (database `miandan_bench`, Redis db 14, prefix `bench`; Celery queue `bench-orders`,
or BENCH_QUEUE). BENCH_DATABASE_URL / BENCH_REDIS_PREFIX / BENCH_PORT keep parallel runs apart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine import SLUG, insert_cards, prepare_users, print_table, run_plans
from bench.server import ROOT, BenchConfig, Server, django_call, reset_database

LAT, LNG = 30.2741, 120.1551
CORPUS = ROOT / "tests" / "data" / "intents.jsonl"
CELERY = str(Path(sys.executable).with_name("celery"))


# --- inside Django (bench.server.django_call) --------------------------------------------------

def parse_rate(*, seconds: float = 3.0) -> dict:
    from demo.catalog import catalog_load
    from orders.parser import parse

    catalog_load(stores_per_city=0)
    texts = [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line.strip()]
    for t in texts:
        parse(t)  # warm: compiles the catalogue once
    n, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        for t in texts:
            parse(t)
        n += len(texts)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    # per_cpu_second is the rate on one core even when other processes share the machine (wall time then overstates the cost).
    return {"sentences": n, "seconds": round(elapsed, 2), "per_second": round(n / elapsed),
            "cpu_seconds": round(cpu, 2), "per_cpu_second": round(n / cpu)}


def prepare(*, me_users: int = 64, buyers: int = 5000) -> dict:
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    from accounts.auth import hash_token
    from accounts.models import AuthToken
    from campaign.models import Campaign
    from campaign.services import CampaignSpec, campaign_create
    from demo.catalog import catalog_load
    from orders.models import Store
    from vouchers.models import Voucher

    campaign = Campaign.objects.filter(slug=SLUG).first() or campaign_create(spec=CampaignSpec(
        slug=SLUG, name="压测活动", total_budget=Decimal("3000000000.00"), starts_at=timezone.now() - dt.timedelta(hours=1),
        ends_at=timezone.now() + dt.timedelta(days=30), status=Campaign.Status.LIVE, bucket_count=64,
    ))
    catalog_load()
    Store.objects.update(capacity_per_minute=100_000)
    me_tokens = prepare_users(count=me_users, prefix_digit=3)
    buyer_tokens = prepare_users(count=buyers, prefix_digit=6)
    users = [t.user for t in AuthToken.objects.select_related("user").filter(
        key_hash__in=[hash_token(t) for t in buyer_tokens])]
    insert_cards(campaign, users, slots=1, source=Voucher.Source.WELCOME, reason="bench: 预置新人卡")
    return {"me": me_tokens, "buyers": buyer_tokens}


def order_stats(*, drain_seconds: float = 60.0) -> dict:
    from django.db.models import Max, Min

    from campaign.models import Campaign
    from orders.models import Order, OrderEvent
    from vouchers.selectors import reconcile

    deadline = time.time() + drain_seconds
    active = ["placed", "sent_to_store", "accepted", "delivering"]
    while time.time() < deadline and Order.objects.filter(status__in=active).exists():
        time.sleep(0.5)
    done = {e.order_id: e.created_at for e in OrderEvent.objects.filter(to_status="completed")}
    created = dict(Order.objects.filter(pk__in=list(done)).values_list("pk", "created_at"))
    lat = sorted((done[k] - created[k]).total_seconds() * 1000 for k in done if k in created)

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q / 100 * len(lat)))], 1) if lat else 0.0

    span = OrderEvent.objects.filter(to_status="completed").aggregate(a=Min("created_at"), b=Max("created_at"))
    first_placed = Order.objects.aggregate(a=Min("created_at"))["a"]
    window = (span["b"] - first_placed).total_seconds() if span["b"] and first_placed else 0
    counts = {s: Order.objects.filter(status=s).count() for s in ["completed", "failed", "cancelled", *active]}
    report = reconcile(campaign=Campaign.objects.get(slug=SLUG))
    return {"orders": Order.objects.count(), "status": counts,
            "placement_to_completion_ms": {"p50": pct(50), "p99": pct(99), "max": round(lat[-1], 1) if lat else 0.0},
            "completed_per_second": round(len(done) / window, 1) if window else 0.0,
            "reconcile_ok": report.ok}


# --- driver ----------------------------------------------------------------------------------

class CeleryWorker:
    def __init__(self, cfg: BenchConfig, *, concurrency: int, latency_ms: int) -> None:
        self.cfg, self.concurrency, self.latency_ms = cfg, concurrency, latency_ms
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-celery-orders.log"

    def __enter__(self) -> CeleryWorker:
        env = self.cfg.env()
        step = self.latency_ms / 1000
        merchant_port = int(os.environ.get("BENCH_MERCHANT_PORT", str(self.cfg.port + 1)))
        env.update({"CELERY_TASK_ALWAYS_EAGER": "0", "MIANDAN_MERCHANT_URL": f"http://127.0.0.1:{merchant_port}",
                    "MIANDAN_MERCHANT_ACCEPT_SECONDS": f"{step / 2:g}-{step * 1.5:g}",
                    "MIANDAN_MERCHANT_DELIVER_SECONDS": f"{step:g}-{step * 3:g}"})
        state = self.log_path.with_suffix(".merchant.sqlite3")
        for stale in state.parent.glob(state.name + "*"):
            stale.unlink()  # the bench database is new: so must be the merchant's memory of order ids
        self._merchant_log = open(self.log_path.with_suffix(".merchant.log"), "w")
        self.merchant = subprocess.Popen(
            [sys.executable, "manage.py", "simulated_merchant", "--callback-url", self.cfg.url,
             "--state", str(state)],
            cwd=ROOT, env=env, stdout=self._merchant_log, stderr=subprocess.STDOUT, start_new_session=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [CELERY, "-A", "miandan", "worker", "-Q", env["CELERY_DEFAULT_QUEUE"], "--pool=prefork", "-c", str(self.concurrency),
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info", "-n", f"bench-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited early, see {self.log_path}")
            if " ready." in self.log_path.read_text():
                return self
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"celery worker not ready, see {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.merchant.poll() is None:
            os.killpg(self.merchant.pid, signal.SIGTERM)
            self.merchant.wait(20)
        self._merchant_log.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", "-c", type=int, default=32)
    parser.add_argument("--duration", "-d", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--workers", type=int, default=BenchConfig.workers, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=BenchConfig.threads)
    parser.add_argument("--port", type=int, default=BenchConfig.port)
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument("--latency-ms", type=int, default=20,
                        help="simulated merchant: accepts after ~this, delivers after ~twice this")
    parser.add_argument("--buyers", type=int, default=0, help="users with one card each (default: enough for 600 orders/s)")
    parser.add_argument("--parse-seconds", type=float, default=3.0)
    parser.add_argument("--parse-only", action="store_true")
    parser.add_argument("--guard", action="store_true", help="keep rate limits and load shedding on")
    parser.add_argument("--smoke", action="store_true", help="short run to check the harness (numbers not meaningful)")
    parser.add_argument("--json", help="also write the full results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.parse_seconds = 2.0, 0.5, 1.0

    cfg = BenchConfig(port=args.port, workers=args.workers, threads=args.threads,
                      extra_env={"CELERY_DEFAULT_QUEUE": os.environ.get("BENCH_QUEUE", "bench-orders")})
    if not args.guard:
        # Measure the order path itself: one load-generator IP would hit the per-IP limit, and the
        # adaptive shedder would answer 503 instead of ordering (bench/overload.py measures that).
        cfg.extra_env.update({"RATELIMIT_ENABLE": "0", "MIANDAN_SHED_ENABLED": "0"})
    reset_database(cfg)
    parse = django_call(cfg, "bench.orders:parse_rate", {"seconds": args.parse_seconds})
    print(f"parser: {parse['per_second']:,} sentences/s on one core ({parse['sentences']} in {parse['seconds']} s); "
          f"{parse['per_cpu_second']:,} per CPU-second ({parse['cpu_seconds']} s of CPU)")
    out: dict = {"parse": parse}
    if not args.parse_only:
        buyers = args.buyers or int(600 * (args.duration + args.warmup)) + 500
        data = django_call(cfg, "bench.orders:prepare", {"buyers": buyers})
        body = {"text": "一杯伯牙绝弦", "lat": LAT, "lng": LNG}
        plans = [
            {"name": "me", "method": "GET", "path": "/api/v1/me", "tokens": data["me"], "mode": "cycle"},
            {"name": "chat-order", "method": "POST", "path": "/api/v1/orders/chat", "body": body,
             "tokens": data["buyers"], "mode": "once"},
        ]
        with Server(cfg), CeleryWorker(cfg, concurrency=args.celery_concurrency, latency_ms=args.latency_ms):
            results = run_plans(cfg, plans, connections=args.connections, duration=args.duration, warmup=args.warmup,
                                processes=args.processes)
            stats = django_call(cfg, "bench.orders:order_stats", {"drain_seconds": 120})
        print_table(results, baseline="me")
        lat = stats["placement_to_completion_ms"]
        print(f"orders: {stats['orders']} placed, status {stats['status']}; placement->completion p50 {lat['p50']} ms, "
              f"p99 {lat['p99']} ms; {stats['completed_per_second']} completed/s; reconcile ok: {stats['reconcile_ok']}")
        out.update({"http": results, "fulfilment": stats})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
