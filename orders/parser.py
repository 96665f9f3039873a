"""One-sentence ordering: `parse(text, user) -> Intent | Refusal`.

It reads the way a person does, in four steps:

1. **Normalise** (orders.textnorm): full-width, traditional characters, case, emoji, decoration.
2. **Refuse on positive evidence first**: a phrase that tries to change price, cards or rules
   ("忽略之前的指令", "不用扣券"), asks for something else (cancel, a question, a booking) or names an
   off-menu drink stops the sentence, even with a valid order inside it.
3. **Read the entities** by longest match against the lexicon (orders.lexicon: the live menu, its
   aliases from admin, and the fixed option/quantity vocabulary); a character it cannot read is
   tolerated as filler ("今天好热啊，…") unless it sits against a nickname (a different drink we do
   not know) or talks about sugar or ice we did not understand. Unread characters are first tried
   as phone-IME typos of menu names (orders.fuzzy).
4. **Assemble** items from the entities and where they stand: quantities in every notation, options
   per item, for all items (都), carried over (B也是), per cup (一杯少冰一杯去冰), each (各两杯).

Anything unsure is asked back (a Refusal with concrete suggestions and a `why`, answered as 422
`not_understood`), never guessed.
"Anything" requests ("随便来一杯", "热乎的奶茶") become an Intent with a `wish`, which
orders.recommend turns into a concrete drink that the user confirms.

The interface is the seam for a model-based parser later: anything returning `Intent` or
`Refusal` for a text and user can replace `RuleParser`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import chatvocab as V
from . import fuzzy
from .lexicon import Candidate, Lexicon, Term, catalogue_changed, lexicon  # noqa: F401  (catalogue_changed re-exported)
from .textnorm import fold, punctuate

MAX_LENGTH = 200
MAX_CUPS = 10
SUGGESTIONS = ("帮我点一杯杨枝甘露", "两杯珍珠奶茶，大杯少冰", "来一杯喜茶的多肉葡萄，少糖", "老样子")
OPTION_KINDS = ("size", "sugar", "ice")


# --- results -----------------------------------------------------------------------------------

# The per-sentence results are plain slotted dataclasses (a frozen one costs a setattr per field on every
# parse); nothing mutates them after parse returns.
@dataclass(slots=True)
class ItemIntent:
    # (brand_id, canonical product name) pairs that could satisfy this item.
    candidates: tuple[Candidate, ...]
    product: str | None  # canonical name (all candidates agree)
    brand: str | None  # brand name when the sentence or the product pins it
    brand_id: int | None
    quantity: int = 1
    size: str | None = None
    sugar: str | None = None
    ice: str | None = None

    @property
    def generic(self) -> bool:
        return not self.candidates

    def as_dict(self) -> dict:
        return {"brand": self.brand, "product": self.product, "quantity": self.quantity, "size": self.size,
                "sugar": self.sugar, "ice": self.ice}


@dataclass(slots=True)
class Wish:
    """An "anything" request: what the recommendation must fit."""

    brand_id: int | None = None
    brand: str | None = None
    category: str | None = None
    hot: bool = False
    less_sweet: bool = False
    quantity: int = 1
    size: str | None = None
    sugar: str | None = None
    ice: str | None = None

    def as_dict(self) -> dict:
        return {"brand": self.brand, "category": self.category, "hot": self.hot, "less_sweet": self.less_sweet,
                "quantity": self.quantity, "size": self.size, "sugar": self.sugar, "ice": self.ice}


@dataclass(slots=True)
class Intent:
    items: tuple[ItemIntent, ...] = ()
    repeat_last: bool = False
    # Options said together with "老样子" ("老样子，少冰") override the repeated items; "quantity" too.
    overrides: dict = field(default_factory=dict)
    wish: Wish | None = None
    # (what was typed, the product it was read as) for typos and partial names, shown in the preview.
    corrections: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict:
        if self.repeat_last:
            return {"repeat_last": True, "overrides": dict(self.overrides)}
        if self.wish is not None:
            return {"anything": self.wish.as_dict()}
        return {"items": [i.as_dict() for i in self.items]}


@dataclass(frozen=True)
class Refusal:
    """The parser's "no" (a value, not an exception): orders.services turns it into the 422 `NotUnderstood` error."""

    detail: str
    suggestions: tuple[str, ...] = SUGGESTIONS
    # other_intent | off_menu | quantity | contradiction | injection | no_product | ambiguous | two_brands |
    # option_not_offered
    why: str = "no_product"

    def as_dict(self) -> dict:
        return {"refuse": True, "why": self.why}


class _Refuse(Exception):
    def __init__(self, why: str, detail: str, suggestions: tuple[str, ...] = SUGGESTIONS) -> None:
        super().__init__(detail)
        self.result = Refusal(detail, tuple(suggestions)[:6] or SUGGESTIONS, why)


# --- tokens ------------------------------------------------------------------------------------

# A token is (kind, value, start, end) over the normalised text.
Tok = tuple[str, object, int, int]
_DIGITS = frozenset("0123456789")
# All option rewrites as one alternation (one scan of the sentence instead of one per rewrite); the group
# that matched says which canonical phrase replaces it.
_OPTION_REWRITE = re.compile("|".join(f"(?P<r{i}>{p})" for i, (p, _) in enumerate(V.OPTION_REWRITES) if "%" not in p))
_PERCENT_REWRITE = re.compile("|".join(f"(?P<r{i}>{p})" for i, (p, _) in enumerate(V.OPTION_REWRITES) if "%" in p))
_OPTION_CANONICAL = {f"r{i}": canonical for i, (_, canonical) in enumerate(V.OPTION_REWRITES)}


def _canonical(m: re.Match) -> str:
    return _OPTION_CANONICAL[m.lastgroup]  # type: ignore[index]


def _rewrite_options(text: str) -> str:
    # The percent rules ("糖50%") only where there is a percent sign: one alternation fewer for every other sentence.
    if "%" in text:
        text = _PERCENT_REWRITE.sub(_canonical, text)
    return _OPTION_REWRITE.sub(_canonical, text)
_OPTION_ATTEMPT = re.compile(r"[0-9一二三四五六七八九十半多少去加不无微零]\s*分?\s*[糖甜冰]|[糖甜冰]\s*[多少半加去]|^[糖冰]$"
                             r"|^(?:ice|icy|sugar|sugars|sweet|sweetness|cold|less|more|extra)$")
_HALF_OPTION = frozenset("糖甜")
_BARE_NO = re.compile(r"不(?=\s*,)")
_PERCENT_OPTION = re.compile(r"[0-9]\s*%.{0,3}(?:糖|甜|冰|sugar|sweet|ice)|(?:糖|甜|冰|sugar|sweet|ice).{0,4}[0-9]\s*%")
_SIZE_AFTER_NUMBER = ("超大杯", "特大杯", "大杯", "中杯", "小杯")
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")


def chinese_number(s: str) -> int | None:
    """'3', '十', '十二', '二十', '两', '九十九', '一百' -> int; None if not a number."""
    if s.isdigit():
        return int(s)
    if s in ("百", "一百"):
        return 100
    n = V.NUMERALS
    if len(s) == 1:
        return n.get(s)
    if s.count("十") == 1 and "百" not in s:
        left, _, right = s.partition("十")
        tens = 1 if left == "" else n.get(left) if len(left) == 1 and left != "十" else None
        ones = 0 if right == "" else n.get(right) if len(right) == 1 and right != "十" else None
        if tens is None or ones is None:
            return None
        return tens * 10 + ones
    if s.endswith("百") and len(s) == 2 and s[0] in n:
        return n[s[0]] * 100
    return None


