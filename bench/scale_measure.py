"""Measure every read of issue 14 on a database loaded by `bench/scale.py load` (see that file for the command).

Each group runs in its own child process (`bench/server.py call`), so peak RSS is per group. Pages go through the
whole Django stack in-process (test client, a superuser session, no network); each is requested `repeat` times
and the median is reported, with its SQL statement count and slowest statement. Queries that must be index scans
are shown with EXPLAIN (ANALYZE, BUFFERS).
"""

from __future__ import annotations

import json
import resource
import statistics
import time

from bench.server import BenchConfig, django_call

SLUG = "seed-scale"
GROUPS = ["sizes", "reconcile", "report", "dashboard", "admin", "queries", "user_lists", "export"]


REPORTS = (("json", "day"), ("csv", "day"), ("xlsx", "day"), ("csv", "brand"), ("csv", "city"))


def measure(cfg: BenchConfig, *, repeat: int = 3, only: list[str] | None = None, partial=None,
            reports=REPORTS, exports=("csv",)) -> dict:
    out: dict = {"database": cfg.database_url}
    for group in only or GROUPS:
        if partial is not None:
            partial(out)
        if group == "export":
            out["export"] = [django_call(cfg, "bench.scale_measure:child_export", {"fmt": fmt}) for fmt in exports]
        elif group == "report":
            out["report"] = [
                django_call(cfg, "bench.scale_measure:child_report", {"fmt": fmt, "group_by": g})
                for fmt, g in reports
            ]
        else:
            out[group] = django_call(cfg, f"bench.scale_measure:child_{group}", {"repeat": repeat}
                                     if group in ("dashboard", "admin", "user_lists") else {})
    return out


# --- in the child processes -------------------------------------------------------------------

def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _campaign():
    from campaign.models import Campaign

    return Campaign.objects.get(slug=SLUG)


def _staff_client():
    from django.test import Client

    from accounts.models import User

    user = User.objects.filter(username="scale-admin").first()
    if user is None:
        user = User.objects.create_superuser("scale-admin", "scale@example.com", "scale-admin-pw")
    client = Client()
    client.force_login(user)
    return client


