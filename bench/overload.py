"""Overload benchmark (issue 7): nominal capacity of join + chat order, then 3x and 10x offered load.

1. `nominal`  closed loop, --connections keep-alive clients doing the mix (join by fresh users,
               chat orders by users holding a card): goodput = 2xx/s is the nominal capacity.
2. `3x`, `10x` open loop: requests are *scheduled* at 3x / 10x that rate whatever the server does
               (latency is measured from the scheduled send time, so a slow server cannot slow the
               generator down and hide its own latency: no coordinated omission).
   During every phase a separate stream reads `GET /api/v1/vouchers/` (my cards, a core read that
   must never be shed) at --read-rate per second.
3. The Celery worker drains the orders; then the invariant report of `manage.py simulate`
   (cards per user <= cap, budget, reconcile, every order final, no card redeemed twice).

Per phase it reports: offered and achieved rate, goodput, 2xx / 429 / 503 busy / other 5xx counts,
p99 of shed answers (429 + 503 at the client; target < 20 ms), p99 of core reads, p99 of successes.
Target: zero 5xx other than 503 `busy`, and a clean invariant report.

    .venv/bin/python bench/overload.py                 # 20 s per phase; run on a quiet machine
    .venv/bin/python bench/overload.py --smoke         # ~3 s per phase, numbers only check the harness
    .venv/bin/python bench/overload.py --phases 3,10 --capacity 150   # skip the nominal run
    .venv/bin/python bench/overload.py --json /tmp/overload.json --workers 4 --threads 8

Everything runs on 127.0.0.1: gunicorn from bench/server.py with its own database `miandan_bench_overload`
(OVERLOAD_DATABASE_URL), Redis db 14 with prefix `benchov`, Celery queue `bench-overload` and one Celery worker,
and the load generator in --processes separate processes.
The server runs with MIANDAN_PROXY_COUNT=1 so each simulated user has its own X-Forwarded-For IP
(per-IP limits would otherwise see every user as 127.0.0.1) and with per-user limits that a real
user would not reach, so this measures shedding, not rate limiting.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server import PYTHON, ROOT, BenchConfig, Server, django_call, reset_database

SLUG = "overload"
QUEUE = "bench-overload"
CENTER = (30.2741, 120.1551)
# Concrete orders only: since issue 13 "帮我点一杯奶茶" is answered with a recommendation (200), never placed.
SENTENCES = ["帮我点一杯珍珠奶茶", "来一杯喜茶多肉葡萄，少冰", "蜜雪冰城冰鲜柠檬水两杯", "霸王茶姬伯牙绝弦，无糖",
             "茶百道杨枝甘露一杯 三分糖", "奈雪的茶霸气橙子一杯，去冰"]


# --- preparation (runs inside Django through bench.server.django_call) -------------------------

def prepare(*, join_users: int, order_users: int, read_users: int) -> dict:
    """Campaign, catalogue, users with tokens; order and read users already hold a card."""
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    from bench.engine import prepare_users
    from campaign.models import Campaign
    from campaign.services import CampaignSpec, campaign_create
    from demo.catalog import catalog_load
    from vouchers.models import Voucher
    from vouchers.services import voucher_issue

    catalog_load(stores_per_city=20)
    campaign = Campaign.objects.filter(slug=SLUG).first() or campaign_create(spec=CampaignSpec(
        slug=SLUG, name="压测活动", total_budget=Decimal("1000000000.00"), status=Campaign.Status.LIVE,
        starts_at=timezone.now() - dt.timedelta(hours=1), ends_at=timezone.now() + dt.timedelta(days=30),
        bucket_count=64))
    from accounts.models import AuthToken

    join_tokens = prepare_users(count=join_users, prefix_digit=5)
    holders = prepare_users(count=order_users + read_users, prefix_digit=6)
    hashes = {}
    import hashlib

    for raw in holders:
        hashes[hashlib.sha256(raw.encode()).hexdigest()] = raw
    tokens = AuthToken.objects.filter(key_hash__in=list(hashes)).select_related("user")
    for token in tokens:
        voucher_issue(user=token.user, campaign=campaign, source=Voucher.Source.WELCOME)
    return {"join": join_tokens, "order": holders[:order_users], "read": holders[order_users:]}


def invariants(*, slug: str, wait: float, statuses: dict) -> dict:
    """The invariant report of `manage.py simulate`, over every order of the run."""
    from campaign.models import Campaign
    from demo.simulation import Tally, invariant_report, wait_for_orders
    from orders.models import Order

    campaign = Campaign.objects.get(slug=slug)
    orders = Order.objects.all()  # the bench database holds only this run
    open_orders = wait_for_orders(orders, wait, quiet=True)
    tally = Tally()
    for status, n in statuses.items():
        tally.statuses[int(status)] += n
    return invariant_report(campaign=campaign, orders=orders, open_orders=open_orders, tally=tally)


# --- a small asyncio HTTP/1.1 client (keep-alive pool, open or closed loop) --------------------

class Pool:
    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list = []
        self.open = 0
        self.waiters: list[asyncio.Future] = []

    async def acquire(self):
        if self.idle:
            return self.idle.pop()
        if self.open < self.limit:
            self.open += 1
            try:
                return await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.open -= 1
                raise
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return await fut

    def release(self, conn, ok: bool) -> None:
        if not ok:
            self.open -= 1
            try:
                conn[1].close()
            except Exception:
                pass
            if self.waiters:  # let a waiter open a fresh connection
                fut = self.waiters.pop(0)
                self.open += 1
                asyncio.ensure_future(self._open_for(fut))
            return
        if self.waiters:
            self.waiters.pop(0).set_result(conn)
        else:
            self.idle.append(conn)

    async def _open_for(self, fut):
        try:
            fut.set_result(await asyncio.open_connection(self.host, self.port))
        except OSError as exc:
            self.open -= 1
            fut.set_exception(exc)


async def _http(pool: Pool, method: str, path: str, body: dict | None, headers: dict, timeout: float):
    payload = json.dumps(body, ensure_ascii=False).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: {pool.host}:{pool.port}", "Accept: application/json",
            f"Content-Length: {len(payload)}"]
    if body is not None:
        head.append("Content-Type: application/json")
    head += [f"{k}: {v}" for k, v in headers.items()]
    conn = await pool.acquire()
    # Stamped when the request leaves the client, as a proxy in front of gunicorn would stamp its
    # arrival: the guard sheds writes that then waited too long in gunicorn's queue.
    head.append(f"X-Request-Start: t={time.time():.6f}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    reader, writer = conn
    ok = False
    try:
        async def exchange():
            writer.write(raw)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            length, chunked, close = 0, False, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
                elif name == "connection" and "close" in value.lower():
                    close = True
            if chunked:
                data = b""
                while True:
                    size = int((await reader.readline()).strip() or b"0", 16)
                    if size == 0:
                        await reader.readline()
                        break
                    data += await reader.readexactly(size)
                    await reader.readline()
            else:
                data = await reader.readexactly(length) if length else b""
            return status, data, close

        status, data, close = await asyncio.wait_for(exchange(), timeout)
        ok = not close
        return status, data
    finally:
        pool.release(conn, ok)


class Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float, str]] = []  # (stream, status, latency ms, code)


def _request_for(kind: str, token: str, n: int, ip: str):
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": ip}
    if kind == "join":
        return "POST", f"/api/v1/campaigns/{SLUG}/join", {"app_version": "9.9.9"}, headers
    if kind == "order":
        lat = CENTER[0] + random.uniform(-0.01, 0.01)
        lng = CENTER[1] + random.uniform(-0.01, 0.01)
        body = {"text": SENTENCES[n % len(SENTENCES)], "lat": lat, "lng": lng, "campaign": SLUG, "pay_full_price": True}
        return "POST", "/api/v1/orders/chat", body, headers
    return "GET", "/api/v1/vouchers/", None, headers


async def _one(rec: Recorder, pool: Pool, stream: str, req, scheduled: float, timeout: float) -> None:
    method, path, body, headers = req
    try:
        status, data = await _http(pool, method, path, body, headers, timeout)
        code = ""
        if status >= 400:
            try:
                code = json.loads(data).get("code", "")
            except Exception:
                code = ""
    except TimeoutError:
        status, code = 0, "client_timeout"
    except Exception as exc:
        status, code = 0, f"transport:{type(exc).__name__}"
    rec.rows.append((stream, status, (time.perf_counter() - scheduled) * 1000, code))


def _items(tokens: dict, share: int, of: int):
    """This process's users: join tokens (each used once), order tokens (cycled), read tokens."""
    return {k: v[share::of] for k, v in tokens.items()}


