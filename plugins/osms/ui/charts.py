"""Small line charts as inline SVG, drawn on the server.

No JavaScript and no outside library: a chart is part of the page's HTML, renders
in any browser (and offline), and can only ever show the numbers it is given.
A missing value (no body reported that day) breaks the line instead of drawing 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

Point = tuple[dt.date, float | None]


def _fmt(value: float, kind: str) -> str:
    if kind == "rate":
        return f"{value * 100:.2f} %"
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f} M"
    if value >= 10_000:
        return f"{value / 1_000:.0f} k"
    return f"{value:,.0f}"


def line_chart(points: Sequence[Point], *, title: str, kind: str = "count", color: str = "#1f6feb",
               width: int = 300, height: int = 90) -> str:
    """An SVG line chart of ``points`` (date, value or None), with a title, y range and hover values."""
    pad_l, pad_r, pad_t, pad_b = 46, 8, 18, 16
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    values = [v for _, v in points if v is not None]
    label = escape(title)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}" data-kind="{kind}" '
        f'data-points="{len(values)}">',
        f"<title>{label}</title>",
        f'<text x="{pad_l}" y="12" class="chart-title">{label}</text>',
        f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" class="chart-frame"/>',
    ]
    if not values:
        parts.append(f'<text x="{pad_l + plot_w / 2}" y="{pad_t + plot_h / 2 + 4}" text-anchor="middle" '
                     f'class="chart-empty">no data</text></svg>')
        return "".join(parts)
    lo, hi = 0.0, max(values)
    if hi <= lo:
        hi = lo + (0.01 if kind == "rate" else 1.0)
    n = len(points)

    def x(i: int) -> float:
        return pad_l + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return pad_t + plot_h - (v - lo) / (hi - lo) * plot_h

    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" class="chart-axis">{_fmt(hi, kind)}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end" class="chart-axis">'
                 f'{_fmt(lo, kind)}</text>')
    parts.append(f'<text x="{pad_l}" y="{height - 3}" class="chart-axis">{points[0][0]:%d %b}</text>')
    parts.append(f'<text x="{pad_l + plot_w}" y="{height - 3}" text-anchor="end" class="chart-axis">'
                 f'{points[-1][0]:%d %b}</text>')
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, (_, v) in enumerate(points):
        if v is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{x(i):.1f},{y(v):.1f}")
    if segment:
        segments.append(segment)
    for seg in segments:
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{" ".join(seg)}"/>')
    for i, (d, v) in enumerate(points):
        if v is None:
            continue
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2" fill="{color}">'
                     f"<title>{d.isoformat()}: {_fmt(v, kind)}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)
