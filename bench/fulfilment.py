"""Benchmark of event-driven fulfilment (issue 12): orders in flight, completion rate, per-order cost.

The stack of the issue on one machine: gunicorn (4 workers x 4 threads, gthread), ONE Celery worker with 2
prefork processes, celery beat (poller + sweeper), PostgreSQL, Redis (cache and broker), and the simulated
merchant as its own process with ACCEPT 2-30 s and DELIVER 5-20 s, calling the platform back with signed events.
Two phases, each measured on its own (counters before/after):

1. `burst`     N orders placed at once (`demo.bulk.orders_bulk_place`: ledger-consistent bulk inserts, 20,000 by
               default) and handed to fulfilment like placed orders (their submit tasks queued). Shows how many
               orders the platform holds in flight with 2 worker processes, and that they all complete.
2. `simulate`  `manage.py simulate --url` (login, join, invites, chat orders, as in the issue's 6.4 orders/s run)
               and its invariant report, extended with placement -> completion and the platform's overhead.

Per phase: orders completed per second end to end, placement rate, peak in flight, placement -> completion
p50/p99 and the same minus the merchant's own delays, and per order: web requests, SQL statements and CPU ms,
web and worker (counted inside the processes by bench/instrument.py, installed through a gunicorn config file
and a Celery launcher, no application change). Worker RSS per process after the run. Invariants at the end
of each phase (reconcile, cards, budget, every order final, no card redeemed twice).

    .venv/bin/python bench/fulfilment.py                                    # ~15 min on 2 cores
    .venv/bin/python bench/fulfilment.py --smoke                            # ~2 min: checks the harness only
    .venv/bin/python bench/fulfilment.py --burst 20000 --users 2000 --orders 20000 --json bench/results/fulfilment.json

Database `miandan_bench_fulfil`, Redis db 14 prefix `bench-fulfil`, ports 8800 (web) and 8801 (merchant) unless
BENCH_DATABASE_URL / BENCH_REDIS_PREFIX / BENCH_PORT / BENCH_MERCHANT_PORT say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.instrument import totals
from bench.server import PYTHON, ROOT, BenchConfig, Server, django_call, reset_database

CAMPAIGN = "spring-tea"
ACTIVE = ("placed", "sent_to_store", "accepted", "delivering")


# --- inside Django (bench.server.django_call) --------------------------------------------------

def prepare() -> dict:
    from django.core.management import call_command

    from orders.models import Store

    call_command("seed_demo", verbosity=0)
    # Measure the platform, not the demo stores' per-minute capacities (as bench/orders.py does).
    Store.objects.update(capacity_per_minute=1_000_000)
    return {"stores": Store.objects.count()}


def burst_place(*, count: int) -> dict:
    from campaign.models import Campaign
    from demo.bulk import orders_bulk_place

    started = time.time()
    ids = orders_bulk_place(campaign=Campaign.objects.get(slug=CAMPAIGN), count=count, phone_digit=9)
    return {"first": ids[0], "last": ids[-1], "count": len(ids), "seconds": round(time.time() - started, 1)}


def burst_send(*, first: int, last: int) -> dict:
    from demo.bulk import orders_bulk_send

    started = time.time()
    sent = orders_bulk_send(list(range(first, last + 1)))
    return {"sent": sent, "seconds": round(time.time() - started, 1)}


def burst_report(*, first: int, last: int) -> dict:
    from campaign.models import Campaign
    from demo.simulation import Tally, fulfilment_report, invariant_report
    from orders.models import Order

    orders = Order.objects.filter(pk__gte=first, pk__lte=last)
    open_orders = orders.exclude(status__in=Order.FINAL).count()
    report = invariant_report(campaign=Campaign.objects.get(slug=CAMPAIGN), orders=orders, open_orders=open_orders,
                              tally=Tally())
    report["fulfilment"] = fulfilment_report(orders=orders)
    return report


def platform_overhead(*, first: int, last: int, state: str) -> dict:
    """Placement -> completion minus the delays the merchant drew for each order (its plan, from its own state
    file): what is left is the platform's doing (sending the order, recording each event, and the merchant
    waiting for our acknowledgement before its next step)."""
    import sqlite3

    from demo.simulation import _percentiles
    from orders.models import Order, OrderEvent

    db = sqlite3.connect(state)
    plan = {order_id: json.loads(steps)[-1][1] - received
            for order_id, received, steps in db.execute("SELECT order_id, received, steps FROM held")}
    created = dict(Order.objects.filter(pk__gte=first, pk__lte=last, status="completed").values_list("pk", "created_at"))
    done = dict(OrderEvent.objects.filter(order_id__in=list(created), to_status="completed").values_list(
        "order_id", "created_at"))
    total, merchant, overhead = [], [], []
    for order_id, placed in created.items():
        if order_id in done and order_id in plan:
            took = (done[order_id] - placed).total_seconds()
            total.append(took)
            merchant.append(plan[order_id])
            overhead.append(took - plan[order_id])
    return {"orders": len(total), "placement_to_completion_s": _percentiles(total),
            "merchant_delays_s": _percentiles(merchant), "platform_overhead_s": _percentiles(overhead)}


def max_order_id() -> int:
    from django.db.models import Max

    from orders.models import Order

    return Order.objects.aggregate(m=Max("id"))["m"] or 0


# --- processes ---------------------------------------------------------------------------------

def proc_cpu_seconds(pgid: int) -> float:
    """CPU (user + system, incl. reaped children) of every live process in a process group, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            total += sum(int(x) for x in fields[11:15])
    return total / tick


