"""The chaos run: `manage.py simulate --url` against the real process shape while a controller breaks it.

Processes: gunicorn (gunicorn.conf.py, 2 workers), a prefork Celery worker with beat (poller, sweeper) on
RabbitMQ, the simulated merchant calling the platform back, a PRIVATE redis-server. PostgreSQL and RabbitMQ
are shared services and are never stopped: the platform reaches both through a TCP proxy the test owns
(tests/chaos/proxy.py), which it cuts (every connection reset, new ones refused) and stalls.

While `simulate` logs users in, joins, accepts invites and orders by chat, the controller, every few seconds,
in a seeded random order: SIGKILLs a gunicorn worker (the master forks a new one), SIGKILLs the Celery worker
and starts a new one, SIGKILLs Redis and restarts it empty, cuts the broker, stalls the broker, cuts
PostgreSQL, stalls PostgreSQL. Then everything is left up and the run must settle:
- simulate's invariant report PASSes (cards within cap, budget never exceeded, reconcile, every order final,
  no card redeemed twice, no 5xx other than a 503 with Retry-After);
- `manage.py reconcile` PASSes (ledger == buckets == cards, one snapshot);
- nothing is lost: every order of the run is final, no card is left locked, every completed order redeemed
  its own card once with one spend entry of its subsidy, every failed or cancelled order gave its card back.
The default run is bounded (~2 minutes); MIANDAN_LONG_TESTS=1 adds a longer, heavier one (`long`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db.models import Count, F, Q, Sum

from campaign.models import LedgerEntry
from demo.catalog import catalog_load
from orders import parser
from orders.models import Order
from tests.celery_worker import Worker, _database_url
from tests.chaos.proxy import ChaosProxy
from tests.factories import CampaignFactory
from tests.fulfilment import GUNICORN, SECRET, MerchantProcess, app_on_broker, broker_url
from tests.servers import ROOT, OwnRedis, free_port
from vouchers.models import Voucher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]
LONG = pytest.mark.skipif(not os.environ.get("MIANDAN_LONG_TESTS"), reason="set MIANDAN_LONG_TESTS=1")
OTP = "246810"
FAULTS = ("web_worker", "celery_worker", "redis", "broker_cut", "broker_stall", "pg_cut", "pg_stall")


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


class Web:
    """gunicorn with the production shape (gunicorn.conf.py), 2 workers, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "w") as f:
            self.proc = subprocess.Popen([GUNICORN, "miandan.wsgi", "-b", f"127.0.0.1:{self.port}"], cwd=ROOT,
                                         env={**env, "WEB_CONCURRENCY": "2", "WEB_THREADS": "4"}, stdout=f,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.log = log
        import httpx

        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def kill_a_worker(self, rng: random.Random) -> int | None:
        workers = children(self.proc.pid)
        if not workers:
            return None
        victim = rng.choice(workers)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return victim

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class Controller(threading.Thread):
    """Injects one fault every `interval` seconds (seeded order, each kind in every round) until stopped."""

    def __init__(self, *, web: Web, worker: Worker, worker_env: dict, redis: OwnRedis, pg: ChaosProxy,
                 broker: ChaosProxy, seconds: float, interval: float, seed: int) -> None:
        super().__init__(name="chaos-controller", daemon=True)
        self.web, self.worker, self.worker_env, self.redis = web, worker, worker_env, redis
        self.pg, self.broker = pg, broker
        self.seconds, self.interval = seconds, interval
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.events: list[str] = []
        self.counts: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self.error: BaseException | None = None
        self.started = time.monotonic()

    def note(self, what: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:6.1f}s {what}")

    def run(self) -> None:
        try:
            end = time.monotonic() + self.seconds
            while not self.stop_event.is_set() and time.monotonic() < end:
                round_ = [*FAULTS, "pg_cut"]  # the database twice a round: the fault that reaches the clients
                self.rng.shuffle(round_)
                for fault in round_:
                    if self.stop_event.wait(self.interval * self.rng.uniform(0.6, 1.4)) or time.monotonic() >= end:
                        return
                    self.inject(fault)
        except BaseException as exc:  # reported by the test, with the events so far
            self.error = exc

    def inject(self, fault: str) -> None:
        self.counts[fault] += 1
        if fault == "web_worker":
            self.note(f"SIGKILL gunicorn worker {self.web.kill_a_worker(self.rng)}")
        elif fault == "celery_worker":
            self.worker.kill()
            self.note("SIGKILL celery worker (+beat)")
            time.sleep(self.rng.uniform(0.5, 2.0))
            self.worker.start(beat=True, **self.worker_env)
            self.note("celery worker restarted")
        elif fault == "redis":
            self.redis.proc.kill()
            self.redis.proc.wait(10)
            self.note("SIGKILL redis")
            time.sleep(self.rng.uniform(1.0, 3.0))
            self.redis.start()  # same port, empty
            self.note("redis restarted (empty)")
        elif fault == "broker_cut":
            self.note(f"broker cut 3 s ({self.broker.cut(3.0)} connections reset)")
        elif fault == "broker_stall":
            self.broker.stall(3.0)
            self.note("broker stalled 3 s")
        elif fault == "pg_cut":
            # Stalled first, so requests and tasks are caught mid-query when it dies (an idle connection is
            # replaced quietly: conn_health_checks), as when a server freezes and then goes away.
            self.pg.stall(1.0)
            time.sleep(1.0)
            self.note(f"PostgreSQL stalled 1 s then cut 2 s ({self.pg.cut(2.0)} connections reset)")
        elif fault == "pg_stall":
            self.pg.stall(3.0)
            self.note("PostgreSQL stalled 3 s")


def _via(url: str, port: int) -> str:
    """`url` (postgres or amqp) with its host:port replaced by the proxy's."""
    scheme, rest = url.split("://", 1)
    auth, _, tail = rest.rpartition("@")
    path = tail.split("/", 1)[1] if "/" in tail else ""
    return f"{scheme}://{auth + '@' if auth else ''}127.0.0.1:{port}/{path}"


def run_chaos(tmp_path: Path, settings, *, users: int, orders: int, seconds: float, interval: float,
              wait: float) -> None:
    from django.db import connection, connections

    broker = broker_url()
    if not broker.startswith("amqp"):
        pytest.skip("the chaos run drives RabbitMQ (the broker whose redelivery it relies on)")
    catalog_load(stores_per_city=0)
    parser.catalogue_changed()
    campaign = CampaignFactory(slug="chaos-tea", total_budget=Decimal("100000.00"))
    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-chaos-{uuid.uuid4().hex[:8]}"
    redis = OwnRedis()
    redis.start()
    pg = ChaosProxy(connection.settings_dict.get("HOST") or "127.0.0.1",
                    int(connection.settings_dict.get("PORT") or 5432)).start()
    mq = ChaosProxy("127.0.0.1", 5672).start()
    merchant_port = free_port()
    env = {**os.environ, "DATABASE_URL": _via(_database_url(), pg.port), "CONN_MAX_AGE": "60",
           "REDIS_URL": redis.url, "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
           "CELERY_BROKER_URL": _via(broker, mq.port), "CELERY_DEFAULT_QUEUE": queue, "CELERY_TASK_ALWAYS_EAGER": "0",
           "MIANDAN_MERCHANT_SECRET": SECRET, "MIANDAN_MERCHANT_URL": f"http://127.0.0.1:{merchant_port}",
           "MIANDAN_SMS_BACKEND": "fixed", "MIANDAN_FIXED_OTP": OTP, "MIANDAN_PROXY_COUNT": "1",
           "RATELIMIT_ENABLE": "0", "MIANDAN_SHED_ENABLED": "0", "LOG_LEVEL": "WARNING",
           # Lost submits are re-sent and silent merchants asked quickly, so the run settles within the test.
           "MIANDAN_ORDER_STUCK_SECONDS": "5", "MIANDAN_MERCHANT_POLL_SECONDS": "2"}
    env.pop("MIANDAN_TEST_DB_NAME", None)
    connections.close_all()
    web = worker = merchant = controller = sim = None
    with contextlib.ExitStack() as cleanup:
        cleanup.enter_context(app_on_broker(broker, queue))  # deletes the queue at the end
        cleanup.callback(redis.stop)
        cleanup.callback(pg.close)
        cleanup.callback(mq.close)
        web = Web(env, tmp_path / "web.log")
        cleanup.callback(web.stop)
        worker = Worker(queue)
        worker.start(beat=True, **env)
        cleanup.callback(worker.stop)
        merchant = MerchantProcess(tmp_path, {**env, "MIANDAN_MERCHANT_ACCEPT_SECONDS": "0.3-1",
                                              "MIANDAN_MERCHANT_DELIVER_SECONDS": "0.5-1.5",
                                              "MIANDAN_MERCHANT_DUPLICATE_RATE": "0.2"})
        merchant.port, merchant.url = merchant_port, f"http://127.0.0.1:{merchant_port}"
        merchant.start("--callback-url", web.url)
        cleanup.callback(merchant.stop)

        # simulate reads PostgreSQL directly (not through the proxy): its report is the referee, not a target.
        sim_env = {**env, "DATABASE_URL": _database_url()}
        sim_out = tmp_path / "simulate.json"
        with open(sim_out, "w") as out, open(tmp_path / "simulate.err", "w") as err:
            sim = subprocess.Popen(
                [sys.executable, "manage.py", "simulate", "--url", web.url, "--campaign", campaign.slug,
                 "--users", str(users), "--orders", str(orders), "--concurrency", "6", "--otp", OTP,
                 "--retries", "6", "--max-backoff", "2", "--timeout", "20", "--wait", str(wait), "--json", "--quiet"],
                cwd=ROOT, env=sim_env, stdout=out, stderr=err, start_new_session=True)
            cleanup.callback(lambda: sim.poll() is None and os.killpg(sim.pid, signal.SIGKILL))
            controller = Controller(web=web, worker=worker, worker_env=env, redis=redis, pg=pg, broker=mq,
                                    seconds=seconds, interval=interval, seed=int(time.time()))
            controller.start()
            controller.join(seconds + 120)
            assert not controller.is_alive(), "controller stuck:\n" + "\n".join(controller.events)
            assert controller.error is None, f"{controller.error!r}\n" + "\n".join(controller.events)
            sim.wait(wait + 300)
        events = "\n".join(controller.events)
        logs = (f"\n--- chaos events\n{events}\n--- simulate stderr\n{(tmp_path / 'simulate.err').read_text()[-3000:]}"
                f"\n--- web\n{web.log.read_text()[-3000:]}\n--- worker\n{worker.log()[-3000:]}")
        raw = sim_out.read_text()
        assert raw.strip(), "simulate printed no report" + logs
        report = json.loads(raw[raw.index("{"):])
        failed = {name: c for name, c in report["checks"].items() if not c["ok"]}
        assert sim.returncode == 0 and report["ok"], f"invariants FAILED: {json.dumps(failed, ensure_ascii=False)}" + logs

        # Every kind of fault happened, and the proxies really broke live connections.
        assert all(controller.counts[f] >= 1 for f in FAULTS), controller.counts
        assert pg.stats["reset"] > 0 and mq.stats["reset"] > 0, (pg.stats, mq.stats)
        # The run did real work under fire.
        assert report["run"]["orders_placed"] >= orders // 4, report["run"]
        assert_nothing_lost(campaign, report)
        call_command("reconcile", campaign.slug)  # raises CommandError on FAIL


def assert_nothing_lost(campaign, report) -> None:
    run_orders = Order.objects.filter(campaign=campaign)
    assert run_orders.count() >= report["run"]["orders_placed"]
    assert not run_orders.exclude(status__in=Order.FINAL).exists()
    assert not Voucher.objects.filter(campaign=campaign, status=Voucher.Status.LOCKED).exists()
    completed = run_orders.filter(status=Order.Status.COMPLETED, voucher__isnull=False)
    # A completed order redeemed its own card, once, with one spend entry of its subsidy.
    assert not completed.exclude(voucher__status=Voucher.Status.REDEEMED).exists()
    assert not completed.exclude(voucher__order_id=F("id")).exists()
    spends = (LedgerEntry.objects.filter(campaign=campaign, kind=LedgerEntry.Kind.SPEND)
              .values("order_id").annotate(n=Count("id"), amount=Sum("amount")))
    by_order = {row["order_id"]: row for row in spends}
    for order_id, subsidy in completed.values_list("id", "subsidy"):
        if subsidy > 0:
            assert by_order.get(order_id, {}).get("n") == 1 and by_order[order_id]["amount"] == subsidy, order_id
    assert set(by_order) <= set(completed.values_list("id", flat=True))
    # A failed or cancelled order gave its card back (the card is not held by it).
    gone = run_orders.filter(Q(status=Order.Status.FAILED) | Q(status=Order.Status.CANCELLED), voucher__isnull=False)
    assert not gone.filter(voucher__order_id=F("id"), voucher__status=Voucher.Status.LOCKED).exists()
    # Every redeemed card belongs to exactly one completed order.
    redeemed = Voucher.objects.filter(campaign=campaign, status=Voucher.Status.REDEEMED)
    assert not redeemed.exclude(orders__status=Order.Status.COMPLETED).exists()


@pytest.mark.parametrize("size", [pytest.param("bounded", marks=pytest.mark.timeout(600)),
                                  pytest.param("long", marks=[LONG, pytest.mark.long, pytest.mark.timeout(1800)])])
def test_chaos_run_settles_with_every_invariant_and_nothing_lost(tmp_path, settings, size):
    if size == "bounded":
        run_chaos(tmp_path, settings, users=30, orders=60, seconds=50, interval=2.5, wait=150)
    else:
        run_chaos(tmp_path, settings, users=300, orders=600, seconds=240, interval=4.0, wait=400)
