"""The parser's compiled lexicon: the live menu plus the fixed vocabulary, as one lookup table.

Built from the database (brands, products and the aliases marketing edits in admin) and
orders.chatvocab, normalised with orders.textnorm so sentence and menu meet in one alphabet.

Freshness across processes: every catalogue edit bumps a version counter in the shared cache
(Redis in production). Each process compares its lexicon's version with the counter at most
once per `CHECK_SECONDS` (one cache read a second, not one per sentence) and recompiles when it
moved, so an alias added in admin works in every gunicorn and Celery process within about a
second, without a deploy. If the cache is unreachable the lexicon still expires after `TTL`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import chatvocab as V
from .textnorm import fold, normalise

logger = logging.getLogger(__name__)

VERSION_KEY = "orders:catalogue-version"
CHECK_SECONDS = 1.0
TTL = 300.0

Candidate = tuple[int, str]  # (brand_id, product name)


@dataclass(frozen=True)
class Term:
    """A word that names menu products: a full name, an alias, or a weak part of a name."""

    text: str
    candidates: tuple[Candidate, ...]
    strength: str  # "name" | "alias" | "weak" | "frag" (an everyday word that is part of a name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n for _, n in self.candidates)


@dataclass
class ProductInfo:
    brand_id: int
    name: str
    category: str
    is_default: bool


@dataclass
class Lexicon:
    words: dict[str, tuple[str, object]]
    starts: dict[str, tuple[int, ...]]  # two first characters (or the one character) -> word lengths, longest first
    brand_names: dict[int, str]
    products: dict[Candidate, ProductInfo]
    # Typo matching (orders.fuzzy): CJK terms with the product or brand they stand for.
    fuzzy_terms: list[tuple[str, str, object]] = field(default_factory=list)  # (text, kind, value)
    # char -> [(term index, position in the term, term length)]
    fuzzy_by_char: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    red_flags: RedFlags | None = None
    version: object = None
    built_at: float = 0.0
    checked_at: float = 0.0

    def brand_name(self, brand_id: int | None) -> str | None:
        return self.brand_names.get(brand_id) if brand_id is not None else None


_lock = threading.Lock()
_lexicon: Lexicon | None = None


# --- cross-process freshness ------------------------------------------------------------------

def _cache():
    from django.core.cache import cache

    return cache


def current_version() -> object:
    """The shared catalogue version (None when the cache cannot be read)."""
    try:
        return _cache().get(VERSION_KEY)
    except Exception as exc:  # Redis down: fall back to the TTL
        logger.warning("catalogue version unreadable: %s", exc)
        return None


def bump_version() -> None:
    """Tell every process that the catalogue changed (called after the edit commits)."""
    try:
        cache = _cache()
        if not cache.add(VERSION_KEY, 1, timeout=None):
            cache.incr(VERSION_KEY)
    except Exception as exc:
        logger.warning("catalogue version not bumped (others pick the edit up within %ss): %s", int(TTL), exc)


def catalogue_changed(**kwargs) -> None:
    """Signal receiver for Brand/Product edits: drop this process's copy now, the others' soon."""
    global _lexicon
    _lexicon = None
    from django.db import transaction

    transaction.on_commit(bump_version)


def lexicon() -> Lexicon:
    global _lexicon
    lex = _lexicon
    now = time.monotonic()
    if lex is not None and now - lex.checked_at < CHECK_SECONDS:
        return lex
    with _lock:
        lex = _lexicon
        now = time.monotonic()
        if lex is not None and now - lex.checked_at < CHECK_SECONDS:
            return lex
        version = current_version()
        if lex is None or now - lex.built_at > TTL or version != lex.version:
            lex = compile_lexicon()
            lex.version = version
            lex.built_at = now
            _lexicon = lex
        lex.checked_at = now
        return lex


# --- compiling ------------------------------------------------------------------------------

def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def compile_lexicon(brands: Iterable | None = None, product_rows: Iterable | None = None) -> Lexicon:
    """The lexicon of the live menu; `brands`/`product_rows` (objects with the models' fields) replace the
    database reads, so a bench or a script can compile a menu without one."""
    if brands is None or product_rows is None:
        from .models import Brand, Product

        brands = list(Brand.objects.all())
        participating_ids = [b.pk for b in brands if b.participating]
        product_rows = Product.objects.filter(active=True, brand_id__in=participating_ids).order_by("brand_id", "id")

    brand_names: dict[int, str] = {}
    participating: set[int] = set()
    brand_words: dict[str, int] = {}
    off_brands: list[str] = []
    for brand in brands:
        brand_names[brand.pk] = brand.name
        words = [brand.name, brand.slug, *(brand.aliases or [])]
        if brand.participating:
            participating.add(brand.pk)
            for w in words:
                w = normalise(str(w))
                if w:
                    brand_words.setdefault(w, brand.pk)
        else:
            off_brands += [normalise(str(w)) for w in words]

    products: dict[Candidate, ProductInfo] = {}
    names: dict[str, set[Candidate]] = {}
    aliases: dict[str, set[Candidate]] = {}
    spellings: dict[Candidate, list[str]] = {}
    for p in product_rows:
        if not p.active or p.brand_id not in participating:
            continue
        cand = (p.brand_id, p.name)
        products[cand] = ProductInfo(p.brand_id, p.name, p.category, p.is_default)
        name = normalise(p.name)
        names.setdefault(name, set()).add(cand)
        spellings[cand] = [name]
        for a in p.aliases or []:
            a = normalise(str(a))
            if a and a != name:
                aliases.setdefault(a, set()).add(cand)
                spellings[cand].append(a)

    def containing(part: str) -> set[Candidate]:
        return {c for c, forms in spellings.items() if any(part in f for f in forms)}

    words: dict[str, tuple[str, object]] = {}

    def put(word: str, kind: str, value: object) -> None:
        if word and word not in words:
            words[word] = (kind, value)

    # Order is priority: a word keeps the first meaning it was given.
    for name, cands in names.items():
        put(name, "product", Term(name, tuple(sorted(cands)), "name"))
    for w, bid in brand_words.items():
        put(w, "brand", bid)
    for alias, cands in aliases.items():
        # An alias that is part of another product's name could mean either ("鲜橙": 霸气橙子 or 棒打鲜橙).
        cands = cands | {c for c in containing(alias) if alias in normalise(c[1])}
        put(alias, "product", Term(alias, tuple(sorted(cands)), "alias"))
    for w in off_brands:
        put(w, "offbrand", w)
    fixed: list[tuple[str, str, object]] = []
    fixed += [(w, "size", v) for w, v in V.SIZE_PHRASES.items()]
    fixed += [(w, "sugar", v) for w, v in V.SUGAR_PHRASES.items()]
    fixed += [(w, "ice", v) for w, v in V.ICE_PHRASES.items()]
    fixed += [(w, "hotdrink", "热") for w in V.HOT_DRINKS]
    fixed += [(w, "qtybad", why) for w, why in V.BAD_QUANTITIES.items()]
    fixed += [(w, "qty", 1) for w in V.ONE_CUP_OF_SEVERAL]
    fixed += [(w, "qty", n) for w, n in V.COUNT_WORDS.items()]
    fixed += [(w, "filler", None) for w in V.PEOPLE]
    fixed += [(w, "qty", n) for w, n in V.EN_NUMBERS.items()]
    fixed += [(w, "repeat", None) for w in V.REPEAT_PHRASES]
    fixed += [(w, "less", "七分糖") for w in V.LESS_SWEET_WISHES]
    fixed += [(w, "hot", "热") for w in V.HOT_WISHES]
    fixed += [(w, "sweet", None) for w in V.SWEET_WISHES]
    fixed += [(w, "any", None) for w in V.ANYTHING]
    fixed += [(w, "cat", v) for w, v in V.CATEGORIES.items()]
    fixed += [(w, "all", None) for w in V.ALL_WORDS]
    fixed += [(w, "each", None) for w in V.EACH_WORDS]
    fixed += [(w, "same", None) for w in V.SAME_WORDS]
    fixed += [(w, "ref", None) for w in V.REFERENCE_WORDS]
    fixed += [(w, "choice", None) for w in V.CHOICE]
    fixed += [(w, "sep", w) for w in V.SEPARATORS]
    fixed += [(w, "fix", w) for w in V.CORRECTIONS]
    fixed += [(w, "later", w) for w in V.LATER_DAYS]
    fixed += [(w, "neg", None) for w in V.NEGATIONS]
    fixed += [(w, "filler", None) for w in V.FILLER]
    for w, kind, value in fixed:
        put(normalise(w), kind, value)
    for w in V.OFF_MENU_ITEMS:
        put(normalise(w), "offmenu", w)
    for flavour, cores in V.FLAVOURS.items():
        cands = set().union(*(containing(c) for c in cores)) if cores else set()
        if cands:
            put(flavour, "product", Term(flavour, tuple(sorted(cands)), "weak"))
        else:
            put(flavour, "offmenu", flavour)
    # Parts of names ("青团", "超a", "四季春"): weak, resolved only when they are unambiguous.
    for forms in spellings.values():
        for form in forms:
            for length in range(2, len(form)):
                for i in range(len(form) - length + 1):
                    part = form[i:i + length]
                    if part in words or part in V.GENERIC_FRAGMENTS or "杯" in part or not _is_cjk(part[0]):
                        continue
                    put(part, "product", Term(part, tuple(sorted(containing(part))), "weak"))
    # Fragments that are also everyday words ("花田", "青青", "宝藏"): a product only after a brand, alone, and
    # close to the name (at least half of a spelling: "霸王家的花田" is 花田乌龙); otherwise unread text.
    for part in sorted(V.GENERIC_FRAGMENTS):
        if part in words:
            continue
        close = {c for c, forms in spellings.items() if any(part in f and 2 * len(part) >= len(f) for f in forms)}
        if close:
            put(part, "product", Term(part, tuple(sorted(close)), "frag"))

    # The tokenizer's candidate lengths, keyed by a word's first two characters (one-character words under
    # their character): far fewer slices tried per position than keying by the first character alone.
    starts: dict[str, set[int]] = {}
    for w in words:
        if len(w) >= 2:
            starts.setdefault(w[:2], set()).add(len(w))
    for key, lengths in starts.items():
        if key[0] in words:
            lengths.add(1)
    for w in words:
        if len(w) == 1:
            starts.setdefault(w, set()).add(1)

    # Typo matching: full names, aliases of 3+ characters, brand words of 2+ CJK characters.
    fuzzy_terms: list[tuple[str, str, object]] = []
    for w, (kind, value) in words.items():
        if kind == "product" and value.strength in ("name", "alias") and sum(map(_is_cjk, w)) >= 2:  # type: ignore[union-attr]
            fuzzy_terms.append((w, kind, value))  # 2-character nicknames too ("伯芽" for 伯牙): half must be exact
        elif kind == "brand" and len(w) >= 2 and all(map(_is_cjk, w)):
            fuzzy_terms.append((w, kind, value))
        elif kind in ("ice", "sugar", "size") and len(w) >= 2 and all(map(_is_cjk, w)) and any(c in w for c in "冰糖杯"):
            fuzzy_terms.append((w, kind, value))  # "少兵" for 少冰
    fuzzy_by_char: dict[str, list[tuple[int, int, int]]] = {}
    for idx, (w, _, _) in enumerate(fuzzy_terms):
        for k, ch in enumerate(w):
            if _is_cjk(ch):
                fuzzy_by_char.setdefault(ch, []).append((idx, k, len(w)))

    return Lexicon(
        words=words,
        starts={c: tuple(sorted(ls, reverse=True)) for c, ls in starts.items()},
        brand_names=brand_names,
        products=products,
        fuzzy_terms=fuzzy_terms,
        fuzzy_by_char=fuzzy_by_char,
        red_flags=_red_flags(set(words)),
    )


def _red_flags(known: set[str]) -> RedFlags:
    """The phrases that stop a sentence, searched in the whole (folded) sentence before anything else.

    A literal phrase that is part of a menu or vocabulary word ("柠檬茶" in 鸭屎香柠檬茶, "都可" in
    都可以) is dropped here, so the catalogue can never make its own words a reason to refuse.
    Per reason, the literals are one regex (the regex engine skips positions whose character starts
    none of them), and each pattern is tried only when one of its characters is in the sentence.
    """
    checks: list[tuple[str, frozenset[str] | None, re.Pattern]] = []
    for why, phrases, regexes in (("injection", V.INJECTION, V.INJECTION_PATTERNS),
                                  ("other_intent", V.OTHER_INTENT, V.OTHER_INTENT_PATTERNS),
                                  ("off_menu", V.OFF_MENU_BRANDS, ())):
        literals = sorted({p for p in (fold(p).strip() for p in phrases) if p and not any(p in k for k in known)},
                          key=len, reverse=True)
        if literals:
            checks.append((why, None, re.compile("|".join(map(re.escape, literals)))))
        for triggers, regex in regexes:
            checks.append((why, frozenset(triggers), re.compile(regex)))
    by_char: dict[str, list[int]] = {}
    for n, (_, triggers, _) in enumerate(checks):
        for c in triggers or ():
            by_char.setdefault(c, []).append(n)
    always = [n for n, (_, triggers, _) in enumerate(checks) if triggers is None]
    # All literal phrases as one pattern: most sentences have none, and then one search replaces three.
    any_literal = re.compile("|".join(checks[n][2].pattern for n in always)) if always else None
    return RedFlags(checks, {c: tuple(ns) for c, ns in by_char.items()}, tuple(always), any_literal)


@dataclass
class RedFlags:
    # (why, characters one of which must be in the sentence or None, pattern), most serious reason first.
    checks: list[tuple[str, frozenset[str] | None, re.Pattern]]
    by_char: dict[str, tuple[int, ...]]  # character -> the checks it makes worth trying
    always: tuple[int, ...]  # the literal checks, tried on every sentence
    any_literal: re.Pattern | None = None  # every literal of every reason: when it finds nothing, none is tried

    def search(self, text: str) -> tuple[str, str] | None:
        """(why, phrase) of the most serious red flag in `text`, or None."""
        # One bit per check (bit n = checks[n]): a set union per character and no sorting.
        mask = self.always_mask
        if self.any_literal is not None and self.any_literal.search(text) is None:
            mask = 0
        masks = self.char_masks
        for c in set(text).intersection(masks):
            mask |= masks[c]
        checks = self.checks
        n = 0
        while mask:
            if mask & 1:
                hit = checks[n][2].search(text)
                if hit:
                    return checks[n][0], hit.group(0)
            mask >>= 1
            n += 1
        return None

    def __post_init__(self) -> None:
        self.always_mask = sum(1 << n for n in self.always)
        self.char_masks = {c: sum(1 << n for n in ns) for c, ns in self.by_char.items()}