def rss_mb(pgid: int) -> list[tuple[int, str, float]]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            stat = (status.parent / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[2]) != pgid:
            continue
        name = next(line.split()[1] for line in text.splitlines() if line.startswith("Name:"))
        rss = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:")), 0)
        out.append((int(status.parent.name), name, round(rss / 1024, 1)))
    return sorted(out)


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict, log_dir: Path, ready: str | None = None) -> None:
        self.name, self.cmd, self.env, self.ready = name, cmd, env, ready
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Proc:
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 60
        while self.ready and time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early, see {self.log_path}")
            if self.ready.startswith("http"):
                try:
                    urllib.request.urlopen(self.ready, timeout=1)
                    return self
                except OSError:
                    pass
            elif self.ready in self.log_path.read_text():
                return self
            time.sleep(0.2)
        if self.ready:
            raise RuntimeError(f"{self.name} not ready, see {self.log_path}")
        return self

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


class InstrumentedServer(Server):
    def command(self) -> list[str]:
        return [*super().command(), "-c", str(ROOT / "bench" / "instrument_gunicorn.py")]


def merchant_health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
        return json.loads(r.read())


class Meter:
    """Counters of the web and worker processes (and the merchant's), for a before/after difference."""

    def __init__(self, counters: Path, procs: dict[str, int], merchant_url: str) -> None:
        self.counters, self.procs, self.merchant_url = counters, procs, merchant_url

    def read(self) -> dict:
        time.sleep(1.1)  # the processes rewrite their counter files every 0.5 s
        web, worker, main = totals(self.counters, "web"), totals(self.counters, "worker"), totals(self.counters,
                                                                                                    "worker-main")
        cpu = {name: proc_cpu_seconds(pgid) for name, pgid in self.procs.items()}
        health = merchant_health(self.merchant_url)
        return {"t": time.time(), "web": web, "worker": worker, "worker_main": main, "cpu": cpu,
                "callbacks": health["callbacks_ok"] + health["callbacks_failed"] + health["duplicates_sent"]}

    @staticmethod
    def per_order(before: dict, after: dict, orders: int) -> dict:
        d = lambda *path: (after[path[0]][path[1]] - before[path[0]][path[1]])  # noqa: E731
        n = max(orders, 1)
        return {
            "web_requests": round(d("web", "requests") / n, 2),
            "web_sql": round(d("web", "sql") / n, 1),
            "web_cpu_ms": round(1000 * d("cpu", "web") / n, 1),
            "worker_tasks": round(d("worker", "tasks") / n, 2),
            "worker_sql": round(d("worker", "sql") / n, 1),
            "worker_cpu_ms": round(1000 * (d("cpu", "worker")) / n, 1),
            "beat_cpu_ms": round(1000 * d("cpu", "beat") / n, 2),
            "merchant_cpu_ms": round(1000 * d("cpu", "merchant") / n, 1),
            "merchant_callbacks": round((after["callbacks"] - before["callbacks"]) / n, 2),
        }


