"""Invite code alphabet, generation and parsing of what a user typed or pasted."""

from __future__ import annotations

import re
import secrets
import unicodedata

# No 0/O/1/I/L: a code read aloud or copied from a screenshot cannot be mistyped into another.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 8  # 31**8 ~ 8.5e14 codes: enumerating them is hopeless against per-IP rate limits
MAX_INPUT = 500  # a whole pasted 口令 (share text) fits, a pasted essay does not

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


# In a pasted 口令 the code follows the word 邀请码 ("…输入邀请码 ABCD2345，…"); in a pasted link it is the
# last part of /invite/<code> or the ?code= of the campaign page. Only these places: a stray word of
# letters and digits elsewhere in the text ("App", "25") is never taken for a code.
_IN_TEXT = (
    re.compile(r"邀请码\s*[:：]?\s*([A-Z0-9]{4,16})(?![A-Z0-9])"),
    re.compile(r"/INVITE/([A-Z0-9]{4,16})(?![A-Z0-9])"),
    re.compile(r"[?&]CODE=([A-Z0-9]{4,16})(?![A-Z0-9])"),
)


def extract_code(raw: object) -> str | None:
    """The code in what a user pasted: a bare code (as `normalize_code`), the whole share text, or an invite link."""
    code = normalize_code(raw)
    if code is not None or not isinstance(raw, str) or len(raw) > MAX_INPUT:
        return code
    text = unicodedata.normalize("NFKC", raw.translate(_INVISIBLE)).upper()
    for pattern in _IN_TEXT:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None