def _read_number(text: str, i: int) -> Tok | None:
    """A quantity starting at i ('2杯', 'x2', '×3', '俩', '十杯', '-1杯', '1.5杯'), or None."""
    n = len(text)
    c = text[i]
    j = i
    negative = False
    if c == "x":
        if i > 0 and text[i - 1] in _ASCII_LETTERS:
            return None
        j = i + 1
        while j < n and text[j] == " ":
            j += 1
        if j >= n or not (text[j] in _DIGITS or text[j] in V.NUMERAL_CHARS):
            return None
    elif c == "-" or c == "负":
        j = i + 1
        if j >= n or not (text[j] in _DIGITS or (c == "负" and text[j] in V.NUMERAL_CHARS)):
            return None
        negative = True
    start_digits = j
    if text[j] in _DIGITS:
        while j < n and text[j] in _DIGITS:
            j += 1
        if j + 1 < n and text[j] == "." and text[j + 1] in _DIGITS:
            k = j + 1
            while k < n and text[k] in _DIGITS:
                k += 1
            return ("qtybad", "数量要是整数杯", i, k + (1 if k < n and text[k] in V.UNITS else 0))
        chinese = False
    else:
        while j < n and text[j] in V.NUMERAL_CHARS:
            j += 1
        chinese = True
    digits = text[start_digits:j]
    k = j
    while k < n and text[k] == " ":
        k += 1
    if k < n and (text[k] == "点" or (text[k] == ":" and not chinese and k + 2 < n and text[k + 1] in _DIGITS
                                     and text[k + 2] in _DIGITS)) and not negative and c != "x":
        clock = _clock(text, i, digits, k)
        if clock is not None:
            return clock
    for word in V.NOT_QUANTITY_AFTER:
        if text.startswith(word, k):
            return ("filler", None, i, k + len(word))
    value = chinese_number(digits)
    unit = k < n and text[k] in V.UNITS
    size_next = not unit and any(text.startswith(w, k) for w in _SIZE_AFTER_NUMBER)
    if chinese and not unit and not size_next and c != "x" and digits not in ("俩", "仨"):
        return None  # "一样", "十分": a numeral without a unit is not a quantity
    if value is None:
        return ("qtybad", "没看懂数量", i, k + (1 if unit else 0)) if unit or c == "x" else None
    end = k + 1 if unit else j
    if unit and end < n and text[end] == "半" and not (end + 1 < n and text[end + 1] in _HALF_OPTION):
        return ("qtybad", "不能点半杯", i, end + 1)  # "一杯半"; "一杯半糖" is one cup, half sugar
    if negative:
        return ("qtybad", "数量不能是负数", i, end)
    return ("qty", value, i, end)


def _clock(text: str, i: int, digits: str, k: int) -> Tok | None:
    """"三点", "下午3点半", "15:30", "十点钟": a time of day (None for "一点" meaning "a little")."""
    hour = chinese_number(digits)
    if hour is None or hour > 24 or (text.startswith("点单", k) or text.startswith("点杯", k)):
        return None
    if digits == "一" and not any(text.endswith(w, 0, i) for w in V.TIMES_OF_DAY):
        return None  # "少一点", "快一点"
    end = k + 1
    n = len(text)
    if text[k] == ":":
        end = k + 3
    elif end < n and text[end] in "半钟整":
        end += 1
    else:
        m = end
        while m < n and (text[m] in _DIGITS or text[m] in V.NUMERAL_CHARS):
            m += 1
        if m > end:
            end = m + 1 if m < n and text[m] == "分" else m
    return ("clock", hour, i, end)


def tokenize(text: str, lex: Lexicon) -> list[Tok]:
    """Longest match over the lexicon; numbers compete by length; unread characters become 'unk' runs."""
    words, starts = lex.words, lex.starts
    out: list[Tok] = []
    n = len(text)
    i = 0
    unk_start = -1
    while i < n:
        c = text[i]
        if c == " ":
            if unk_start >= 0:
                out.append(("unk", text[unk_start:i], unk_start, i))
                unk_start = -1
            i += 1
            continue
        best: Tok | None = None
        for length in starts.get(text[i:i + 2]) or starts.get(c, ()):
            end = i + length
            if end > n:
                continue
            hit = words.get(text[i:end])
            if hit is None:
                continue
            # An English word only counts as a whole word ("hot" is not in "shot", "one" not in "phone").
            if c in _ASCII_LETTERS and ((i > 0 and text[i - 1] in _ASCII_LETTERS) or
                                        (end < n and text[end] in _ASCII_LETTERS and text[end - 1] in _ASCII_LETTERS)):
                continue
            if hit[0] == "qtybad" and text[end - 1] == "半" and end < n and text[end] in _HALF_OPTION:
                continue  # "一杯半糖": 一杯 + 半糖, not one and a half cups
            best = (hit[0], hit[1], i, end)
            break
        if c in _DIGITS or c in V.NUMERAL_CHARS or c == "x" or c == "-" or c == "负":
            num = _read_number(text, i)
            if num is not None and (best is None or num[3] > best[3]):
                best = num
        if best is None:
            if unk_start < 0:
                unk_start = i
            i += 1
            if c in _ASCII_LETTERS:  # an unknown English word is one unknown run
                while i < n and text[i] in _ASCII_LETTERS:
                    i += 1
            continue
        if best[0] == "ice" and best[3] - i == 1 and _weather(text, i):
            best = ("filler", None, i, i + 1)  # "今天好热啊": the weather, not a hot drink
        if unk_start >= 0:
            out.append(("unk", text[unk_start:i], unk_start, i))
            unk_start = -1
        out.append(best)
        i = best[3]
    if unk_start >= 0:
        out.append(("unk", text[unk_start:], unk_start, n))
    return out


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def _weather(text: str, i: int) -> bool:
    return (i > 0 and text[i - 1] in V.WEATHER_BEFORE) or (i + 1 < len(text) and text[i + 1] in V.WEATHER_AFTER)


# --- assembling --------------------------------------------------------------------------------

class _Item:
    __slots__ = ("term", "lead", "trail", "index", "same", "typed")

    def __init__(self, term: Term, index: int, typed: str) -> None:
        self.term = term
        self.index = index
        self.typed = typed
        self.lead: list[Tok] = []
        self.trail: list[Tok] = []
        self.same = False


_UNSURE = frozenset(("weak", "frag"))
_SCOPED = ("qty", "qtyadd", "size", "sugar", "ice", "hot", "less", "hotdrink")


