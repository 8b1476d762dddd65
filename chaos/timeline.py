"""A self-contained HTML+SVG timeline of a run: one row per process, one bar per operation
from invoke to completion colored by outcome, a latency scatter on a log scale beneath, and
the nemesis' fault windows shaded across both. Hovering a bar or dot shows the operation.

No scripts and no external assets, so the file opens anywhere and can be attached to a CI
run as it is.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable

from shardkv.chaos.checkers.availability import fault_windows
from shardkv.chaos.history import INFINITY, NemesisEvent, Operation

COLORS = {"ok": "#2e9d4f", "fail": "#d1453b", "info": "#e39b21"}
FAULT_COLORS = ["#7b61ff", "#1f8fd6", "#c2379b", "#6b8e23", "#a0522d", "#008b8b"]
WIDTH = 1200
LEFT = 70
RIGHT = 20
LATENCY_HEIGHT = 180


def render_timeline(
    ops: Iterable[Operation], nemesis: Iterable[NemesisEvent] = (), *, title: str = "timeline"
) -> str:
    ops = [op for op in ops]
    nemesis = list(nemesis)
    if not ops:
        return _page(title, "<p>No operations were recorded.</p>")
    t0 = min(op.call for op in ops)
    t_end = max(max(op.ret if op.ret != INFINITY else op.call for op in ops), t0 + 1e-3)
    t_end = max([t_end, *(ev.time for ev in nemesis)])
    span = t_end - t0
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + (min(t, t_end) - t0) / span * plot_w

    processes = sorted(
        {op.process for op in ops},
        key=lambda p: (isinstance(p, str), p if isinstance(p, int) else 0, str(p)),
    )
    row_of = {p: i for i, p in enumerate(processes)}
    row_h = max(3.0, min(16.0, 520.0 / len(processes)))
    ops_top = 30.0
    ops_h = row_h * len(processes)
    lat_top = ops_top + ops_h + 40
    height = lat_top + LATENCY_HEIGHT + 50
    parts: list[str] = []

    windows = fault_windows(nemesis, t_end)
    fault_names = sorted({w.fault for w in windows})
    color_of = {name: FAULT_COLORS[i % len(FAULT_COLORS)] for i, name in enumerate(fault_names)}
    for w in windows:
        label = html.escape(f"{w.fault} {','.join(w.targets)} "
                            f"[{w.start - t0:.2f} s, {w.end - t0:.2f} s]")
        x1, x2 = x(w.start), x(w.end)
        parts.append(
            f'<rect x="{x1:.1f}" y="{ops_top - 8:.1f}" width="{max(x2 - x1, 1):.1f}" '
            f'height="{height - ops_top - 30:.1f}" fill="{color_of[w.fault]}" '
            f'fill-opacity="0.12"><title>{label}</title></rect>'
            f'<text x="{x1 + 2:.1f}" y="{ops_top - 12:.1f}" font-size="10" '
            f'fill="{color_of[w.fault]}">{html.escape(w.fault)}</text>'
        )

    # Time axis ticks.
    step = _nice_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        tx = x(t0 + tick)
        parts.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{ops_top:.1f}" '
            f'y2="{lat_top + LATENCY_HEIGHT:.1f}" stroke="#ddd" stroke-width="0.5"/>'
            f'<text x="{tx:.1f}" '
            f'y="{lat_top + LATENCY_HEIGHT + 16:.1f}" font-size="10" text-anchor="middle">'
            f'{tick:g} s</text>'
        )
        tick += step

    # Operations, one row per process.
    for p in processes:
        y = ops_top + row_of[p] * row_h
        if len(processes) <= 40 or row_of[p] % max(1, len(processes) // 20) == 0:
            parts.append(f'<text x="{LEFT - 6}" y="{y + row_h * 0.8:.1f}" font-size="9" '
                         f'text-anchor="end">p{html.escape(str(p))}</text>')
    for op in ops:
        y = ops_top + row_of[op.process] * row_h + 0.5
        x1 = x(op.call)
        # An info operation is drawn solid until the client gave up on it, then as a thin
        # dashed line to the end: it may still take effect at any point on that line.
        gave_up = op.completed_at if op.ret == INFINITY else op.ret
        x2 = x(gave_up) if gave_up is not None else x(t_end)
        tip = f"<title>{_tip(op)}</title>"
        bar_h = max(row_h - 1, 1.5)
        parts.append(
            f'<rect x="{x1:.2f}" y="{y:.2f}" width="{max(x2 - x1, 0.8):.2f}" '
            f'height="{bar_h:.2f}" fill="{COLORS[op.type]}">{tip}</rect>'
        )
        if op.ret == INFINITY:
            mid = y + bar_h / 2
            parts.append(
                f'<line x1="{x2:.2f}" x2="{x(t_end):.2f}" y1="{mid:.2f}" y2="{mid:.2f}" '
                f'stroke="{COLORS["info"]}" stroke-width="1" stroke-dasharray="3,3">{tip}</line>'
            )

    # Latency scatter (log scale), for operations that completed.
    def waited(op: Operation) -> float | None:
        """How long the client waited: to completion, or to giving up for info."""
        end = op.ret if op.ret != INFINITY else op.completed_at
        return None if end is None else end - op.call

    lats = [w for w in map(waited, ops) if w is not None]
    lo = max(min(lats, default=1e-4), 1e-4)
    hi = max(max(lats, default=1.0), lo * 10)

    def ly(latency: float) -> float:
        frac = (math.log10(max(latency, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return lat_top + LATENCY_HEIGHT - frac * LATENCY_HEIGHT

    parts.append(f'<rect x="{LEFT}" y="{lat_top}" width="{plot_w}" height="{LATENCY_HEIGHT}" '
                 'fill="none" stroke="#999" stroke-width="0.5"/>')
    decade = math.floor(math.log10(lo))
    while 10**decade <= hi * 1.0001:
        if 10**decade >= lo:
            yy = ly(10**decade)
            parts.append(f'<text x="{LEFT - 6}" y="{yy + 3:.1f}" font-size="9" text-anchor="end">'
                         f'{_ms(10**decade)}</text><line x1="{LEFT}" x2="{WIDTH - RIGHT}" '
                         f'y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        decade += 1
    for op in ops:
        latency = waited(op)
        if latency is None:
            continue
        parts.append(
            f'<circle cx="{x(op.call):.2f}" cy="{ly(latency):.2f}" r="1.6" '
            f'fill="{COLORS[op.type]}"><title>{_tip(op)}</title></circle>'
        )
    parts.append(f'<text x="8" y="{lat_top + 12}" font-size="11">latency</text>')
    parts.append(f'<text x="8" y="{ops_top + 4}" font-size="11">process</text>')

    legend = " ".join(
        f'<span style="background:{c};color:white;padding:1px 6px;border-radius:3px">{k}</span>'
        for k, c in COLORS.items()
    ) + " " + " ".join(
        f'<span style="background:{color_of[n]}33;padding:1px 6px;border-radius:3px">'
        f'{html.escape(n)}</span>' for n in fault_names
    )
    counts = {k: sum(1 for op in ops if op.type == k) for k in COLORS}
    header = (
        f"<p>{len(ops)} operations ({counts['ok']} ok, {counts['fail']} fail, "
        f"{counts['info']} info) by {len(processes)} processes over {span:.2f} s; "
        f"{len(windows)} fault windows. {legend}</p>"
    )
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
           f'font-family="sans-serif">{"".join(parts)}</svg>')
    return _page(title, header + svg)


TIP_CHARS = 240


def _tip(op: Operation) -> str:
    """Hover text: the operation's one-line description, cut short (a read of a long list
    would otherwise repeat the whole list in every tooltip and make the page huge)."""
    text = op.describe()
    if len(text) > TIP_CHARS:
        text = text[: TIP_CHARS - 1] + "…"
    return html.escape(text)


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:g} ms" if ms < 1000 else f"{seconds:g} s"


def _nice_step(span: float) -> float:
    raw = span / 12
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:16px}}"
        "rect:hover,circle:hover{stroke:#000;stroke-width:1}</style></head><body>"
        f"<h2>{html.escape(title)}</h2>{body}</body></html>\n"
    )
