"""Closed-loop HTTP load generator: N keep-alive connections, bounded by time, JSON report.

Runs in its own process(es), never inside the server. Each connection is one thread with
its own `http.client.HTTPConnection` (keep-alive; it reconnects by itself if the server
closes). Connections are spread over `--processes` OS processes so the generator is not
limited by one GIL.

A *plan* (JSON file) describes what every request looks like:

    {
      "name": "join-fresh",
      "method": "POST",                       # default GET
      "path": "/api/v1/campaigns/bench/join",
      "body": {"app_version": "1.0.0"},        # optional, sent as JSON
      "headers": {"X-Foo": "bar"},             # optional
      "tokens": ["tok1", "tok2", ...],         # optional: Authorization: Bearer <token>
      "paths": ["/a", "/b"],                   # optional: per-request paths instead of `path`
      "bodies": [{"code": "A"}, ...],          # optional: per-request JSON bodies, aligned with `tokens`
      "mode": "cycle"                          # "cycle": reuse tokens/paths round-robin;
                                               # "once": each token/path used at most once
    }

Connection g (of C) uses items g, g+C, g+2C, ...; in "once" mode it stops when its share is
used up (reported as `exhausted_connections`). Requests sent during `--warmup` seconds are
not counted.

    python bench/loadgen.py --url http://127.0.0.1:8765 --plan /tmp/plan.json \
        --connections 32 --duration 10 --warmup 1 --processes 2

prints one JSON object: requests, rps, latency_ms {mean,p50,p90,p99,max}, status counts,
transport errors.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

WRK = shutil.which("wrk")
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_plan.lua"


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[idx]


def _connection_items(plan: dict, g: int, total: int) -> list[tuple[str | None, str, bytes | None]]:
    """(token, path, body) for connection g of `total`: items g, g+total, g+2*total, ...

    `bodies`, when given, is aligned with `tokens` (one JSON body per item); otherwise every request
    sends the plan's fixed `body` (None here).
    """
    tokens = plan.get("tokens") or []
    paths = plan.get("paths") or []
    bodies = plan.get("bodies") or []
    n = max(len(tokens), len(paths), len(bodies))
    if n == 0:
        return [(None, plan["path"], None)]

    def item(i: int) -> tuple[str | None, str, bytes | None]:
        return (
            tokens[i % len(tokens)] if tokens else None,
            paths[i % len(paths)] if paths else plan["path"],
            json.dumps(bodies[i % len(bodies)]).encode() if bodies else None,
        )

    mine = [item(i) for i in range(g, n, total)]
    if not mine and plan.get("mode", "cycle") == "cycle":
        mine = [item(g % n)]  # fewer items than connections: every connection still works
    return mine


def _worker(plan, url, g, total, start_at, warm_until, stop_at, sink, lock):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
    method = plan.get("method", "GET").upper()
    fixed_body = json.dumps(plan["body"]).encode() if plan.get("body") is not None else None
    base_headers = {"Accept": "application/json", **(plan.get("headers") or {})}
    items = _connection_items(plan, g, total)
    once = plan.get("mode", "cycle") == "once"
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors: Counter = Counter()
    exhausted = False
    i = 0
    while time.time() < start_at:
        time.sleep(0.001)
    while True:
        now = time.time()
        if now >= stop_at:
            break
        if once and i >= len(items):
            exhausted = True
            break
        if not items:
            break
        token, path, body = items[i % len(items)]
        body = body if body is not None else fixed_body
        i += 1
        headers = dict(base_headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except Exception as exc:  # a transport error is a result too, not a crash
            errors[type(exc).__name__] += 1
            conn.close()
            continue
        elapsed = (time.perf_counter() - t0) * 1000
        if time.time() >= warm_until:
            latencies.append(elapsed)
            statuses[status] += 1
    conn.close()
    with lock:
        sink["latencies"].extend(latencies)
        sink["statuses"].update(statuses)
        sink["errors"].update(errors)
        sink["exhausted"] += int(exhausted)


def _run_process(plan, url, first, count, total, start_at, warm_until, stop_at, queue):
    sink = {"latencies": [], "statuses": Counter(), "errors": Counter(), "exhausted": 0}
    lock = threading.Lock()
    threads = [
        threading.Thread(target=_worker, args=(plan, url, g, total, start_at, warm_until, stop_at, sink, lock), daemon=True)
        for g in range(first, first + count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((sink["latencies"], dict(sink["statuses"]), dict(sink["errors"]), sink["exhausted"]))


def run(plan: dict, *, url: str, connections: int, duration: float, warmup: float = 0.0, processes: int = 1) -> dict:
    processes = max(1, min(processes, connections))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    start_at = time.time() + 0.3  # let every process and thread get ready first
    warm_until = start_at + warmup
    stop_at = warm_until + duration
    share, extra = divmod(connections, processes)
    procs, first = [], 0
    for p in range(processes):
        count = share + (1 if p < extra else 0)
        procs.append(ctx.Process(target=_run_process,
                                 args=(plan, url, first, count, connections, start_at, warm_until, stop_at, queue)))
        first += count
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors: Counter = Counter()
    exhausted = 0
    for _ in procs:
        lat, st, err, ex = queue.get(timeout=duration + warmup + 120)
        latencies.extend(lat)
        statuses.update(st)
        errors.update(err)
        exhausted += ex
    for proc in procs:
        proc.join(10)
    latencies.sort()
    measured = min(duration, max(0.001, time.time() - warm_until))
    n = len(latencies)
    return {
        "scenario": plan.get("name", "unnamed"),
        "method": plan.get("method", "GET").upper(),
        "path": plan.get("path") or (plan.get("paths") or ["?"])[0],
        "connections": connections,
        "processes": processes,
        "duration_s": round(measured, 3),
        "requests": n,
        "rps": round(n / measured, 1),
        "latency_ms": {
            "mean": round(sum(latencies) / n, 2) if n else 0.0,
            "p50": round(_percentile(latencies, 50), 2),
            "p90": round(_percentile(latencies, 90), 2),
            "p99": round(_percentile(latencies, 99), 2),
            "max": round(latencies[-1], 2) if n else 0.0,
        },
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "transport_errors": dict(errors),
        "exhausted_connections": exhausted,
    }


def _wrk_plan_file(plan: dict, path: Path, threads: int, offset: int) -> None:
    """The plan as the line format bench/wrk_plan.lua reads (wrk's LuaJIT has no JSON parser)."""
    def clean(value: str) -> str:
        return value.replace("\t", " ").replace("\n", " ")

    tokens = plan.get("tokens") or []
    paths = plan.get("paths") or []
    bodies = plan.get("bodies") or []
    ips = plan.get("ips") or []
    n = max(len(tokens), len(paths), len(bodies), len(ips))
    body = json.dumps(plan["body"], ensure_ascii=False) if plan.get("body") is not None else ""
    lines = [plan.get("method", "GET").upper(), plan.get("path") or (paths or ["/"])[0], clean(body), str(threads),
             str(offset)]
    lines += [f"H {k}: {clean(str(v))}" for k, v in {"Accept": "application/json", **(plan.get("headers") or {})}.items()]
    for i in range(n):
        lines.append("I " + "\t".join([
            tokens[i % len(tokens)] if tokens else "",
            paths[i % len(paths)] if paths else "",
            clean(json.dumps(bodies[i % len(bodies)], ensure_ascii=False)) if bodies else "",
            ips[i % len(ips)] if ips else "",
        ]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _wrk_once(plan: dict, *, url: str, connections: int, duration: float, threads: int, offset: int,
              timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        plan_path = Path(tmp) / "plan.txt"
        _wrk_plan_file(plan, plan_path, threads, offset)
        proc = subprocess.run(
            [WRK, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
             "--timeout", f"{timeout:g}s", "-s", str(WRK_SCRIPT), url, "--", str(plan_path)],
            capture_output=True, text=True, check=True, env={**os.environ, "LC_ALL": "C"},
        )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(line[len("WRKJSON "):])


def run_wrk(plan: dict, *, url: str, connections: int, duration: float, warmup: float = 0.0, threads: int = 2,
            timeout: float = 10.0, start: int = 0) -> dict:
    """The same report as `run`, measured by wrk (C, a fraction of the CPU the Python generator needs).

    Closed loop, keep-alive, `connections` connections over `threads` wrk threads. A warm-up run comes first
    (not counted); in "once" plans the measured run starts past the items the warm-up used.
    """
    if WRK is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk), or use --loadgen python")
    threads = max(1, min(threads, connections))
    offset = start  # a "once" plan run again continues past the items its earlier runs used
    if warmup > 0:
        warm = _wrk_once(plan, url=url, connections=connections, duration=warmup, threads=threads, offset=offset,
                         timeout=timeout)
        offset += threads * math.ceil(warm["requests"] * 1.2 / threads) + threads
    result = _wrk_once(plan, url=url, connections=connections, duration=duration, threads=threads, offset=offset,
                       timeout=timeout)
    measured = result["duration_us"] / 1e6
    lat = result["latency_us"]
    errors = {k: v for k, v in result["errors"].items() if v}
    return {
        "scenario": plan.get("name", "unnamed"),
        "method": plan.get("method", "GET").upper(),
        "path": plan.get("path") or (plan.get("paths") or ["?"])[0],
        "connections": connections,
        "processes": f"wrk -t{threads}",
        "duration_s": round(measured, 3),
        "requests": result["requests"],
        "rps": round(result["requests"] / measured, 1),
        "latency_ms": {k: round(lat[k] / 1000, 2) for k in ("mean", "p50", "p90", "p99", "max")},
        "status": {str(k): v for k, v in sorted(result["status"].items(), key=lambda kv: int(kv[0]))},
        "transport_errors": errors,
        "exhausted_connections": result["wraps"],
        "server_timing_ms": _timing_percentiles(result.get("server_timing_20ths_ms") or {}),
        "next_start": offset + threads * math.ceil(result["requests"] * 1.2 / threads) + threads,
    }


def _timing_percentiles(buckets: dict) -> dict:
    """p50/p99/max of Server-Timing durations reported in 0.05 ms buckets (the shed answers' own server time)."""
    pairs = sorted((int(k), v) for k, v in buckets.items())
    total = sum(v for _, v in pairs)
    if not total:
        return {"n": 0}
    out, seen = {"n": total}, 0
    marks = {"p50": 0.5, "p99": 0.99}
    for b, v in pairs:
        seen += v
        for name, q in list(marks.items()):
            if seen >= q * total:
                out[name] = round((b + 1) / 20, 2)  # upper edge of the bucket
                del marks[name]
    out["max"] = round((pairs[-1][0] + 1) / 20, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8765")
    parser.add_argument("--plan", required=True, help="plan JSON file (see module docstring), or - for stdin")
    parser.add_argument("--connections", "-c", type=int, default=32)
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before the measurement")
    parser.add_argument("--processes", "-p", type=int, default=2, help="OS processes the connections are spread over")
    args = parser.parse_args(argv)
    plan = json.load(sys.stdin if args.plan == "-" else open(args.plan, encoding="utf-8"))
    result = run(plan, url=args.url, connections=args.connections, duration=args.duration, warmup=args.warmup,
                 processes=args.processes)
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
