"""``streamproxy record --upstream URL --out FILE``: a recording pass-through on 127.0.0.1.

Example::

    streamproxy record --upstream https://api.deepseek.com --out deepseek.cassette.json --port 8102
    # then point any client at http://127.0.0.1:8102 with its real key: the key reaches the
    # upstream but the cassette keeps "<redacted>".

The cassette is rewritten after every finished interaction; an existing file is appended to
unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "record",
        help="record traffic to an upstream through a pass-through on 127.0.0.1",
        description="Forward every request to --upstream and record the exchanges to --out.",
    )
    parser.add_argument(
        "--upstream", required=True, help="upstream base URL, e.g. https://api.deepseek.com"
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="cassette to write")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument("--source", help="provenance line for a new cassette")
    parser.add_argument("--overwrite", action="store_true", help="start a new cassette")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import httpx2

    from streamproxy.cassette.format import Cassette, load
    from streamproxy.cassette.passthrough import create_record_app
    from streamproxy.cassette.record import RecordTransport
    from streamproxy.cassette.server import serve
    from streamproxy.errors import CassetteError

    if not args.upstream.startswith(("http://", "https://")):
        print("streamproxy record: --upstream must be an http:// or https:// URL", file=sys.stderr)
        return 2
    out = Path(args.out)
    source = args.source or (
        f"recorded with streamproxy record from {args.upstream} "
        f"on {datetime.now(UTC).date().isoformat()}"
    )
    cassette = Cassette(source=source)
    if out.exists() and not args.overwrite:
        try:
            cassette = load(out)
        except CassetteError as error:
            print(f"streamproxy record: {error} (use --overwrite to replace it)", file=sys.stderr)
            return 2
    recorder = RecordTransport(httpx2.AsyncHTTPTransport(), cassette=cassette, path=out)
    app = create_record_app(args.upstream, recorder)
    serve(app, host=args.host, port=args.port, name="streamproxy record", log_level=args.log_level)
    return 0
