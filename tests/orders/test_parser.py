"""The chat parser against the labelled corpus (tests/data/intents.jsonl)."""

import json
import time
from pathlib import Path

import pytest

from demo.catalog import catalog_load
from orders.parser import MAX_LENGTH, Intent, Refusal, parse

CORPUS = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "intents.jsonl").read_text().splitlines()
          if line.strip()]

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def catalogue(db):
    catalog_load(stores_per_city=5)
    from orders import parser

    parser.catalogue_changed()


def test_corpus_is_big_and_varied():
    assert len(CORPUS) >= 150
    assert sum(1 for c in CORPUS if c["expect"].get("refuse")) >= 40


def test_corpus_accuracy_and_no_wrong_orders_for_must_refuse():
    right, wrong = 0, []
    wrongly_ordered = []
    for case in CORPUS:
        got = parse(case["text"]).as_dict()
        if got == case["expect"]:
            right += 1
        else:
            wrong.append((case["text"], case["expect"], got))
            if case["expect"].get("refuse") and not got.get("refuse"):
                wrongly_ordered.append(case["text"])
    accuracy = right / len(CORPUS)
    print(f"\nparser corpus accuracy: {accuracy:.1%} ({right}/{len(CORPUS)})")
    for text, exp, got in wrong:
        print("  MISS", text, exp, got)
    assert not wrongly_ordered, wrongly_ordered
    assert accuracy >= 0.95


def test_options_use_canonical_words():
    intent = parse("两杯珍珠奶茶，少糖，不要冰")
    assert isinstance(intent, Intent)
    item = intent.items[0]
    assert (item.quantity, item.sugar, item.ice, item.size) == (2, "七分糖", "去冰", None)


def test_too_long_and_too_many_refused_with_clear_message():
    long = parse("珍珠奶茶" * 60)
    assert isinstance(long, Refusal) and str(MAX_LENGTH) in long.detail
    many = parse("来12杯珍珠奶茶")
    assert isinstance(many, Refusal) and "10" in many.detail
    assert many.suggestions


def test_catalogue_edit_reaches_the_parser():
    from orders.models import Brand, Product

    assert isinstance(parse("一杯桂花乌龙"), Refusal)
    Product.objects.create(brand=Brand.objects.get(slug="chagee"), name="桂花乌龙", price="18.00", sizes={"中杯": "0.00"})
    intent = parse("一杯桂花乌龙")
    assert isinstance(intent, Intent) and intent.items[0].product == "桂花乌龙"


def test_parser_is_fast():
    texts = [c["text"] for c in CORPUS]
    parse(texts[0])
    n, started = 0, time.perf_counter()
    while n < 5000:
        for t in texts:
            parse(t)
        n += len(texts)
    rate = n / (time.perf_counter() - started)
    print(f"\nparser: {rate:,.0f} sentences/s")
    # Not a timing assertion on the target; only a guard against an accidental O(n^2) (target is 5,000/s).
    assert rate > 500
