"""Tiny server-side SVG charts for the admin dashboard (no JavaScript library, no CDN)."""

from __future__ import annotations

from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

FONT = 'font-family="sans-serif" font-size="11"'


def _fmt(value) -> str:
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def line_chart(series: list[tuple[str, str, list[float]]], labels: list[str], *, width: int = 640, height: int = 200,
               title: str = "") -> SafeString:
    """Several lines over the same x axis. series: (name, colour, values)."""
    pad_l, pad_r, pad_t, pad_b = 70, 10, 24, 28
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    top = max((max(vals) for _, _, vals in series if vals), default=0) or 1
    n = max((len(vals) for _, _, vals in series), default=0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<text x="{pad_l}" y="14" {FONT} font-weight="bold">{escape(title)}</text>',
             f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#999"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#999"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 4}" {FONT} text-anchor="end">{_fmt(round(top, 2))}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + h}" {FONT} text-anchor="end">0</text>']
    if n == 0:
        parts.append(f'<text x="{pad_l + w / 2}" y="{pad_t + h / 2}" {FONT} text-anchor="middle">暂无数据</text>')
    for i, (name, colour, vals) in enumerate(series):
        if not vals:
            continue
        step = w / max(n - 1, 1)
        pts = " ".join(f"{pad_l + j * step:.1f},{pad_t + h - (v / top) * h:.1f}" for j, v in enumerate(vals))
        if len(vals) == 1:
            x, y = pts.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
        else:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<rect x="{pad_l + 10 + i * 120}" y="{height - 12}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{pad_l + 24 + i * 120}" y="{height - 3}" {FONT}>{escape(name)}</text>')
    if labels:
        parts.append(f'<text x="{pad_l}" y="{pad_t + h + 12}" {FONT}>{escape(labels[0])}</text>')
        parts.append(f'<text x="{pad_l + w}" y="{pad_t + h + 12}" {FONT} text-anchor="end">{escape(labels[-1])}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def column_chart(values: list[int], labels: list[str], *, width: int = 640, height: int = 160, title: str = "",
                 colour: str = "#2980b9") -> SafeString:
    pad_l, pad_t, pad_b = 40, 24, 20
    w, h = width - pad_l - 10, height - pad_t - pad_b
    top = max(values, default=0) or 1
    bar = w / max(len(values), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<text x="{pad_l}" y="14" {FONT} font-weight="bold">{escape(title)}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + 4}" {FONT} text-anchor="end">{top}</text>',
             f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#999"/>']
    for i, v in enumerate(values):
        bh = h * v / top
        parts.append(f'<rect x="{pad_l + i * bar + 1:.1f}" y="{pad_t + h - bh:.1f}" width="{max(bar - 2, 1):.1f}" '
                     f'height="{bh:.1f}" fill="{colour}"><title>{escape(labels[i])}: {v}</title></rect>')
    if labels:
        parts.append(f'<text x="{pad_l}" y="{height - 4}" {FONT}>{escape(labels[0])}</text>')
        parts.append(f'<text x="{pad_l + w}" y="{height - 4}" {FONT} text-anchor="end">{escape(labels[-1])}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def bar_chart(items: list[tuple[str, int | Decimal]], *, width: int = 420, title: str = "",
              colour: str = "#27ae60") -> SafeString:
    """Horizontal bars with the value printed, one row per item."""
    row, pad_t, label_w = 20, 24, 130
    height = pad_t + row * max(len(items), 1) + 6
    top = max((float(v) for _, v in items), default=0) or 1
    w = width - label_w - 70
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<text x="0" y="14" {FONT} font-weight="bold">{escape(title)}</text>']
    if not items:
        parts.append(f'<text x="0" y="{pad_t + 12}" {FONT}>暂无数据</text>')
    for i, (label, value) in enumerate(items):
        y = pad_t + i * row
        bw = w * float(value) / top
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" {FONT} text-anchor="end">{escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{bw:.1f}" height="13" fill="{colour}"/>'
                     f'<text x="{label_w + bw + 4:.1f}" y="{y + 13}" {FONT} class="value">{_fmt(value)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))
