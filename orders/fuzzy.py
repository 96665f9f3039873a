"""Phone-IME typos of menu names, corrected by sound (pypinyin) and position, only when sure.

A pinyin keyboard puts a character with the right sound but the wrong meaning into the
sentence: 芝芝梅梅 for 芝芝莓莓, 柠蒙水 for 柠檬水, 冰鲜柠檬谁 for 冰鲜柠檬水, 古名 for 古茗. A window of
the sentence is taken for a menu term of the same length when

- at least half of its characters are exactly the term's (the window is anchored, not a rhyme),
- every other character shares a reading with the term's character (homophone, any tone), except
  that a term of 4+ characters may have one character that only rhymes (same final: 杨技甘露),
- it covers a character the tokenizer could not read (a typo leaves one), and
- no other term of another product fits the same window as well (unique).

Those four rules keep real, different drinks apart: 珍珠奶绿 is not 珍珠奶茶 (绿/茶 do not sound
alike), 生酪拿铁 is not 生椰拿铁. The parser re-reads the corrected sentence and the preview names
the corrected product, so the user sees what will be made.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

# Only single characters' readings are looked up, never phrases: pypinyin's phrase dictionary (and the copy it
# makes of it) is ~45 MB resident in every web and worker process that imports the parser. Both switches are
# pypinyin's own, read when it is first imported.
os.environ.setdefault("PYPINYIN_NO_PHRASES", "1")
os.environ.setdefault("PYPINYIN_NO_DICT_COPY", "1")

from pypinyin import Style, pinyin

from .lexicon import Lexicon

_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z", "c", "s",
             "y", "w")


@functools.lru_cache(maxsize=8192)
def readings(ch: str) -> frozenset[str]:
    """Toneless readings of one character (all of them: 谁 is shei and shui); a non-CJK character is itself."""
    if not ("\u4e00" <= ch <= "\u9fff"):
        return frozenset((ch,))
    return frozenset(pinyin(ch, style=Style.NORMAL, heteronym=True, errors="ignore")[0] or (ch,))


def _final(syllable: str) -> str:
    for ini in _INITIALS:
        if syllable.startswith(ini) and len(syllable) > len(ini):
            return syllable[len(ini):]
    return syllable


@functools.lru_cache(maxsize=8192)
def _finals(ch: str) -> frozenset[str]:
    return frozenset(_final(r) for r in readings(ch))


@functools.lru_cache(maxsize=65536)
def homophone(a: str, b: str) -> bool:
    return bool(readings(a) & readings(b))


# Characters that mean the same in a drink's name although they sound different (牛奶 for 牛乳).
SYNONYMS = {frozenset(("奶", "乳")), frozenset(("葡", "提"))}


@functools.lru_cache(maxsize=65536)
def rhyme(a: str, b: str) -> bool:
    """Same final (技 ji / 枝 zhi) or one letter apart (玄 xuan / 弦 xian): a looser match, allowed once in a long name."""
    if not ("\u4e00" <= a <= "\u9fff" and "\u4e00" <= b <= "\u9fff"):
        return False
    if _finals(a) & _finals(b) or frozenset((a, b)) in SYNONYMS:
        return True
    return any(_one_apart(x, y) for x in readings(a) for y in readings(b))


def _one_apart(x: str, y: str) -> bool:
    """Levenshtein distance exactly 1 between two syllables."""
    if abs(len(x) - len(y)) > 1 or x == y:
        return False
    if len(x) == len(y):
        return sum(p != q for p, q in zip(x, y, strict=True)) == 1
    short, long_ = (x, y) if len(x) < len(y) else (y, x)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


@dataclass(frozen=True)
class Correction:
    start: int
    end: int
    typed: str
    term: str
    kind: str  # "product" | "brand" | an option kind ("ice", "sugar", "size")
    value: object
    cost: int


def _score(window: str, term: str, *, brand: bool) -> int | None:
    """Cost of reading `window` as `term` (0 = identical), or None when it is not a safe match."""
    length = len(term)
    exact = homo = near = 0
    for a, b in zip(window, term, strict=True):
        if a == b:
            exact += 1
        elif homophone(a, b):
            homo += 1
        elif rhyme(a, b):
            near += 1
        else:
            return None
    if exact * 2 < length or near > (1 if length >= 4 and not brand else 0):
        return None
    return homo + 3 * near


def corrections(text: str, unknown: set[int], lex: Lexicon) -> list[Correction]:
    """Non-overlapping typo corrections in `text`, each covering at least one unread position."""
    if not unknown or not lex.fuzzy_terms:
        return []
    terms, by_char = lex.fuzzy_terms, lex.fuzzy_by_char
    votes: dict[int, int] = {}  # key idx * 1024 + start: one int is cheaper to hash than a tuple
    n = len(text)
    # unread[i] = how many unread positions lie before i: a window covers one when the counts differ.
    unread = [0] * (n + 1)
    count = 0
    for i in range(n):
        if i in unknown:
            count += 1
        unread[i + 1] = count
    for i, ch in enumerate(text):
        entries = by_char.get(ch)
        if entries is None:
            continue
        for idx, k, length in entries:
            start = i - k
            end = start + length
            if start >= 0 and end <= n and unread[end] != unread[start]:
                key = idx * 1024 + start
                votes[key] = votes.get(key, 0) + 1
    found: list[Correction] = []
    for key, count in votes.items():
        idx, start = divmod(key, 1024)
        term, kind, value = terms[idx]
        length = len(term)
        if count * 2 < length:
            continue
        end = start + length
        window = text[start:end]
        if window == term or window in lex.words:
            continue
        cost = _score(window, term, brand=kind != "product")
        if cost is None:
            continue
        found.append(Correction(start, end, window, term, kind, value, cost))
    if not found:
        return []
    # Best first: longest, then cheapest (芝芝梅梅 is 芝芝莓莓, not its nickname 芝莓 plus a stray 梅).
    found.sort(key=lambda c: (-(c.end - c.start), c.cost, c.start))
    chosen: list[Correction] = []
    for c in found:
        rivals = [o for o in found if o is not c and o.start < c.end and c.start < o.end and o.cost == c.cost
                  and (o.end - o.start) == (c.end - c.start) and _target(o) != _target(c)]
        if rivals:
            continue  # two different things fit equally well: not sure, so no correction
        if all(c.end <= o.start or o.end <= c.start for o in chosen):
            chosen.append(c)
    return sorted(chosen, key=lambda c: c.start)


def _target(c: Correction) -> object:
    if c.kind == "product":
        return c.value.names  # type: ignore[attr-defined]
    return (c.kind, c.value)