async def _open_loop(url, tokens, rate, duration, read_rate, order_share, max_conns, timeout, index):
    parts = urlsplit(url)
    pool, read_pool = Pool(parts.hostname, parts.port, max_conns), Pool(parts.hostname, parts.port, 16)
    rec, tasks = Recorder(), []
    start = time.perf_counter() + 0.2
    counters = Counter()

    async def stream(name, per_second, kinds):
        if per_second <= 0:
            return
        interval = 1.0 / per_second
        i = 0
        while True:
            at = start + i * interval
            if at - start >= duration:
                return
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = kinds(i)
            if kind == "join" and counters["join"] >= len(tokens["join"]):
                kind = "order"  # fresh users used up: keep the offered load with orders
            pool_ = read_pool if kind == "read" else pool
            pick = tokens[kind]
            token = pick[counters[kind] % len(pick)]
            counters[kind] += 1
            ip = f"10.{index}.{(counters[kind] >> 8) & 255}.{counters[kind] & 255}"
            tasks.append(asyncio.ensure_future(_one(rec, pool_, name if kind == "read" else kind,
                                                    _request_for(kind, token, i, ip), at, timeout)))
            i += 1

    await asyncio.gather(
        stream("mix", rate, lambda i: "order" if random.random() < order_share else "join"),
        stream("read", read_rate, lambda i: "read"),
    )
    await asyncio.gather(*tasks, return_exceptions=True)
    return rec.rows


