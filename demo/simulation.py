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
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field

from django.db import connections
from django.db.models import Count, F, Q

from campaign.models import BudgetBucket
from orders.models import Order
from vouchers.models import Voucher
from vouchers.selectors import reconcile

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
    # Answers that were retried (429/503 with attempts left): `codes` counts every answer, so an operation's
    # final answers are its codes minus its retries.
    retries: Counter = field(default_factory=Counter)
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
                with self.tally.lock:
                    self.tally.retries[op] += 1
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


def pool_run(fn, items, concurrency: int, desc: str, quiet: bool) -> None:
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
        "retries": dict(sorted(tally.retries.items())),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "budget": {k: str(v) for k, v in totals.items()},
    }


def phone_width(total: int) -> int:
    return max(3, len(str(max(total - 1, 0))))


def sim_phone(run: int, i: int, total: int) -> str:
    """11-digit mainland mobile number: 1, [3-9], then as many run digits as the user index leaves room for."""
    width = phone_width(total)
    if width > 9:
        raise ValueError("at most 10^9 users")
    rest = 9 - width
    run_part = f"{run % 10**rest:0{rest}d}" if rest else ""
    return f"1{3 + run % 7}{run_part}{i:0{width}d}"


# --- fulfilment: how long orders took, and how much of it was the platform's own doing ---------------

class InFlightSampler:
    """Counts the run's orders not yet final every `interval` seconds in a thread; `peak` is the largest count."""

    def __init__(self, orders, interval: float = 1.0) -> None:
        self.orders, self.interval = orders, interval
        self.peak = self.peak_held = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                counts = dict(self.orders.exclude(status__in=Order.FINAL).order_by().values_list("status")
                              .annotate(n=Count("id")))
                self.peak = max(self.peak, sum(counts.values()))
                self.peak_held = max(self.peak_held, sum(n for s, n in counts.items() if s != Order.Status.PLACED))
        finally:
            connections.close_all()

    def __enter__(self) -> InFlightSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    values = sorted(values)
    if not values:
        return {"p50": None, "p99": None, "max": None}
    pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))], 3)  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(values[-1], 3)}


def fulfilment_report(*, orders) -> dict:
    """Placement -> completion of the run's completed orders, split into the merchant's own time and ours.

    merchant time = its `delivered` event time - our `sent_to_store` time (what the store took: its accept
    and delivery delays); platform overhead = the rest (sending the order, recording each callback, and the
    merchant waiting for our acknowledgements before its next step). Orders completed through the poller
    or whose sent_to_store step was overtaken by an event are counted in the totals only.
    """
    from orders.models import MerchantEvent, OrderEvent

    completed = orders.filter(status=Order.Status.COMPLETED)
    created = dict(completed.values_list("pk", "created_at"))
    steps: dict[int, dict[str, object]] = {}
    for order_id, status, at in OrderEvent.objects.filter(order__in=completed, to_status__in=[
            Order.Status.SENT_TO_STORE, Order.Status.COMPLETED]).values_list("order_id", "to_status", "created_at"):
        steps.setdefault(order_id, {})[status] = at
    delivered = dict(MerchantEvent.objects.filter(order__in=completed, kind="delivered").values_list(
        "order_id", "occurred_at"))
    total, merchant, overhead, submit = [], [], [], []
    for order_id, placed in created.items():
        done = steps.get(order_id, {}).get(Order.Status.COMPLETED)
        if done is None:
            continue
        total.append((done - placed).total_seconds())
        sent = steps[order_id].get(Order.Status.SENT_TO_STORE)
        if sent is not None:
            submit.append((sent - placed).total_seconds())
        if sent is not None and order_id in delivered:
            own = (delivered[order_id] - sent).total_seconds()
            merchant.append(own)
            overhead.append((done - placed).total_seconds() - own)
    return {"completed": len(total), "placement_to_completion_s": _percentiles(total),
            "merchant_own_s": _percentiles(merchant), "platform_overhead_s": _percentiles(overhead),
            "placement_to_sent_s": _percentiles(submit)}
