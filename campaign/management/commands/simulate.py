"""Replay the seed's day: users log in, join, invite friends and order by chat; then check the invariants.

    python manage.py simulate --users 1000 --orders 2000 --concurrency 16 [--url http://127.0.0.1:8000]
                              [--campaign spring-tea] [--wait 300] [--json]

Without --url the requests go in-process through Django's full stack (middleware, guard, views)
with a test client per thread; with --url they go over HTTP to a running server. Either way the
invariant report reads PostgreSQL directly (the same DATABASE_URL as the server).

Login uses the fixed one-time code: the server must run with MIANDAN_SMS_BACKEND=fixed and
MIANDAN_FIXED_OTP=<6 digits> (in-process the command sets both for itself). Every simulated user
has its own device id and a fake client IP (X-Forwarded-For over HTTP: start the server with
MIANDAN_PROXY_COUNT=1 or every user shares 127.0.0.1's per-IP limits).

Clients behave like the app: 429 and 503 `busy` are retried after Retry-After (capped, --retries
times); every answer's code is counted. Exit status is non-zero when an invariant fails.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.models import Count, F, Q

CENTER = (30.2741, 120.1551)  # the demo stores are around this point (api.md)
SENTENCES = [
    "帮我点一杯奶茶",
    "来一杯喜茶多肉葡萄，少冰",
    "一杯喜茶芝芝莓莓 大杯 少糖",
    "奈雪的茶霸气橙子一杯，去冰",
    "蜜雪冰城冰鲜柠檬水两杯",
    "来杯蜜雪冰城珍珠奶茶 半糖 少冰",
    "茶百道杨枝甘露一杯 三分糖",
    "古茗芝士葡萄 大杯",
    "霸王茶姬伯牙绝弦，无糖，热的",
    "一杯霸王茶姬青青糯山 少冰",
]
RETRYABLE = {429, 503}


@dataclass
class SimUser:
    index: int
    phone: str
    ip: str
    device: str
    token: str = ""
    invite_code: str = ""
    joined: bool = False


@dataclass
class Tally:
    """Counts of every answer, by operation and code (thread-safe)."""

    codes: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, op: str, status: int, code: str) -> None:
        with self.lock:
            self.codes[f"{op}:{code}"] += 1
            self.statuses[status] += 1

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 and status != 503)


# --- transports -----------------------------------------------------------------------

class InProcess:
    """Django's test client, one per thread: the whole middleware stack, no network."""

    def __init__(self) -> None:
        self.local = threading.local()

    def close(self) -> None:
        pass

    def request(self, method: str, path: str, *, body=None, token="", ip="127.0.0.1", headers=None):
        from django.test import Client

        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = Client()
        extra = {"REMOTE_ADDR": ip}
        if token:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        if method == "GET":
            response = client.get(path, **extra)
        else:
            response = client.post(path, data=json.dumps(body or {}), content_type="application/json", **extra)
        try:
            data = json.loads(response.content or b"null")
        except ValueError:
            data = None
        return response.status_code, data, response.headers


class OverHttp:
    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.local = threading.local()
        self.lock = threading.Lock()
        self.clients: list = []

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def request(self, method: str, path: str, *, body=None, token="", ip="127.0.0.1", headers=None):
        import httpx

        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(base_url=self.base_url, timeout=self.timeout)
            with self.lock:
                self.clients.append(client)
        hdrs = {"X-Forwarded-For": ip, **(headers or {})}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            response = client.request(method, path, json=body if method != "GET" else None, headers=hdrs)
        except httpx.HTTPError as exc:
            return 0, {"code": f"transport_error:{type(exc).__name__}"}, {}
        try:
            data = response.json()
        except ValueError:
            data = None
        return response.status_code, data, response.headers


# --- the day ------------------------------------------------------------------------------

