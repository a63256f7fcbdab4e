"""``streamproxy cassette import SRC -o DEST`` and ``streamproxy cassette show FILE``."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("cassette", help="import and inspect cassettes")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    importer = actions.add_parser(
        "import",
        help="convert a raw .sse body, a VCR YAML cassette or a JSON-lines fixture",
        description=(
            "Convert a raw .sse body, a VCR YAML cassette (vcrpy, pytest-recording, Ruby VCR), "
            "a one-JSON-chunk-per-line fixture or a directory of them into one cassette."
        ),
    )
    importer.add_argument("source", metavar="SRC")
    importer.add_argument("-o", "--output", required=True, metavar="DEST", help="cassette to write")
    importer.add_argument("--source-line", help="provenance line (default: where it came from)")
    importer.set_defaults(run=run_import)
    show = actions.add_parser("show", help="summarise a cassette or recording")
    show.add_argument("source", metavar="FILE")
    show.set_defaults(run=run_show)


def run_import(args: argparse.Namespace) -> int:
    from streamproxy.cassette.format import dump
    from streamproxy.cassette.importers import read_cassette
    from streamproxy.errors import CassetteError

    try:
        cassette = read_cassette(args.source)
    except CassetteError as error:
        print(f"streamproxy cassette import: {error}", file=sys.stderr)
        return 2
    if args.source_line:
        cassette.source = args.source_line
    dump(cassette, args.output)
    chunks = sum(len(item.response.chunks) for item in cassette)
    print(f"wrote {args.output}: {len(cassette)} interaction(s), {chunks} chunk(s)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from streamproxy.cassette.importers import read_cassette
    from streamproxy.errors import CassetteError

    try:
        cassette = read_cassette(args.source)
    except CassetteError as error:
        print(f"streamproxy cassette show: {error}", file=sys.stderr)
        return 2
    print(f"source: {cassette.source}")
    for index, item in enumerate(cassette):
        request = item.request
        where = f"{request.method} {request.path}" if request else "(any request)"
        response = item.response
        last = response.chunks[-1].offset_ms if response.chunks else 0.0
        print(
            f"[{index}] {where} -> {response.status}, {len(response.chunks)} chunks, "
            f"{len(response.body)} bytes, last chunk at {last:.1f} ms"
        )
    return 0