_COUNTS_CONN = None


def db_counts(database_url: str, first: int, last: int) -> dict[str, int] | None:
    """Orders of the range by status; None when PostgreSQL refused us this time (a shared server can run out of
    connection slots): one connection kept for the whole run, reopened on the next call after an error."""
    import psycopg

    global _COUNTS_CONN
    try:
        if _COUNTS_CONN is None or _COUNTS_CONN.closed:
            _COUNTS_CONN = psycopg.connect(database_url, autocommit=True)
        rows = _COUNTS_CONN.execute("SELECT status, count(*) FROM orders_order WHERE id BETWEEN %s AND %s "
                                    "GROUP BY status", [first, last]).fetchall()
    except psycopg.OperationalError as exc:
        print(f"  (status counts unavailable: {exc})", flush=True)
        _COUNTS_CONN = None
        return None
    return dict(rows)


def print_table(results: dict) -> None:
    rows = []
    for phase in ("burst", "simulate"):
        r = results.get(phase)
        if not r:
            continue
        f, o, c = r["fulfilment"], r["overhead"], r["per_order"]
        placed = r["placed"]["count"] if phase == "burst" else r["run"]["orders_placed"]
        rate = (f"{r['placed']['count'] / max(r['placed']['seconds'], 0.1):.0f}/s (bulk insert)" if phase == "burst"
                else f"{r['run']['orders_placed_per_second']}/s (HTTP chat)")
        peak = r["peak_in_flight"] if phase == "burst" else f["peak_in_flight"]
        held = r["peak_held_by_merchant"] if phase == "burst" else f["peak_held_by_merchant"]
        rows.append((phase, placed, r["by_state"].get("completed", 0), r["completed_per_second"], rate, peak, held,
                     f"{o['placement_to_completion_s']['p50']} / {o['placement_to_completion_s']['p99']}",
                     f"{o['platform_overhead_s']['p50']} / {o['platform_overhead_s']['p99']}",
                     f"{c['web_requests']} / {c['web_sql']} / {c['web_cpu_ms']}",
                     f"{c['worker_tasks']} / {c['worker_sql']} / {c['worker_cpu_ms']}",
                     "PASS" if r["ok"] else "FAIL"))
    head = ("phase", "orders", "completed", "completed/s e2e", "placement", "peak in flight", "held by merchant",
            "placed->completed p50/p99 s", "platform overhead p50/p99 s", "web req/SQL/CPU ms per order",
            "worker tasks/SQL/CPU ms per order", "invariants")
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