async def _closed_loop(url, tokens, connections, duration, read_rate, order_share, timeout, index):
    parts = urlsplit(url)
    pool, read_pool = Pool(parts.hostname, parts.port, connections), Pool(parts.hostname, parts.port, 16)
    rec = Recorder()
    stop = time.perf_counter() + duration
    counters = Counter()

    async def client(c):
        n = 0
        while time.perf_counter() < stop:
            kind = "order" if random.random() < order_share else "join"
            if kind == "join" and counters["join"] >= len(tokens["join"]):
                kind = "order"
            pick = tokens[kind]
            token = pick[counters[kind] % len(pick)]
            counters[kind] += 1
            ip = f"10.{index}.{(counters[kind] >> 8) & 255}.{counters[kind] & 255}"
            await _one(rec, pool, kind, _request_for(kind, token, n, ip), time.perf_counter(), timeout)
            n += 1

    async def reader():
        if read_rate <= 0:
            return
        i = 0
        while time.perf_counter() < stop:
            await _one(rec, read_pool, "read", _request_for("read", tokens["read"][i % len(tokens["read"])], i, "10.9.9.9"),
                       time.perf_counter(), timeout)
            i += 1
            await asyncio.sleep(1.0 / read_rate)

    await asyncio.gather(*(client(c) for c in range(connections)), reader())
    return rec.rows


def _proc(mode, url, tokens, arg, duration, read_rate, order_share, max_conns, timeout, index, queue):
    random.seed(index)
    if mode == "open":
        rows = asyncio.run(_open_loop(url, tokens, arg, duration, read_rate, order_share, max_conns, timeout, index))
    else:
        rows = asyncio.run(_closed_loop(url, tokens, arg, duration, read_rate, order_share, timeout, index))
    queue.put(rows)


def run_phase(name, mode, *, url, tokens, arg, duration, read_rate, order_share, processes, max_conns, timeout) -> dict:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = []
    for p in range(processes):
        share = arg / processes if mode == "open" else max(1, round(arg / processes))
        procs.append(ctx.Process(target=_proc, args=(mode, url, _items(tokens, p, processes), share, duration,
                                                     read_rate / processes, order_share, max_conns, timeout, p + 1,
                                                     queue)))
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    rows = []
    for _ in procs:
        rows.extend(queue.get(timeout=duration + timeout + 120))
    for proc in procs:
        proc.join(10)
    wall = max(duration, 0.001)
    return summarize(name, mode, arg, rows, wall, time.perf_counter() - started)


