"""Issue 14, "the seed's scale in data": load one campaign at the seed's size order, then measure the reads.

    .venv/bin/python bench/scale.py load --cards 500000             # 1x: 0.5 M cards (~0.1 M orders, ~1 M ledger rows)
    .venv/bin/python bench/scale.py load --cards 5000000            # 10x: 5 M cards, 1 M orders, 1 M referrals, ~10 M ledger
    .venv/bin/python bench/scale.py measure --json /tmp/scale.json  # every read of the issue, timed, on that database
    .venv/bin/python bench/scale.py drop                            # drop the database when done

Database: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/miandan_bench_scale); the loader drops,
creates and migrates it first. `--database-url` overrides it per command.

What `load` writes (deterministic for a seed; proportions at --cards N):
- ~0.6 N app users, each with a welcome card; ~0.2 N referrals (98 % accepted with an inviter and an invitee
  card, 1.5 % held for review, 0.5 % rejected), one invite code per inviter, a referral forest with paths;
- ~0.2 N orders on cards (93 % completed = card redeemed, 4.5 % failed, 2.5 % cancelled, the last 10 minutes
  still in flight = card locked, a few placed orders past the accept deadline for the sweeper) plus 2 % full-price
  orders, one item each and their state events;
- cards issued over the last 3 days with a 1-day validity: most older cards expired (a release row each), a few
  past their date still issued (work for the expiry batch), 0.1 % void;
- the ledger: one adjust row per bucket, a reserve per card, spend/release per redeemed card, a release per closed
  card, ids in time order; bucket counters set from the same sums, so `reconcile` passes.

How: rows are generated in one Python pass and streamed with psycopg 3's COPY (`cursor.copy()`), one connection
per table, with foreign-key triggers off for the load (`session_replication_role = replica`; CHECK and UNIQUE
constraints stay on and validate every row), secondary indexes dropped first and rebuilt afterwards, the ledger
copied into a staging table and inserted in time order, then VACUUM (ANALYZE) as autovacuum would eventually do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import time
from array import array
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.server import BenchConfig, _admin_dsn, reset_database  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/miandan_bench_scale"
SLUG = "seed-scale"
FACE_CENTS = 2500
BUCKETS = 64
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
TABLES = [
    "accounts_user", "vouchers_voucher", "orders_order", "orders_orderitem", "orders_orderevent",
    "referrals_invitecode", "referrals_referral", "campaign_ledgerentry",
]


def bench_config(database_url: str | None) -> BenchConfig:
    url = database_url or os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DB
    return BenchConfig(database_url=url)


def setup_django(cfg: BenchConfig) -> None:
    import django

    os.environ.update(cfg.env())
    django.setup()


def _code(n: int, length: int, mult: int) -> str:
    """A unique code per n (a bijection on 31**length), so the bulk load needs no collision checks."""
    space = len(ALPHABET) ** length
    x = (n * mult + 7) % space
    out = []
    for _ in range(length):
        x, r = divmod(x, len(ALPHABET))
        out.append(ALPHABET[r])
    return "".join(out)


def _ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")


class Stream:
    """One COPY ... FROM STDIN on its own connection, fed in batches of text lines."""

    def __init__(self, dsn: str, table: str, columns: list[str]):
        import psycopg

        self.conn = psycopg.connect(dsn)
        self.conn.execute("SET session_replication_role = replica")  # no FK triggers during the load
        self.conn.execute("SET synchronous_commit = off")
        self.cur = self.conn.cursor()
        self._cm = self.cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN")
        self.copy = self._cm.__enter__()
        self.buf: list[str] = []
        self.rows = 0

    def row(self, *values) -> None:
        self.buf.append("\t".join("\\N" if v is None else str(v) for v in values))
        self.rows += 1
        if len(self.buf) >= 20000:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.copy.write("\n".join(self.buf) + "\n")
            self.buf = []

    def close(self) -> None:
        self.flush()
        self._cm.__exit__(None, None, None)
        self.conn.commit()
        self.conn.close()


def _secondary_indexes(conn) -> list[tuple[str, str]]:
    """Indexes on the loaded tables that back no constraint (dropped for the load, rebuilt after)."""
    return conn.execute(
        """
        SELECT i.relname, pg_get_indexdef(i.oid)
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relname = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
        ORDER BY t.relname, i.relname
        """,
        [TABLES],
    ).fetchall()


def load(cfg: BenchConfig, *, cards: int, seed: int, stores_per_city: int) -> dict:
    import psycopg

    t0 = time.time()
    reset_database(cfg)
    setup_django(cfg)
    from django.db import connection

    from campaign.models import BudgetBucket, Campaign
    from demo.catalog import catalog_load
    from orders.models import Product, Store

    catalog_load(stores_per_city=stores_per_city)
    rng = random.Random(seed)
    now = time.time()
    start = now - 3 * 86400
    validity = 86400.0
    users_n = int(cards * 0.6)
    p_order = 0.2 / 0.99  # ~0.2 N orders on cards (cards are slightly fewer than N: held referrals pay none)
    total_budget_cents = cards * FACE_CENTS * 3 // 2

    campaign = Campaign.objects.create(
        slug=SLUG, name="规模测试活动", status=Campaign.Status.LIVE,
        starts_at=dt.datetime.fromtimestamp(start - 3600, dt.UTC), ends_at=dt.datetime.fromtimestamp(now + 30 * 86400, dt.UTC),
        face_value=Decimal("25.00"), card_cap=21, card_validity=dt.timedelta(seconds=validity),
        total_budget=Decimal(_money(total_budget_cents)), bucket_count=BUCKETS,
    )
    whole = total_budget_cents // FACE_CENTS
    shares = [(whole // BUCKETS + (1 if i < whole % BUCKETS else 0)) * FACE_CENTS for i in range(BUCKETS)]
    shares[0] += total_budget_cents - sum(shares)
    buckets = BudgetBucket.objects.bulk_create(
        [BudgetBucket(campaign=campaign, index=i, allotment=Decimal(_money(s))) for i, s in enumerate(shares)]
    )
    bucket_ids = [b.pk for b in buckets]
    by_brand: dict[int, list[tuple[int, int]]] = {}
    for pid, brand_id, price in Product.objects.filter(active=True).values_list("id", "brand_id", "price"):
        by_brand.setdefault(brand_id, []).append((pid, int(price * 100)))
    stores = [(sid, bid) for sid, bid in Store.objects.filter(active=True).values_list("id", "brand_id") if bid in by_brand]
    dsn = cfg.database_url
    with psycopg.connect(dsn, autocommit=True) as conn:
        dropped = _secondary_indexes(conn)
        for name, _ in dropped:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("DROP TABLE IF EXISTS scale_ledger_staging")
        conn.execute(
            "CREATE UNLOGGED TABLE scale_ledger_staging (campaign_id bigint, bucket_id bigint, kind varchar(16), "
            "amount numeric(16,2), voucher_id bigint, order_id bigint, actor_id bigint, reason varchar(255), "
            "created_at timestamptz)"
        )
        base = lambda table: conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]  # noqa: E731
        user_base = base("accounts_user")
        card_base, order_base, event_base = base("vouchers_voucher"), base("orders_order"), base("orders_orderevent")
        item_base, code_base, ref_base = base("orders_orderitem"), base("referrals_invitecode"), base("referrals_referral")
    connection.close()

    s_user = Stream(dsn, "accounts_user", [
        "id", "password", "is_superuser", "username", "first_name", "last_name", "email", "is_staff", "is_active",
        "date_joined", "phone", "joined_app_version"])
    s_card = Stream(dsn, "vouchers_voucher", [
        "id", "code", "campaign_id", "user_id", "bucket_id", "slot", "cap", "source", "status", "face_value",
        "subsidy", "order_id", "issued_at", "expires_at", "locked_at", "redeemed_at", "closed_at", "void_reason"])
    s_order = Stream(dsn, "orders_order", [
        "id", "user_id", "campaign_id", "store_id", "voucher_id", "status", "total_price", "subsidy",
        "amount_to_pay", "source_text", "failure_reason", "merchant", "merchant_ref", "attempts", "created_at",
        "state_changed_at"])
    s_item = Stream(dsn, "orders_orderitem", [
        "id", "order_id", "product_id", "quantity", "size", "sugar", "ice", "unit_price", "line_total"])
    s_event = Stream(dsn, "orders_orderevent", ["id", "order_id", "from_status", "to_status", "note", "created_at"])
    s_code = Stream(dsn, "referrals_invitecode", ["id", "campaign_id", "user_id", "code", "created_at"])
    s_ref = Stream(dsn, "referrals_referral", [
        "id", "campaign_id", "invite_code_id", "inviter_id", "invitee_id", "root_id", "depth", "path", "status",
        "inviter_outcome", "invitee_outcome", "inviter_voucher_id", "invitee_voucher_id", "review_reasons",
        "device_id", "ip", "reviewed_by_id", "reviewed_at", "review_note", "created_at"])
    s_led = Stream(dsn, "scale_ledger_staging", [
        "campaign_id", "bucket_id", "kind", "amount", "voucher_id", "order_id", "actor_id", "reason", "created_at"])

    cid = campaign.pk
    reserved = [0] * BUCKETS
    spent = [0] * BUCKETS
    counts = {"cards": 0, "orders": 0, "events": 0, "ledger": 0, "status": {}, "order_status": {}}
    for b, share in zip(bucket_ids, shares, strict=True):
        s_led.row(cid, b, "adjust", _money(share), None, None, None, "活动创建：初始预算", _ts(start - 3600))

    # Users join over the window, invitees last (they were invited by someone who joined earlier).
    join_at = [start + (3 * 86400 - 60) * (i / max(users_n, 1)) for i in range(users_n)]
    slots = array("B", bytes(users_n))
    next_card = card_base
    next_order, next_event, next_item = order_base, event_base, item_base
    sentences = ["帮我点一杯少冰的杨枝甘露", "来杯大杯芝芝莓莓", "一杯热的珍珠奶茶半糖", "老样子"]

    def order_for(card_id: int, uid: int, issued: float) -> tuple[str, int, int, float, float] | None:
        """Maybe an order on this card: (status, order id, subsidy cents, order time, final time)."""
        nonlocal next_order, next_event, next_item
        if rng.random() >= p_order or now - issued < 120:
            return None
        t_o = issued + rng.random() * min(validity * 0.9, now - issued - 60)
        age = now - t_o
        if age < 600:
            status = rng.choice(["placed", "sent_to_store", "accepted", "delivering"])
        elif age < 900 and rng.random() < 0.05:
            status = "placed"  # no store accepted it in time: the sweeper's work
        else:
            r = rng.random()
            status = "completed" if r < 0.93 else "failed" if r < 0.975 else "cancelled"
        store_id, brand_id = rng.choice(stores)
        product_id, price = rng.choice(by_brand[brand_id])
        subsidy = min(price, FACE_CENTS)
        next_order += 1
        oid = next_order
        path = {
            "placed": ["placed"], "sent_to_store": ["placed", "sent_to_store"],
            "accepted": ["placed", "sent_to_store", "accepted"],
            "delivering": ["placed", "sent_to_store", "accepted", "delivering"],
            "completed": ["placed", "sent_to_store", "accepted", "delivering", "completed"],
            "failed": ["placed", "sent_to_store", "failed"], "cancelled": ["placed", "cancelled"],
        }[status]
        t, prev = t_o, ""
        for step in path:
            next_event += 1
            s_event.row(next_event, oid, prev, step, "", _ts(t))
            prev, t = step, min(t + rng.uniform(5, 120), now - 1)
        counts["events"] += len(path)
        final = t
        s_order.row(oid, uid, cid, store_id, card_id, status, _money(price), _money(subsidy), _money(price - subsidy),
                    rng.choice(sentences), "门店超时未接单" if status == "failed" else "",
                    *(("sim", f"M{oid}") if status not in ("placed", "cancelled") else ("", "")),
                    1 if status != "placed" else 0,
                    _ts(t_o), _ts(final))
        next_item += 1
        s_item.row(next_item, oid, product_id, 1, "", "", "", _money(price), _money(price))
        counts["order_status"][status] = counts["order_status"].get(status, 0) + 1
        counts["orders"] += 1
        if rng.random() < 0.02:  # now and then the same user orders at full price, no card
            next_order += 1
            s_order.row(next_order, uid, cid, store_id, None, "completed", _money(price), "0.00", _money(price),
                        "不用卡，原价买一杯", "", "sim", f"M{next_order}", 1, _ts(t_o), _ts(final))
            for step, prev_s in (("placed", ""), ("completed", "placed")):
                next_event += 1
                s_event.row(next_event, next_order, prev_s, step, "", _ts(t_o))
            next_item += 1
            s_item.row(next_item, next_order, product_id, 1, "", "", "", _money(price), _money(price))
            counts["orders"] += 1
            counts["events"] += 2
        return status, oid, subsidy, t_o, final

    def card(uid_index: int, source: str, issued: float, reason: str) -> int:
        nonlocal next_card
        uid = user_base + 1 + uid_index
        slots[uid_index] += 1
        slot = slots[uid_index]
        if slot > 21:
            raise RuntimeError(f"user {uid} would exceed the cap")
        next_card += 1
        vid = next_card
        bi = uid % BUCKETS
        bucket = bucket_ids[bi]
        expires = issued + validity
        subsidy = order_id = locked = redeemed = closed = None
        void_reason = ""
        s_led.row(cid, bucket, "reserve", "25.00", vid, None, None, reason, _ts(issued))
        counts["ledger"] += 1
        order = order_for(vid, uid, issued)
        status = None
        if order is not None:
            o_status, oid, sub_cents, t_o, final = order
            if o_status == "completed":
                status, subsidy, order_id, locked, redeemed = "redeemed", _money(sub_cents), oid, _ts(t_o), _ts(final)
                spent[bi] += sub_cents
                if sub_cents:
                    s_led.row(cid, bucket, "spend", _money(sub_cents), vid, oid, None, "订单完成：补贴", _ts(final))
                    counts["ledger"] += 1
                if FACE_CENTS - sub_cents:
                    s_led.row(cid, bucket, "release", _money(FACE_CENTS - sub_cents), vid, oid, None,
                              "订单完成：面额未用完部分退回", _ts(final))
                    counts["ledger"] += 1
            elif o_status not in ("failed", "cancelled"):
                status, order_id, locked = "locked", oid, _ts(t_o)
                reserved[bi] += FACE_CENTS
        if status is None:
            if expires < now and rng.random() > 0.01:
                status, closed = "expired", expires + rng.uniform(0, 600)
                closed = _ts(min(closed, now - 1))
                s_led.row(cid, bucket, "release", "25.00", vid, None, None, "卡已过期，预留退回", closed)
                counts["ledger"] += 1
            elif rng.random() < 0.001:
                status, closed, void_reason = "void", _ts(min(issued + 3600, now - 1)), "重复发放"
                s_led.row(cid, bucket, "release", "25.00", vid, None, None, "作废：重复发放", closed)
                counts["ledger"] += 1
            else:
                status = "issued"  # some of these are past their date: the expiry batch's work
                reserved[bi] += FACE_CENTS
        s_card.row(vid, _code(vid, 12, 1_000_003), cid, uid, bucket, slot, 21, source, status, "25.00", subsidy,
                   order_id, _ts(issued), _ts(expires), locked, redeemed, closed, void_reason)
        counts["status"][status] = counts["status"].get(status, 0) + 1
        counts["cards"] += 1
        return vid

    # Every third user joined through an invite from someone who joined earlier (~0.2 N referrals), so referral
    # cards are spread over the window like welcome cards; paths as the service writes them.
    ref_path: dict[int, str] = {}
    code_of = array("i", [0]) * users_n
    next_code, next_ref = code_base, ref_base
    for j in range(users_n):
        uid = user_base + 1 + j
        phone = f"13{j:09d}"
        s_user.row(uid, "!", "f", phone, "", "", "", "f", "t", _ts(join_at[j]), phone, "2.3.0")
        card(j, "welcome", join_at[j] + 1, "新人卡")
        if j % 3 != 2:
            continue
        while True:
            k = rng.randrange(0, j)
            if slots[k] <= 19:
                break
        inviter, invitee = user_base + 1 + k, user_base + 1 + j
        t = join_at[j] + 2
        if not code_of[k]:
            next_code += 1
            code_of[k] = next_code
            s_code.row(next_code, cid, inviter, _code(next_code, 8, 999_983), _ts(max(join_at[k] + 5, t - 3600)))
        ppath = ref_path.get(k)
        if ppath is None:
            path, root, depth = f"/{inviter}/", inviter, 1
        else:
            path = f"{ppath}{inviter}/"
            depth = path.count("/") - 1
            root = int(path.strip("/").split("/")[0])
        if len(path) > 2000:
            path, root, depth = f"/{inviter}/", inviter, 1
        ref_path[j] = path
        r = rng.random()
        next_ref += 1
        device = f"dev-{invitee:x}"
        ip = f"10.{(invitee >> 16) & 255}.{(invitee >> 8) & 255}.{invitee & 255}"
        if r < 0.98:
            v_inviter = card(k, "referral_inviter", t, "邀请奖励")
            v_invitee = card(j, "referral_invitee", t, "受邀奖励")
            s_ref.row(next_ref, cid, code_of[k], inviter, invitee, root, depth, path, "accepted", "issued", "issued",
                      v_inviter, v_invitee, "[]", device, ip, None, None, "", _ts(t))
        elif r < 0.995:
            s_ref.row(next_ref, cid, code_of[k], inviter, invitee, root, depth, path, "under_review", "pending",
                      "pending", None, None, '["ip_burst"]', device, ip, None, None, "", _ts(t))
        else:
            s_ref.row(next_ref, cid, code_of[k], inviter, invitee, root, depth, path, "rejected", "rejected",
                      "rejected", None, None, '["device_reuse"]', device, ip, None, _ts(t + 600), "同设备多账号", _ts(t))
    gen_s = time.time() - t0
    streams = [s_user, s_card, s_order, s_item, s_event, s_code, s_ref, s_led]
    rows = {}
    for s in streams:
        s.close()
    rows = {name: s.rows for name, s in zip(TABLES[:7] + ["ledger"], streams, strict=True)}
    copied_s = time.time() - t0

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(
            "INSERT INTO campaign_ledgerentry (campaign_id, bucket_id, kind, amount, voucher_id, order_id, actor_id, "
            "reason, created_at) SELECT campaign_id, bucket_id, kind, amount, voucher_id, order_id, actor_id, reason, "
            "created_at FROM scale_ledger_staging ORDER BY created_at"
        )
        conn.execute("DROP TABLE scale_ledger_staging")
        for bi, b in enumerate(bucket_ids):
            conn.execute("UPDATE campaign_budgetbucket SET reserved = %s, spent = %s WHERE id = %s",
                         [Decimal(_money(reserved[bi])), Decimal(_money(spent[bi])), b])
        for table in TABLES:
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"(SELECT coalesce(max(id), 1) FROM {table}))")
        index_t = time.time()
        for _, ddl in dropped:
            conn.execute(ddl)
        index_s = time.time() - index_t
        conn.execute("VACUUM (ANALYZE)")
    return {
        "cards_requested": cards, "rows": rows, "card_status": counts["status"], "order_status": counts["order_status"],
        "generate_and_copy_s": round(copied_s, 1), "python_generation_s": round(gen_s, 1),
        "index_rebuild_s": round(index_s, 1), "total_s": round(time.time() - t0, 1),
        "indexes_rebuilt": [name for name, _ in dropped], "database": cfg.database_url,
    }


def drop(cfg: BenchConfig) -> None:
    import psycopg

    admin, name = _admin_dsn(cfg.database_url)
    if "bench" not in name:
        raise SystemExit(f"refusing to drop {name}")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_load = sub.add_parser("load", help="drop, create, migrate and bulk-load the database")
    p_load.add_argument("--cards", type=int, default=500_000)
    p_load.add_argument("--seed", type=int, default=14)
    p_load.add_argument("--stores-per-city", type=int, default=20)
    p_measure = sub.add_parser("measure", help="time every read of issue 14 on the loaded database")
    p_measure.add_argument("--json", default=None, help="also write the results here")
    p_measure.add_argument("--repeat", type=int, default=3, help="runs per page; the median is reported")
    p_measure.add_argument("--only", default="", help="comma-separated measure groups")
    p_measure.add_argument("--reports", default="json:day,csv:day,xlsx:day,csv:brand,csv:city",
                           help="budget report format:group_by pairs to time")
    p_measure.add_argument("--exports", default="csv", help="ledger export formats to time (csv,xlsx)")
    sub.add_parser("drop", help="drop the database")
    args = parser.parse_args(argv)
    cfg = bench_config(args.database_url)
    if args.cmd == "load":
        print(json.dumps(load(cfg, cards=args.cards, seed=args.seed, stores_per_city=args.stores_per_city), indent=1))
    elif args.cmd == "measure":
        from bench.scale_measure import measure

        def save(result: dict) -> None:  # after every group too, so a long run keeps what it measured
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=1, default=str))

        reports = [tuple(pair.split(":")) for pair in args.reports.split(",") if pair]
        exports = [fmt for fmt in args.exports.split(",") if fmt]
        result = measure(cfg, repeat=args.repeat, only=[g for g in args.only.split(",") if g], partial=save,
                         reports=reports, exports=exports)
        save(result)
        text = json.dumps(result, indent=1, default=str)
        print(text)
    else:
        drop(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
