"""``streamproxy inspect CASSETTE [-o FILE.html]``: what happened in a recorded stream, when.

Examples::

    streamproxy inspect recordings/demo-tool-loop.cassette.json            # a text summary
    streamproxy inspect recordings/demo-tool-loop.cassette.json -o t.html  # a timeline page

The summary gives, per interaction: its duration, chunks, time to first byte and first token,
each tool call with the time it was sealed (or refused), and the stalls (silences longer than
``--stall-ms``). The page (``streamproxy.cassette.timeline_html``) draws the same on a time axis:
content and reasoning, each call's argument fragments, the seals and the stalls. It is one
self-contained HTML file with inline SVG, no script and nothing loaded from elsewhere.
Anything ``streamproxy cassette import`` reads is accepted too (a raw ``.sse`` body...); such a
source kept no timing, so its axis is the chunk number.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from streamproxy.cassette.timeline import (
    DEFAULT_BIN_COUNT,
    DEFAULT_STALL_MS,
    InteractionTimeline,
    Timeline,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``inspect`` subcommand."""
    parser = subparsers.add_parser(
        "inspect",
        help="a timeline of a recorded stream: tokens, argument fragments, seals, stalls",
        description="Summarise a cassette's streams, or draw them as a timeline page (-o).",
    )
    parser.add_argument("source", metavar="CASSETTE")
    parser.add_argument("-o", "--output", metavar="FILE.html", help="write the timeline page")
    parser.add_argument(
        "--stall-ms",
        type=float,
        default=DEFAULT_STALL_MS,
        metavar="MS",
        help=f"a silence longer than this is a stall (default {DEFAULT_STALL_MS:g})",
    )
    parser.add_argument(
        "--bins",
        type=int,
        default=DEFAULT_BIN_COUNT,
        help=f"time slices per row in the page (default {DEFAULT_BIN_COUNT})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streamproxy.cassette.importers import read_cassette
    from streamproxy.cassette.timeline import build_timeline
    from streamproxy.errors import CassetteError

    if args.stall_ms <= 0 or args.bins < 1:
        print("streamproxy inspect: --stall-ms and --bins must be positive", file=sys.stderr)
        return 2
    try:
        cassette = read_cassette(args.source)
    except CassetteError as error:
        print(f"streamproxy inspect: {error}", file=sys.stderr)
        return 2
    timeline = build_timeline(cassette, stall_ms=args.stall_ms, bin_count=args.bins)
    if args.output is None:
        print("\n".join(summary_lines(timeline, name=args.source)))
        return 0
    from streamproxy.cassette.timeline_html import render_html

    page = render_html(timeline, title=Path(args.source).name)
    try:
        Path(args.output).write_text(page, encoding="utf-8")
    except OSError as error:
        print(f"streamproxy inspect: cannot write {args.output}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {len(timeline.interactions)} interaction(s), {len(page):,} bytes")
    return 0


def summary_lines(timeline: Timeline, *, name: str) -> list[str]:
    """The text summary: a line per interaction, then its calls and stalls."""
    lines = [f"{name}: {len(timeline.interactions)} interaction(s)"]
    if timeline.source:
        lines.append(f"source: {timeline.source}")
    for item in timeline.interactions:
        lines.extend(_interaction_lines(item))
    return lines


def _interaction_lines(item: InteractionTimeline) -> list[str]:
    unit = _formatter(item)
    head = (
        f"[{item.index}] {item.label}: status {item.status}, {unit(item.span)}, "
        f"{item.chunk_count} chunks, {item.byte_count:,} bytes; "
        f"first byte {unit(item.first_byte)}, "
        f"first token {unit(item.first_token)}; finish {item.finish_reason or 'none'}"
    )
    if not item.is_event_stream:
        head += "; not an event stream"
    elif not item.is_clean:
        head += f"; ended early: {item.end_reason or 'no end mark'}"
    lines = [head]
    for track in item.tracks:
        if track.kind != "arguments":
            lines.append(
                f"    {track.kind}: {_count(track.size, 'character')} in "
                f"{_count(track.fragments, 'fragment')}, "
                f"{unit(track.first)} to {unit(track.last)}"
            )
    for call in item.calls:
        if call.outcome == "ready":
            seal = f"sealed at {unit(call.sealed)}"
        elif call.outcome == "invalid":
            seal = f"refused at {unit(call.sealed)} ({call.invalid_kind}: {call.reason})"
        else:
            seal = "never sealed"
        lines.append(
            f"    call {call.name} {call.id}: started {unit(call.started)}, {seal}; "
            f"{_count(call.size, 'character')} in {_count(call.fragments, 'fragment')}"
        )
    for stall in item.stalls:
        lines.append(
            f"    stall: {unit(stall.duration)} of silence, "
            f"{unit(stall.start)} to {unit(stall.end)}"
        )
    lines.extend(f"    error {error}" for error in item.errors)
    return lines


def _count(number: int, word: str) -> str:
    return f"{number:,} {word}{'' if number == 1 else 's'}"


def _formatter(item: InteractionTimeline) -> Callable[[float | None], str]:
    def unit(value: float | None) -> str:
        if value is None:
            return "-"
        return f"chunk {value:.0f}" if item.axis == "chunk" else f"{value:.1f} ms"

    return unit
