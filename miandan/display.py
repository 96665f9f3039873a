"""How staff read numbers: money with separators and a 万 / 亿 reading, durations in Chinese.

Used by the admin screens, the finance report page and the dashboards (all layers may import it).
Exact Decimals in, text out; nothing here rounds money that is stored.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from django.utils.html import format_html

CENT = Decimal("0.01")
WAN = Decimal("10000")
YI = Decimal("100000000")


def _dec(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def yuan(value) -> str:
    """3000000000 -> "3,000,000,000.00" (exact, two decimals, thousands separators)."""
    return f"{_dec(value).quantize(CENT, rounding=ROUND_HALF_UP):,.2f}"


def _trim(number: Decimal) -> str:
    text = f"{number:,.2f}".rstrip("0").rstrip(".")
    return text or "0"


def yuan_cn(value) -> str:
    """The reading a Chinese speaker says aloud: 3000000000 -> "30亿", 46875000 -> "4,687.5万", 250 -> "250"."""
    amount = _dec(value)
    size = abs(amount)
    if size >= YI:
        return f"{_trim((amount / YI).quantize(CENT, rounding=ROUND_HALF_UP))}亿"
    if size >= WAN:
        return f"{_trim((amount / WAN).quantize(CENT, rounding=ROUND_HALF_UP))}万"
    return _trim(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def money_html(value, *, short: bool = False):
    """HTML for a money cell: the exact figure with the 万/亿 reading beside it (or, `short`, the reading with
    the exact figure in the tooltip, for narrow list columns)."""
    exact, reading = yuan(value), yuan_cn(value)
    if short:
        return format_html('<span class="md-money" title="{} 元">{}</span>', exact, reading)
    if abs(_dec(value)) < WAN:
        return format_html('<span class="md-money">{}</span>', exact)
    return format_html('<span class="md-money">{} <small class="md-cn">（{}）</small></span>', exact, reading)


def signed_yuan(value) -> str:
    amount = _dec(value)
    return ("+" if amount > 0 else "") + yuan(amount)


def duration_cn(value: dt.timedelta | None) -> str:
    """timedelta(days=30) -> "30 天"; 1 day 2:30 -> "1 天 2 小时 30 分"."""
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "天"), (hours, "小时"), (minutes, "分"), (secs, "秒")) if n]
    return " ".join(parts) or "0 秒"
