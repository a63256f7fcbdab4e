"""The ``streamproxy`` command line: ``main(argv) -> int``.

Each subcommand lives in its own module under ``streamproxy.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``run`` (``Namespace -> int``) as the
parser's default. Heavy imports (uvicorn, starlette) happen inside ``run`` only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from streamproxy.commands import assemble, cassette, inspect, record, replay, serve

# Order is the order of ``streamproxy --help``.
COMMANDS = (serve, assemble, record, replay, cassette, inspect)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="streamproxy",
        description="Streaming tool-call assembler and proxy for OpenAI-compatible chat APIs.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