class Simulation:
    def __init__(self, *, transport, campaign: str, otp: str, retries: int, max_backoff: float, tally: Tally,
                 seed: int) -> None:
        self.t = transport
        self.campaign = campaign
        self.otp = otp
        self.retries = retries
        self.max_backoff = max_backoff
        self.tally = tally
        self.random = random.Random(seed)
        self.orders_placed = 0
        self.lock = threading.Lock()

    def call(self, op: str, method: str, path: str, *, user: SimUser | None = None, body=None, headers=None):
        for attempt in range(self.retries + 1):
            status, data, hdrs = self.t.request(method, path, body=body, token=user.token if user else "",
                                                ip=user.ip if user else "127.0.0.1", headers=headers)
            code = data.get("code") if isinstance(data, dict) and status >= 300 and data.get("code") else str(status)
            self.tally.add(op, status, code)
            if status in RETRYABLE and attempt < self.retries:
                try:
                    wait = float(hdrs.get("Retry-After", "1"))
                except (TypeError, ValueError):
                    wait = 1.0
                time.sleep(min(self.max_backoff, wait) * (0.5 + random.random()))
                continue
            return status, data
        return status, data

    def onboard(self, user: SimUser) -> None:
        """Log in with the fixed code, join (welcome card) and fetch the invite code."""
        status, _ = self.call("otp", "POST", "/api/v1/auth/otp", user=user, body={"phone": user.phone})
        if status != 202:
            return
        status, data = self.call("login", "POST", "/api/v1/auth/token", user=user,
                                 body={"phone": user.phone, "code": self.otp, "device_id": user.device})
        if status != 200:
            return
        user.token = data["token"]
        status, _ = self.call("join", "POST", f"/api/v1/campaigns/{self.campaign}/join", user=user,
                              body={"app_version": "9.9.9"}, headers={"Idempotency-Key": f"join-{user.device}"})
        user.joined = status in (200, 201)
        status, data = self.call("invite", "GET", f"/api/v1/campaigns/{self.campaign}/invite", user=user)
        if status == 200 and isinstance(data, dict):
            user.invite_code = data.get("code", "")

    def accept(self, invitee: SimUser, inviter: SimUser) -> None:
        if not invitee.token or not inviter.invite_code:
            return
        self.call("referral", "POST", f"/api/v1/campaigns/{self.campaign}/referrals", user=invitee,
                  body={"code": inviter.invite_code}, headers={"Idempotency-Key": f"ref-{invitee.device}"})

    def chat(self, user: SimUser, name: str, body: dict, key: str) -> tuple[int, object]:
        status, data = self.call(name, "POST", "/api/v1/orders/chat", user=user, body=body,
                                 headers={"Idempotency-Key": key})
        if status == 200 and isinstance(data, dict) and (data.get("recommendation") or {}).get("confirm_text"):
            # "帮我点一杯奶茶" is answered with a recommendation; the user confirms it, as a person would.
            status, data = self.call(name, "POST", "/api/v1/orders/chat", user=user, headers={"Idempotency-Key": f"{key}-ok"},
                                     body={**body, "text": data["recommendation"]["confirm_text"]})
        return status, data

    def order(self, user: SimUser, n: int) -> None:
        if not user.token:
            return
        lat = CENTER[0] + self.random.uniform(-0.01, 0.01)
        lng = CENTER[1] + self.random.uniform(-0.01, 0.01)
        body = {"text": SENTENCES[n % len(SENTENCES)], "lat": lat, "lng": lng, "campaign": self.campaign}
        status, data = self.chat(user, "order", body, f"order-{user.device}-{n}")
        if status == 409 and isinstance(data, dict) and data.get("code") == "no_voucher":
            # Out of cards: the app offers full price, as the seed's users did.
            status, data = self.chat(user, "order_full_price", {**body, "pay_full_price": True},
                                     f"order-full-{user.device}-{n}")
        if status == 201 and isinstance(data, dict) and data.get("id") is not None:
            with self.lock:
                self.orders_placed += 1


def _pool_run(fn, items, concurrency: int, desc: str, quiet: bool) -> None:
    """Run fn over items on `concurrency` threads, keeping only a small window of futures (runs reach 10^6 items)."""
    from tqdm import tqdm

    def wrapped(item):
        try:
            return fn(*item) if isinstance(item, tuple) else fn(item)
        finally:
            connections.close_all()  # in-process: each worker thread has its own DB connection

    window = concurrency * 4
    with ThreadPoolExecutor(max_workers=concurrency) as pool, tqdm(total=len(items), desc=desc, disable=quiet,
                                                                    unit="req", smoothing=0.1) as bar:
        pending = set()
        for item in items:
            pending.add(pool.submit(wrapped, item))
            if len(pending) >= window:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
                    bar.update(1)
        for future in as_completed(pending):
            future.result()
            bar.update(1)


# --- invariants -------------------------------------------------------------------------------

def wait_for_orders(orders, deadline_s: float, quiet: bool) -> int:
    """Poll PostgreSQL until every order of the queryset is final or the deadline passes; returns the open count."""
    from tqdm import tqdm

    from orders.models import Order

    total = orders.count()
    if not total:
        return 0
    end = time.monotonic() + deadline_s
    with tqdm(total=total, desc="fulfilment", disable=quiet, unit="order") as bar:
        while True:
            open_count = orders.exclude(status__in=Order.FINAL).count()
            bar.n = total - open_count
            bar.refresh()
            if open_count == 0 or time.monotonic() >= end:
                return open_count
            time.sleep(0.5)