class RuleParser:
    def parse(self, text: object, user=None) -> Intent | Refusal:
        if not isinstance(text, str) or not text.strip():
            return Refusal("请告诉我想喝什么，例如“帮我点一杯杨枝甘露”")
        if len(text) > MAX_LENGTH:
            return Refusal(f"一句话最多 {MAX_LENGTH} 个字，请说得简短一些")
        lex = lexicon()
        folded = fold(text)
        flag = lex.red_flags.search(folded) if lex.red_flags is not None else None
        if flag is not None:
            return _red_flag(*flag)
        clean = punctuate(folded)
        if "冰" in clean or "糖" in clean or "甜" in clean or "%" in clean:
            clean = _rewrite_options(clean)
            if "%" in clean and _PERCENT_OPTION.search(clean):
                # "糖40%": a sweetness the menu does not have, asked back rather than dropped.
                return Refusal("没听懂这个比例，甜度请说全糖/七分糖/半糖/三分糖/微糖/无糖，冰量请说正常冰/少冰/去冰/常温/温/热")
        if not clean.strip(" ,"):
            return Refusal("请告诉我想喝什么，例如“帮我点一杯杨枝甘露”")
        if "不," in clean or "不 ," in clean:
            clean = _BARE_NO.sub("不对", clean)  # "要三分糖，呃不，半糖", "伯牙绝弦不，青青糯山": a 不 before a pause corrects
        tokens = tokenize(clean, lex)
        fixes: list[fuzzy.Correction] = []
        # Typos are looked for where the reading is unsure: unread characters and parts of names.
        unknown: set[int] = set()
        has_unk = False
        special = False  # a correction word, 不是, or an everyday fragment of a name: the slower paths
        for t in tokens:
            kind = t[0]
            if kind == "unk":
                has_unk = True
            elif kind == "fix" or kind == "neg":
                special = True
                continue
            elif kind != "product" or t[1].strength not in _UNSURE:  # type: ignore[union-attr]
                continue
            elif t[1].strength == "frag":  # type: ignore[union-attr]
                special = True
            for p in range(t[2], t[3]):
                if "\u4e00" <= clean[p] <= "\u9fff":
                    unknown.add(p)
        if unknown and (has_unk or any(t[0] == "product" for t in tokens)):
            fixes = fuzzy.corrections(clean, unknown, lex)
            if fixes:
                parts, at = [], 0
                for f in fixes:
                    parts += [clean[at:f.start], f.term]
                    at = f.end
                clean = "".join(parts) + clean[at:]
                tokens = tokenize(clean, lex)
                special = True
        try:
            if special:
                if any(t[0] == "product" and t[1].strength == "frag" for t in tokens):  # type: ignore[union-attr]
                    tokens = _fragments(tokens)
                if any(t[0] == "fix" or (t[0] == "neg" and clean[t[2]:t[3]] == "不是") for t in tokens):
                    return _corrected(tokens, clean, lex, fixes)
            return _assemble(tokens, clean, lex, fixes)
        except _Refuse as refusal:
            return refusal.result


# --- self-corrections ----------------------------------------------------------------------------

_MEANINGFUL_NOT = frozenset(("filler", "sweet", "unk", "sep"))
_CONTINUES = frozenset(V.SEPARATORS) - {",", ":"}  # "…，等一下，再加一杯": more, not a correction


def _corrected(tokens: list[Tok], text: str, lex: Lexicon, fixes: list[fuzzy.Correction]) -> Intent:
    """A sentence that corrects itself ("两杯多肉葡萄 不对 三杯", "来杯珍奶，算了，换成杨枝甘露", "少冰 啊不对 要热的").

    The sentence is cut at each correction word. The first part is read as an order; each later part
    changes only what it says: a count or options change the drink before it, a drink that was already
    named is changed, a new drink replaces the one before it (keeping the count and options the
    correction does not restate). Whatever cannot be placed for sure is asked back.
    """
    segments: list[list[Tok]] = [[]]
    markers: list[str] = []
    for n, t in enumerate(tokens):
        is_fix = t[0] == "fix"
        if not is_fix and t[0] == "neg" and text[t[2]:t[3]] == "不是":
            nxt = next((o for o in tokens[n + 1:] if o[0] != "filler"), None)
            # "两杯，不是，三杯" corrects; "不是珍奶是杨枝甘露", "三杯不是两杯" negate what follows
            is_fix = nxt is None or nxt[0] == "sep"
        if is_fix:
            segments.append([])
            markers.append(str(t[1]) if t[0] == "fix" else "不是")
        else:
            segments[-1].append(t)
    # A part that starts with a joiner adds to the order ("等一下，再加一杯青青糯山"): not a correction.
    merged: list[list[Tok]] = [segments[0]]
    kinds: list[str] = []
    for marker, seg in zip(markers, segments[1:], strict=True):
        first = next((t for t in seg if t[0] not in ("filler", "unk") and not (t[0] == "sep" and t[1] in (",", ":"))),
                     None)
        last = next((t for t in reversed(merged[-1]) if t[0] not in ("filler", "unk")), None)
        if last is not None and last[0] == "qty" and text[last[2]:last[3]] in V.ONE_CUP_OF_SEVERAL:
            # "两杯伯牙绝弦，其中一杯换成青青糯山": one of several cups changes; asked back, never all of them.
            raise _Refuse("ambiguous", "几杯分别要什么？请分开说，例如“一杯伯牙绝弦，一杯青青糯山”")
        if (first is not None and first[0] == "sep" and first[1] in _CONTINUES) or (
                last is not None and last[0] == "sep" and last[1] in _CONTINUES):
            merged[-1] = merged[-1] + seg
        else:
            merged.append(seg)
            kinds.append(marker)

    def meaningful(seg: list[Tok]) -> bool:
        return any(t[0] not in _MEANINGFUL_NOT for t in seg)

    while len(merged) > 1 and not meaningful(merged[0]):
        merged.pop(0)  # "算了，来杯伯牙绝弦": nothing before the correction to correct
        kinds.pop(0)
    if len(merged) == 1:
        return _assemble(merged[0], text, lex, fixes)
    base = _assemble(merged[0], text, lex, fixes)
    brand_toks = [t for t in merged[0] if t[0] == "brand"]
    for marker, seg in zip(kinds, merged[1:], strict=True):
        if not meaningful(seg):
            if seg is merged[-1]:
                if marker in V.RETRACTIONS:
                    raise _Refuse("other_intent", "好的，这单先不点了。想喝什么随时告诉我")
                raise _Refuse("ambiguous", "哪里需要改？请把想要的完整说一遍，例如“两杯伯牙绝弦，大杯少冰”")
            continue  # "不对，换成…": two correction words in a row
        base = _apply_correction(base, seg, brand_toks, text, lex, fixes)
    return base


def _apply_correction(base: Intent, seg: list[Tok], brand_toks: list[Tok], text: str, lex: Lexicon,
                      fixes: list[fuzzy.Correction]) -> Intent:
    first = next((n for n, t in enumerate(seg) if t[0] not in _MEANINGFUL_NOT), None)
    if first is not None and seg[first][0] == "choice":
        seg = seg[:first] + seg[first + 1:]  # "不对，还是少冰": "after all", not "A or B"
    kinds = {t[0] for t in seg}
    if "product" in kinds:
        if base.repeat_last:
            raise _Refuse("ambiguous", "“老样子”和新点的饮品请分开说：想要哪个？", ("老样子",))
        has_brand = "brand" in kinds
        patch = _assemble(seg if has_brand else brand_toks + seg, text, lex, fixes)
        if patch.repeat_last or patch.wish is not None or not base.items:
            return patch  # a concrete drink replaces a wish ("随便来一杯，算了，来杯伯牙绝弦")
        return _merge_items(base, patch, said_qty="qty" in kinds)
    if kinds & {"repeat", "any", "cat"}:
        return _assemble(seg, text, lex, fixes)  # "伯牙绝弦，算了，老样子吧": the whole order is replaced
    if kinds & {"brand", "offmenu", "offbrand", "neg", "choice", "ref", "same", "each"}:
        raise _Refuse("ambiguous", "没听懂要改成什么，请把想要的完整说一遍，例如“两杯伯牙绝弦，大杯少冰”")
    opts = {k: v for k, v in _merge([t for t in seg if t[0] in _SCOPED and t[0] not in ("qty", "qtyadd")]).items()
            if v is not None}
    qtys = [t for t in seg if t[0] in ("qty", "qtyadd")]
    bad = next((t for t in seg if t[0] == "qtybad"), None)
    if bad is not None:
        raise _Refuse("quantity", f"{bad[1]}，每单 1～{MAX_CUPS} 杯")
    if len(qtys) > 1:
        raise _Refuse("ambiguous", "改成几杯？请只说一个数量")
    qty = int(qtys[0][1]) if qtys else None  # type: ignore[call-overload]
    if qty is not None and not 1 <= qty <= MAX_CUPS:
        raise _Refuse("quantity", f"每单 1～{MAX_CUPS} 杯")
    if not opts and qty is None:
        raise _Refuse("ambiguous", "哪里需要改？请把想要的完整说一遍，例如“两杯伯牙绝弦，大杯少冰”")
    if base.repeat_last:
        overrides = {**base.overrides, **opts}
        if qty is not None:
            overrides["quantity"] = qty
        return Intent(repeat_last=True, overrides=overrides)
    if base.wish is not None:
        w = base.wish
        wish = Wish(brand_id=w.brand_id, brand=w.brand, category=w.category, hot=w.hot, less_sweet=w.less_sweet,
                    quantity=qty or w.quantity, size=opts.get("size", w.size), sugar=opts.get("sugar", w.sugar),
                    ice=opts.get("ice", w.ice))
        if "ice" in opts:
            wish.hot = opts["ice"] in ("热", "温")
        if "sugar" in opts:
            wish.less_sweet = opts["sugar"] != "全糖"
        return Intent(wish=wish)
    if len(base.items) != 1 and not ("all" in kinds and qty is None):
        raise _Refuse("ambiguous", "要改的是哪一杯？请把想要的完整说一遍，例如“两杯伯牙绝弦，大杯少冰”",
                      _suggest(lex, [c for i in base.items for c in i.candidates]))
    items = tuple(_changed(i, qty, opts) for i in base.items)
    return Intent(items=_checked(items), corrections=base.corrections)


