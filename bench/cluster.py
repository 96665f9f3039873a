"""Benchmark of the cluster topology (issue 15): one node vs the load balancer in front of two, on the same cores.

Two shapes serve the same database and the same seeded campaign:

- `one node`   gunicorn (gunicorn.conf.py, WEB_CONCURRENCY=4) straight on PostgreSQL and a single Redis: the
               one-machine shape of `make run`.
- `one node on PgBouncer`  the same, its database connections through the cluster's PgBouncer.
- `cluster`    nginx -> two gunicorn nodes (WEB_CONCURRENCY=2 each, so the same 4 processes) -> PgBouncer
               (transaction pooling) -> PostgreSQL; a Redis Cluster of three masters + replicas (deploy/cluster.py).

On one 2-core machine the cluster cannot be faster (the same cores serve both); the run shows what the
topology costs. Measured per shape:

1. `simulate --url` with --orders 0 (login, join, invites: the flash-crowd path; orders wait on the merchant's
   own delays, so they measure the merchant, not the topology): requests per second, seconds, invariants.
2. The per-request cost of each hop: N sequential keep-alive GETs of the campaign detail (a DB-cached read)
   and of /healthz, straight to a node vs through nginx; p50/p99 in ms. The difference is the LB hop.

    .venv/bin/python bench/cluster.py                       # ~5 min on 2 cores
    .venv/bin/python bench/cluster.py --users 100 --hops 300 --json /tmp/c.json   # smoke

Database `miandan_bench_cluster` (created, migrated and seeded once), RabbitMQ on 127.0.0.1:5672.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.cluster import (  # noqa: E402
    VENV_BIN,
    Cluster,
    answers,
    ensure_database,
    free_port,
    wait_http,
)

PY = str(VENV_BIN / "python")
SLUG = "spring-tea"


def _token(port: int) -> str:
    """A bearer token for a bench user (the fixed one-time code of the bench's servers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    phone = "1990000" + str(int(time.time()) % 10000).zfill(4)
    for path, body in (("/api/v1/auth/otp", {"phone": phone}),
                       ("/api/v1/auth/token", {"phone": phone, "code": "246810", "device_id": "bench-hops"})):
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = json.loads(response.read() or b"{}")
    conn.close()
    return data["token"]


def _hops(port: int, path: str, n: int, token: str = "") -> dict:
    """n sequential GETs over one keep-alive connection; latency percentiles in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples = []
    headers = {"X-Forwarded-For": "10.9.9.9", **({"Authorization": f"Bearer {token}"} if token else {})}
    for i in range(n + 20):
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} on {port}: {response.status}")
        if i >= 20:  # warm-up
            samples.append((time.perf_counter() - start) * 1000)
    conn.close()
    samples.sort()
    return {"n": n, "p50_ms": round(statistics.median(samples), 3),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3), "mean_ms": round(statistics.fmean(samples), 3)}


def _simulate(url: str, env: dict, users: int, concurrency: int) -> dict:
    out = subprocess.run([PY, "manage.py", "simulate", "--url", url, "--users", str(users), "--orders", "0",
                          "--concurrency", str(concurrency), "--otp", "246810", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"simulate failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    report = json.loads(lines[-1])
    run = report["run"]
    return {
        "ok": report["ok"], "users": run["users"], "joined": run["joined"], "requests": run["requests"],
        "seconds": run["seconds_requests"],
        "requests_per_second": round(run["requests"] / run["seconds_requests"], 1) if run["seconds_requests"] else None,
        "codes": report["codes"],
        "failed_checks": [name for name, check in report["checks"].items() if not check["ok"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--hops", type=int, default=2000, help="sequential GETs per hop measurement")
    parser.add_argument("--database", default="miandan_bench_cluster")
    parser.add_argument("--json", default="")
    parser.add_argument("--skip-seed", action="store_true", help="the database is migrated and seeded already")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    ensure_database(args.database)
    cluster = Cluster(work / "cluster")
    results: dict = {"users": args.users, "concurrency": args.concurrency, "cores": os.cpu_count(),
                     "load_before": os.getloadavg()}
    single = single_pgb = redis_proc = None
    try:
        state = cluster.start(seed=False, port=free_port(), database=args.database, prefix="bench-cluster",
                              queue="bench-cluster", web_workers=2)
        env = cluster.env(state)
        # The database is reached straight for setup and for the one-node shape (PgBouncer is the cluster's).
        direct = {**env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{args.database}",
                  "MIANDAN_PGBOUNCER": "0"}
        if not args.skip_seed:
            subprocess.run([PY, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=direct, check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run([PY, "manage.py", "seed_demo"], cwd=ROOT, env=direct, check=True,
                           stdout=subprocess.DEVNULL)

        # The one-node shape: its own single redis-server, PostgreSQL straight, 4 gunicorn workers.
        redis_port = free_port()
        redis_proc = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port",
                                       str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while not answers(redis_port):
            time.sleep(0.05)
        one_port = free_port()
        one_env = {**direct, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "WEB_CONCURRENCY": "4",
                   "MIANDAN_PROXY_COUNT": "1"}
        single = subprocess.Popen([str(VENV_BIN / "gunicorn"), "miandan.wsgi", "-b", f"127.0.0.1:{one_port}"],
                                  cwd=ROOT, env=one_env, stdout=open(work / "one-node.log", "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"http://127.0.0.1:{one_port}/healthz", single, what="one node")
        # The same one node, but its database connections through the cluster's PgBouncer: separates what
        # the pool does from what the balancer and the second node do.
        pgb_port = free_port()
        pgb_env = {**one_env, "DATABASE_URL": env["DATABASE_URL"], "MIANDAN_PGBOUNCER": "1"}
        single_pgb = subprocess.Popen([str(VENV_BIN / "gunicorn"), "miandan.wsgi", "-b", f"127.0.0.1:{pgb_port}"],
                                      cwd=ROOT, env=pgb_env, stdout=open(work / "one-node-pgb.log", "w"),
                                      stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"http://127.0.0.1:{pgb_port}/healthz", single_pgb, what="one node on PgBouncer")

        lb_port, node_port = state["ports"]["lb"], state["ports"]["web1"]
        detail = f"/api/v1/campaigns/{SLUG}/"
        token = _token(lb_port)
        results["hops"] = {
            "one_node_detail": _hops(one_port, detail, args.hops, token),
            "cluster_node_direct_detail": _hops(node_port, detail, args.hops, token),
            "cluster_through_lb_detail": _hops(lb_port, detail, args.hops, token),
            "cluster_node_direct_healthz": _hops(node_port, "/healthz", args.hops),
            "cluster_through_lb_healthz": _hops(lb_port, "/healthz", args.hops),
        }
        hops = results["hops"]
        results["lb_hop_ms"] = {
            "detail_p50": round(hops["cluster_through_lb_detail"]["p50_ms"] - hops["cluster_node_direct_detail"]["p50_ms"], 3),
            "healthz_p50": round(hops["cluster_through_lb_healthz"]["p50_ms"] - hops["cluster_node_direct_healthz"]["p50_ms"], 3),
        }
        # Alternate the shapes so the machine's background load falls on both alike.
        results["simulate"] = {
            "one_node": _simulate(f"http://127.0.0.1:{one_port}", one_env, args.users, args.concurrency),
            "cluster": _simulate(state["url"], env, args.users, args.concurrency),
        }
        results["simulate"]["one_node_pgbouncer"] = _simulate(f"http://127.0.0.1:{pgb_port}", pgb_env, args.users,
                                                              args.concurrency)
        results["simulate"]["one_node_again"] = _simulate(f"http://127.0.0.1:{one_port}", one_env, args.users,
                                                          args.concurrency)
        results["simulate"]["cluster_again"] = _simulate(state["url"], env, args.users, args.concurrency)
        results["simulate"]["one_node_pgbouncer_again"] = _simulate(f"http://127.0.0.1:{pgb_port}", pgb_env,
                                                                    args.users, args.concurrency)
        results["load_after"] = os.getloadavg()
    finally:
        for proc in (single, single_pgb):
            if proc is not None:
                proc.terminate()
                proc.wait(20)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        cluster.stop()
    text = json.dumps(results, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if all(r["ok"] for r in results["simulate"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