def _p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q / 100 * len(values)))], 2)


def summarize(name, mode, arg, rows, duration, wall) -> dict:
    work = [r for r in rows if r[0] in ("join", "order")]
    reads = [r for r in rows if r[0] == "read"]
    ok = [r for r in work if r[1] == 201]  # a new card or a placed order; 200 is a repeated join
    shed = [r for r in work if r[1] in (429, 503)]
    statuses = Counter(str(r[1]) for r in rows)
    codes = Counter(f"{r[0]}:{r[3] or r[1]}" for r in rows if r[1] >= 300 or r[1] == 0)
    return {
        "phase": name,
        "mode": mode,
        "offered": round(arg, 1) if mode == "open" else f"{arg} connections",
        "duration_s": round(duration, 1),
        "sent_per_s": round(len(work) / duration, 1),
        "goodput_per_s": round(len(ok) / duration, 1),
        "goodput_by_kind": dict(Counter(r[0] for r in ok)),
        "status": dict(sorted(statuses.items())),
        "5xx_not_503": sum(1 for r in rows if r[1] >= 500 and r[1] != 503),
        "busy_503": sum(1 for r in work if r[1] == 503),
        "rate_limited_429": sum(1 for r in work if r[1] == 429),
        "client_timeouts_or_transport": sum(1 for r in rows if r[1] == 0),
        "p99_shed_ms": _p([r[2] for r in shed], 99),
        "p50_shed_ms": _p([r[2] for r in shed], 50),
        "p99_ok_ms": _p([r[2] for r in ok], 99),
        "p50_ok_ms": _p([r[2] for r in ok], 50),
        "core_reads": len(reads),
        "core_reads_ok": sum(1 for r in reads if r[1] == 200),
        "p99_core_read_ms": _p([r[2] for r in reads], 99),
        "codes": dict(sorted(codes.items())),
        "wall_s": round(wall, 1),
    }


def print_table(results: list[dict]) -> None:
    cols = ["phase", "offered", "sent_per_s", "goodput_per_s", "5xx_not_503", "busy_503", "rate_limited_429",
            "p99_shed_ms", "p99_ok_ms", "p99_core_read_ms", "core_reads_ok", "core_reads"]
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))


def _split(items: list, weights: list[float]) -> list[list]:
    """Fresh users for each phase in proportion to its offered load (a fresh user joins once)."""
    total, out, start = sum(weights), [], 0
    for w in weights:
        end = start + int(len(items) * w / total)
        out.append(items[start:end])
        start = end
    return out