def _changed(item: ItemIntent, qty: int | None, opts: dict) -> ItemIntent:
    return ItemIntent(candidates=item.candidates, product=item.product, brand=item.brand, brand_id=item.brand_id,
                      quantity=item.quantity if qty is None else qty, size=opts.get("size", item.size),
                      sugar=opts.get("sugar", item.sugar), ice=opts.get("ice", item.ice))


def _merge_items(base: Intent, patch: Intent, *, said_qty: bool) -> Intent:
    """A corrected drink: a drink named before is changed; a new one replaces the drink said last."""
    names = list(dict.fromkeys(i.product for i in patch.items))
    base_names = list(dict.fromkeys(i.product for i in base.items))
    if len(names) > 1:
        items = patch.items  # "不对，要伯牙绝弦和青青糯山": the whole order again
    else:
        target = names[0] if names[0] in base_names else base_names[-1]
        old = [i for i in base.items if i.product == target]
        new = list(patch.items)
        if len(old) == 1 and len(new) == 1:
            o, p = old[0], new[0]
            new = [ItemIntent(candidates=p.candidates, product=p.product, brand=p.brand, brand_id=p.brand_id,
                              quantity=p.quantity if said_qty else o.quantity, size=p.size or o.size,
                              sugar=p.sugar or o.sugar, ice=p.ice or o.ice)]
        elif len(old) > 1 and not said_qty:
            raise _Refuse("ambiguous", "几杯分别要什么？请把想要的完整说一遍，例如“两杯伯牙绝弦，一杯少冰一杯去冰”")
        at = next(n for n, i in enumerate(base.items) if i.product == target)
        rest = [i for i in base.items if i.product != target]
        items = (*rest[:at], *new, *rest[at:])
    final = _checked(tuple(items))
    kept = {i.product for i in final}  # a replaced drink's typo note would name a drink no longer ordered
    return Intent(items=final, corrections=tuple(c for c in (*base.corrections, *patch.corrections) if c[1] in kept))


def _checked(items: tuple[ItemIntent, ...]) -> tuple[ItemIntent, ...]:
    """After a correction: one brand for the whole order, 1-10 cups."""
    common = set.intersection(*({b for b, _ in i.candidates} for i in items))
    if not common:
        raise _Refuse("two_brands", "这几款不在同一个品牌，一单只能点同一家店的饮品，请分开下单",
                      tuple(f"来一杯{i.product}" for i in items))
    out = []
    for i in items:
        cands = tuple(c for c in i.candidates if c[0] in common)
        bids = {b for b, _ in cands}
        bid = next(iter(bids)) if len(bids) == 1 else None
        brand = i.brand if bid is not None and bid == i.brand_id else None
        out.append(ItemIntent(candidates=cands, product=i.product, brand=brand, brand_id=bid, quantity=i.quantity,
                              size=i.size, sugar=i.sugar, ice=i.ice))
    total = sum(i.quantity for i in out)
    if any(i.quantity < 1 for i in out) or total > MAX_CUPS:
        raise _Refuse("quantity", f"每单最多 {MAX_CUPS} 杯，这次一共 {total} 杯，请减少数量后再试")
    return tuple(out)


_OPTION_CHOICES = {"size": ("中杯", "大杯", "超大杯"), "sugar": ("全糖", "七分糖", "半糖", "三分糖", "微糖", "无糖"),
                   "ice": ("正常冰", "少冰", "去冰", "常温", "温", "热")}
_ORDERISH = frozenset(("product", "qty", "qtyadd", "brand", "cat", "any", "repeat", "size", "sugar", "ice", "hotdrink"))


def _scheduled(tokens: list[Tok], idx: int, text: str) -> bool:
    """Whether a day to come or a clock time says when the order is for: its clause (up to the next comma)
    names a drink, a count, an option or an order verb ("明天下午三点帮我点一杯", "三点送到"); context
    ("明天考试，…", "三点了，…") does not."""
    t = tokens[idx]
    if t[0] == "clock" and t[3] < len(text) and text[t[3]] in "了啦":
        return False  # "都三点了": the time now
    for o in tokens[idx + 1:]:
        kind = o[0]
        if kind == "sep" and o[1] == ",":
            break
        if kind in _ORDERISH:
            return True
        if (kind == "filler" or kind == "unk") and not V.ORDER_VERBS.isdisjoint(text[o[2]:o[3]]):
            return True
    return False


def _fragments(tokens: list[Tok]) -> list[Tok]:
    """An everyday word that is part of a name ("花田", "青青") names that drink only where nothing else could:
    after a brand that has it, with no other drink in the sentence ("霸王家的花田"). Elsewhere ("去花田拍照了")
    it stays unread text."""
    brands = {t[1] for t in tokens if t[0] == "brand"}
    others = any(t[0] in ("product", "cat", "any", "repeat") and not (t[0] == "product" and t[1].strength == "frag")  # type: ignore[union-attr]
                 for t in tokens)
    frags = [t for t in tokens if t[0] == "product" and t[1].strength == "frag"]  # type: ignore[union-attr]
    out: list[Tok] = []
    for n, t in enumerate(tokens):
        if t[0] == "product" and t[1].strength == "frag":  # type: ignore[union-attr]
            term: Term = t[1]  # type: ignore[assignment]
            mine = tuple(c for c in term.candidates if c[0] in brands)
            asked = _asked_as_item(tokens, n) or all(o[0] in ("filler", "sep") for o in tokens if o is not t)
            if len(brands) == 1 and mine and ((not others and len(frags) == 1) or asked):
                out.append(("product", Term(term.text, mine, "weak"), t[2], t[3]))
            elif asked:
                # "一杯花田", "花田和伯牙绝弦": asked for as a drink, so asked back, never dropped.
                out.append(("product", Term(term.text, term.candidates, "weak"), t[2], t[3]))
            else:
                out.append(("unk", term.text, t[2], t[3]))
        else:
            out.append(t)
    return out


def _asked_as_item(tokens: list[Tok], n: int) -> bool:
    """A word with a count, an option or a joiner to another drink next to it is asked for as a drink."""
    for step in (-1, 1):
        j = n + step
        while 0 <= j < len(tokens) and tokens[j][0] == "filler":
            j += step
        if not 0 <= j < len(tokens):
            continue
        kind = tokens[j][0]
        if kind in ("qty", "size", "sugar", "ice", "hotdrink", "product") or (kind == "sep" and tokens[j][1] in _CONTINUES):
            return True
    return False


