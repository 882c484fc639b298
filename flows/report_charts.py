"""The daily report's charts as inline SVG: pure functions from typed series to markup.

Hand-written SVG rather than a charting library: the page stays small (tens of kB, not the
~4 MB of an inlined plotly.js), needs no script at all to be drawn, no dependency, and the
marks are plain elements a test can count. Every mark carries a `<title>`: the browser shows
its values on hover.

Each chart is a `<figure class="chart" data-chart="...">`; its data marks have class `mark`.
A chart without data says so in a `<p class="no-data">` instead of an empty frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")

WIDTH = 960
HEIGHT = 320
LEFT, RIGHT, TOP, BOTTOM = 64, 64, 16, 36

CE_COLOR = "#d0453b"  # calls: red, where writers see resistance
PE_COLOR = "#23915a"  # puts: green, support
SPOT_COLOR = "#1f5fbf"
LINE_COLOR = "#7a3fb0"
UP_COLOR = "#23915a"
DOWN_COLOR = "#d0453b"
GRID_COLOR = "#e4e4e4"


@dataclass(frozen=True, slots=True)
class StrikeOI:
    strike: float
    ce: float
    pe: float


@dataclass(frozen=True, slots=True)
class ExpiryOI:
    """One expiry's open interest by strike at one snapshot."""

    expiry: date
    snapshot_ts: datetime
    spot: float | None
    strikes: tuple[StrikeOI, ...]


@dataclass(frozen=True, slots=True)
class SessionPoint:
    """One snapshot of the nearest expiry: put/call ratio by OI, spot and max pain."""

    ts: datetime
    pcr: float | None
    spot: float | None
    max_pain: float | None


@dataclass(frozen=True, slots=True)
class HeatMap:
    """OI change of one option type by strike (rows) and snapshot time (columns)."""

    option_type: str
    times: tuple[datetime, ...]
    strikes: tuple[float, ...]
    #: (time index, strike index) -> change in OI since the previous snapshot
    cells: dict[tuple[int, int], float]


@dataclass(frozen=True, slots=True)
class Candle:
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float | None


class Scale:
    """Linear map from a data domain to pixels; a zero-width domain maps to the middle."""

    def __init__(self, d0: float, d1: float, r0: float, r1: float) -> None:
        self.d0, self.d1, self.r0, self.r1 = d0, d1, r0, r1

    def __call__(self, value: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (value - self.d0) * (self.r1 - self.r0) / (self.d1 - self.d0)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (m * magnitude) <= count)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def padded(lo: float, hi: float, share: float = 0.05) -> tuple[float, float]:
    """The domain with a margin on both sides (one unit around a single value)."""
    if hi <= lo:
        return lo - 1, hi + 1
    pad = (hi - lo) * share
    return lo - pad, hi + pad


def compact_number(value: float) -> str:
    """1234567 -> 1.23M, 45600 -> 45.6K, 0.8123 -> 0.81: axis labels stay short."""
    size = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    if size >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}"


def price(value: float) -> str:
    """24,012 for prices and strikes (analysts read spot levels in full), 0.85 below 100."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def clock(ts: datetime) -> str:
    """HH:MM in India's time, whatever zone `ts` came in."""
    return ts.astimezone(IST).strftime("%H:%M")


def _epoch(ts: datetime) -> float:
    return ts.timestamp()


def time_ticks(start: datetime, end: datetime, count: int = 8) -> list[datetime]:
    """Ticks on round IST minutes (every 5, 10, 15, 30, 60 or 120) between start and end."""
    span_minutes = (end - start).total_seconds() / 60
    step = next((s for s in (5, 10, 15, 30, 60, 120) if span_minutes / s <= count), 240)
    local = start.astimezone(IST)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = math.ceil((local - midnight).total_seconds() / 60 / step) * step
    ticks = []
    while True:
        tick = midnight + timedelta(minutes=minutes)
        if tick > end.astimezone(IST):
            return ticks
        ticks.append(tick)
        minutes += step


def _f(value: float) -> str:
    return f"{value:.1f}"


def _text(x: float, y: float, label: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}"{extra}>{escape(label)}</text>'


def _svg(body: list[str], height: int = HEIGHT) -> str:
    return (
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" font-size="11" font-family="sans-serif">{"".join(body)}</svg>'
    )


def figure(key: str, title: str, content: str) -> str:
    return (
        f'<figure class="chart" data-chart="{escape(key)}">'
        f"<figcaption>{escape(title)}</figcaption>{content}</figure>"
    )


def no_data(key: str, title: str, day: date, why: str = "") -> str:
    reason = f" ({why})" if why else ""
    return figure(key, title, f'<p class="no-data">no data for {day.isoformat()}{reason}</p>')


