"""Charts as inline SVG, drawn on the server.

A page of the console is one HTML response with its pictures inside: no chart library, no JavaScript,
nothing fetched after the page. A point is a link (to its report) with a ``<title>`` tooltip, so the
charts can be read and clicked in any browser and checked by tests through the DOM: every point is a
``<circle class="point">`` with ``data-*`` attributes, every chart an ``<svg class="chart">`` with
``data-points``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from markupsafe import Markup

DECISION_COLOURS = {"retrain": "#c62828", "warn": "#ef8f00", "none": "#2e7d32"}
REFERENCE_COLOUR = "#9e9e9e"
WINDOW_COLOUR = "#1565c0"


@dataclass(frozen=True)
class Point:
    """One report on a chart: when, the value (None: not measured then), and what it links to."""

    at: datetime
    value: float | None
    decision: str
    href: str
    label: str


def _num(value: float) -> str:
    return f"{value:.4g}"


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def time_series(points: Sequence[Point], *, title: str, y_label: str, reference: float | None = None,
                reference_label: str = "", y_floor: float | None = None, y_ceiling: float | None = None,
                width: int = 860, height: int = 240, chart_id: str = "") -> Markup:
    """A line over time with one marker per point, coloured by decision; a dashed reference line (a
    threshold, the version's baseline) when given. Points without a value are listed in the tooltip of
    nothing and leave a gap in the line."""
    left, right, top, bottom = 56, 12, 28, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    valued = [p for p in points if p.value is not None and math.isfinite(p.value)]
    head = (f'<svg class="chart" id="{escape(chart_id)}" role="img" aria-label="{escape(title)}" '
            f'viewBox="0 0 {width} {height}" width="100%" data-points="{len(valued)}" '
            f'xmlns="http://www.w3.org/2000/svg">'
            f'<text class="chart-title" x="{left}" y="16">{escape(title)}</text>')
    if not valued:
        return Markup(head + f'<text class="empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">'
                             f'no {escape(y_label)} measured yet</text></svg>')
    values = [p.value for p in valued] + ([reference] if reference is not None else [])
    low, high = min(values), max(values)  # type: ignore[type-var]
    if y_floor is not None:
        low = min(low, y_floor)  # type: ignore[type-var]
    if y_ceiling is not None:
        high = max(high, y_ceiling)  # type: ignore[type-var]
    if high == low:
        low, high = low - 0.5 if low else -0.5, high + 0.5 if high else 0.5
    pad = (high - low) * 0.06  # type: ignore[operator]
    low, high = low - pad, high + pad  # type: ignore[operator]
    t0, t1 = valued[0].at.timestamp(), valued[-1].at.timestamp()
    span = (t1 - t0) or 1.0

    inset = 8.0  # points at the ends stay clear of the axis
    stamp_format = "%m-%d" if span > 3 * 86400 else ("%m-%d %H:%M" if span > 3600 else "%H:%M:%S")

    def x_at(at: float) -> float:
        return left + inset + (at - t0) / span * (plot_w - 2 * inset) if t1 > t0 else left + plot_w / 2

    def x_of(p: Point) -> float:
        return x_at(p.at.timestamp())

    def y_of(value: float) -> float:
        return top + (1 - (value - low) / (high - low)) * plot_h  # type: ignore[operator]

    parts = [head, f'<g class="axis"><line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
                   f'y2="{top + plot_h}"/><line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>']
    for tick in _ticks(low, high):  # type: ignore[arg-type]
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(tick)}</text>')
    for i in range(5 if t1 > t0 else 1):
        at = t0 + span * i / 4 if t1 > t0 else t0
        x = x_at(at)
        stamp = datetime.fromtimestamp(at, tz=valued[0].at.tzinfo).strftime(stamp_format)
        anchor = "start" if i == 0 and t1 > t0 else ("end" if i == 4 else "middle")
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="{anchor}">{stamp}</text>')
    parts.append(f'<text class="y-label" x="12" y="{top + plot_h / 2}" transform="rotate(-90 12 '
                 f'{top + plot_h / 2})" text-anchor="middle">{escape(y_label)}</text></g>')
    if reference is not None:
        y = y_of(reference)
        parts.append(f'<g class="reference"><line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>'
                     f'<text x="{left + plot_w - 4}" y="{y - 5:.1f}" text-anchor="end">'
                     f'{escape(reference_label)} {_num(reference)}</text></g>')
    segments: list[list[str]] = [[]]
    for p in points:
        if p.value is None or not math.isfinite(p.value):
            segments.append([])
        else:
            segments[-1].append(f"{x_of(p):.1f},{y_of(p.value):.1f}")
    for segment in segments:
        if len(segment) > 1:
            parts.append(f'<polyline class="line" points="{" ".join(segment)}"/>')
    radius = 3.5 if len(valued) <= 200 else 2.2
    for p in valued:
        colour = DECISION_COLOURS.get(p.decision, "#555")
        parts.append(f'<a href="{escape(p.href)}"><circle class="point" cx="{x_of(p):.1f}" '
                     f'cy="{y_of(p.value):.1f}" r="{radius}" fill="{colour}" '  # type: ignore[arg-type]
                     f'data-decision="{escape(p.decision)}" data-value="{p.value!r}">'
                     f'<title>{escape(p.label)}</title></circle></a>')
    parts.append("</svg>")
    return Markup("".join(parts))


def picture(data: dict[str, Any] | None, *, width: int = 280) -> Markup:
    """A feature's reference-vs-window picture, as the monitor stored it in the report: paired bars per
    histogram bin (numbers) or per category (shares)."""
    if not data:
        return Markup('<span class="muted">no picture</span>')
    kind = data.get("kind")
    if kind == "histogram":
        return _histogram(data, width)
    if kind == "categories":
        return _categories(data, width)
    return Markup('<span class="muted">no picture</span>')


def _shares(data: dict[str, Any], side: str, count: int) -> list[float]:
    values = list(data.get(side) or [])
    out = [float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0 for v in values[:count]]
    return out + [0.0] * (count - len(out))


def _histogram(data: dict[str, Any], width: int) -> Markup:
    edges = [float(e) for e in data.get("edges") or []]
    bins = max(len(edges) - 1, 0)
    if bins == 0:
        return Markup('<span class="muted">no picture</span>')
    reference, window = _shares(data, "reference", bins), _shares(data, "window", bins)
    height, base, top = 86, 70, 6
    peak = max(reference + window) or 1.0
    slot = width / bins
    bar = max(slot / 2 - 0.5, 0.5)
    parts = [f'<svg class="picture histogram" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'data-bins="{bins}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(bins):
        for offset, share, colour, side in ((0.0, reference[i], REFERENCE_COLOUR, "reference"),
                                            (bar, window[i], WINDOW_COLOUR, "window")):
            h = share / peak * (base - top)
            parts.append(f'<rect class="{side}" x="{i * slot + offset:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>[{_num(edges[i])}, {_num(edges[i + 1])}) '
                         f'{side}: {share:.1%}</title></rect>')
    parts.append(f'<line class="baseline" x1="0" y1="{base}" x2="{width}" y2="{base}"/>'
                 f'<text x="0" y="{height - 2}">{_num(edges[0])}</text>'
                 f'<text x="{width}" y="{height - 2}" text-anchor="end">{_num(edges[-1])}</text></svg>')
    return Markup("".join(parts))


def _categories(data: dict[str, Any], width: int) -> Markup:
    names = [str(c) for c in data.get("categories") or []]
    if not names:
        return Markup('<span class="muted">no picture</span>')
    reference, window = _shares(data, "reference", len(names)), _shares(data, "window", len(names))
    label_w, row = 92, 15
    height = row * len(names) + 4
    peak = max(reference + window) or 1.0
    scale = (width - label_w - 40) / peak
    parts = [f'<svg class="picture categories" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'data-categories="{len(names)}" xmlns="http://www.w3.org/2000/svg">']
    for i, name in enumerate(names):
        y = 2 + i * row
        shown = name if len(name) <= 14 else name[:13] + "…"
        parts.append(f'<text x="{label_w - 4}" y="{y + 10}" text-anchor="end">{escape(shown)}</text>')
        for offset, share, colour, side in ((0, reference[i], REFERENCE_COLOUR, "reference"),
                                            (6, window[i], WINDOW_COLOUR, "window")):
            parts.append(f'<rect class="{side}" x="{label_w}" y="{y + offset}" width="{share * scale:.1f}" '
                         f'height="6" fill="{colour}"><title>{escape(name)} {side}: {share:.1%}</title></rect>')
        parts.append(f'<text class="share" x="{label_w + max(reference[i], window[i]) * scale + 4:.1f}" '
                     f'y="{y + 10}">{window[i]:.0%}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