def _red_flag(why: str, phrase: str) -> Refusal:
    if why == "injection":
        return Refusal("这句话里有我不能照做的要求：价格、免单卡和活动规则不能在聊天里修改。请只告诉我想喝什么",
                             why="injection")
    if why == "other_intent":
        return Refusal("我在这里只能帮您点奶茶哦。查订单、取消或退款请到“我的订单”，其他问题请问千问",
                             why="other_intent")
    return Refusal(f"“{phrase.strip()}”不在活动菜单上，可以试试下面这些", why="off_menu")


def _suggest(lex: Lexicon, cands) -> tuple[str, ...]:
    out = []
    for bid, name in cands:
        s = f"来一杯{lex.brand_names[bid]}的{name}"
        if s not in out:
            out.append(s)
    return tuple(out[:6])


def _assemble(tokens: list[Tok], text: str, lex: Lexicon, fixes: list[fuzzy.Correction]) -> Intent:
    # -- checks on the raw token stream ---------------------------------------------------------
    glued: list[tuple[int, str]] = []
    negated: set[int] = set()
    unwanted: list[Tok] = []
    sig: list[Tok] = []  # the tokens that carry meaning, in order
    for idx, t in enumerate(tokens):
        kind = t[0]
        if kind == "filler" or kind == "sweet":
            continue
        if kind == "later" or kind == "clock":
            if _scheduled(tokens, idx, text):
                raise _Refuse("other_intent", "现在只能马上下单，还不能预约以后的订单。到时候再跟我说就行",
                              ("帮我点一杯杨枝甘露", "老样子"))
            continue
        if kind == "unk":
            if _OPTION_ATTEMPT.search(str(t[1])):
                # An option we could not read ("二分糖", "冰多多"): asked back, never dropped. Other unread words
                # with those characters ("冰箱里没饮料了", "糖分太高") are context.
                raise _Refuse("no_product", f"没听懂“{t[1]}”，甜度请说全糖/七分糖/半糖/三分糖/微糖/无糖，"
                                            "冰量请说正常冰/少冰/去冰/常温/温/热")
            continue
        sig.append(t)
        if kind == "qtybad":
            raise _Refuse("quantity", f"{t[1]}，每单 1～{MAX_CUPS} 杯")
        if kind == "offbrand":
            raise _Refuse("off_menu", f"“{t[1]}”不在活动菜单上，可以试试下面这些")
        if kind == "product":
            term: Term = t[1]  # type: ignore[assignment]
            # Parts of names must stand on their own: glued to unread characters or to another name they are
            # part of a drink we do not know ("茉莉奶茶", "芒果多肉"). A nickname only needs its left side free
            # ("红豆奶绿" is not 奶绿; "伯牙冲冲冲" is 伯牙绝弦).
            if term.strength == "weak":
                glued_unknown = _touches_unknown(tokens, idx, text)
            else:
                glued_unknown = term.strength == "alias" and _touches_unknown(tokens, idx, text, right=False)
            if glued_unknown or (term.strength != "name" and _touches_weak_product(tokens, idx)):
                raise _Refuse("off_menu", f"菜单上没有“{_around(tokens, idx)}”，可以试试下面这些",
                              _suggest(lex, term.candidates))
        elif kind == "cat" and _touches_unknown(tokens, idx, text):
            # "红豆奶茶": a milk tea we do not have; as context ("聊到奶茶，来杯伯牙绝弦") it is filler.
            glued.append((idx, _around(tokens, idx)))
        elif kind == "neg":
            for nxt in tokens[idx + 1:]:
                if nxt[0] in ("filler", "sweet"):
                    continue
                if nxt[0] in ("product", "cat", "brand", "any", "repeat"):
                    negated.add(nxt[2])  # "不想喝奶茶，来杯果茶吧": 奶茶 is what is not wanted
                elif nxt[0] in ("size", "sugar", "ice", "hotdrink", "qty"):
                    unwanted.append(nxt)  # "不要热的", "不要大杯，要中杯", "三杯不是两杯": not wanted
                break
    if glued or any(t[0] == "offmenu" for t in sig):
        has_product = any(t[0] == "product" for t in sig)
        glued_at = {tokens[i][2]: words for i, words in glued}
        for n, t in enumerate(sig):
            if (t[0] == "offmenu" or t[2] in glued_at) and (not has_product or _asked_for(sig, n)):
                raise _Refuse("off_menu", f"“{glued_at.get(t[2], t[1])}”不在活动菜单上，可以试试下面这些")
        sig = [t for t in sig if t[0] != "offmenu" and t[2] not in glued_at]
    if negated:
        # What is not wanted is left out; what is left must still ask for something, or it is not an order.
        sig = [t for t in sig if t[2] not in negated and t[0] != "neg"]
        if not any(t[0] in ("product", "cat", "brand", "any", "repeat") for t in sig):
            raise _Refuse("other_intent", "听起来您不想点这个。请直接说想喝什么，例如“来一杯伯牙绝弦”")
    for t in unwanted:
        # The option is left out; if nothing else says what is wanted instead, it is asked, never guessed.
        sig = [o for o in sig if o is not t]
        key = _kind(t[0])
        if not any(_kind(o[0]) == key for o in sig if o[0] in _SCOPED):
            # Suggestions are whole sentences the app can send back as they are.
            named = next((_name_of(o[1]) for o in sig if o[0] == "product"), "伯牙绝弦")  # type: ignore[arg-type]
            if key == "qty":
                raise _Refuse("ambiguous", "不要这个数量的话，要几杯？请说一个数量",
                              tuple(f"{named}{w}" for n, w in ((1, "一杯"), (2, "两杯"), (3, "三杯")) if n != t[1]))
            choices = [c for c in _OPTION_CHOICES[key] if c != t[1]]
            raise _Refuse("ambiguous", f"不要{t[1]}的话，想要哪种？{'、'.join(choices)}",
                          tuple(f"{named}，{c}" for c in choices))
    if len(sig) > 1:
        sig = _drop_stutter(sig)
    brands: list[int] = []
    for t in sig:
        if t[0] == "brand" and t[1] not in brands:
            brands.append(t[1])  # type: ignore[arg-type]
    # -- items and what belongs to each -----------------------------------------------------
    items: list[_Item] = []
    anchors: list[tuple[int, _Item]] = []  # position in sig -> the item it speaks about
    for pos, t in enumerate(sig):
        if t[0] != "product":
            continue
        term = t[1]  # type: ignore[assignment]
        target = None
        nxt = sig[pos + 1] if pos + 1 < len(sig) else None
        if nxt is not None and nxt[0] == "ref":
            # "芋圆那杯要热的": points at an item already named.
            target = next((it for it in items if set(it.term.candidates) & set(term.candidates)), None)
        elif items and not _own_count(sig, pos):
            # "珍珠奶茶和柠檬水，珍珠奶茶要热的": the same drink again, without a count, says more about it.
            target = next((it for it in items if it.term.candidates == term.candidates), None)
        if target is None:
            target = _Item(term, len(items), text[t[2]:t[3]])
            items.append(target)
        anchors.append((pos, target))
    if not items:
        return _without_items(sig, lex, brands, has_unread=any(t[0] == "unk" and any(map(_is_cjk, str(t[1])))
                                                               for t in tokens))
    if any(t[0] == "repeat" for t in sig):
        raise _Refuse("ambiguous", "“老样子”和新点的饮品请分开说", ("老样子", *_suggest(lex, items[0].term.candidates)))
    if any(t[0] == "cat" and i > 0 and sig[i - 1][0] == "qty" for i, t in enumerate(sig)):
        raise _Refuse("ambiguous", "请说出具体想喝哪一款，例如“一杯伯牙绝弦和一杯青青糯山”",
                      _suggest(lex, [c for it in items for c in it.term.candidates]))
    shared: list[Tok] = []  # options after the last item, for every item ("A和B，少冰")
    scoped: list[tuple[str, int, Tok]] = []  # ("all"|"each", last item index in scope, token)
    first_pos = anchors[0][0]
    head = sig[:first_pos]
    counts = [i for i, t in enumerate(head) if t[0] == "qty"]
    if len(items) > 1 and counts and any(t[0] == "sep" for t in head[counts[-1] + 1:]):
        # "帮我点三杯：伯牙绝弦、青青糯山、花田乌龙": a count for the list that follows.
        if head[counts[-1]][1] != len(items) or any(t[0] == "qty" for t in sig[first_pos:]):
            raise _Refuse("ambiguous", "几杯分别是哪几款？请在每款前面说数量，例如“两杯伯牙绝弦，一杯青青糯山”")
        head = head[:counts[-1]] + head[counts[-1] + 1:]
    _distribute(head, None, anchors[0][1], scoped, lead_only=True)
    for n, (pos, item) in enumerate(anchors):
        nxt_pos = anchors[n + 1][0] if n + 1 < len(anchors) else len(sig)
        gap = sig[pos + 1:nxt_pos]
        if gap and gap[0][0] == "ref":
            gap = gap[1:]
        if any(t[0] == "choice" for t in gap):
            raise _Refuse("ambiguous", "您想要哪一杯？请选一款", _suggest(lex, [c for it in items for c in it.term.candidates]))
        if n + 1 < len(anchors):
            nxt_item = anchors[n + 1][1]
            seps = [i for i, t in enumerate(gap) if t[0] == "sep"]
            if seps:
                _distribute(gap[:seps[-1]], item, None, scoped)
                _distribute(gap[seps[-1] + 1:], None, nxt_item, scoped, lead_only=True)
            else:
                _split_unseparated(gap, item, nxt_item, scoped)
        else:
            if (gap and gap[0][0] == "sep" and gap[0][1] == ":" and len(items) > 1
                    and all(any(t[0] == "qty" for t in it.lead + it.trail) for it in items if it is not item)):
                # "伯牙绝弦：两杯，大杯；青青糯山：一杯，少冰": what follows the last label is its own, like the others'
                _distribute(gap[1:], item, None, scoped)
                continue
            seps = [i for i, t in enumerate(gap) if t[0] == "sep"]
            if seps and len(items) > 1:
                _distribute(gap[:seps[0]], item, None, scoped)
                rest = [t for t in gap[seps[0] + 1:] if t[0] in _SCOPED or t[0] in ("all", "each", "same")]
                if _respectively(rest, items):
                    continue
                mode = None
                for t in rest:
                    if t[0] in ("all", "each"):
                        mode = t[0]
                    elif t[0] == "same":
                        item.same = True
                    elif mode is not None:
                        scoped.append((mode, 10**6, t))
                    elif t[0] == "qty":
                        raise _Refuse("ambiguous", "几杯分别怎么做？请在每款饮品后面说，例如“多肉葡萄少冰，芝芝莓莓去冰”")
                    else:
                        shared.append(t)
            else:
                _distribute(gap, item, None, scoped)
    # -- resolve each item ------------------------------------------------------------------
    brand_id = brands[0] if len(brands) == 1 else None
    if len(brands) > 1:
        if len(items) > 1:
            raise _Refuse("two_brands", "一单只能点同一个品牌的饮品，请分开下单",
                          tuple(f"来一杯{lex.brand_names[b]}" for b in brands))
        raise _Refuse("ambiguous", "您要哪个品牌的？请选一个",
                      _suggest(lex, [c for c in items[0].term.candidates if c[0] in brands]))
    corrections: list[tuple[str, str]] = []
    for f in fixes:
        if f.kind == "product":
            names = f.value.names  # type: ignore[attr-defined]
            corrections.append((f.typed, next(iter(names)) if len(names) == 1 else f.term))
        else:
            corrections.append((f.typed, lex.brand_names.get(f.value, f.term)))  # type: ignore[arg-type]
    resolved: list[tuple[_Item, tuple[Candidate, ...]]] = []
    for it in items:
        cands = it.term.candidates
        if brand_id is not None:
            mine = tuple(c for c in cands if c[0] == brand_id)
            if not mine:
                if it.term.strength == "weak":
                    raise _Refuse("off_menu", f"{lex.brand_names[brand_id]}没有“{it.typed}”这款，可以试试下面这些",
                                  _suggest(lex, [c for c in lex.products if c[0] == brand_id]))
                others = "、".join(sorted({lex.brand_names[b] for b, _ in cands}))
                raise _Refuse("off_menu", f"{lex.brand_names[brand_id]}没有{_name_of(it.term)}（{others}有）",
                              _suggest(lex, cands))
            cands = mine
        names = {n for _, n in cands}
        if len(names) > 1:
            raise _Refuse("ambiguous", f"“{it.typed}”可能是：{'、'.join(sorted(names))}，您要哪一款？", _suggest(lex, cands))
        if it.term.strength == "weak" and brand_id is None and len(it.term.text) < 3:
            raise _Refuse("ambiguous", f"您说的“{it.typed}”是指{next(iter(names))}吗？", _suggest(lex, cands))
        if it.term.strength == "weak" or it.typed != next(iter(names)):
            if it.term.strength == "weak" and (it.typed, next(iter(names))) not in corrections:
                corrections.append((it.typed, next(iter(names))))
        resolved.append((it, cands))
    common = set.intersection(*({b for b, _ in cands} for _, cands in resolved))
    if not common:
        raise _Refuse("two_brands", "这几款不在同一个品牌，一单只能点同一家店的饮品，请分开下单",
                      tuple(f"来一杯{_name_of_cands(c)}" for _, c in resolved))
    out: list[ItemIntent] = []
    per_item = _options_per_item(items, shared, scoped)
    for (_it, cands), groups in zip(resolved, per_item, strict=True):
        cands = tuple(c for c in cands if c[0] in common)
        bids = {b for b, _ in cands}
        bid = next(iter(bids)) if len(bids) == 1 else None
        for qty, opts in groups:
            out.append(ItemIntent(candidates=cands, product=next(iter({n for _, n in cands})),
                                  brand=lex.brand_name(bid), brand_id=bid, quantity=qty, **opts))
    total = sum(i.quantity for i in out)
    if total > MAX_CUPS:
        name = out[0].product
        raise _Refuse("quantity", f"每单最多 {MAX_CUPS} 杯，这次一共 {total} 杯，请减少数量后再试",
                      (f"来{MAX_CUPS}杯{name}", *SUGGESTIONS))
    return Intent(items=tuple(out), corrections=tuple(corrections))