def distinct_labels(ticks: Sequence[float], fmt: Callable[[float], str]) -> list[str]:
    """`fmt`'s labels, or plain numbers with as many decimals as it takes to tell the ticks
    apart (a narrow range: a single snapshot's spot, a flat PCR)."""
    labels = [fmt(t) for t in ticks]
    decimals = 0
    while len(set(labels)) < len(labels) and decimals < 6:
        labels = [f"{t:,.{decimals}f}" for t in ticks]
        decimals += 1
    return labels


def _y_axis(
    scale: Scale, ticks: Sequence[float], x: float, side: str, fmt: Callable[[float], str]
) -> list[str]:
    parts = []
    labels = distinct_labels(ticks, fmt)
    for tick, label in zip(ticks, labels, strict=True):
        y = scale(tick)
        if side == "left":
            parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(y)}" y2="{_f(y)}" '
                f'stroke="{GRID_COLOR}"/>'
            )
        anchor = "end" if side == "left" else "start"
        dx = -6 if side == "left" else 6
        parts.append(_text(x + dx, y + 4, label, anchor))
    return parts


def _x_time_axis(scale: Scale, start: datetime, end: datetime, y: float) -> list[str]:
    parts = [f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(y)}" y2="{_f(y)}" stroke="#999"/>']
    for tick in time_ticks(start, end):
        x = scale(_epoch(tick))
        parts.append(
            f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{_f(y)}" y2="{_f(y + 4)}" stroke="#999"/>'
        )
        parts.append(_text(x, y + 16, clock(tick)))
    parts.append(_text(WIDTH - RIGHT, y + 30, "time (IST)", "end", ' fill="#666"'))
    return parts


def _legend(items: Sequence[tuple[str, str]], x: float = LEFT + 8, y: float = TOP + 10) -> str:
    parts = []
    for label, color in items:
        parts.append(f'<rect x="{_f(x)}" y="{_f(y - 8)}" width="10" height="10" fill="{color}"/>')
        parts.append(_text(x + 14, y + 1, label, "start"))
        x += 24 + 7 * len(label)
    return "".join(parts)


def _polyline(points: Sequence[tuple[float, float]], color: str, label: str, dashed: bool) -> str:
    coords = " ".join(f"{_f(x)},{_f(y)}" for x, y in points)
    dash = ' stroke-dasharray="5 3"' if dashed else ""
    return (
        f'<polyline class="mark" data-series="{escape(label)}" points="{coords}" fill="none" '
        f'stroke="{color}" stroke-width="2"{dash}/>'
    )


def oi_by_strike(data: ExpiryOI) -> str:
    """CE and PE open interest side by side per strike, with the spot as a dashed line."""
    strikes = data.strikes
    band = (WIDTH - LEFT - RIGHT) / len(strikes)
    top = max(max(s.ce, s.pe) for s in strikes)
    y = Scale(0, top * 1.08 or 1, HEIGHT - BOTTOM, TOP + 16)
    body = _y_axis(y, nice_ticks(0, top * 1.08 or 1), LEFT, "left", compact_number)
    bar = max(band * 0.4, 1.0)
    label_every = max(1, math.ceil(len(strikes) / 16))
    for i, s in enumerate(strikes):
        x0 = LEFT + i * band + band * 0.1
        for offset, value, kind, color in ((0, s.ce, "CE", CE_COLOR), (bar, s.pe, "PE", PE_COLOR)):
            h = HEIGHT - BOTTOM - y(value)
            body.append(
                f'<rect class="mark" x="{_f(x0 + offset)}" y="{_f(y(value))}" width="{_f(bar)}" '
                f'height="{_f(max(h, 0))}" fill="{color}"><title>{s.strike:g} {kind}: '
                f"{value:,.0f}</title></rect>"
            )
        if i % label_every == 0:
            body.append(_text(LEFT + (i + 0.5) * band, HEIGHT - BOTTOM + 14, f"{s.strike:g}"))
    if data.spot is not None and strikes[0].strike <= data.spot <= strikes[-1].strike:
        # Between the bands of the strikes around it, in proportion.
        positions = [s.strike for s in strikes]
        j = max(k for k, v in enumerate(positions) if v <= data.spot)
        nxt = min(j + 1, len(positions) - 1)
        share = 0 if nxt == j else (data.spot - positions[j]) / (positions[nxt] - positions[j])
        x = LEFT + (j + 0.5 + share * (nxt - j)) * band
        body.append(
            f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{TOP + 16}" y2="{HEIGHT - BOTTOM}" '
            f'stroke="{SPOT_COLOR}" stroke-width="2" stroke-dasharray="5 3"/>'
        )
        body.append(
            _text(x + 4, TOP + 26, f"spot {data.spot:,.2f}", "start", f' fill="{SPOT_COLOR}"')
        )
    body.append(_text(WIDTH - RIGHT, HEIGHT - 4, "strike", "end", ' fill="#666"'))
    body.append(_legend([("CE OI", CE_COLOR), ("PE OI", PE_COLOR)]))
    return _svg(body)


