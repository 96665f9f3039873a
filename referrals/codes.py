"""Invite code alphabet, generation and parsing of what a user typed or pasted."""

from __future__ import annotations

import re
import secrets
import unicodedata

# No 0/O/1/I/L: a code read aloud or copied from a screenshot cannot be mistyped into another.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 8  # 31**8 ~ 8.5e14 codes: enumerating them is hopeless against per-IP rate limits
MAX_INPUT = 200

# Lookups accept any short alphanumeric code (older or staff-made codes may use other letters);
# anything else is rejected before touching the database.
_SHAPE = re.compile(r"^[A-Z0-9]{4,16}$")
# str.split() without arguments already splits on every Unicode space, full-width U+3000 included;
# zero-width characters sneak in when codes are copied out of chat apps.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def new_invite_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def normalize_code(raw: object) -> str | None:
    """Return the canonical code, or None when the input cannot be a code at all."""
    if not isinstance(raw, str) or len(raw) > MAX_INPUT:
        return None
    # NFKC folds full-width letters and digits (typed with a Chinese IME) into ASCII.
    code = "".join(unicodedata.normalize("NFKC", raw.translate(_INVISIBLE)).split()).upper()
    return code if _SHAPE.match(code) else None
