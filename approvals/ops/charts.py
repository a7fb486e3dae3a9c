"""Small charts for the admin dashboard, drawn on the server as SVG geometry.

No JavaScript and no CDN (the Content-Security-Policy allows neither): this module computes
the rectangles and labels, the template writes them as inline SVG, escaped like any text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

WIDTH, HEIGHT = 640, 180
LEFT, BOTTOM, TOP = 32, 22, 8


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    approved_y: float
    approved_height: float
    rejected_y: float
    rejected_height: float
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot_left: int
    plot_bottom: float
    plot_right: int
    bars: list[Bar]
    x_labels: list[Label]
    y_labels: list[Label]
    gridlines: list[float]


def duration_text(value: timedelta | None) -> str:
    """A wait as people say it: "45 s", "12 min", "3 h 16 min", "2 d 4 h"."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def _nice_ceiling(value: int) -> int:
    """1, 2, 5, 10, 20, 50, ... at or above `value` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def decisions_bar_chart(per_day: list[tuple[date, int, int]]) -> BarChart:
    """Stacked bars, one per day: approved below, rejected on top."""
    plot_height = HEIGHT - BOTTOM - TOP
    plot_width = WIDTH - LEFT - 4
    top = _nice_ceiling(max((a + r for _, a, r in per_day), default=0))
    slot = plot_width / max(len(per_day), 1)
    base = HEIGHT - BOTTOM
    bars, x_labels = [], []
    for index, (day, approved, rejected) in enumerate(per_day):
        x = LEFT + index * slot + slot * 0.15
        approved_height = plot_height * approved / top
        rejected_height = plot_height * rejected / top
        bars.append(
            Bar(
                x=round(x, 1),
                width=round(slot * 0.7, 1),
                approved_y=round(base - approved_height, 1),
                approved_height=round(approved_height, 1),
                rejected_y=round(base - approved_height - rejected_height, 1),
                rejected_height=round(rejected_height, 1),
                title=f"{day.isoformat()}: {approved} approved, {rejected} rejected",
            )
        )
        last = index == len(per_day) - 1
        if index % 7 == 0 or (last and index % 7 >= 4):  # the last day too, unless it would overlap
            x_labels.append(Label(round(x + slot * 0.35, 1), HEIGHT - 6, day.strftime("%d %b")))
    y_labels, gridlines = [], []
    for fraction in (0, 0.5, 1):
        y = round(base - plot_height * fraction, 1)
        gridlines.append(y)
        value = top * fraction
        y_labels.append(Label(LEFT - 4, y + 4, f"{value:g}"))
    return BarChart(WIDTH, HEIGHT, LEFT, base, WIDTH - 4, bars, x_labels, y_labels, gridlines)
