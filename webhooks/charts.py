"""Small charts drawn on the server as inline SVG: no JavaScript, no CDN, no web fonts.

Markup is built from numbers and our own labels only (every label is escaped), so what a chart shows
can never carry a payload's content. Colours are CSS classes (`ph-<series>`) that the template maps
to the admin's theme variables, so the charts follow its light and dark themes.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 600, 176
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 26, 26
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
X_LABEL_EVERY = 3  # hours


@dataclass(frozen=True)
class Series:
    key: str  # CSS class suffix: ph-<key>
    label: str
    values: Sequence[float]


@dataclass(frozen=True)
class Unit:
    """How a value reads on an axis: `scale` divides the raw value, `suffix` names the unit."""

    scale: float
    suffix: str


COUNT = Unit(1, "")


def duration_unit(max_seconds: float) -> Unit:
    """Seconds, minutes or hours, whichever keeps the axis readable."""
    if max_seconds < 120:
        return Unit(1, "s")
    if max_seconds < 2 * 3600:
        return Unit(60, "min")
    return Unit(3600, "h")


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above `value` (1 for nothing), for round gridlines."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value - 1e-9:
            return step * magnitude
    return 10 * magnitude


def number(value: float, unit: Unit = COUNT) -> str:
    scaled = value / unit.scale
    text = f"{scaled:,.0f}" if scaled >= 10 or scaled == int(scaled) else f"{scaled:,.1f}"
    return f"{text} {unit.suffix}".strip()


def _f(value: float) -> str:
    return f"{value:.1f}"


def _frame(*, chart_id: str, title: str, description: str, y_max: float, unit: Unit, hours: Sequence[datetime],
           y_label: str, max_label: str, body: list[str]) -> SafeString:
    """The SVG around a plot: title and description for screen readers, gridlines, axes, labels."""
    parts = [
        (
            f'<svg id="{escape(chart_id)}" class="ph-chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
            f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc">'
        ),
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>',
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + PLOT_H * (1 - fraction)
        parts.append(f'<line class="ph-grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(y)}" y2="{_f(y)}"/>')
        parts.append(
            f'<text class="ph-tick" x="{LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">{escape(number(y_max * fraction, unit))}</text>'
        )
    step = PLOT_W / len(hours)
    for index in range(0, len(hours), X_LABEL_EVERY):
        x = LEFT + index * step
        parts.append(f'<line class="ph-axis" x1="{_f(x)}" x2="{_f(x)}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H + 4}"/>')
        parts.append(
            f'<text class="ph-tick" x="{_f(x)}" y="{HEIGHT - 8}" text-anchor="middle">{hours[index]:%H:%M}</text>'
        )
    parts.append(f'<text class="ph-tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">now (UTC)</text>')
    parts.append(f'<line class="ph-axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H}"/>')
    parts += body
    parts.append(f'<text class="ph-tick" x="2" y="{TOP - 12}">{escape(y_label)}</text>')
    parts.append(f'<text class="ph-max" x="{WIDTH - RIGHT}" y="{TOP - 12}" text-anchor="end">{escape(max_label)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def stacked_bar_chart(*, chart_id: str, title: str, hours: Sequence[datetime], series: Sequence[Series],
                      y_label: str = "") -> SafeString:
    """One bar per hour, `series` stacked bottom first; each bar's tooltip gives its numbers."""
    totals = [sum(s.values[i] for s in series) for i in range(len(hours))]
    peak = max(totals, default=0)
    y_max = nice_ceiling(peak)
    step = PLOT_W / len(hours)
    body = []
    for index, hour in enumerate(hours):
        x, base = LEFT + index * step + 1.5, TOP + PLOT_H
        numbers = ", ".join(f"{number(s.values[index])} {s.label}" for s in series)
        body.append(f"<g><title>{hour:%H:%M}–{(hour.hour + 1) % 24:02d}:00 UTC: {escape(numbers)}</title>")
        for s in series:
            height = PLOT_H * s.values[index] / y_max
            if height <= 0:
                continue
            base -= height
            body.append(f'<rect class="ph-{escape(s.key)}" x="{_f(x)}" y="{_f(base)}" width="{_f(step - 3)}" height="{_f(height)}"/>')
        body.append("</g>")
    description = f"Per hour over the last {len(hours)} hours; highest hour {number(peak)}."
    return _frame(chart_id=chart_id, title=title, description=description, y_max=y_max, unit=COUNT, hours=hours,
                  y_label=y_label, max_label=f"max {number(peak)}", body=body)


def line_chart(*, chart_id: str, title: str, hours: Sequence[datetime], values: Sequence[float], series_key: str,
               now: datetime, unit_for: Callable[[float], Unit] = lambda peak: COUNT, area: bool = False,
               y_label: str = "") -> SafeString:
    """A value read at the end of each hour (the last one: now), as a line, optionally filled below."""
    peak = max(values, default=0)
    unit = unit_for(peak)
    y_max = nice_ceiling(peak / unit.scale) * unit.scale
    step = PLOT_W / len(hours)
    # The current hour's point sits where `now` is within it.
    elapsed = min(max((now - hours[-1]).total_seconds() / 3600, 0.0), 1.0)
    xs = [LEFT + (index + 1) * step for index in range(len(hours) - 1)] + [LEFT + (len(hours) - 1 + elapsed) * step]
    ys = [TOP + PLOT_H * (1 - value / y_max) for value in values]
    points = " ".join(f"{_f(x)},{_f(y)}" for x, y in zip(xs, ys, strict=True))
    body = []
    if area:
        body.append(
            f'<polygon class="ph-{escape(series_key)} ph-area" points="{_f(xs[0])},{TOP + PLOT_H} {points} {_f(xs[-1])},{TOP + PLOT_H}"/>'
        )
    body.append(f'<polyline class="ph-{escape(series_key)} ph-line" points="{points}"/>')
    for index, (x, y) in enumerate(zip(xs, ys, strict=True)):
        moment = "now" if index == len(hours) - 1 else f"{(hours[index].hour + 1) % 24:02d}:00 UTC"
        body.append(
            f'<circle class="ph-{escape(series_key)} ph-point" cx="{_f(x)}" cy="{_f(y)}" r="2.5">'
            f"<title>{escape(moment)}: {escape(number(values[index], unit))}</title></circle>"
        )
    current = number(values[-1], unit_for(values[-1]))  # in its own unit: "now 45 s", not "now 0.8 min"
    description = f"Read at the end of each of the last {len(hours)} hours; highest {number(peak, unit)}, now {current}."
    return _frame(chart_id=chart_id, title=title, description=description, y_max=y_max, unit=unit, hours=hours,
                  y_label=y_label, max_label=f"max {number(peak, unit)} · now {current}", body=body)