class CeleryWorker:
    def __init__(self, cfg: BenchConfig, concurrency: int) -> None:
        self.cfg, self.concurrency, self.proc = cfg, concurrency, None

    def __enter__(self):
        log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-celery-{self.cfg.port}.log", "w")
        self.proc = subprocess.Popen(
            [str(Path(PYTHON).parent / "celery"), "-A", "miandan", "worker", "-Q", QUEUE, "-c", str(self.concurrency),
             "-l", "warning", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=self.cfg.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="3 s phases, small population")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=0,
                        help="closed-loop clients for the nominal phase (default: workers x threads)")
    parser.add_argument("--capacity", type=float, default=0.0, help="skip the nominal phase and use this goodput/s")
    parser.add_argument("--phases", default="3,10", help="multiples of capacity to offer, open loop")
    parser.add_argument("--order-share", type=float, default=0.5, help="share of chat orders in the mix (rest: joins)")
    parser.add_argument("--read-rate", type=float, default=20.0, help="core reads per second during every phase")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--max-conns", type=int, default=256, help="connections per generator process (open loop)")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request (s)")
    parser.add_argument("--workers", type=int, default=BenchConfig.workers)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument("--join-users", type=int, default=0, help="fresh users (default: enough for the run)")
    parser.add_argument("--order-users", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--wait", type=float, default=300.0, help="deadline for orders to finish after the run (s)")
    parser.add_argument("--no-reset", action="store_true", help="reuse the bench database")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration = min(args.duration, 3.0)
        args.order_users = min(args.order_users, 200)
        args.wait = min(args.wait, 60)

    # Its own database, Redis prefix and queue: other bench scripts reset `miandan_bench` and use queue `bench`.
    cfg = BenchConfig(port=args.port, workers=args.workers, threads=args.threads, worker_class="gthread",
                      database_url=os.environ.get("OVERLOAD_DATABASE_URL",
                                                  "postgres://postgres@127.0.0.1:5432/miandan_bench_overload"),
                      redis_prefix="benchov")
    write_slots = max(1, args.threads // 2)
    args.connections = args.connections or args.workers * args.threads
    cfg.extra_env.update({
        # Campaign writes may hold at most half of each worker's threads: the rest answer sheds and core reads.
        "MIANDAN_SHED_MAX_LIMIT": str(write_slots),
        "MIANDAN_SHED_INITIAL_LIMIT": str(write_slots),
        "MIANDAN_SHED_MIN_LIMIT": "1",
        "MIANDAN_PROXY_COUNT": "1",
        "MIANDAN_RATELIMITS": "join_user=1000/m,order_user=1000/m,join_ip=100000/m,order_ip=100000/m",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CELERY_DEFAULT_QUEUE": QUEUE,
    })
    if not args.no_reset:
        reset_database(cfg)
    join_users = args.join_users or int(max(500, 200 * args.duration * (1 - args.order_share) * 12))
    if args.smoke:
        join_users = min(join_users, 3000)
    t0 = time.time()
    tokens = django_call(cfg, "bench.overload:prepare",
                         {"join_users": join_users, "order_users": args.order_users, "read_users": 50})
    print(f"prepared {len(tokens['join'])} fresh users, {len(tokens['order'])} card holders in {time.time() - t0:.0f} s",
          flush=True)
    common = {"duration": args.duration, "read_rate": args.read_rate,
              "order_share": args.order_share, "processes": args.processes, "max_conns": args.max_conns,
              "timeout": args.timeout}
    results = []
    capacity = args.capacity
    multiples = [float(x) for x in args.phases.split(",") if x.strip()]
    chunks = _split(tokens["join"], [1.0] + multiples if not capacity else multiples)

    def with_join(i):
        return {**common, "tokens": {**tokens, "join": chunks[i]}}

    with CeleryWorker(cfg, args.celery_concurrency):
        if not capacity:
            # Capacity is measured with shedding off: closed loop, one client per server thread.
            # Same database and Redis prefix as the prepared users (a fresh BenchConfig would point elsewhere).
            nominal_cfg = dataclasses.replace(cfg, extra_env={**cfg.extra_env, "MIANDAN_SHED_ENABLED": "0"})
            with Server(nominal_cfg):
                nominal = run_phase("nominal", "closed", url=cfg.url, arg=args.connections, **with_join(0))
            results.append(nominal)
            capacity = max(1.0, nominal["goodput_per_s"])
            print(json.dumps(nominal, ensure_ascii=False), flush=True)
        with Server(cfg):
            report = _overload_phases(cfg, args, capacity, multiples, with_join, results)
    _print_results(args, results, report, capacity)
    return 0 if report["ok"] and all(r["5xx_not_503"] == 0 for r in results) else 1


def _overload_phases(cfg, args, capacity, multiples, with_join, results) -> dict:
    for n, multiple in enumerate(multiples):
        phase = run_phase(f"{multiple:g}x", "open", url=cfg.url, arg=capacity * multiple,
                          **with_join(n + (0 if args.capacity else 1)))
        results.append(phase)
        print(json.dumps(phase, ensure_ascii=False), flush=True)
    statuses = Counter()
    for r in results:
        statuses.update({k: v for k, v in r["status"].items() if k != "0"})
    return django_call(cfg, "bench.overload:invariants", {"slug": SLUG, "wait": args.wait, "statuses": dict(statuses)})


def _print_results(args, results, report, capacity) -> None:
    print()
    print_table(results)
    print()
    print("invariants:", "PASS" if report["ok"] else "FAIL")
    for name, check in report["checks"].items():
        print(f"  [{'PASS' if check['ok'] else 'FAIL'}] {name}: "
              + ", ".join(f"{k}={v}" for k, v in check.items() if k != "ok"))
    if args.json:
        Path(args.json).write_text(json.dumps({"phases": results, "invariants": report, "capacity": capacity,
                                               "args": vars(args)}, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    sys.exit(main())
