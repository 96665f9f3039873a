"""Score a labelled chat corpus against a running server, over HTTP, the way the app (and an outside check) sees it.

    .venv/bin/python bench/chat_corpus.py tests/data/intents.jsonl            # own server on a fresh bench database
    .venv/bin/python bench/chat_corpus.py FILE --url http://127.0.0.1:8000    # a server that ran seed_demo
    .venv/bin/python bench/chat_corpus.py FILE --only-source blind --json /tmp/score.json

Every sentence goes through `POST /api/v1/orders/chat` with `preview: true` at the Hangzhou check point
(30.2741, 120.1551) as one demo user who holds a card and has one earlier order (for "老样子"). A line's
`expect` is one of (the format of tests/data/intents.jsonl):

- `{"items": [{brand, product, quantity, size, sugar, ice}, ...]}`: 200, the same items in order; a `null`
  brand means "any brand that sells it" (the preview always names the store's brand);
- `{"anything": {brand, category, hot, less_sweet, quantity, size, sugar, ice}}`: 200 with a recommendation
  that fits every constraint given (brand, the product's category, a hot/warm drink, less than full sugar);
- `{"repeat_last": true, "overrides": {...}}`: 200 with the earlier order's products, options overridden;
- `{"refuse": true}`: anything but 200 (a 4xx: 422 `not_understood`, 409 ...). A refusal answered 200 is
  counted as "refusal placed as an order" - the one number that must stay 0.

Prints exact matches per category and in total; `--show-misses` lists what went wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.server import BenchConfig, Server, manage, reset_database  # noqa: E402

logging.getLogger("httpx").setLevel(logging.WARNING)

CENTER = {"lat": 30.2741, "lng": 120.1551}
PHONE = "13800000001"  # a seed_demo phone with a welcome card
LAST_ORDER = "喜茶多肉葡萄一杯，大杯，少冰，半糖"
HOT = {"热", "温"}
FULL_SUGAR = {"全糖", None}


def login(client: httpx.Client, otp: str, phone: str = PHONE) -> str:
    client.post("/api/v1/auth/otp", json={"phone": phone})
    resp = client.post("/api/v1/auth/token", json={"phone": phone, "code": otp, "device_id": f"corpus-{uuid.uuid4().hex}"})
    resp.raise_for_status()
    return resp.json()["token"]


def product_categories() -> dict[tuple[str, str], str]:
    """(brand, product) -> category of the demo menu (the preview does not carry the category)."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miandan.settings")
    django.setup()
    from demo.catalog import BRANDS

    return {(b["name"], p["name"]): p["category"] for b in BRANDS for p in b["products"]}


def score_line(case: dict, status: int, body: dict, last: list[dict], product_category: dict) -> tuple[bool, str]:
    expect = case["expect"]
    if expect.get("refuse"):
        return status != 200, "" if status != 200 else "placed"
    if status != 200:
        return False, f"{status} {body.get('code')}: {body.get('detail')}"
    items = body.get("items") or []
    if "items" in expect:
        want = expect["items"]
        if len(items) != len(want):
            return False, f"{len(items)} items instead of {len(want)}"
        for got, exp in zip(items, want, strict=True):
            for key in ("brand", "product", "quantity", "size", "sugar", "ice"):
                if key == "brand" and exp.get("brand") is None:
                    continue
                if got.get(key) != exp.get(key):
                    return False, f"{key}: {got.get(key)!r} instead of {exp.get(key)!r}"
        return True, ""
    if "anything" in expect:
        want = expect["anything"]
        qty = sum(i.get("quantity", 0) for i in items)
        if qty != (want.get("quantity") or 1):
            return False, f"quantity {qty}"
        for item in items:
            if want.get("brand") and item.get("brand") != want["brand"]:
                return False, f"brand {item.get('brand')}"
            cat = product_category.get((item.get("brand"), item.get("product")))
            if want.get("category") and cat is not None and cat != want["category"]:
                return False, f"category {cat}"
            if want.get("hot") and item.get("ice") not in HOT:
                return False, f"not hot: {item.get('ice')}"
            if want.get("less_sweet") and item.get("sugar") in FULL_SUGAR:
                return False, f"not less sweet: {item.get('sugar')}"
            for key in ("size", "sugar", "ice"):
                if want.get(key) and item.get(key) != want[key]:
                    return False, f"{key}: {item.get(key)!r}"
        return True, ""
    if expect.get("repeat_last"):
        overrides = expect.get("overrides") or {}
        if [i.get("product") for i in items] != [i["product"] for i in last]:
            return False, f"products {[i.get('product') for i in items]}"
        for got, before in zip(items, last, strict=True):
            for key in ("size", "sugar", "ice"):
                wanted = overrides.get(key) or before.get(key)
                if got.get(key) != wanted:
                    return False, f"{key}: {got.get(key)!r} instead of {wanted!r}"
        return True, ""
    return False, "unknown expectation"


