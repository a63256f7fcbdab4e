"""``streamproxy replay FILE_OR_DIR``: serve a cassette as an OpenAI-compatible upstream.

Example::

    streamproxy replay recordings/demo-tool-loop.cassette.json --port 8101 --timing recorded
    streamproxy replay ../shared/recordings --port 0 --resplit 7 --keepalive 0.3 --seed 42

The first line on stdout is ``streamproxy replay: listening on http://127.0.0.1:PORT``.

Bound to an address other than loopback (``--host 0.0.0.0``), the control endpoints
(``/_streamproxy/plan``, ``/requests``, ``/responses``) answer 403 unless
``--allow-remote-control`` is given; either way a line on stderr says which.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import TYPE_CHECKING

from streamproxy.cassette.faults import Faults
from streamproxy.cassette.http import parse_timing
from streamproxy.cassette.match import MATCHERS

if TYPE_CHECKING:
    from streamproxy.cassette.replay import Plan


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="serve a cassette (or a directory of recordings) on 127.0.0.1",
        description=(
            "Answer POST /v1/chat/completions and /chat/completions from a cassette, a raw .sse "
            "body, a VCR YAML file, a JSON-lines fixture or a directory of them."
        ),
    )
    parser.add_argument("source", metavar="FILE_OR_DIR", help="cassette, recording or directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument(
        "--timing",
        default="instant",
        help="'instant' (default), 'recorded', or a factor on the recorded offsets (0.5 = 2x fast)",
    )
    parser.add_argument(
        "--match",
        choices=sorted(MATCHERS),
        default="request",
        help=(
            "'request': method, path and body (default); 'turn': the conversation's shape only; "
            "'messages': the conversation's messages only (other fields ignored)"
        ),
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    parser.add_argument(
        "--allow-remote-control",
        action="store_true",
        help="serve the /_streamproxy/ control endpoints even on a non-loopback --host",
    )
    add_fault_arguments(parser)
    parser.set_defaults(run=run)


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """The fault flags (byte offsets count bytes of the body as recorded)."""
    group = parser.add_argument_group("faults (seeded and reproducible)")
    group.add_argument("--seed", type=int, default=0, help="random seed for every fault")
    group.add_argument("--cut-at", type=int, metavar="BYTE", help="end the body cleanly here")
    group.add_argument("--drop-at", type=int, metavar="BYTE", help="drop the connection here")
    group.add_argument(
        "--error-after", type=int, metavar="EVENTS", help="send an in-band error after N events"
    )
    group.add_argument("--error-message", default=None, help="message of the in-band error")
    group.add_argument("--stall-at", type=int, metavar="BYTE", help="stall before this byte")
    group.add_argument("--stall", type=float, default=0.0, metavar="SECONDS", help="stall time")
    group.add_argument(
        "--keepalive", type=float, default=0.0, metavar="P", help="keep-alive comment probability"
    )
    group.add_argument("--resplit", type=int, metavar="K", help="re-split into 1..K-byte pieces")
    group.add_argument("--coalesce", type=int, metavar="K", help="merge runs of 1..K chunks")
    group.add_argument(
        "--garbage-at", type=int, metavar="BYTE", help="insert random bytes before this byte"
    )
    group.add_argument(
        "--garbage-size", type=int, default=32, metavar="N", help="how many (default 32)"
    )
    group.add_argument(
        "--huge-event", type=int, metavar="BYTES", help="add one event this large after the first"
    )
    group.add_argument(
        "--status",
        type=int,
        metavar="CODE",
        help="answer every request with this status and a JSON error body (200: an error body "
        "under a success status)",
    )
    group.add_argument(
        "--statuses",
        metavar="CODES",
        help="answer the first requests with these statuses, e.g. 429,503: two failures, then "
        "the recording",
    )
    group.add_argument(
        "--retry-after", type=float, metavar="SECONDS", help="Retry-After sent with a status"
    )


def faults_from_arguments(args: argparse.Namespace) -> Faults | None:
    """The ``Faults`` the flags ask for, or ``None`` when none is set.

    Raises:
        ValueError: a flag's value is out of range.
    """
    fields: dict[str, object] = {
        "cut_at": args.cut_at,
        "drop_at": args.drop_at,
        "error_after": args.error_after,
        "stall_at": args.stall_at,
        "resplit": args.resplit,
        "coalesce": args.coalesce,
        "garbage_at": args.garbage_at,
        "huge_event": args.huge_event,
        "status": args.status,
    }
    chosen = {name: value for name, value in fields.items() if value is not None}
    if args.keepalive:
        chosen["keepalive"] = args.keepalive
    if args.stall_at is not None:
        chosen["stall_seconds"] = args.stall
    if args.error_message is not None:
        chosen["error_message"] = args.error_message
    if args.garbage_at is not None:
        chosen["garbage_size"] = args.garbage_size
    if args.status is not None and args.retry_after is not None:
        chosen["retry_after"] = args.retry_after
    if not chosen:
        return None
    return Faults(seed=args.seed, **chosen)  # type: ignore[arg-type]


def plans_from_arguments(args: argparse.Namespace) -> list[Plan]:
    """One plan per status in ``--statuses`` (with ``--retry-after``), in order.

    Raises:
        ValueError: a status is not a number or out of range.
    """
    from streamproxy.cassette.replay import Plan

    if not args.statuses:
        return []
    plans = []
    for text in args.statuses.split(","):
        try:
            status = int(text)
        except ValueError:
            raise ValueError(f"--statuses: {text.strip()!r} is not a status code") from None
        plans.append(Plan(faults=Faults(status=status, retry_after=args.retry_after)))
    return plans


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from streamproxy.cassette.replay import Replayer
    from streamproxy.cassette.server import create_replay_app, serve
    from streamproxy.errors import CassetteError

    try:
        replayer = Replayer(
            args.source,
            timing=parse_timing(args.timing),
            faults=faults_from_arguments(args),
            matcher=MATCHERS[args.match],
        )
        replayer.add_plan(plans_from_arguments(args))
    except (CassetteError, ValueError) as error:
        print(f"streamproxy replay: {error}", file=sys.stderr)
        return 2
    allow_control = is_loopback(args.host) or args.allow_remote_control
    if not is_loopback(args.host):
        state = (
            "ON and reachable from other machines (--allow-remote-control)"
            if allow_control
            else "off (403); give --allow-remote-control to turn them on"
        )
        print(
            f"streamproxy replay: {args.host} is not a loopback address: "
            f"the /_streamproxy/ control endpoints are {state}",
            file=sys.stderr,
            flush=True,
        )
    app = create_replay_app(replayer, allow_control=allow_control)
    serve(app, host=args.host, port=args.port, name="streamproxy replay", log_level=args.log_level)
    return 0
