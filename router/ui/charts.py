"""Bar charts as plain inline SVG, laid out here and drawn by `ui/chart.html`.

The server computes every coordinate, so the page needs no chart library and no script; each
bar and point carries a `<title>` that says its figure in words, for screen readers and as a
tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final, Literal

import msgspec

from router.ui.overview_reads import WindowCounts

Layout = Literal["stacked", "grouped"]
LAYOUTS: Final = ("stacked", "grouped")

CHANNEL_COLOURS: Final = {
    "line": "#06c755",
    "email": "#3867d6",
    "line_notification": "#e58e26",
}
OTHER_COLOURS: Final = ("#8854d0", "#eb3b5a", "#20bf6b", "#4b6584")
INTENTS_COLOUR: Final = "#222222"

WIDTH: Final = 720
HEIGHT: Final = 260
LEFT: Final = 48
RIGHT: Final = 12
TOP: Final = 12
BOTTOM: Final = 40


class Bar(msgspec.Struct, frozen=True):
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


class Point(msgspec.Struct, frozen=True):
    x: float
    y: float
    title: str


class Tick(msgspec.Struct, frozen=True):
    position: float
    label: str


class LegendEntry(msgspec.Struct, frozen=True):
    label: str
    colour: str
    kind: Literal["bar", "line"]


class Chart(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `ui/chart.html` draws, in SVG user units."""

    title: str
    description: str
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    bars: list[Bar]
    intents: list[Point]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    legend: list[LegendEntry]
    x_label: str
    y_label: str

    @property
    def intents_path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.intents)


def colour(channel: str, channels: Sequence[str]) -> str:
    if channel in CHANNEL_COLOURS:
        return CHANNEL_COLOURS[channel]
    others = [c for c in channels if c not in CHANNEL_COLOURS]
    return (
        OTHER_COLOURS[others.index(channel) % len(OTHER_COLOURS)] if channel in others else "#999"
    )


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 times a power of ten that is at least `value` (at least 1)."""
    if value <= 1:
        return 1
    power: int = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def bucket_label(start: datetime, step: timedelta) -> str:
    return start.strftime("%H:00") if step < timedelta(days=1) else start.strftime("%m-%d")


def deliveries_chart(counts: WindowCounts, channels: Sequence[str], layout: Layout) -> Chart:
    """Each bucket's deliveries per channel as bars (stacked or side by side), the intents
    accepted in it as a line over them."""
    win = counts.window
    starts = win.bucket_starts()
    per: dict[str, list[int]] = {c: [0] * win.buckets for c in channels}
    index = {start: i for i, start in enumerate(starts)}
    for row in counts.channels:
        per.setdefault(row.channel, [0] * win.buckets)[index[row.bucket]] += row.deliveries
    names = [c for c in per if any(per[c])] or list(channels)
    if layout == "stacked":
        peak = max((sum(per[c][i] for c in names) for i in range(win.buckets)), default=0)
    else:
        peak = max((max(per[c]) for c in names), default=0)
    top = nice_ceiling(max(peak, max(counts.intents, default=0)))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / win.buckets
    scale = plot_height / top
    bars: list[Bar] = []
    points: list[Point] = []
    for i, start in enumerate(starts):
        label = bucket_label(start, win.step)
        x0 = LEFT + i * slot + slot * 0.1
        usable = slot * 0.8
        stacked = 0
        for k, name in enumerate(names):
            n = per[name][i]
            if not n:
                continue
            h = n * scale
            title = f"{name}: {n} deliveries, {label}"
            if layout == "stacked":
                y = TOP + plot_height - (stacked + n) * scale
                bars.append(Bar(x0, y, usable, h, colour(name, channels), title))
                stacked += n
            else:
                w = usable / len(names)
                y = TOP + plot_height - h
                bars.append(Bar(x0 + k * w, y, w, h, colour(name, channels), title))
        points.append(
            Point(
                LEFT + (i + 0.5) * slot,
                TOP + plot_height - counts.intents[i] * scale,
                f"intents: {counts.intents[i]}, {label}",
            )
        )
    y_ticks = [Tick(TOP + plot_height - v * scale, f"{v:,}") for v in _tick_values(top)]
    every = max(1, math.ceil(win.buckets / 8))
    x_ticks = [
        Tick(LEFT + (i + 0.5) * slot, bucket_label(s, win.step))
        for i, s in enumerate(starts)
        if i % every == 0 or i == win.buckets - 1
    ]
    legend = [LegendEntry(n, colour(n, channels), "bar") for n in names]
    legend.append(LegendEntry("intents accepted", INTENTS_COLOUR, "line"))
    unit = "hour" if win.step < timedelta(days=1) else "day"
    return Chart(
        title=f"Deliveries per channel and intents per {unit}, last {win.name}",
        description=(
            f"{layout.capitalize()} bars: deliveries made for the intents accepted in each {unit}"
            f" (UTC), per channel; the line: intents accepted. Total {sum(counts.intents):,}"
            f" intents, {sum(sum(v) for v in per.values()):,} deliveries."
        ),
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        top=TOP,
        plot_width=plot_width,
        plot_height=plot_height,
        bars=bars,
        intents=points,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        legend=legend,
        x_label=f"{unit} (UTC)",
        y_label="count",
    )


def _tick_values(top: int) -> list[int]:
    if top <= 5:
        return list(range(top + 1))
    step = top // 5 if top % 5 == 0 else top // 4
    return list(range(0, top + 1, max(1, step)))
