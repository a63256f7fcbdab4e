"""A ``Timeline`` as one self-contained HTML page: ``render_html(timeline, title=...) -> str``.

Per interaction: its figures, then an inline SVG with the axis (ms since the request was sent),
a row of chunk arrivals, a row per text kind and per tool call whose bars are the timeline's bins
(height by characters, a tooltip with the counts), a mark where each call started and a diamond
where it was sealed (a cross where it was refused), lines at the first byte, the first token and
the finish, and shaded stalls. Then a table of the calls and the text samples in ``<details>``.

No script, no external resource (the page's own policy forbids both); every text from the
cassette is escaped. The page's size follows the bins, never the stream's size.
"""

from __future__ import annotations

import math
from html import escape

from streamproxy.cassette.timeline import (
    Bin,
    CallMark,
    InteractionTimeline,
    Timeline,
)

__all__ = ["render_html"]

WIDTH = 1200
LABEL_WIDTH = 200
PLOT_WIDTH = WIDTH - LABEL_WIDTH - 24
AXIS_HEIGHT = 34
ROW_HEIGHT = 30
ROW_GAP = 6
BOTTOM = 12
LABEL_LENGTH = 26

COLOURS = {
    "chunks": "#7a828e",
    "content": "#2f6fd0",
    "reasoning": "#8a4fc7",
    "refusal": "#c23b3b",
    "arguments": "#d9822b",
}

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1f23;
  margin: 1.5rem auto; max-width: 1240px; padding: 0 1rem; background: #fff; }