def _get(client, url: str, repeat: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, status = [], None
    for i in range(repeat + 1):
        if i == 0:
            connection.queries_log.clear()  # the request_started signal clears it too, which would shift the window
            with CaptureQueriesContext(connection) as ctx:  # first run: the SQL it sends (not timed)
                resp = client.get(url)
                body = b"".join(resp.streaming_content) if resp.streaming else resp.content
            captured = list(ctx.captured_queries)  # a property over a log the next request clears
            continue
        t = time.perf_counter()
        resp = client.get(url)
        body = b"".join(resp.streaming_content) if resp.streaming else resp.content
        times.append((time.perf_counter() - t) * 1000)
        status = resp.status_code
    slow = max(captured, key=lambda q: float(q["time"]), default={"time": "0", "sql": ""})
    return {"url": url, "status": status, "ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
            "bytes": len(body), "queries": len(captured),
            "sql_ms": round(sum(float(q["time"]) for q in captured) * 1000, 1),  # database time of the first run
            "slowest_query_ms": round(float(slow["time"]) * 1000, 1), "slowest_query": slow["sql"][:300]}


def child_sizes() -> dict:
    from django.db import connection

    tables = ["accounts_user", "vouchers_voucher", "orders_order", "orders_orderevent", "orders_orderitem",
              "referrals_referral", "referrals_invitecode", "campaign_ledgerentry"]
    with connection.cursor() as cur:
        sizes = {}
        for t in tables:
            cur.execute(f"SELECT count(*), pg_total_relation_size('{t}') FROM {t}")
            n, size = cur.fetchone()
            sizes[t] = {"rows": n, "total_mb": round(size / 2**20)}
    return sizes


def child_reconcile() -> dict:
    import io

    from django.core.management import CommandError, call_command

    before = _rss_mb()
    out, err = io.StringIO(), io.StringIO()
    t = time.perf_counter()
    try:
        call_command("reconcile", SLUG, stdout=out, stderr=err)
        result = "PASS"
    except CommandError as exc:
        result = str(exc)
    return {"command": f"manage.py reconcile {SLUG}", "result": result, "s": round(time.perf_counter() - t, 2),
            "peak_rss_mb": _rss_mb(), "rss_before_mb": before, "stderr": err.getvalue()[:500]}


def _warm_rollup() -> dict | None:
    """Catch the ledger rollup up (beat does this every 30 s in production); None before issue 14."""
    try:
        from reports.services import ledger_rollup_advance
    except ImportError:
        return None
    campaign = _campaign()
    t = time.perf_counter()
    ledger_rollup_advance(campaign=campaign)  # notes the newest id
    upto = ledger_rollup_advance(campaign=campaign)  # sums everything up to it
    return {"upto_id": upto, "s": round(time.perf_counter() - t, 2)}


def child_report(fmt: str, group_by: str) -> dict:
    _warm_rollup()
    client = _staff_client()
    before = _rss_mb()
    r = _get(client, f"/api/v1/reports/campaigns/{SLUG}/budget?format={fmt}&group_by={group_by}", 1)
    r.update({"format": fmt, "group_by": group_by, "peak_rss_mb": _rss_mb(), "rss_before_mb": before})
    return r


def child_dashboard(repeat: int) -> list[dict]:
    from django.core.cache import cache

    campaign = _campaign()
    warm = _warm_rollup()
    client = _staff_client()
    rows = []
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for url in (f"/admin/campaign/campaign/{campaign.pk}/dashboard/", f"/admin/campaign/campaign/{campaign.pk}/dashboard.json"):
        times, sql_ms, slowest = [], [], []
        for _ in range(repeat + 1):
            cache.delete(f"reports:dashboard:{campaign.pk}")  # time the computation, not the shared cache
            connection.queries_log.clear()
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                resp = client.get(url)
                times.append((time.perf_counter() - t) * 1000)
            captured = list(ctx.captured_queries)
            sql_ms.append(sum(float(q["time"]) for q in captured) * 1000)
            slowest = max(captured, key=lambda q: float(q["time"]), default={"time": "0", "sql": ""})
        times, sql_ms = times[1:], sql_ms[1:]  # the first run warms caches
        rows.append({"url": url, "status": resp.status_code, "ms_uncached": round(statistics.median(times), 1),
                     "sql_ms": round(statistics.median(sql_ms), 1), "queries": len(captured),
                     "slowest_query_ms": round(float(slowest["time"]) * 1000, 1), "slowest_query": slowest["sql"][:300]})
    t = time.perf_counter()
    client.get(rows[0]["url"])
    rows.append({"url": rows[0]["url"] + " (cached)", "status": 200, "ms": round((time.perf_counter() - t) * 1000, 1)})
    # What a viewer waits once a copy exists but is older than DASHBOARD_FRESH_SECONDS: the copy is served and
    # one background thread recomputes it (reports/admin.py); the refresh's own time is measured to its end.
    from reports import admin as reports_admin

    fresh_seconds, reports_admin.DASHBOARD_FRESH_SECONDS = reports_admin.DASHBOARD_FRESH_SECONDS, 0
    try:
        served, refreshed = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            resp = client.get(rows[0]["url"])
            served.append((time.perf_counter() - t) * 1000)
            while cache.get(f"reports:dashboard:{campaign.pk}:refresh") is not None:
                time.sleep(0.01)
            refreshed.append((time.perf_counter() - t) * 1000)  # from the view to the new copy in place
    finally:
        reports_admin.DASHBOARD_FRESH_SECONDS = fresh_seconds
    rows.append({"url": rows[0]["url"] + " (stale copy: served, refreshed behind)", "status": resp.status_code,
                 "ms": round(statistics.median(served), 1), "refresh_done_ms": round(statistics.median(refreshed), 1)})
    if warm:
        rows.append({"ledger rollup catch-up (every row, once)": warm})
    return rows


def _samples() -> dict:
    """Real values to search for and filter on, picked from the loaded data."""
    from campaign.models import LedgerEntry
    from orders.models import Brand, Order
    from referrals.models import InviteCode, Referral
    from vouchers.models import Voucher

    card = Voucher.objects.order_by().filter(order_id__isnull=False).only("code", "user_id", "issued_at").first()
    order = Order.objects.order_by().filter(voucher__isnull=False).select_related("user", "voucher").first()
    ref = Referral.objects.order_by().select_related("invitee").first()
    code = InviteCode.objects.order_by().first()
    led = LedgerEntry.objects.order_by().filter(voucher_id__isnull=False).first()
    return {"card_code": card.code, "card_phone": card.user.phone, "day": card.issued_at,
            "order_id": order.pk, "order_phone": order.user.phone, "order_card": order.voucher.code,
            "merchant_ref": f"M{order.pk}", "brand": Brand.objects.order_by("id").first().pk,
            "ref_phone": ref.invitee.phone, "invite_code": code.code, "device": ref.device_id,
            "led_voucher": led.voucher_id}


def child_admin(repeat: int) -> list[dict]:
    from django.utils import timezone

    c = _campaign()
    s = _samples()
    day = timezone.localtime(s["day"])
    dh = f"year={day.year}&month={day.month}&day={day.day}"
    pages = {
        "cards": [
            "", "?p=50", f"?campaign__id__exact={c.pk}", "?status=issued", "?status=locked", "?status=void",
            "?source=welcome", "?source=staff", f"?q={s['card_code'].lower()}", f"?q={s['card_phone']}",
            f"?q={s['card_phone'][:7]}", f"?issued_at__{dh.replace('&', '&issued_at__')}",
            f"?issued_at__year={day.year}", "?o=-8",
        ],
        "orders": [
            "", "?p=50", "?status=completed", "?status=placed", "?status=failed", f"?campaign__id__exact={c.pk}",
            f"?store__brand__id__exact={s['brand']}", f"?q={s['order_id']}", f"?q={s['order_phone']}",
            f"?q={s['order_card']}", f"?q={s['merchant_ref']}", f"?created_at__{dh.replace('&', '&created_at__')}",
            f"?created_at__year={day.year}",
        ],
        "ledger": [
            "", "?p=50", "?kind=adjust", "?kind=spend", f"?campaign__id__exact={c.pk}", f"?q={s['led_voucher']}",
            f"?q={s['order_id']}", "?q=作废", f"?kind=release&campaign__id__exact={c.pk}",
        ],
        "referrals": [
            "", "?p=50", "?status=under_review", "?status=rejected", f"?campaign__id__exact={c.pk}",
            "?inviter_outcome=issued", "?inviter_outcome=budget_exhausted", "?invitee_outcome=card_limit_reached",
            f"?q={s['ref_phone']}", f"?q={s['invite_code']}", f"?q={s['device']}",
        ],
        "review queue": ["", f"?campaign__id__exact={c.pk}"],
        "invite codes": ["", f"?q={s['invite_code']}", f"?campaign__id__exact={c.pk}"],
        "campaign": ["", f"{c.pk}/change/"],
    }
    base = {
        "cards": "/admin/vouchers/voucher/", "orders": "/admin/orders/order/", "ledger": "/admin/campaign/ledgerentry/",
        "referrals": "/admin/referrals/referral/", "review queue": "/admin/referrals/pendingreferral/",
        "invite codes": "/admin/referrals/invitecode/", "campaign": "/admin/campaign/campaign/",
    }
    client = _staff_client()
    rows = []
    for name, suffixes in pages.items():
        for suffix in suffixes:
            r = _get(client, base[name] + suffix, repeat)
            r["page"] = name
            rows.append(r)
    return rows


def _explain(qs) -> dict:
    plan = qs.explain(analyze=True, buffers=True)
    lines = plan.splitlines()
    nodes = [ln.strip().lstrip("-> ").split("  (")[0] for ln in lines if "Scan" in ln or "Sort" in ln]
    total = next((ln for ln in lines if ln.startswith("Execution Time")), "")
    return {"nodes": nodes, "execution": total, "plan": plan}


def child_queries() -> dict:
    import datetime as dt

    from django.conf import settings
    from django.utils import timezone

    from orders import services as orders_services
    from orders.models import Order
    from vouchers.models import Voucher
    from vouchers.services import voucher_expire_batch

    now = timezone.now()
    deadline = now - dt.timedelta(seconds=settings.MIANDAN_ORDER_ACCEPT_DEADLINE_SECONDS)
    stuck = now - dt.timedelta(seconds=settings.MIANDAN_ORDER_STUCK_SECONDS)
    out = {}
    expiry = Voucher.objects.filter(status=Voucher.Status.ISSUED, expires_at__lte=now)
    # The batch's own SELECT (its FOR UPDATE SKIP LOCKED needs a transaction; the plan is the same without it).
    out["expiry batch select (1000)"] = _explain(expiry.order_by(*_expiry_order())[:1000])
    if hasattr(orders_services, "sweep_overdue"):
        overdue = orders_services.sweep_overdue(now)
        # Since issue 12 nothing re-sends "stuck" orders by age: the poller takes due orders by next check time.
        stuck_q = Order.objects.filter(next_check_at__lte=now).order_by("next_check_at").values_list("pk")
        stuck_label = "poller: due for a check (500)"
    else:  # before issue 14: the queries as order_sweep wrote them (model ordering -id)
        overdue = Order.objects.filter(status__in=orders_services.CANCELLABLE, created_at__lt=deadline).values_list("pk")
        stuck_q = Order.objects.filter(status__in=orders_services.ACTIVE, state_changed_at__lt=stuck).values_list("pk")
        stuck_label = "sweeper: stuck in a state (500)"
    out["sweeper: past accept deadline (500)"] = _explain(overdue[:500])
    out[stuck_label] = _explain(stuck_q[:500])
    for plan in out.values():
        plan["plan"] = plan["plan"][:3000]
    t = time.perf_counter()
    n = voucher_expire_batch(limit=1000)
    out["voucher_expire_batch(limit=1000), real"] = {"cards": n, "ms": round((time.perf_counter() - t) * 1000, 1)}
    return out


def _expiry_order() -> tuple[str, ...]:
    from vouchers import services

    return getattr(services, "EXPIRY_ORDER", ("id",))


def child_user_lists(repeat: int) -> list[dict]:
    from django.db.models import Count
    from django.test import Client

    from accounts.services import token_create
    from orders.models import Order
    from vouchers.models import Voucher

    heavy = Voucher.objects.values("user_id").annotate(n=Count("id")).order_by("-n").first()["user_id"]
    buyer = Order.objects.values("user_id").annotate(n=Count("id")).order_by("-n").first()["user_id"]
    rows = []
    for uid, what in ((heavy, "user with most cards"), (buyer, "user with most orders")):
        from accounts.models import User

        token = token_create(user=User.objects.get(pk=uid), device_id=f"scale-bench-{uid}")
        client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
        for url in ("/api/v1/vouchers/", "/api/v1/orders/"):
            r = _get(client, url, repeat)
            r["who"] = what
            rows.append(r)
    return rows


def child_export(fmt: str) -> dict:
    from reports.models import ExportJob
    from reports.services import export_job_run

    before = _rss_mb()
    job = ExportJob.objects.create(campaign=_campaign(), kind=ExportJob.Kind.LEDGER, format=fmt)
    t = time.perf_counter()
    job = export_job_run(job_id=job.pk)
    s = time.perf_counter() - t
    return {"export": f"ledger {fmt}", "rows": job.rows_done, "s": round(s, 1), "rows_per_s": round(job.rows_done / s),
            "file_mb": round(job.file_size / 2**20, 1), "peak_rss_mb": _rss_mb(), "rss_before_mb": before}


if __name__ == "__main__":
    print(json.dumps(GROUPS))
