"""``streamproxy assemble [FILE|-]``: a raw SSE body in, the assembled completion out.

Prints the ``chat.completion`` JSON object, or with ``--events`` one JSON line per event. A body
that is not SSE, ends truncated, or carries an in-band error still prints what was assembled,
writes a one-line reason to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, BinaryIO

import orjson

from streamproxy.core import ChatStream, Event, ProtocolError, StreamEnded

if TYPE_CHECKING:
    from collections.abc import Iterator

READ_SIZE = 64 * 1024


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``assemble`` subcommand."""
    parser = subparsers.add_parser(
        "assemble",
        help="assemble a raw SSE body into the chat.completion it stands for",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", default="-", help="SSE body to read, or - for stdin")
    parser.add_argument(
        "--events", action="store_true", help="print one JSON line per event instead"
    )
    parser.add_argument(
        "--dialect",
        choices=("openai-chat", "anthropic-messages"),
        default=None,
        help="the stream's dialect (detected when not given)",
    )
    parser.add_argument(
        "--no-previews", action="store_true", help="do not emit partial-argument previews"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Assemble the body named by ``args.file`` and print the result."""
    stream = ChatStream(dialect=args.dialect, previews=not args.no_previews)
    failure: str | None = None
    end: StreamEnded | None = None
    with _open(args.file) as source:
        try:
            for piece in _read_pieces(source):
                _emit(stream.receive_data(piece), args.events)
        except ProtocolError as error:
            failure = str(error)
        for event in stream.receive_eof():
            if isinstance(event, StreamEnded):
                end = event
            _emit([event], args.events)
    if not args.events:
        sys.stdout.buffer.write(orjson.dumps(stream.completion(), option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    if failure is None and end is not None and not end.is_clean:
        failure = end.reason
    if failure is not None:
        print(f"streamproxy assemble: {failure}", file=sys.stderr)
        return 1
    return 0


def _emit(events: list[Event], as_lines: bool) -> None:
    if not as_lines:
        return
    out = sys.stdout.buffer
    for event in events:
        record = {"event": type(event).__name__, **dataclasses.asdict(event)}
        out.write(orjson.dumps(record, default=str) + b"\n")


def _open(name: str) -> BinaryIO:
    if name == "-":
        return _Unclosable(sys.stdin.buffer)  # type: ignore[return-value]
    return open(name, "rb")


def _read_pieces(source: BinaryIO) -> Iterator[bytes]:
    while piece := source.read(READ_SIZE):
        yield piece


class _Unclosable:
    """stdin as a context manager that does not close it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def __enter__(self) -> BinaryIO:
        return self._stream

    def __exit__(self, *exc: object) -> None:
        return None