def _time_domain(times: Sequence[datetime]) -> Scale:
    lo, hi = _epoch(min(times)), _epoch(max(times))
    if hi == lo:
        lo, hi = lo - 300, hi + 300
    return Scale(lo, hi, LEFT, WIDTH - RIGHT)


def _line_points(
    x: Scale, y: Scale, points: Sequence[tuple[datetime, float | None]]
) -> list[tuple[float, float]]:
    return [(x(_epoch(t)), y(v)) for t, v in points if v is not None]


def _dots(coords: Sequence[tuple[float, float]], color: str, titles: Sequence[str]) -> list[str]:
    # A single snapshot draws no line: a dot per point keeps it visible (and hoverable).
    return [
        f'<circle class="mark" cx="{_f(cx)}" cy="{_f(cy)}" r="2.5" fill="{color}">'
        f"<title>{escape(t)}</title></circle>"
        for (cx, cy), t in zip(coords, titles, strict=True)
    ]


def two_series(
    points: Sequence[tuple[datetime, float | None, float | None]],
    left_label: str,
    right_label: str,
    *,
    shared_axis: bool,
    left_fmt: Callable[[float], str] = compact_number,
    reference: float | None = None,
) -> str:
    """Two lines over the session: solid (left axis) and dashed spot-blue (right axis, or the
    left one when `shared_axis`, as for max pain against spot)."""
    x = _time_domain([p[0] for p in points])
    lefts = [p[1] for p in points if p[1] is not None]
    rights = [p[2] for p in points if p[2] is not None]
    bottom, top = HEIGHT - BOTTOM, TOP + 16
    body: list[str] = []
    if shared_axis:
        lo, hi = padded(min(lefts + rights), max(lefts + rights))
        yl = yr = Scale(lo, hi, bottom, top)
        body += _y_axis(yl, nice_ticks(lo, hi), LEFT, "left", price)
    else:
        values = lefts + ([reference] if reference is not None and lefts else [])
        lo, hi = padded(min(values), max(values)) if values else (0, 1)
        yl = Scale(lo, hi, bottom, top)
        body += _y_axis(yl, nice_ticks(lo, hi), LEFT, "left", left_fmt)
        rlo, rhi = padded(min(rights), max(rights)) if rights else (0, 1)
        yr = Scale(rlo, rhi, bottom, top)
        body += _y_axis(yr, nice_ticks(rlo, rhi), WIDTH - RIGHT, "right", price)
        if reference is not None and lefts:
            ry = yl(reference)
            body.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(ry)}" y2="{_f(ry)}" '
                f'stroke="#999" stroke-dasharray="2 3"/>'
            )
    times = [p[0] for p in points]
    body += _x_time_axis(x, min(times), max(times), bottom)
    for index, (label, y, dashed, color) in enumerate(
        ((left_label, yl, False, LINE_COLOR), (right_label, yr, True, SPOT_COLOR))
    ):
        series = [(p[0], p[1 + index]) for p in points]
        coords = _line_points(x, y, series)
        if not coords:
            continue
        body.append(_polyline(coords, color, label, dashed))
        titles = [f"{clock(t)} {label} {v:,.2f}" for t, v in series if v is not None]
        body += _dots(coords, color, titles)
    body.append(_legend([(left_label, LINE_COLOR), (right_label, SPOT_COLOR)]))
    return _svg(body)


def heat_color(value: float, limit: float) -> str:
    """Red for OI shed, green for OI added, white for none; saturated at +-limit."""
    share = 0.0 if limit <= 0 else max(-1.0, min(1.0, value / limit))
    target = (35, 145, 90) if share >= 0 else (208, 69, 59)
    r, g, b = (round(255 + (c - 255) * abs(share)) for c in target)
    return f"#{r:02x}{g:02x}{b:02x}"