def run(corpus: list[dict], url: str, otp: str) -> dict:
    with httpx.Client(base_url=url, timeout=30) as client:
        token = login(client, otp)
        client.headers["Authorization"] = f"Bearer {token}"
        client.post("/api/v1/campaigns/spring-tea/join", json={"app_version": "9.9.9"})
        last_resp = client.post("/api/v1/orders/chat", json={"text": LAST_ORDER, **CENTER, "pay_full_price": True})
        if last_resp.status_code not in (200, 201):
            raise SystemExit(f"could not place the earlier order: {last_resp.status_code} {last_resp.text}")
        last = last_resp.json()["items"]
        product_category = product_categories()
        results = []
        started = time.perf_counter()
        for case in corpus:
            resp = client.post("/api/v1/orders/chat",
                               json={"text": case["text"], **CENTER, "preview": True, "pay_full_price": True})
            try:
                body = resp.json()
            except ValueError:
                body = {}
            ok, why = score_line(case, resp.status_code, body, last, product_category)
            results.append({"text": case["text"], "category": case.get("category", "?"), "ok": ok, "why": why,
                            "status": resp.status_code, "refuse": bool(case["expect"].get("refuse")),
                            "source": case.get("source", "")})
        elapsed = time.perf_counter() - started
    return {"results": results, "seconds": elapsed}


def summarise(results: list[dict]) -> dict:
    by_cat: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_cat[r["category"]]["n"] += 1
        by_cat[r["category"]]["ok"] += r["ok"]
    placed = [r["text"] for r in results if r["refuse"] and r["status"] == 200]
    server_errors = [r["text"] for r in results if r["status"] >= 500]
    total_ok = sum(r["ok"] for r in results)
    return {
        "exact": total_ok, "total": len(results), "accuracy": round(total_ok / max(1, len(results)), 4),
        "refusals_placed": len(placed), "refusals_placed_texts": placed, "server_errors": len(server_errors),
        "by_category": {c: {"exact": v["ok"], "total": v["n"]} for c, v in sorted(by_cat.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", nargs="+", help="JSON Lines files")
    parser.add_argument("--url", help="a running server that ran seed_demo with MIANDAN_SMS_BACKEND=fixed")
    parser.add_argument("--otp", default=BenchConfig.fixed_otp, help="the server's MIANDAN_FIXED_OTP")
    parser.add_argument("--only-source", help="score only lines whose `source` starts with this")
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--json", help="write the summary and every result here")
    parser.add_argument("--port", type=int, default=8772)
    parser.add_argument("--database", default="miandan_bench_chat", help="bench database to (re)create when --url is not given")
    args = parser.parse_args(argv)

    corpus = []
    for path in args.corpus:
        corpus += [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.only_source:
        corpus = [c for c in corpus if str(c.get("source", "")).startswith(args.only_source)]
    if args.url:
        outcome = run(corpus, args.url, args.otp)
    else:
        cfg = BenchConfig(port=args.port, database_url=f"postgres://postgres@127.0.0.1:5432/{args.database}",
                          workers=2, threads=2,
                          extra_env={"RATELIMIT_ENABLE": "0", "MIANDAN_SHED_ENABLED": "0", "MIANDAN_LOAD_TEST": "1"})
        reset_database(cfg)
        manage(cfg, "seed_demo")
        with Server(cfg):
            outcome = run(corpus, cfg.url, cfg.fixed_otp)
    summary = summarise(outcome["results"])
    summary["seconds"] = round(outcome["seconds"], 1)
    for cat, v in summary["by_category"].items():
        print(f"  {cat:<14} {v['exact']:>4} / {v['total']:<4} {v['exact'] / max(1, v['total']):6.1%}")
    print(f"exact: {summary['exact']} / {summary['total']} ({summary['accuracy']:.1%}); "
          f"refusals placed as orders: {summary['refusals_placed']}; 5xx: {summary['server_errors']}")
    if args.show_misses:
        for r in outcome["results"]:
            if not r["ok"]:
                print(f"  MISS [{r['category']}] {r['text']}  -> {r['why']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "results": outcome["results"]}, ensure_ascii=False,
                                              indent=1), encoding="utf-8")
    return 0 if summary["refusals_placed"] == 0 and summary["server_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