# --- driver ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=20000, help="orders placed at once in the burst phase (0: skip)")
    parser.add_argument("--users", type=int, default=2000, help="simulate: users (0: skip the phase)")
    parser.add_argument("--orders", type=int, default=20000, help="simulate: chat orders")
    parser.add_argument("--concurrency", type=int, default=32, help="simulate: client threads")
    parser.add_argument("--accept", default="2-30", help="MIANDAN_MERCHANT_ACCEPT_SECONDS")
    parser.add_argument("--deliver", default="5-20", help="MIANDAN_MERCHANT_DELIVER_SECONDS")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8800")))
    parser.add_argument("--merchant-port", type=int, default=int(os.environ.get("BENCH_MERCHANT_PORT", "8801")))
    parser.add_argument("--wait", type=float, default=1800, help="deadline for a phase's orders to be final (s)")
    parser.add_argument("--smoke", action="store_true", help="small and short: checks the harness only")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.burst, args.users, args.orders, args.accept, args.deliver = 300, 40, 150, "1-3", "1-3"

    database = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/miandan_bench_fulfil")
    cfg = BenchConfig(port=args.port, workers=args.workers, threads=args.threads, database_url=database,
                      redis_prefix=os.environ.get("BENCH_REDIS_PREFIX", "bench-fulfil"))
    merchant_url = f"http://127.0.0.1:{args.merchant_port}"
    counters = Path(tempfile.mkdtemp(prefix="bench-fulfil-counters-"))
    logs = Path(tempfile.mkdtemp(prefix="bench-fulfil-logs-"))
    cfg.extra_env.update({
        "CELERY_DEFAULT_QUEUE": os.environ.get("BENCH_QUEUE", "bench-fulfil"), "CELERY_TASK_ALWAYS_EAGER": "0",
        "MIANDAN_MERCHANT_URL": merchant_url, "MIANDAN_MERCHANT_ACCEPT_SECONDS": args.accept,
        "MIANDAN_MERCHANT_DELIVER_SECONDS": args.deliver, "MIANDAN_MERCHANT_SEED": "12",
        "MIANDAN_PROXY_COUNT": "1", "MIANDAN_AUTH_IP_FLOOR": "0", "BENCH_COUNTERS_DIR": str(counters),
        # Orders wait up to 50 s on this merchant: the deadline and the "no news" poll stay well above it.
        "MIANDAN_ORDER_ACCEPT_DEADLINE_SECONDS": "600", "MIANDAN_MERCHANT_POLL_SECONDS": "120",
    })
    print(f"bench: resetting {database}; logs in {logs}", flush=True)
    reset_database(cfg)
    django_call(cfg, "bench.fulfilment:prepare")
    env = cfg.env()
    queue = env["CELERY_DEFAULT_QUEUE"]
    import redis

    redis.Redis.from_url(cfg.redis_url).delete(queue)  # nothing left over from an earlier run
    results: dict = {"config": {k: getattr(args, k) for k in ("burst", "users", "orders", "concurrency", "accept",
                                                             "deliver", "workers", "threads", "celery_concurrency")}}
    worker_cmd = [PYTHON, str(ROOT / "bench" / "celery_instrumented.py"), "-A", "miandan", "worker", "-Q", queue,
                  "--pool=prefork", "-c", str(args.celery_concurrency), "--without-gossip", "--without-mingle",
                  "--without-heartbeat", "-l", "info", "-n", f"bench-fulfil-{os.getpid()}@%h"]
    beat_cmd = [str(Path(PYTHON).with_name("celery")), "-A", "miandan", "beat", "-l", "info",
                "--schedule", str(logs / "beat-schedule")]
    merchant_cmd = [PYTHON, "manage.py", "simulated_merchant", "--url", merchant_url, "--callback-url", cfg.url,
                    "--state", str(logs / "merchant.sqlite3")]
    server = InstrumentedServer(cfg, log_path=logs / "web.log")
    with server, Proc("worker", worker_cmd, env, logs, ready=" ready.") as worker, \
            Proc("beat", beat_cmd, env, logs, ready="beat: Starting") as beat, \
            Proc("merchant", merchant_cmd, env, logs, ready=f"{merchant_url}/healthz") as merchant:
        meter = Meter(counters, {"web": server.proc.pid, "worker": worker.pgid, "beat": beat.pgid,
                                 "merchant": merchant.pgid}, merchant_url)
        if args.burst:
            print(f"burst: placing {args.burst} orders", flush=True)
            placed = django_call(cfg, "bench.fulfilment:burst_place", {"count": args.burst})
            before = meter.read()
            sent = django_call(cfg, "bench.fulfilment:burst_send", {"first": placed["first"], "last": placed["last"]})
            peak, peak_held, t0 = 0, 0, before["t"]
            while True:
                counts = db_counts(database, placed["first"], placed["last"])
                if counts is None:
                    time.sleep(2)
                    continue
                live = sum(counts.get(s, 0) for s in ACTIVE)
                peak, peak_held = max(peak, live), max(peak_held, live - counts.get("placed", 0))
                print(f"  t={time.time() - t0:6.1f}s in flight {live:6d} (held by merchant "
                      f"{live - counts.get('placed', 0):6d}) completed {counts.get('completed', 0):6d}", flush=True)
                if not live or time.time() - t0 > args.wait:
                    break
                time.sleep(2)
            after = meter.read()
            report = django_call(cfg, "bench.fulfilment:burst_report", {"first": placed["first"], "last": placed["last"]})
            overhead = django_call(cfg, "bench.fulfilment:platform_overhead", {
                "first": placed["first"], "last": placed["last"], "state": str(logs / "merchant.sqlite3")})
            completed = report["checks"]["orders_final"]["by_state"].get("completed", 0)
            elapsed = after["t"] - before["t"]
            results["burst"] = {
                "placed": placed, "sent": sent, "peak_in_flight": max(peak, placed["count"]),
                "peak_held_by_merchant": peak_held, "seconds": round(elapsed, 1),
                "completed_per_second": round(completed / elapsed, 1), "ok": report["ok"],
                "invariants": {k: v["ok"] for k, v in report["checks"].items()},
                "by_state": report["checks"]["orders_final"]["by_state"], "fulfilment": report["fulfilment"],
                "overhead": overhead, "per_order": Meter.per_order(before, after, completed),
                "callback_answer_ms": merchant_health(merchant_url)["callback_answer_ms"],
            }
            print(json.dumps(results["burst"], ensure_ascii=False, indent=1), flush=True)
        if args.users:
            print(f"simulate: {args.users} users, {args.orders} chat orders, concurrency {args.concurrency}", flush=True)
            first_id = django_call(cfg, "bench.fulfilment:max_order_id") + 1
            before = meter.read()
            sim = subprocess.run(
                [PYTHON, "manage.py", "simulate", "--users", str(args.users), "--orders", str(args.orders),
                 "--concurrency", str(args.concurrency), "--url", cfg.url, "--campaign", CAMPAIGN,
                 "--wait", str(args.wait), "--json", "--timeout", "60"],
                cwd=ROOT, env=env, capture_output=True, text=True)
            after = meter.read()
            try:
                report = json.loads(sim.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise SystemExit(f"simulate failed:\n{sim.stdout[-2000:]}\n{sim.stderr[-4000:]}") from None
            run = report["run"]
            completed = report["checks"]["orders_final"]["by_state"].get("completed", 0)
            overhead = django_call(cfg, "bench.fulfilment:platform_overhead", {
                "first": first_id, "last": 2**62, "state": str(logs / "merchant.sqlite3")})
            results["simulate"] = {
                "run": run, "ok": report["ok"], "invariants": {k: v["ok"] for k, v in report["checks"].items()},
                "by_state": report["checks"]["orders_final"]["by_state"], "fulfilment": report["fulfilment"],
                "overhead": overhead, "completed_per_second": round(completed / run["seconds_total"], 2),
                "per_order": Meter.per_order(before, after, run["orders_placed"]),
                "client_requests_per_order": round(run["requests"] / max(run["orders_placed"], 1), 2),
                "callback_answer_ms": merchant_health(merchant_url)["callback_answer_ms"],
                "statuses": report["statuses"],
            }
            print(json.dumps(results["simulate"], ensure_ascii=False, indent=1), flush=True)
        results["worker_rss_mb"] = rss_mb(worker.pgid)
        results["merchant"] = merchant_health(merchant_url)
    print_table(results)
    print("worker RSS after the run (MB):", results["worker_rss_mb"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, ensure_ascii=False, indent=1))
    shutil.rmtree(counters, ignore_errors=True)
    ok = all(results[p]["ok"] for p in ("burst", "simulate") if p in results)
    print("RESULT:", "PASS" if ok else "FAIL", f"(logs: {logs})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
