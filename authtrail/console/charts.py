"""Small inline SVG charts for the web console: pure functions, data in, markup out.

A few dozen lines of SVG do what the console needs (bars, lines), so no charting library
has to be vendored, built or kept up to date. Every label is escaped here: tenant ids,
addresses and user names come from the events, which anyone who can log in may shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

# Distinguishable for the common colour-vision deficiencies (Okabe & Ito).
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
_ROW = 22
_LABEL_WIDTH = 150
_FONT = 'font-family="sans-serif" font-size="12"'


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _empty(title: str, width: int) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}: no data" width="{width}" '
        f'height="40" viewBox="0 0 {width} 40"><title>{escape(title)}</title>'
        f'<text x="8" y="24" {_FONT} fill="#666">no data yet</text></svg>'
    )


def bar_chart(title: str, items: Sequence[tuple[str, float]], width: int = 560) -> str:
    """Horizontal bars, one per ``(label, value)`` in the order given; values >= 0."""
    if not items:
        return _empty(title, width)
    top = max(value for _, value in items) or 1
    bar_space = width - _LABEL_WIDTH - 70
    height = _ROW * len(items) + 8
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>'
    ]
    for index, (label, value) in enumerate(items):
        y = 4 + index * _ROW
        length = max(1.0, bar_space * value / top) if value else 0.0
        shown = label if len(label) <= 22 else label[:21] + "…"
        parts.append(
            f'<text x="{_LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end" {_FONT}>'
            f"<title>{escape(label)}</title>{escape(shown)}</text>"
            f'<rect x="{_LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{_ROW - 6}" '
            f'fill="{PALETTE[0]}"/>'
            f'<text x="{_LABEL_WIDTH + length + 6:.1f}" y="{y + 15}" {_FONT}>'
            f"{_number(value)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    width: int = 560,
    height: int = 220,
) -> str:
    """One line per named series over the points ``x_labels`` (each series as long as
    ``x_labels``), with a legend, the y axis from 0 to the largest value and the first
    and last x label. A single point is drawn as a dot."""
    if not x_labels or not series:
        return _empty(title, width)
    # The legend stacks above the plot, one line per series: long names never collide.
    left, right, top_margin, bottom = 60, 10, 12 + 16 * len(series), 24
    plot_width, plot_height = width - left - right, height - top_margin - bottom
    top = max((max(values) for values in series.values() if values), default=0) or 1
    count = len(x_labels)

    def x(index: int) -> float:
        return left + (plot_width * index / (count - 1) if count > 1 else plot_width / 2)

    def y(value: float) -> float:
        return top_margin + plot_height * (1 - value / top)

    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>',
        f'<line x1="{left}" y1="{top_margin + plot_height}" x2="{width - right}" '
        f'y2="{top_margin + plot_height}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top_margin}" x2="{left}" y2="{top_margin + plot_height}" '
        'stroke="#999"/>',
        f'<text x="{left - 6}" y="{top_margin + 4}" text-anchor="end" {_FONT}>'
        f"{_number(top)}</text>",
        f'<text x="{left - 6}" y="{top_margin + plot_height}" text-anchor="end" {_FONT}>0</text>',
        f'<text x="{left}" y="{height - 6}" {_FONT}>{escape(x_labels[0])}</text>',
    ]
    if count > 1:
        parts.append(
            f'<text x="{width - right}" y="{height - 6}" text-anchor="end" {_FONT}>'
            f"{escape(x_labels[-1])}</text>"
        )
    for index, (name, values) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values[:count]))
        if len(values) == 1:
            parts.append(f'<circle cx="{x(0):.1f}" cy="{y(values[0]):.1f}" r="3" fill="{colour}"/>')
        elif values:
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        parts.append(
            f'<rect x="{left}" y="{4 + 16 * index}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + 14}" y="{13 + 16 * index}" {_FONT}>{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
