"""The chat parser's speed alone: sentences per CPU-second on one core, no database, no HTTP.

    .venv/bin/python bench/parser_speed.py                  # 10 s over tests/data/intents.jsonl
    .venv/bin/python bench/parser_speed.py --seconds 30 --profile /tmp/parser.prof

One process parses every sentence of the labelled corpus in a loop against the demo menu (the lexicon is
compiled from demo.catalog once, as a process does once per catalogue version), and reports sentences
per CPU-second of this process (`time.process_time`), which stays meaningful on a busy shared machine,
and the wall-clock rate beside it. Nothing is cached per sentence, so looping over the same corpus does
not flatter the number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def demo_lexicon():
    """The demo catalogue's lexicon, compiled without a database, installed as this process's lexicon."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miandan.settings")
    django.setup()
    from demo.catalog import BRANDS
    from orders import lexicon as L

    brands, products = [], []
    for pk, b in enumerate(BRANDS, start=1):
        brands.append(SimpleNamespace(pk=pk, name=b["name"], slug=b["slug"], aliases=b["aliases"], participating=True))
        for p in b["products"]:
            products.append(SimpleNamespace(brand_id=pk, name=p["name"], aliases=p["aliases"], category=p["category"],
                                            is_default=p["is_default"], active=True))
    lex = L.compile_lexicon(brands, products)
    lex.checked_at = float("inf")  # never re-checked against the shared catalogue version
    L._lexicon = lex
    return lex


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "data" / "intents.jsonl"))
    ap.add_argument("--seconds", type=float, default=10.0, help="CPU seconds to parse for")
    ap.add_argument("--profile", help="write a cProfile of the run here")
    args = ap.parse_args(argv)

    demo_lexicon()
    from orders.parser import parse

    texts = [json.loads(line)["text"] for line in Path(args.corpus).read_text().splitlines() if line.strip()]
    for t in texts:  # warm-up: per-character tables, pinyin readings, the OpenCC table
        parse(t)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    n = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < args.seconds:
        for t in texts:
            parse(t)
        n += len(texts)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    print(f"parser: {n:,} sentences ({len(texts):,} distinct) in {cpu:.2f} CPU-s / {wall:.2f} s wall: "
          f"{n / cpu:,.0f} sentences per CPU-second, {n / wall:,.0f} per wall-second (load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