def invariant_report(*, campaign, orders, open_orders: int, tally: Tally) -> dict:
    """`orders`: a queryset of the run's orders (a filter, not a list of ids: runs reach 10^6 orders)."""
    from campaign.models import BudgetBucket
    from orders.models import Order
    from vouchers.models import Voucher
    from vouchers.selectors import reconcile

    checks: dict[str, dict] = {}

    over_cap = (Voucher.objects.filter(campaign=campaign).values("user_id").annotate(n=Count("id"))
                .filter(n__gt=campaign.card_cap).count())
    max_cards = (Voucher.objects.filter(campaign=campaign).values("user_id").annotate(n=Count("id"))
                 .order_by("-n").values_list("n", flat=True).first() or 0)
    checks["cards_per_user_within_cap"] = {"ok": over_cap == 0, "users_over_cap": over_cap,
                                           "max_cards_of_a_user": max_cards, "cap": campaign.card_cap}

    overspent = BudgetBucket.objects.filter(campaign=campaign).filter(
        Q(reserved__lt=0) | Q(spent__lt=0) | Q(allotment__lt=F("reserved") + F("spent"))).count()
    report = reconcile(campaign=campaign)
    totals = report.totals
    committed = totals.get("reserved", 0) + totals.get("spent", 0)
    checks["budget_never_exceeded"] = {"ok": overspent == 0 and committed <= campaign.total_budget,
                                       "overspent_buckets": overspent, "committed": str(committed),
                                       "total_budget": str(campaign.total_budget)}
    checks["reconcile"] = {"ok": report.ok, "differences": report.differences[:10]}

    checks["orders_final"] = {"ok": open_orders == 0, "orders": orders.count(), "not_final": open_orders,
                              "by_state": dict(orders.order_by().values_list("status")
                                               .annotate(n=Count("id")))}

    live = ~Q(status__in=[Order.Status.FAILED, Order.Status.CANCELLED])
    double_live = (Order.objects.filter(live, voucher__isnull=False).values("voucher_id").annotate(n=Count("id"))
                   .filter(n__gt=1).count())
    double_redeemed = (Order.objects.filter(voucher__isnull=False, status=Order.Status.COMPLETED,
                                            voucher__campaign=campaign)
                       .values("voucher_id").annotate(n=Count("id")).filter(n__gt=1).count())
    redeemed_without_order = Voucher.objects.filter(campaign=campaign, status=Voucher.Status.REDEEMED).exclude(
        orders__status=Order.Status.COMPLETED).count()
    checks["no_card_redeemed_twice"] = {
        "ok": double_live == 0 and double_redeemed == 0 and redeemed_without_order == 0,
        "cards_with_two_live_orders": double_live, "cards_completed_twice": double_redeemed,
        "redeemed_cards_without_completed_order": redeemed_without_order,
    }
    checks["no_server_errors"] = {"ok": tally.server_errors == 0, "5xx_other_than_503": tally.server_errors}
    return {
        "campaign": campaign.slug,
        "ok": all(c["ok"] for c in checks.values()),
        "checks": checks,
        "codes": dict(sorted(tally.codes.items())),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "budget": {k: str(v) for k, v in totals.items()},
    }


def _width(total: int) -> int:
    return max(3, len(str(max(total - 1, 0))))


def _phone(run: int, i: int, total: int) -> str:
    """11-digit mainland mobile number: 1, [3-9], then as many run digits as the user index leaves room for."""
    width = _width(total)
    if width > 9:
        raise CommandError("at most 10^9 users")
    rest = 9 - width
    run_part = f"{run % 10**rest:0{rest}d}" if rest else ""
    return f"1{3 + run % 7}{run_part}{i:0{width}d}"