def _drop_stutter(sig: list[Tok]) -> list[Tok]:
    """Dictation repeats words: "伯牙绝弦 伯牙绝弦 一杯", "两杯两杯伯牙绝弦" say one drink and one count.

    Only a repeat with nothing meaningful between is dropped: "两杯伯牙绝弦，两杯青青糯山" are two counts.
    """
    out: list[Tok] = []
    for n, t in enumerate(sig):
        prev = out[-1] if out else None
        if prev is not None and prev[0] == t[0]:
            if t[0] == "product" and prev[1].candidates == t[1].candidates:  # type: ignore[union-attr]
                continue
            if (t[0] == "qty" and prev[1] == t[1] and (len(out) < 2 or out[-2][0] == "sep")
                    and n + 1 < len(sig) and sig[n + 1][0] == "product"):
                continue
        out.append(t)
    return out


def _name_of(term: Term) -> str:
    return next(iter(term.names)) if len(term.names) == 1 else term.text


def _name_of_cands(cands) -> str:
    return cands[0][1]


def _respectively(rest: list[Tok], items: list[_Item]) -> bool:
    """"伯牙绝弦跟青青糯山，一个少冰一个去冰": as many one-cup specs as drinks, given to them in order."""
    if not rest or rest[0][0] != "qty" or any(t[0] in ("all", "each", "same") for t in rest):
        return False
    groups: list[list[Tok]] = []
    for t in rest:
        if t[0] == "qty":
            if t[1] != 1:
                return False
            groups.append([])
        else:
            groups[-1].append(t)
    if len(groups) != len(items) or not all(groups):
        return False
    for item, group in zip(items, groups, strict=True):
        item.trail.extend(group)
    return True


