"""Normalising a chat sentence before the parser reads it.

People type the same order many ways: full-width letters and digits from a Chinese IME
(ＨＥＹＴＥＡ, ３杯), traditional characters (楊枝甘露), emoji and decorations (~~, 【】, 🎉),
multiplication signs (×2, ✖2, *2). `normalise` maps all of them onto one plain form so the
lexicon only has to know each word once. The catalogue words go through the same function at
compile time, so a sentence and the menu always meet in the same alphabet.

Traditional -> simplified uses OpenCC (the maintained converter, `t2s` profile); everything else is
the standard library.
"""

from __future__ import annotations

import functools
import logging
import unicodedata

logger = logging.getLogger(__name__)

# Punctuation that separates parts of an order: they all become one separator, ",".
_SEPARATORS = ",;|/、:\uff0c\uff1b\uff5c\uff0f\uff1a\u3001。.!?\n\r\t"
# Decoration around an order carries no meaning: brackets, quotes, tildes, ellipses, bullets.
_DECORATION = "~～【】[]()（）「」『』《》<>〈〉\"'“”‘’`^_=#@$&…·•・—–-"
# Signs people use for "times": mapped onto the letter x, which the quantity reader understands.
_TIMES = "×✕✖⨉╳"
# Characters that are neither letters nor digits nor CJK and carry no order meaning.
_DROP_CATEGORIES = {"So", "Sk", "Cs", "Co", "Cn", "Cf", "Mn", "Me", "Cc"}


class _DropMap(dict):
    """str.translate table: emoji, symbols and control characters are dropped (decided once per character)."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        # Removed without a trace: an emoji inside a name ("伯牙🍵绝弦") must not split it.
        value = "" if unicodedata.category(ch) in _DROP_CATEGORIES and ch not in _TIMES and not ch.isspace() else ch
        self[code] = value
        return value


class _CharMap(dict):
    """str.translate table that classifies each character once and then remembers it."""

    def __missing__(self, code: int) -> str | None:
        ch = chr(code)
        value: str | None
        if ch in _TIMES:
            value = "x"
        elif ch in _SEPARATORS:
            value = ","
        elif ch in _DECORATION or ch.isspace():
            value = " "
        elif unicodedata.category(ch) in _DROP_CATEGORIES:
            value = " "  # emoji, symbols, variation selectors, joiners, private use, surrogates, controls
        else:
            value = ch
        self[code] = value
        return value


_DROPMAP = _DropMap()
# A colon stays a colon: "多肉葡萄：两杯" labels the count of the drink before it (a comma would not).
_CHARMAP = _CharMap({ord("-"): "-", ord("*"): "x", ord("+"): "+", ord("."): ".", ord(":"): ":", 0xFF1A: ":"})


@functools.cache
def _converter():
    try:
        import opencc

        return opencc.OpenCC("t2s")
    except Exception:  # pragma: no cover - the package is pinned; a broken install must not take chat down
        logger.warning("OpenCC unavailable: traditional characters will not be converted", exc_info=True)
        return None


@functools.cache
def _traditional_chars() -> frozenset[str]:
    """Every CJK character that OpenCC changes on its own (~4,000; built once per process in ~50 ms).

    Most sentences are already simplified: when none of their characters is here, the converter is skipped.
    A sentence that has one is converted whole, so OpenCC's phrase rules still apply to it.
    """
    conv = _converter()
    if conv is None:
        return frozenset()
    chars = (chr(cp) for r in ((0x3400, 0xA000), (0xF900, 0xFB00)) for cp in range(*r))
    return frozenset(ch for ch in chars if conv.convert(ch) != ch)


def to_simplified(text: str) -> str:
    conv = _converter()
    if conv is None or _traditional_chars().isdisjoint(text):
        return text
    try:
        return conv.convert(text)
    except Exception:  # pragma: no cover - defensive: never a 500 because of the converter
        return text


def fold(text: str) -> str:
    """NFKC (full-width -> half-width), emoji and controls dropped, traditional -> simplified, lower case.

    Punctuation is kept: the red-flag search (orders.lexicon) reads this form, so "</s>" or "{" survive.
    """
    # Emoji, surrogates and controls go before the converter, which only takes clean text.
    if not unicodedata.is_normalized("NFKC", text):  # the quick check: most sentences already are
        text = unicodedata.normalize("NFKC", text)
    return to_simplified(text.translate(_DROPMAP)).lower()


def normalise(text: str) -> str:
    """`fold`, then separating punctuation -> ",", decoration -> spaces, runs of spaces -> one.

    A "." between two digits is kept (a decimal quantity must be seen, to be refused); any other
    "." separates.
    """
    return punctuate(fold(text))


def punctuate(text: str) -> str:
    """The second half of `normalise`, for a text that is already folded."""
    text = text.translate(_CHARMAP)
    if "." in text:
        text = "".join(
            "." if c == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
            else ("," if c == "." else c)
            for i, c in enumerate(text)
        )
    if "  " in text:
        text = " ".join(text.split())
    return text.strip(" ")