def oi_change_heatmap(data: HeatMap) -> str:
    """OI change since the previous snapshot: strikes high (top) to low, time left to right."""
    columns, rows = len(data.times), len(data.strikes)
    height = max(HEIGHT, TOP + 16 + rows * 14 + BOTTOM)
    cell_w = (WIDTH - LEFT - RIGHT) / columns
    cell_h = (height - TOP - 16 - BOTTOM) / rows
    limit = max((abs(v) for v in data.cells.values()), default=0.0)
    body: list[str] = []
    for (ti, si), value in data.cells.items():
        # Strikes ascend in `strikes`; the highest is drawn at the top.
        y = TOP + 16 + (rows - 1 - si) * cell_h
        body.append(
            f'<rect class="mark" x="{_f(LEFT + ti * cell_w)}" y="{_f(y)}" '
            f'width="{_f(cell_w + 0.3)}" height="{_f(cell_h + 0.3)}" '
            f'fill="{heat_color(value, limit)}"><title>{clock(data.times[ti])} '
            f"{data.strikes[si]:g} {data.option_type}: {value:+,.0f}</title></rect>"
        )
    label_every = max(1, math.ceil(rows / 20))
    for si, strike in enumerate(data.strikes):
        if si % label_every == 0:
            y = TOP + 16 + (rows - 1 - si + 0.5) * cell_h + 4
            body.append(_text(LEFT - 6, y, f"{strike:g}", "end"))
    every = max(1, math.ceil(columns / 10))
    for ti, ts in enumerate(data.times):
        if ti % every == 0:
            body.append(_text(LEFT + (ti + 0.5) * cell_w, height - BOTTOM + 14, clock(ts)))
    body.append(_text(WIDTH - RIGHT, height - 6, "time (IST)", "end", ' fill="#666"'))
    # The colour key: the saturating values at both ends.
    key_x = WIDTH - RIGHT - 200
    for i in range(21):
        share = -1 + i / 10
        body.append(
            f'<rect x="{_f(key_x + i * 8)}" y="{TOP - 2}" width="8" height="10" '
            f'fill="{heat_color(share * limit, limit)}"/>'
        )
    body.append(_text(key_x - 4, TOP + 7, f"-{compact_number(limit)}", "end"))
    body.append(_text(key_x + 172, TOP + 7, f"+{compact_number(limit)}", "start"))
    return _svg(body, height)


def candles_with_volume(candles: Sequence[Candle], interval_label: str) -> str:
    """OHLC candles (green up, red down) over a volume panel on the same time axis."""
    price_bottom = TOP + 16 + (HEIGHT - TOP - 16 - BOTTOM) * 0.72
    volume_top = price_bottom + 8
    bottom = HEIGHT - BOTTOM
    x = _time_domain([c.ts for c in candles])
    step = (WIDTH - LEFT - RIGHT) / max(len(candles), 1)
    width = max(min(step * 0.7, 12.0), 1.0)
    lo, hi = padded(min(c.low for c in candles), max(c.high for c in candles))
    y = Scale(lo, hi, price_bottom, TOP + 16)
    body = _y_axis(y, nice_ticks(lo, hi, 4), LEFT, "left", price)
    volumes = [c.volume or 0.0 for c in candles]
    top_volume = max(volumes)
    yv = Scale(0, top_volume or 1, bottom, volume_top)
    for c, volume in zip(candles, volumes, strict=True):
        cx = x(_epoch(c.ts))
        color = UP_COLOR if c.close >= c.open else DOWN_COLOR
        body_top, body_bottom = y(max(c.open, c.close)), y(min(c.open, c.close))
        title = (
            f"<title>{clock(c.ts)} O {c.open:,.2f} H {c.high:,.2f} L {c.low:,.2f} "
            f"C {c.close:,.2f} V {volume:,.0f}</title>"
        )
        body.append(
            f'<g class="mark candle">{title}'
            f'<line x1="{_f(cx)}" x2="{_f(cx)}" y1="{_f(y(c.high))}" y2="{_f(y(c.low))}" '
            f'stroke="{color}"/>'
            f'<rect x="{_f(cx - width / 2)}" y="{_f(body_top)}" width="{_f(width)}" '
            f'height="{_f(max(body_bottom - body_top, 1.0))}" fill="{color}"/></g>'
        )
        if volume > 0:
            body.append(
                f'<rect class="mark volume" x="{_f(cx - width / 2)}" y="{_f(yv(volume))}" '
                f'width="{_f(width)}" height="{_f(bottom - yv(volume))}" fill="{color}" '
                f'opacity="0.6">{title}</rect>'
            )
    if top_volume > 0:
        body += [_text(LEFT - 6, volume_top + 8, compact_number(top_volume), "end")]
    else:
        # Index symbols usually carry no volume: say it rather than draw an empty strip.
        body.append(
            _text(
                (LEFT + WIDTH - RIGHT) / 2,
                (volume_top + bottom) / 2 + 4,
                "no volume reported for this symbol",
                extra=' fill="#888"',
            )
        )
    body.append(_text(LEFT - 6, (volume_top + bottom) / 2 + 4, "vol", "end", ' fill="#666"'))
    body += _x_time_axis(x, min(c.ts for c in candles), max(c.ts for c in candles), bottom)
    body.append(_legend([(f"{interval_label} candles", UP_COLOR)]))
    return _svg(body)
