"""Overload sweep (issues 7 and 19): does the production server keep its peak and refuse the rest at once?

On the production command (`gunicorn miandan.wsgi`, shape from gunicorn.conf.py), guard on:

1. closed loop, joins by fresh users, at 8 -> 1,000 connections (wrk, `--connections`): goodput (201/s)
   at each point and its share of the sweep's best; the best point is the *knee*.
2. open loop at 1x / 3x / 10x / 20x the knee's rate (`--multiples`): requests are *scheduled* at that rate
   whatever the server does, latency measured from the scheduled send time (no coordinated omission).
   Each request carries `X-Request-Start` stamped when it leaves the client, as a proxy in front would.
3. During every point a separate stream reads `GET /api/v1/vouchers/` (my cards, a core read that must
   never be shed) at `--read-rate` per second; afterwards the invariant report (reconcile, cap, budget).

Per point: goodput and its share of the best, 503/429 counts, refusal latency at the client (p50/p99)
and the refusal's own server time (its `Server-Timing` header, p99), 5xx other than 503, client
timeouts (`--timeout`, 10 s), core reads 200 / total and their p99.
Targets (issue 19): goodput >= 90 % of the best at every point; refusals p99 < 100 ms at the client up
to 10x and < 1 ms of server time; 0 5xx other than 503; 0 timeouts; core reads all 200; reconcile PASS.

    .venv/bin/python bench/overload.py                        # full sweep (~6 minutes)
    .venv/bin/python bench/overload.py --smoke                # 3 s points: checks the harness only
    .venv/bin/python bench/overload.py --connections 8,64,1000 --multiples 1,10 --json /tmp/overload.json
    .venv/bin/python bench/overload.py --order-share 0.5      # open loop with chat orders in the mix

Everything runs on 127.0.0.1 with its own database (OVERLOAD_DATABASE_URL, default `miandan_bench_overload`),
Redis prefix (BENCH_REDIS_PREFIX) and Celery queue. The server runs with MIANDAN_PROXY_COUNT=1 so each user has
its own X-Forwarded-For address, and with per-user limits a real user would not reach: this measures
admission, not rate limiting. The load generators (wrk, Python asyncio) share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench.loadgen import run_wrk
from bench.server import PYTHON, ROOT, BenchConfig, Server, django_call, manage, reset_database

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

    from bench.engine import analyze, prepare_users
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
    analyze()
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
            length, chunked, close, server_ms = 0, False, False, None
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
                elif name == "server-timing" and "dur=" in value:
                    server_ms = float(value.split("dur=")[1].split(";")[0].split(",")[0])
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
            return status, data, close, server_ms

        status, data, close, server_ms = await asyncio.wait_for(exchange(), timeout)
        ok = not close
        return status, data, server_ms
    finally:
        pool.release(conn, ok)


class Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple] = []  # (stream, status, latency ms, code, server ms or None)


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
    server_ms = None
    try:
        status, data, server_ms = await _http(pool, method, path, body, headers, timeout)
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
    rec.rows.append((stream, status, (time.perf_counter() - scheduled) * 1000, code, server_ms))


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
    """An open-loop point from the asyncio generator's rows."""
    work = [r for r in rows if r[0] in ("join", "order")]
    reads = [r for r in rows if r[0] == "read"]
    ok = [r for r in work if r[1] == 201]  # a new card or a placed order; 200 is a repeated join
    shed = [r for r in work if r[1] in (429, 503)]
    statuses = Counter(str(r[1]) for r in rows)
    codes = Counter(f"{r[0]}:{r[3] or r[1]}" for r in rows if r[1] >= 300 or r[1] == 0)
    server = [r[4] for r in shed if r[4] is not None]
    return {
        "point": name,
        "mode": mode,
        "offered": f"{arg:.0f}/s" if mode == "open" else f"{arg} conns",
        "sent_per_s": round(len(work) / duration, 1),
        "goodput_per_s": round(len(ok) / duration, 1),
        "status": dict(sorted(statuses.items())),
        "5xx_not_503": sum(1 for r in rows if r[1] >= 500 and r[1] != 503),
        "busy_503": sum(1 for r in work if r[1] == 503),
        "rate_limited_429": sum(1 for r in work if r[1] == 429),
        "timeouts": sum(1 for r in rows if r[1] == 0),
        "refusal_p50_ms": _p([r[2] for r in shed], 50),
        "refusal_p99_ms": _p([r[2] for r in shed], 99),
        "refusal_server_p99_ms": _p(server, 99) if server else None,
        "ok_p99_ms": _p([r[2] for r in ok], 99),
        "reads_ok": sum(1 for r in reads if r[1] == 200),
        "reads": len(reads),
        "read_p99_ms": _p([r[2] for r in reads], 99),
        "codes": dict(sorted(codes.items())),
        "wall_s": round(wall, 1),
    }