h1 { font-size: 1.35rem; margin: 0 0 .25rem; }
h2 { font-size: 1.1rem; margin: 2rem 0 .5rem; border-top: 1px solid #d5d8de; padding-top: 1rem; }
.source, .legend { color: #5b616b; font-size: .9rem; margin: 0 0 .5rem; }
dl.figures { display: flex; flex-wrap: wrap; gap: .25rem 1.5rem; margin: .5rem 0; }
dl.figures div { display: flex; gap: .4rem; }
dt { color: #5b616b; } dd { margin: 0; font-weight: 600; }
svg { display: block; max-width: 100%; height: auto; background: #fafbfc;
  border: 1px solid #e3e5e9; border-radius: 6px; }
svg text { font: 12px system-ui, sans-serif; fill: #3b4048; }
svg .row-label { font-size: 12.5px; }
svg .row-detail { font-size: 11px; fill: #6b717b; }
svg .tick { stroke: #d5d8de; }
svg .marker { stroke-width: 1.5; stroke-dasharray: 4 3; }
svg .stall { fill: #c23b3b; fill-opacity: .09; stroke: #c23b3b; stroke-opacity: .35; }
svg .stall-label { fill: #a4161a; font-size: 11px; }
table { border-collapse: collapse; margin: .75rem 0; font-size: .9rem; }
th, td { text-align: left; padding: .25rem .75rem .25rem 0; border-bottom: 1px solid #e3e5e9; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.invalid { color: #a4161a; } .ready { color: #1b6e35; }
details { margin: .4rem 0; } summary { cursor: pointer; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f4f5f7; padding: .5rem;
  border-radius: 6px; font-size: .85rem; max-height: 24rem; overflow: auto; }
.errors { color: #a4161a; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px;
  vertical-align: -.05em; margin: 0 .25em 0 .75em; }
"""

POLICY = "default-src 'none'; style-src 'unsafe-inline'"


def render_html(timeline: Timeline, *, title: str) -> str:
    """The whole page."""
    sections = [_interaction(item, timeline.stall_ms) for item in timeline.interactions]
    legend = "".join(
        f'<span class="swatch" style="background:{colour}"></span>{escape(kind)}'
        for kind, colour in COLOURS.items()
    )
    source = f'<p class="source">{escape(timeline.source)}</p>' if timeline.source else ""
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">',
            f"<title>{escape(title)} · streamproxy inspect</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            f"<h1>{escape(title)}</h1>",
            source,
            f'<p class="legend">Bars: characters per time slice (hover for counts).{legend}. '
            "◆ sealed call, ✕ refused call, ▾ call started; shaded: stall over "
            f"{_duration(timeline.stall_ms)}.</p>",
            *sections,
            "</body>",
            "</html>",
            "",
        ]
    )


# --------------------------------------------------------------------------- one interaction


def _interaction(item: InteractionTimeline, stall_ms: float) -> str:
    parts = [f'<section class="interaction" id="interaction-{item.index}">']
    parts.append(f"<h2>[{item.index}] {escape(item.label)}</h2>")
    parts.append(_figures(item))
    if item.errors:
        errors = "".join(f"<li>{escape(error)}</li>" for error in item.errors)
        parts.append(f'<ul class="errors">{errors}</ul>')
    parts.append(_svg(item))
    if item.calls:
        parts.append(_calls_table(item))
    for track in item.tracks:
        what = track.label if track.kind != "arguments" else f"arguments of {track.label}"
        parts.append(
            f"<details><summary>{escape(what)}: {_count(track.size, 'character')} in "
            f"{_count(track.fragments, 'fragment')}</summary>"
            f"<pre>{escape(track.sample)}</pre></details>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _figures(item: InteractionTimeline) -> str:
    end = "clean" if item.is_clean else f"not clean: {item.end_reason or 'no end mark'}"
    figures = [
        ("status", str(item.status)),
        ("duration", _at(item.span, item.axis)),
        ("chunks", f"{item.chunk_count:,}"),
        ("bytes", f"{item.byte_count:,}"),
        ("first byte", _at(item.first_byte, item.axis)),
        ("first token", _at(item.first_token, item.axis)),
        ("finish", item.finish_reason or "none"),
        ("end", end if item.is_event_stream else "not an event stream"),
        ("calls", str(len(item.calls))),
        ("stalls", str(len(item.stalls))),
    ]
    usage = item.usage or {}
    for key in ("prompt_tokens", "completion_tokens"):
        value = usage.get(key)
        if isinstance(value, int):
            figures.append((key.replace("_", " "), f"{value:,}"))
    cells = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in figures)
    return f'<dl class="figures">{cells}</dl>'


def _calls_table(item: InteractionTimeline) -> str:
    rows = []
    for call in item.calls:
        if call.outcome == "ready":
            outcome = '<span class="ready">ready</span>'
        elif call.outcome == "invalid":
            why = f"{call.invalid_kind}: {call.reason}" if call.reason else str(call.invalid_kind)
            outcome = f'<span class="invalid">invalid ({escape(why)})</span>'
        else:
            outcome = '<span class="invalid">never sealed</span>'
        rows.append(
            "<tr>"
            f"<td>{escape(call.name)}</td><td><code>{escape(call.id)}</code></td>"
            f'<td class="number">{escape(_at(call.started, item.axis))}</td>'
            f'<td class="number">{escape(_at(call.sealed, item.axis))}</td>'
            f'<td class="number">{call.size:,}</td><td class="number">{call.fragments:,}</td>'
            f"<td>{outcome}</td></tr>"
        )
    head = (
        "<tr><th>call</th><th>id</th><th>started</th><th>sealed</th><th>characters</th>"
        "<th>fragments</th><th>outcome</th></tr>"
    )
    return f'<table class="calls">{head}{"".join(rows)}</table>'


# --------------------------------------------------------------------------- the picture


class _Scale:
    def __init__(self, span: float) -> None:
        self.span = span if span > 0 else 1.0

    def x(self, position: float) -> float:
        return LABEL_WIDTH + position / self.span * PLOT_WIDTH

    def width(self, start: float, end: float) -> float:
        return max((end - start) / self.span * PLOT_WIDTH, 1.0)


def _svg(item: InteractionTimeline) -> str:
    scale = _Scale(item.span)
    chunks = f"{item.chunk_count:,} · {_count(item.byte_count, 'byte')}"
    rows: list[tuple[str, str, str, tuple[Bin, ...], str | None]] = [
        ("chunks", "chunks", chunks, item.chunk_bins, None)
    ]
    for track in item.tracks:
        detail = f"{_count(track.size, 'char')} · {_count(track.fragments, 'fragment')}"
        label = track.label if track.call_id is None else f"{track.label} · {track.call_id}"
        rows.append((track.kind, label, detail, track.bins, track.call_id))
    height = AXIS_HEIGHT + len(rows) * (ROW_HEIGHT + ROW_GAP) + BOTTOM
    plot_bottom = height - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="Timeline of interaction {item.index}">'
    ]
    parts.extend(_axis(item, scale, plot_bottom))
    for stall in item.stalls:
        x = scale.x(stall.start)
        parts.append(
            f'<rect class="stall" x="{x:.1f}" y="{AXIS_HEIGHT - 4}" '
            f'width="{scale.width(stall.start, stall.end):.1f}" '
            f'height="{plot_bottom - AXIS_HEIGHT + 4}"><title>stall: nothing for '
            f"{_duration(stall.duration)} ({_duration(stall.start)} to "
            f"{_duration(stall.end)})</title></rect>"
        )
        parts.append(
            f'<text class="stall-label" x="{x + 3:.1f}" y="{plot_bottom - 3}">'
            f"stall {_duration(stall.duration)}</text>"
        )
    calls = {call.id: call for call in item.calls}
    for number, (kind, label, detail, bins, call_id) in enumerate(rows):
        top = AXIS_HEIGHT + number * (ROW_HEIGHT + ROW_GAP)
        parts.append(
            f'<text class="row-label" x="8" y="{top + 13}">{escape(_short(label))}</text>'
            f'<text class="row-detail" x="8" y="{top + 26}">{escape(detail)}</text>'
        )
        parts.extend(_bars(kind, bins, top, scale, item.axis))
        if call_id is not None and call_id in calls:
            parts.extend(_call_marks(calls[call_id], top, scale, item.axis))
    parts.append("</svg>")
    return "".join(parts)


def _axis(item: InteractionTimeline, scale: _Scale, plot_bottom: int) -> list[str]:
    parts = []
    for value in _ticks(item.span):
        x = scale.x(value)
        parts.append(
            f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{AXIS_HEIGHT - 8}" '
            f'y2="{plot_bottom}"/><text x="{x:.1f}" y="{AXIS_HEIGHT - 12}" '
            f'text-anchor="middle">{escape(_at(value, item.axis))}</text>'
        )
    markers = [
        ("first byte", item.first_byte, "#7a828e"),
        ("first token", item.first_token, "#2f6fd0"),
        (f"finish: {item.finish_reason}", item.finished_at, "#1b6e35"),
    ]
    for name, position, colour in markers:
        if position is None:
            continue
        x = scale.x(position)
        parts.append(
            f'<line class="marker" x1="{x:.1f}" x2="{x:.1f}" y1="{AXIS_HEIGHT - 4}" '
            f'y2="{plot_bottom}" stroke="{colour}"><title>{escape(name)} at '
            f"{escape(_at(position, item.axis))}</title></line>"
        )
    return parts


def _bars(kind: str, bins: tuple[Bin, ...], top: int, scale: _Scale, axis: str) -> list[str]:
    if not bins:
        return []
    largest = max(item.size for item in bins) or 1
    colour = COLOURS.get(kind, "#7a828e")
    unit = "bytes" if kind == "chunks" else "chars"
    what = "chunks" if kind == "chunks" else "fragments"
    parts = []
    for item in bins:
        bar = 3 + (ROW_HEIGHT - 5) * math.sqrt(item.size / largest)
        parts.append(
            f'<rect class="bin {kind}" x="{scale.x(item.start):.1f}" '
            f'y="{top + ROW_HEIGHT - bar:.1f}" width="{scale.width(item.start, item.end):.1f}" '
            f'height="{bar:.1f}" fill="{colour}"><title>{item.fragments:,} {what}, '
            f"{item.size:,} {unit}, {_at(item.start, axis)} to {_at(item.end, axis)}"
            "</title></rect>"
        )
    return parts


def _call_marks(call: CallMark, top: int, scale: _Scale, axis: str) -> list[str]:
    middle = top + ROW_HEIGHT / 2
    x = scale.x(call.started)
    parts = [
        f'<path class="call-start" d="M{x - 5:.1f} {top - 2} h10 l-5 7 z" fill="#3b4048">'
        f"<title>{escape(call.name)} started at {escape(_at(call.started, axis))}</title></path>"
    ]
    if call.sealed is None:
        return parts
    x = scale.x(call.sealed)
    identity = f'data-call-id="{escape(call.id)}"'
    if call.outcome == "ready":
        parts.append(
            f'<g class="seal ready" {identity}><line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 2}" '
            f'y2="{top + ROW_HEIGHT + 2}" stroke="#1b6e35" stroke-width="2"/>'
            f'<path d="M{x:.1f} {middle - 7:.1f} l7 7 l-7 7 l-7 -7 z" fill="#1b6e35" '
            f'stroke="#fff"/><title>{escape(call.name)} sealed at '
            f"{escape(_at(call.sealed, axis))}: {call.size:,} chars</title></g>"
        )
    else:
        reason = f"{call.invalid_kind}: {call.reason}"
        parts.append(
            f'<g class="seal invalid" {identity}><line x1="{x:.1f}" x2="{x:.1f}" '
            f'y1="{top - 2}" y2="{top + ROW_HEIGHT + 2}" stroke="#a4161a" stroke-width="2"/>'
            f'<path d="M{x - 6:.1f} {middle - 6:.1f} l12 12 m0 -12 l-12 12" stroke="#a4161a" '
            f'stroke-width="3"/><title>{escape(call.name)} refused at '
            f"{escape(_at(call.sealed, axis))}: {escape(reason)}</title></g>"
        )
    return parts


# --------------------------------------------------------------------------- numbers


def _ticks(span: float) -> list[float]:
    if span <= 0:
        return [0.0]
    raw = span / 8
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = int(span / step + 1e-9)
    return [i * step for i in range(count + 1)]


def _at(position: float | None, axis: str) -> str:
    if position is None:
        return "–"
    if axis == "chunk":
        return f"chunk {position:.0f}"
    return _duration(position)


def _duration(milliseconds: float) -> str:
    if milliseconds == 0:
        return "0 ms"
    if abs(milliseconds) >= 1000:
        return f"{milliseconds / 1000:.2f} s"
    return f"{milliseconds:.0f} ms" if milliseconds >= 10 else f"{milliseconds:.1f} ms"


def _count(number: int, word: str) -> str:
    return f"{number:,} {word}{'' if number == 1 else 's'}"


def _short(text: str) -> str:
    return text if len(text) <= LABEL_LENGTH else text[: LABEL_LENGTH - 1] + "…"