def _own_count(sig: list[Tok], pos: int) -> bool:
    """Whether the product at `pos` has a quantity of its own in its clause (between separators and other drinks)."""
    for step in (-1, 1):
        j = pos + step
        while 0 <= j < len(sig) and sig[j][0] not in ("sep", "product"):
            if sig[j][0] == "qty":
                return True
            j += step
    return False


def _asked_for(sig: list[Tok], n: int) -> bool:
    """An off-menu word asked for as an item ("一杯冰美式", "伯牙绝弦加蛋糕"), not said as context ("刚吃完火锅，…")."""
    drinkish = ("qty", "product", "cat", "brand", "offmenu")
    for step in (-1, 1):
        j = n + step
        if not 0 <= j < len(sig):
            continue
        kind, value = sig[j][0], sig[j][1]
        if kind in drinkish:
            return True
        # A joiner counts when it joins drinks ("伯牙绝弦加蛋糕"), not people ("跟朋友聊到奶茶").
        other = j + step
        if kind == "sep" and value not in (",", ":") and 0 <= other < len(sig) and sig[other][0] in drinkish:
            return True
    return False


def _touches_unknown(tokens: list[Tok], idx: int, text: str, *, right: bool = True) -> bool:
    t = tokens[idx]
    before = tokens[idx - 1] if idx > 0 else None
    after = tokens[idx + 1] if idx + 1 < len(tokens) else None
    if before is not None and before[0] == "unk" and before[3] == t[2] and _is_cjk(text[t[2] - 1]):
        return True
    return right and after is not None and after[0] == "unk" and after[2] == t[3] and _is_cjk(text[t[3]])


def _touches_weak_product(tokens: list[Tok], idx: int) -> bool:
    """Two menu words glued together where one is only part of a name: a drink we do not know (芒果多肉)."""
    t = tokens[idx]
    for j in (idx - 1, idx + 1):
        if 0 <= j < len(tokens):
            o = tokens[j]
            if o[0] in ("product", "cat") and (o[3] == t[2] or o[2] == t[3]):
                return True
    return False


def _around(tokens: list[Tok], idx: int) -> str:
    lo = idx - 1 if idx > 0 and tokens[idx - 1][0] in ("unk", "product", "cat") else idx
    hi = idx + 1 if idx + 1 < len(tokens) and tokens[idx + 1][0] in ("unk", "product", "cat") else idx
    return "".join(str(tokens[k][1]) if tokens[k][0] == "unk" else _tok_text(tokens[k]) for k in range(lo, hi + 1))


def _tok_text(t: Tok) -> str:
    if t[0] == "product":
        return t[1].text  # type: ignore[union-attr]
    return str(t[1]) if t[1] is not None else ""


def _distribute(toks: list[Tok], trail_of: _Item | None, lead_of: _Item | None, scoped: list, *,
                lead_only: bool = False) -> None:
    """Give option/quantity tokens to an item; after 都/各 they are for every item named so far."""
    item = trail_of or lead_of
    assert item is not None
    mode = None
    n = -1
    while n + 1 < len(toks):
        n += 1
        t = toks[n]
        kind = t[0]
        if kind in ("all", "each"):
            mode = kind
            continue
        if kind == "sep":
            mode = None
            if t[1] in V.ADDITIVE and trail_of is not None and n + 1 < len(toks) and toks[n + 1][0] == "qty":
                q = toks[n + 1]
                toks = [*toks[:n + 1], ("qtyadd", q[1], q[2], q[3]), *toks[n + 2:]]  # "，再点一杯": one more
            continue
        if kind == "same":
            if n + 1 < len(toks) and toks[n + 1][0] == "qty":
                mode = "each"  # "多肉葡萄和芝芝莓莓一样来两杯": two of each
            elif trail_of is not None:
                trail_of.same = True
            continue
        if kind not in _SCOPED:
            continue
        if mode is not None:
            scoped.append((mode, item.index if trail_of is not None else 10**6, t))
        elif trail_of is not None:
            trail_of.trail.append(t)
        else:
            item.lead.append(("qty", t[1], t[2], t[3]) if kind == "qtyadd" else t)


def _split_unseparated(gap: list[Tok], a: _Item, b: _Item, scoped: list) -> None:
    """Tokens between two items with no joiner: the first item takes what it still lacks, the next the rest."""
    has = {t[0] for t in a.lead + a.trail}
    give_a: list[Tok] = []
    give_b: list[Tok] = []
    to_b = False
    for t in gap:
        kind = t[0]
        if not to_b and kind in _SCOPED and _kind(kind) in has:
            to_b = True
        (give_b if to_b else give_a).append(t)
        if kind in _SCOPED:
            has.add(_kind(kind))
    _distribute(give_a, a, None, scoped)
    _distribute(give_b, None, b, scoped, lead_only=True)


def _kind(kind: str) -> str:
    return {"hot": "ice", "hotdrink": "ice", "less": "sugar"}.get(kind, kind)


def _merge(toks: list[Tok], base: dict | None = None) -> dict:
    """Options from tokens: explicit words win over wishes; two different explicit values contradict."""
    opts: dict = dict(base or {})
    weak: dict = {}
    for t in toks:
        kind = t[0]
        if kind == "qty":
            continue
        if kind in ("hot", "less"):
            weak.setdefault(_kind(kind), t[1])
            continue
        key = _kind(kind)
        value = t[1]
        if opts.get(key) is not None and opts[key] != value:
            raise _Refuse("contradiction", f"“{opts[key]}”和“{value}”矛盾了，请选一个")
        opts[key] = value
    for key, value in weak.items():
        if opts.get(key) is None:
            opts[key] = value
    return opts


