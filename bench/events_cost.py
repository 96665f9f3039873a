"""Issue 20 item 3: what the event stream (outbox) costs the join hot path — the same run, outbox on vs off.

Joins go through `vouchers.services.campaign_join` (the whole service path: admission in Redis, the slot lock,
the one INSERT ... statement that reserves, inserts the card, its ledger row and, with the outbox on, its
`card.issued` event). Rounds alternate on/off (and which goes first), each round with fresh users, so load
drift on a shared machine hits both modes alike; the table reports the median round of each mode.

    .venv/bin/python bench/events_cost.py                          # 8 rounds x 2 modes x 400 joins, 8 threads
    .venv/bin/python bench/events_cost.py --rounds 4 --joins 200   # quicker
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/miandan_bench_events_x .venv/bin/python bench/events_cost.py

Own database (`miandan_bench_events`, recreated) and Redis prefix (`bench-evt`) unless BENCH_* say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server import BenchConfig, django_call, reset_database


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds (PostgreSQL runs on this machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(*, rounds: int, joins: int, threads: int) -> dict:
    """Runs inside Django (bench settings). Returns per-round joins/s for each mode."""
    import datetime as dt
    from decimal import Decimal

    from django.conf import settings
    from django.db import connection, connections
    from django.utils import timezone

    from accounts.models import User
    from campaign.services import CampaignSpec, campaign_create
    from events.models import Event
    from vouchers.selectors import reconcile
    from vouchers.services import campaign_join

    campaign = campaign_create(spec=CampaignSpec(
        slug="bench-events", name="事件流成本", total_budget=Decimal("100000000.00"),
        starts_at=timezone.now() - dt.timedelta(hours=1), ends_at=timezone.now() + dt.timedelta(days=3),
        status="live", bucket_count=64))
    total = rounds * 2 * joins
    User.objects.bulk_create([User(username=f"bev{i}", phone=f"177{i:08d}") for i in range(total)], batch_size=5000)
    users = list(User.objects.filter(username__startswith="bev").order_by("pk"))
    results: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    cursor = 0
    for r in range(rounds):
        for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
            settings.MIANDAN_EVENTS_ENABLED = mode == "on"
            batch, cursor = users[cursor:cursor + joins], cursor + joins
            chunks = [batch[i::threads] for i in range(threads)]
            errors: list[BaseException] = []

            backend_cpu: list[float] = []

            def work(chunk, errors=errors, backend_cpu=backend_cpu):
                try:
                    # CPU seconds of this thread's PostgreSQL backend (same machine: /proc), around the joins.
                    with connection.cursor() as c:
                        c.execute("SELECT pg_backend_pid()")
                        pid = c.fetchone()[0]
                    before = _proc_cpu(pid)
                    for user in chunk:
                        campaign_join(user=user, campaign=campaign, app_version="2.0.0")
                    backend_cpu.append(_proc_cpu(pid) - before)
                except BaseException as exc:  # reported below, after the threads joined
                    errors.append(exc)
                finally:
                    connections.close_all()

            workers = [threading.Thread(target=work, args=(c,)) for c in chunks]
            started, cpu_started = time.perf_counter(), time.process_time()
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            elapsed = time.perf_counter() - started
            if errors:
                raise errors[0]
            results[mode].append(joins / elapsed)
            # CPU per join (ms), client + database: far less disturbed by other load than wall time.
            cpu[mode].append(1000 * (time.process_time() - cpu_started + sum(backend_cpu)) / joins)
    connection.close()
    report = reconcile(campaign=campaign)
    return {"on": results["on"], "off": results["off"], "cpu_ms_on": cpu["on"], "cpu_ms_off": cpu["off"],
            "events": Event.objects.filter(campaign_id=campaign.pk).count(),
            "cards": rounds * 2 * joins, "reconcile_ok": report.ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--joins", type=int, default=400, help="joins per round and mode")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--json", help="write the raw result here")
    args = parser.parse_args(argv)
    cfg = BenchConfig()
    if "BENCH_DATABASE_URL" not in os.environ:
        cfg.database_url = "postgres://postgres@127.0.0.1:5432/miandan_bench_events"
    if "BENCH_REDIS_PREFIX" not in os.environ:
        cfg.redis_prefix = "bench-evt"
    reset_database(cfg)
    load_before = os.getloadavg()
    result = django_call(cfg, "bench.events_cost:measure",
                         {"rounds": args.rounds, "joins": args.joins, "threads": args.threads})
    result["loadavg"] = [load_before, os.getloadavg()]
    on, off = statistics.median(result["on"]), statistics.median(result["off"])
    print(f"joins/s per round, outbox on : {', '.join(f'{x:.0f}' for x in result['on'])}")
    print(f"joins/s per round, outbox off: {', '.join(f'{x:.0f}' for x in result['off'])}")
    # Paired: each round ran both modes back to back, so the ratio inside a round is the least drifted.
    paired = statistics.median(a / b for a, b in zip(result["on"], result["off"], strict=True))
    print(f"paired (same round) on/off: median {paired:.3f} -> cost {100 * (1 - paired):.1f} %")
    cpu_on, cpu_off = statistics.median(result["cpu_ms_on"]), statistics.median(result["cpu_ms_off"])
    print(f"CPU per join (client + PostgreSQL backend), median of rounds: on {cpu_on:.2f} ms, off {cpu_off:.2f} ms "
          f"-> cost {100 * (cpu_on / cpu_off - 1):.1f} %")
    print(f"median on {on:.0f}/s, off {off:.0f}/s: the outbox costs {100 * (1 - on / off):.1f} % "
          f"({result['events']} events for {result['cards']} cards; reconcile {'PASS' if result['reconcile_ok'] else 'FAIL'}; "
          f"load average before {load_before[0]:.1f}, after {result['loadavg'][1][0]:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