class Command(BaseCommand):
    help = "Replay the seed's day (login, join, invite, chat orders) and print an invariant report."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=100)
        parser.add_argument("--orders", type=int, default=100)
        parser.add_argument("--concurrency", type=int, default=8)
        parser.add_argument("--url", default="", help="a running server; in-process when omitted")
        parser.add_argument("--campaign", default="spring-tea")
        parser.add_argument("--otp", default="", help="the fixed one-time code (default MIANDAN_FIXED_OTP or 246810)")
        parser.add_argument("--invite-ratio", type=float, default=0.7, help="share of users who accept a friend's invite")
        parser.add_argument("--retries", type=int, default=3, help="retries after 429/503 busy")
        parser.add_argument("--max-backoff", type=float, default=2.0, help="cap on one Retry-After wait (s)")
        parser.add_argument("--wait", type=float, default=300.0, help="deadline for orders to reach a final state (s)")
        parser.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout per request (s)")
        parser.add_argument("--seed", type=int, default=20260101)
        parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")

    def handle(self, *args, **opts):
        from campaign.models import Campaign

        if opts["users"] < 1 or opts["orders"] < 0 or opts["concurrency"] < 1:
            raise CommandError("--users and --concurrency must be >= 1, --orders >= 0")
        campaign = Campaign.objects.filter(slug=opts["campaign"]).first()
        if campaign is None:
            raise CommandError(f"campaign {opts['campaign']!r} not found (run seed_demo or create_campaign)")
        otp = opts["otp"] or settings.MIANDAN_FIXED_OTP or "246810"
        if opts["url"]:
            transport = OverHttp(opts["url"], opts["timeout"])
        else:
            # In-process, the command is the server: switch it to the fixed code for this run only.
            settings.MIANDAN_SMS_BACKEND = "fixed"
            settings.MIANDAN_FIXED_OTP = otp
            transport = InProcess()
        tally = Tally()
        sim = Simulation(transport=transport, campaign=campaign.slug, otp=otp, retries=opts["retries"],
                         max_backoff=opts["max_backoff"], tally=tally, seed=opts["seed"])
        quiet = opts["quiet"] or opts["json"]
        run = uuid.uuid4().int % 10**6  # fresh phones per run, so repeated runs are new users
        rng = random.Random(opts["seed"])
        users = [
            SimUser(index=i, phone=_phone(run, i, opts["users"]),
                    ip=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", device=f"sim-{run}-{i}")
            for i in range(opts["users"])
        ]
        from django.utils import timezone

        since = timezone.now()
        started = time.monotonic()
        _pool_run(sim.onboard, users, opts["concurrency"], "users", quiet)
        pairs = [(users[i], users[rng.randrange(i)]) for i in range(1, len(users)) if rng.random() < opts["invite_ratio"]]
        _pool_run(sim.accept, pairs, opts["concurrency"], "referrals", quiet)
        with_token = [u for u in users if u.token] or users
        orders = [(with_token[n % len(with_token)], n) for n in range(opts["orders"])]
        _pool_run(sim.order, orders, opts["concurrency"], "orders", quiet)
        requests_done = time.monotonic() - started
        transport.close()
        from orders.models import Order

        # This run's orders: its users' phones share the run prefix, and none existed before `since`.
        run_orders = Order.objects.filter(user__phone__startswith=_phone(run, 0, opts["users"])[:11 - _width(opts["users"])],
                                          created_at__gte=since)
        open_orders = wait_for_orders(run_orders, opts["wait"], quiet)
        elapsed = time.monotonic() - started
        report = invariant_report(campaign=campaign, orders=run_orders, open_orders=open_orders, tally=tally)
        report["run"] = {
            "users": len(users), "logged_in": sum(1 for u in users if u.token), "joined": sum(1 for u in users if u.joined),
            "referral_attempts": len(pairs), "orders_requested": opts["orders"], "orders_placed": sim.orders_placed,
            "requests": sum(tally.statuses.values()), "seconds_requests": round(requests_done, 2),
            "seconds_total": round(elapsed, 2),
            "orders_per_second_end_to_end": round(sim.orders_placed / elapsed, 2) if elapsed else None,
            "mode": opts["url"] or "in-process", "concurrency": opts["concurrency"],
        }
        if opts["json"]:
            self.stdout.write(json.dumps(report, ensure_ascii=False))
        else:
            self._print(report)
        if not report["ok"]:
            failed = [name for name, c in report["checks"].items() if not c["ok"]]
            raise CommandError("invariants FAILED: " + ", ".join(failed))

    def _print(self, report: dict) -> None:
        w = self.stdout.write
        run = report["run"]
        w(f"\nsimulate {report['campaign']} ({run['mode']}, concurrency {run['concurrency']})")
        w(f"  users {run['users']}  logged in {run['logged_in']}  joined {run['joined']}  "
          f"referral attempts {run['referral_attempts']}  orders placed {run['orders_placed']}/{run['orders_requested']}")
        w(f"  {run['requests']} requests in {run['seconds_requests']} s; end to end {run['seconds_total']} s "
          f"({run['orders_per_second_end_to_end']} orders/s)")
        w("\ninvariants:")
        for name, check in report["checks"].items():
            details = ", ".join(f"{k}={v}" for k, v in check.items() if k != "ok")
            w(f"  [{'PASS' if check['ok'] else 'FAIL'}] {name}: {details}")
        w("\nanswers by operation:code")
        for key, n in report["codes"].items():
            w(f"  {key:40s} {n}")
        w(f"\nbudget: {report['budget']}")
        w(f"\nRESULT: {'PASS' if report['ok'] else 'FAIL'}")