def _options_per_item(items: list[_Item], shared: list[Tok], scoped: list) -> list[list[tuple[int, dict]]]:
    """Each item's (quantity, options) groups: one group, or one per cup when options differ per cup."""
    result: list[list[tuple[int | None, dict]]] = []
    for it in items:
        extra: list[list[Tok]] = []  # "，再来一杯少冰": more cups after the item was complete
        if any(t[0] == "qtyadd" for t in it.trail):
            cut = next(i for i, t in enumerate(it.trail) if t[0] == "qtyadd")
            for t in it.trail[cut:]:
                if t[0] == "qtyadd":
                    extra.append([t])
                else:
                    extra[-1].append(t)
            it.trail = it.trail[:cut]
        lead_q = [t for t in it.lead if t[0] == "qty"]
        trail_q = [t for t in it.trail if t[0] == "qty"]
        if len(lead_q) > 1:
            raise _Refuse("quantity", "数量说了两次，请只说一个数量")
        if len(trail_q) >= 2 or (trail_q and lead_q):
            groups = _split_cups(it, lead_q)
        else:
            q = (lead_q or trail_q or [None])[0]
            groups = [(q[1] if q else None, _merge(it.lead + it.trail))]  # type: ignore[index]
        if extra:
            groups = [(1 if q is None else q, o) for q, o in groups]
            base = _merge([t for t in it.lead + it.trail if t[0] != "qty"])
            for more in extra:
                groups.append((int(more[0][1]), _merge(more[1:], base)))  # type: ignore[call-overload]
            groups = _merge_same(groups)
        result.append(groups)
    # "B也是": B takes what it lacks from the item before.
    for n, it in enumerate(items):
        if it.same and n > 0 and len(result[n]) == 1 and len(result[n - 1]) == 1:
            q, opts = result[n][0]
            pq, popts = result[n - 1][0]
            merged = {**{k: v for k, v in popts.items() if v is not None}, **{k: v for k, v in opts.items() if v is not None}}
            result[n] = [(q if q is not None else pq, merged)]
    # 都/各 and options after the last item: for every item in scope that has not said otherwise.
    all_opts: dict = {}
    for _mode, last, t in scoped:
        if t[0] == "qty":
            for n in range(min(last, len(items) - 1) + 1):
                groups = result[n]
                if len(groups) == 1 and groups[0][0] is None:
                    groups[0] = (t[1], groups[0][1])  # type: ignore[assignment]
            continue
        key = _kind(t[0])
        if t[0] not in ("hot", "less") and all_opts.get(key) not in (None, t[1]):
            raise _Refuse("contradiction", f"“{all_opts[key]}”和“{t[1]}”矛盾了，请选一个")
        all_opts[key] = t[1]
        for n in range(min(last, len(items) - 1) + 1):
            result[n] = [(q, o if o.get(key) is not None else {**o, key: t[1]}) for q, o in result[n]]
    shared_opts = _merge([t for t in shared if t[0] != "qty"])
    shared_q = [t for t in shared if t[0] == "qty"]
    final: list[list[tuple[int, dict]]] = []
    for groups in result:
        out = []
        for q, o in groups:
            o = {**{k: v for k, v in shared_opts.items() if o.get(k) is None}, **o}
            if q is None and shared_q:
                q = shared_q[0][1]
            q = 1 if q is None else q
            if q < 1:
                raise _Refuse("quantity", f"数量至少是 1 杯，每单最多 {MAX_CUPS} 杯")
            if q > MAX_CUPS:
                raise _Refuse("quantity", f"每单最多 {MAX_CUPS} 杯，请减少数量后再试")
            out.append((q, {k: o.get(k) for k in OPTION_KINDS}))
        final.append(out)
    return final


def _split_cups(it: _Item, lead_q: list[Tok]) -> list[tuple[int | None, dict]]:
    """"两杯多肉葡萄，一杯少冰一杯去冰", "茉莉奶绿中杯一杯大杯一杯": one group per stated cup count."""
    base = _merge([t for t in it.lead if t[0] != "qty"])
    trail = [t for t in it.trail if t[0] in _SCOPED]
    first_q = next(i for i, t in enumerate(trail) if t[0] == "qty")
    first_opt = next((i for i, t in enumerate(trail) if t[0] != "qty"), len(trail))
    groups: list[tuple[int, list[Tok]]] = []
    if first_opt < first_q:  # options precede their count: "中杯一杯大杯一杯"
        pending: list[Tok] = []
        for t in trail:
            if t[0] == "qty":
                groups.append((t[1], pending))  # type: ignore[arg-type]
                pending = []
            else:
                pending.append(t)
        if pending:
            base = _merge(pending, base)
    else:  # each count is followed by its options: "一杯少冰一杯去冰"
        for t in trail:
            if t[0] == "qty":
                groups.append((t[1], []))  # type: ignore[arg-type]
            else:
                groups[-1][1].append(t)
    total = lead_q[0][1] if lead_q else None
    if total is None and len(groups) >= 2 and not groups[0][1]:
        total = groups.pop(0)[0]  # "多肉葡萄两杯，一杯少冰一杯去冰": the first count is the total
    out: list[tuple[int | None, dict]] = [(q, _merge(toks, base)) for q, toks in groups]
    stated = sum(q for q, _ in out)  # type: ignore[misc]
    if total is not None:
        if stated > total:  # type: ignore[operator]
            raise _Refuse("quantity", f"一共 {total} 杯，但分开说了 {stated} 杯，请再说一遍")
        if stated < total:  # type: ignore[operator]
            out.append((total - stated, base))  # type: ignore[operator]
    return _merge_same(out)


def _merge_same(groups: list[tuple[int | None, dict]]) -> list[tuple[int | None, dict]]:
    """Cups with the same options are one item."""
    merged: list[tuple[int | None, dict]] = []
    for q, o in groups:
        same = next((k for k, (_, mo) in enumerate(merged) if mo == o), None)
        if same is None:
            merged.append((q, o))
        else:
            merged[same] = (merged[same][0] + q, o)  # type: ignore[operator]
    return merged


def _without_items(sig: list[Tok], lex: Lexicon, brands: list[int], *, has_unread: bool) -> Intent:
    """No menu drink named: "老样子", an "anything" wish, or nothing we can order."""
    kinds = {t[0] for t in sig}
    options = [t for t in sig if t[0] in ("size", "sugar", "ice", "hotdrink")]
    qtys = [t for t in sig if t[0] == "qty"]
    if "repeat" in kinds or (kinds & {"same"} and not kinds & {"any", "cat", "brand"}):  # "再来一杯一样的"
        overrides = {k: v for k, v in _merge(options).items() if v is not None}
        if len(qtys) > 1:
            raise _Refuse("ambiguous", "“老样子”要几杯？请只说一个数量", ("老样子", "老样子，两杯"))
        if qtys and qtys[0][1] != 1:
            q = int(qtys[0][1])  # type: ignore[call-overload]
            if not 1 <= q <= MAX_CUPS:
                raise _Refuse("quantity", f"每单 1～{MAX_CUPS} 杯")
            overrides["quantity"] = q
        return Intent(repeat_last=True, overrides=overrides)
    cats = [t[1] for t in sig if t[0] == "cat"]
    signal = kinds & {"any", "cat", "brand", "hot", "less", "hotdrink"}
    if not signal:
        if options or qtys:
            raise _Refuse("no_product", "没听出您想喝哪一款，请说出饮品名，例如“一杯伯牙绝弦，少冰”")
        raise _Refuse("no_product", "没听出您想喝什么，请说出饮品名，例如“帮我点一杯杨枝甘露”")
    if len(cats) > 1:
        raise _Refuse("ambiguous", "想喝哪一类？请只说一种，或者直接说饮品名")
    if signal == {"brand"} and has_unread:
        # "喜茶的XX来一杯" with XX unknown: a drink we could not read, not "anything from 喜茶".
        raise _Refuse("no_product", f"没找到您说的{lex.brand_names[brands[0]]}饮品，请说出菜单上的名字",
                      _suggest(lex, [c for c in lex.products if c[0] == brands[0]]))
    if len(brands) > 1:
        raise _Refuse("two_brands", "一单只能点同一个品牌，您想要哪个品牌的？",
                      tuple(f"{lex.brand_names[b]}随便来一杯" for b in brands))
    if len(qtys) > 1:
        raise _Refuse("ambiguous", "几杯分别想要什么？请说出饮品名，例如“一杯伯牙绝弦一杯青青糯山”")
    q = int(qtys[0][1]) if qtys else 1  # type: ignore[call-overload]
    if not 1 <= q <= MAX_CUPS:
        raise _Refuse("quantity", f"每单 1～{MAX_CUPS} 杯")
    opts = _merge(options)
    wish_opts = _merge(options + [t for t in sig if t[0] in ("hot", "less")])
    brand_id = brands[0] if brands else None
    return Intent(wish=Wish(
        brand_id=brand_id, brand=lex.brand_name(brand_id), category=cats[0] if cats else None,
        hot="hot" in kinds or wish_opts.get("ice") in ("热", "温"),
        less_sweet="less" in kinds or wish_opts.get("sugar") not in (None, "全糖"),
        quantity=q, size=opts.get("size"), sugar=opts.get("sugar"), ice=opts.get("ice"),
    ))


_default = RuleParser()


def parse(text: object, user=None) -> Intent | Refusal:
    return _default.parse(text, user)