class Reader:
    """Core reads (`GET /api/v1/vouchers/`) at a steady rate on their own keep-alive connection, beside wrk."""

    def __init__(self, url: str, tokens: list[str], rate: float, timeout: float) -> None:
        import threading

        self.url, self.tokens, self.rate, self.timeout = url, tokens, rate, timeout
        self.rows: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import http.client

        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        i = 0
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/api/v1/vouchers/", headers={
                    "Authorization": f"Bearer {self.tokens[i % len(self.tokens)]}", "X-Forwarded-For": "10.9.9.9"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except Exception:
                status = 0
                conn.close()
            self.rows.append((status, (time.perf_counter() - t0) * 1000))
            i += 1
            self._stop.wait(max(0.0, 1.0 / self.rate - (time.perf_counter() - t0)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(self.timeout + 5)


def closed_point(url: str, tokens: dict, connections: int, *, duration: float, warmup: float, read_rate: float,
                 timeout: float, offset: int) -> dict:
    """One closed-loop point: wrk with `connections` connections, every request a join by a fresh user."""
    users = tokens["join"]
    plan = {"name": f"{connections} conns", "method": "POST", "path": f"/api/v1/campaigns/{SLUG}/join",
            "body": {"app_version": "9.9.9"}, "tokens": users[offset:] + users[:offset],
            "ips": [f"10.{20 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}" for i in range(len(users))], "mode": "once"}
    with Reader(url, tokens["read"], read_rate, timeout) as reader:
        r = run_wrk(plan, url=url, connections=connections, duration=duration, warmup=warmup,
                    threads=2 if connections > 1 else 1, timeout=timeout)
    measured = r["duration_s"]
    statuses = r["status"]
    reads = reader.rows
    return {
        "point": f"{connections} conns",
        "mode": "closed",
        "offered": f"{connections} conns",
        "sent_per_s": r["rps"],
        "goodput_per_s": round(statuses.get("201", 0) / measured, 1),
        "status": statuses,
        "5xx_not_503": sum(n for s, n in statuses.items() if s.startswith("5") and s != "503"),
        "busy_503": statuses.get("503", 0),
        "rate_limited_429": statuses.get("429", 0),
        "timeouts": r["transport_errors"].get("timeout", 0),
        "transport_errors": r["transport_errors"],
        "all_p50_ms": r["latency_ms"]["p50"],
        "all_p99_ms": r["latency_ms"]["p99"],
        "refusal_server_p99_ms": r["server_timing_ms"].get("p99"),
        "reads_ok": sum(1 for s, _ in reads if s == 200),
        "reads": len(reads),
        "read_p99_ms": _p([ms for _, ms in reads], 99),
        "users_reused": r["exhausted_connections"],
    }


def print_table(results: list[dict], best: float) -> None:
    cols = ["point", "sent/s", "goodput/s", "of best", "503", "429", "5xx", "timeouts", "refusal p50/p99 ms (client)",
            "refusal p99 ms (server)", "reads ok", "read p99 ms"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        refusal = (f"{r['refusal_p50_ms']} / {r['refusal_p99_ms']}" if r["mode"] == "open"
                   else f"(all answers: {r['all_p50_ms']} / {r['all_p99_ms']})")
        share = f"{100 * r['goodput_per_s'] / best:.0f} %" if best else "-"
        print("| " + " | ".join(str(x) for x in [
            r["point"], r["sent_per_s"], r["goodput_per_s"], share, r["busy_503"], r["rate_limited_429"],
            r["5xx_not_503"], r["timeouts"], refusal, r["refusal_server_p99_ms"], f"{r['reads_ok']}/{r['reads']}",
            r["read_p99_ms"]]) + " |")


class CeleryWorker:
    def __init__(self, cfg: BenchConfig, concurrency: int) -> None:
        self.cfg, self.concurrency, self.proc = cfg, concurrency, None

    def __enter__(self):
        log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-celery-{self.cfg.port}.log", "w")
        self.proc = subprocess.Popen(
            [str(Path(PYTHON).parent / "celery"), "-A", "miandan", "worker", "-Q", self.cfg.celery_queue,
             "-c", str(self.concurrency), "-l", "warning", "--without-gossip", "--without-mingle"],
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
    parser.add_argument("--smoke", action="store_true", help="3 s points, small population")
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each closed point")
    parser.add_argument("--connections", default="8,32,128,256,512,1000", help="closed-loop points")
    parser.add_argument("--multiples", default="1,3,10,20", help="open-loop points, multiples of the knee's rate")
    parser.add_argument("--knee", type=float, default=0.0, help="skip nothing, but use this rate as the knee")
    parser.add_argument("--order-share", type=float, default=0.0, help="share of chat orders in the open loop")
    parser.add_argument("--read-rate", type=float, default=20.0, help="core reads per second during every point")
    parser.add_argument("--processes", type=int, default=2, help="open-loop generator processes")
    parser.add_argument("--max-conns", type=int, default=500, help="connections per open-loop process")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request (s)")
    parser.add_argument("--workers", type=int, default=0, help="override gunicorn.conf.py (comparisons only)")
    parser.add_argument("--threads", type=int, default=0, help="override gunicorn.conf.py (comparisons only)")
    parser.add_argument("--worker-class", default="", help="override gunicorn.conf.py (comparisons only)")
    parser.add_argument("--join-users", type=int, default=0, help="fresh users (default: enough for the run)")
    parser.add_argument("--order-users", type=int, default=0)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8767")))
    parser.add_argument("--wait", type=float, default=300.0, help="deadline for orders to finish after the run (s)")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup = 3.0, 1.0
    if args.order_share and not args.order_users:
        args.order_users = 2000

    prefix = os.environ.get("BENCH_REDIS_PREFIX", "benchov")
    cfg = BenchConfig(port=args.port, workers=args.workers, threads=args.threads, worker_class=args.worker_class,
                      database_url=os.environ.get("OVERLOAD_DATABASE_URL",
                                                  "postgres://postgres@127.0.0.1:5432/miandan_bench_overload"),
                      redis_prefix=prefix, celery_queue=f"{prefix}-q")
    cfg.extra_env.update({
        "MIANDAN_PROXY_COUNT": "1",
        "MIANDAN_RATELIMITS": "join_user=1000/m,order_user=1000/m,join_ip=100000/m,order_ip=100000/m",
        "CELERY_TASK_ALWAYS_EAGER": "0",
    })
    reset_database(cfg)
    connections = [int(x) for x in args.connections.split(",") if x.strip()]
    multiples = [float(x) for x in args.multiples.split(",") if x.strip()]
    join_users = args.join_users or (20000 if args.smoke else 150000)
    t0 = time.time()
    tokens = django_call(cfg, "bench.overload:prepare",
                         {"join_users": join_users, "order_users": args.order_users, "read_users": 50})
    print(f"prepared {len(tokens['join'])} fresh users in {time.time() - t0:.0f} s", flush=True)
    results: list[dict] = []
    offset = 0
    with CeleryWorker(cfg, 2), Server(cfg) as server:
        command = " ".join(server.command())
        for c in connections:
            point = closed_point(cfg.url, tokens, c, duration=args.duration, warmup=args.warmup,
                                 read_rate=args.read_rate, timeout=args.timeout, offset=offset)
            offset = (offset + int(point["sent_per_s"] * (args.duration + args.warmup) * 1.3)) % len(tokens["join"])
            results.append(point)
            print(json.dumps(point, ensure_ascii=False), flush=True)
        knee = args.knee or max(r["goodput_per_s"] for r in results) if results else args.knee
        for m in multiples:
            rest = tokens["join"][offset:] + tokens["join"][:offset]
            point = run_phase(f"{m:g}x knee", "open", url=cfg.url, tokens={**tokens, "join": rest}, arg=knee * m,
                              duration=args.duration, read_rate=args.read_rate, order_share=args.order_share,
                              processes=args.processes, max_conns=args.max_conns, timeout=args.timeout)
            offset = (offset + int(point["sent_per_s"] * args.duration * 1.1)) % len(tokens["join"])
            results.append(point)
            print(json.dumps(point, ensure_ascii=False), flush=True)
    statuses: Counter = Counter()
    for r in results:
        statuses.update({k: v for k, v in r["status"].items() if k != "0"})
    report = django_call(cfg, "bench.overload:invariants", {"slug": SLUG, "wait": args.wait, "statuses": dict(statuses)})
    reconcile_cmd = manage(cfg, "reconcile", SLUG, check=False)
    best = max(r["goodput_per_s"] for r in results) if results else 0.0

    print(f"\nserver: {command}\nknee (best closed-loop goodput): {knee:.0f} joins/s; points of "
          f"{args.duration:g} s{' (SMOKE RUN)' if args.smoke else ''}\n")
    print_table(results, best)
    verdicts = {
        "goodput >= 90 % of the best at every point": all(r["goodput_per_s"] >= 0.9 * best for r in results),
        "refusal p99 < 100 ms at the client up to 10x": all(
            r["refusal_p99_ms"] < 100 for r in results if r["mode"] == "open" and float(r["point"].split("x")[0]) <= 10),
        "refusal server time p99 < 1 ms": all((r["refusal_server_p99_ms"] or 0) < 1 for r in results),
        "0 5xx other than 503": all(r["5xx_not_503"] == 0 for r in results),
        "0 client timeouts": all(r["timeouts"] == 0 for r in results),
        "core reads all 200": all(r["reads_ok"] == r["reads"] for r in results),
        "invariants and reconcile PASS": bool(report["ok"]) and reconcile_cmd.returncode == 0,
    }
    print()
    for name, ok in verdicts.items():
        print(f"  [{'PASS' if ok else 'MISS'}] {name}")
    if args.json:
        Path(args.json).write_text(json.dumps({"server": command, "knee": knee, "points": results, "verdicts": verdicts,
                                               "invariants": report, "args": vars(args)}, ensure_ascii=False, indent=2))
    return 0 if verdicts["0 5xx other than 503"] and verdicts["invariants and reconcile PASS"] else 1


if __name__ == "__main__":
    sys.exit(main())
