"""A long fuzz run of the core (``ChatStream``), on demand; CI runs the short one in tests/core.

::

    .venv/bin/python fuzz/fuzz_core.py                      # 100,000 cases over four targets
    .venv/bin/python fuzz/fuzz_core.py --cases 20000 --target structured --seed 7

Targets (Hypothesis generates every input; each target gets ``--cases / 4`` cases):

- ``bytes``: random bytes, and random sequences of SSE tokens (``data: ``, ``\\r\\n``, ``[DONE]``,
  JSON punctuation, chunk keys) mixed with random bytes;
- ``resplit``: a real recording (``../shared/recordings/*.sse`` and the project's
  ``recordings/*.cassette.json``) cut at random points;
- ``mutated``: a real recording with byte-level mutations (delete, duplicate, overwrite,
  truncate, insert an SSE token, insert whitespace or a token right after a string value, repeat
  one event up to 3,000 times so one body passes the core's 256 KiB slicing);
- ``structured``: a real recording parsed into its chunks, then JSON-level mutations (a value
  replaced by another JSON type, a key dropped, a chunk duplicated, dropped or swapped, tool call
  fields changed), re-encoded, and fed as bytes or as parsed chunks (``receive_chunk``).

Each input runs with default or tiny ``Limits``, with or without tool schemas, previews and
``strict_sse``.
Checked for every case:

- the only exceptions are ``ProtocolError`` and its subclasses (``LimitExceededError``); after
  one, the stream stays broken; ``receive_eof()`` never raises;
- ``StreamEnded`` is the last event and comes once; a second ``receive_eof()`` returns ``[]``;
- per call: ``ToolCallStarted`` first, then fragments, then one ``ToolCallReady`` or
  ``ToolCallInvalid``; a ready call's arguments are exactly its joined fragments and parse to
  the ``parsed`` object;
- ``completion()`` and ``message()`` are JSON-serialisable;
- split invariance, nothing lost: the whole input fed at once gives the same events as the same
  input fed in the random pieces, and as fed one event per read (cut after every blank line, as
  a proxy reads; such reads take the chunk template before the SSE decoder);
- no case runs longer than ``--guard`` seconds (a hang is reported with its input).

Findings are grouped by signature; the first input of each is written to ``--findings`` with
its traceback, and the process exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import itertools
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from streamproxy.cassette.importers import split_events
from streamproxy.core import (
    ChatStream,
    Event,
    Limits,
    ProtocolError,
    StreamEnded,
    ToolCallArgumentsDelta,
    ToolCallInvalid,
    ToolCallPreview,
    ToolCallReady,
    ToolCallStarted,
)

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO / ".." / "shared" / "recordings").resolve()
OWN_RECORDINGS = REPO / "recordings"
TARGETS = ("bytes", "resplit", "mutated", "structured")

TINY_LIMITS = Limits(
    max_event_size=2048,
    max_arguments_size=256,
    max_text_size=1024,
    max_tool_calls=3,
    max_choices=2,
)
TOOL_SCHEMAS: dict[str, object] = {
    "get_weather": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "write_file": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
    "lookup": None,
}
SSE_TOKENS = [
    b"data: ",
    b"data:",
    b"event: error\n",
    b"event: message_start\n",
    b"id: 1\n",
    b"retry: 10\n",
    b": keep-alive\n\n",
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b"\r\n\r\n",
    b"[DONE]",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"null",
    b"0",
    b"-1",
    b'"choices"',
    b'"delta"',
    b'"content"',
    b'"tool_calls"',
    b'"index"',
    b'"function"',
    b'"arguments"',
    b'"finish_reason"',
    b'"usage"',
    b'"error"',
    b"\xef\xbb\xbf",
    b"\xc3",
    b"\xa9",
    b"\x00",
]


# ---------------------------------------------------------------------------------- inputs


def recording_bodies() -> dict[str, bytes]:
    """Every recording's body: the shared corpus and the project's cassettes."""
    from streamproxy.cassette.format import load

    bodies: dict[str, bytes] = {}
    if CORPUS.is_dir():
        for path in sorted(CORPUS.glob("*.sse")):
            bodies[path.name] = path.read_bytes()
    for path in sorted(OWN_RECORDINGS.glob("*.cassette.json")):
        for number, interaction in enumerate(load(path).interactions):
            bodies[f"{path.name}#{number}"] = interaction.response.body
    if not bodies:
        raise SystemExit("no recordings found")
    return bodies


STRING_END = re.compile(rb'"(?=[,}\]])')  # the closing quote of a string value, most often


def pieces(body: bytes, fractions: list[float]) -> list[bytes]:
    cuts = sorted({int(fraction * len(body)) for fraction in fractions})
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["", "assistant", "tool_calls", "stop", "function", "{", '{"a":', "\\u0000"]),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


@dataclass(frozen=True, slots=True)
class Options:
    limits: Limits | None
    tools: dict[str, object] | None
    previews: bool
    strict_sse: bool = False

    def stream(self) -> ChatStream:
        return ChatStream(
            tools=self.tools,  # type: ignore[arg-type]
            limits=self.limits,
            previews=self.previews,
            strict_sse=self.strict_sse,
        )


OPTIONS = st.builds(
    Options,
    limits=st.sampled_from([None, None, TINY_LIMITS]),
    tools=st.sampled_from([None, TOOL_SCHEMAS]),
    previews=st.booleans(),
    strict_sse=st.booleans(),
)
CUTS = st.lists(st.floats(0.0, 1.0), max_size=30)


# ---------------------------------------------------------------------------------- running


class Hang(BaseException):
    """One case ran past the guard (a BaseException, so no ``except Exception`` hides it)."""


class InvariantError(AssertionError):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("the case ran past the time guard")


@dataclass(slots=True)
class Outcome:
    events: list[Event]
    error: str | None


def feed(
    options: Options, parts: list[bytes] | None, chunks: list[object] | None = None
) -> tuple[Outcome, ChatStream]:
    """Feed bytes (or parsed chunks); only ProtocolError may escape the feeding calls."""
    stream = options.stream()
    events: list[Event] = []
    error: str | None = None
    try:
        if chunks is not None:
            for chunk in chunks:
                if not isinstance(chunk, dict):
                    chunk = {"not a dict": chunk}
                events += stream.receive_chunk(chunk)
        else:
            for part in parts or []:
                events += stream.receive_data(part)
    except ProtocolError as raised:
        error = type(raised).__name__
        try:
            stream.receive_data(b"data: {}\n\n")
        except ProtocolError:
            pass
        else:
            raise InvariantError("broken-stays-broken", "a broken stream accepted data") from None
    events += stream.receive_eof()
    if stream.receive_eof() != []:
        raise InvariantError("eof-twice", "a second receive_eof returned events")
    return Outcome(events, error), stream


def check_events(events: list[Event], stream: ChatStream) -> None:
    if not events or not isinstance(events[-1], StreamEnded):
        raise InvariantError("ended-last", f"last event is {events[-1:]!r}")
    if sum(isinstance(event, StreamEnded) for event in events) != 1:
        raise InvariantError("ended-once", "StreamEnded more than once")
    started: set[tuple[int, str]] = set()
    sealed: set[tuple[int, str]] = set()
    fragments: dict[tuple[int, str], list[str]] = {}
    for event in events:
        if isinstance(event, ToolCallStarted):
            key = (event.choice, event.id)
            if key in started:
                raise InvariantError("call-order", f"{event.id} started twice")
            started.add(key)
            fragments[key] = []
        elif isinstance(event, ToolCallArgumentsDelta | ToolCallPreview):
            key = (event.choice, event.id)
            if key not in started or key in sealed:
                raise InvariantError("call-order", f"{type(event).__name__} outside {event.id}")
            if isinstance(event, ToolCallArgumentsDelta):
                fragments[key].append(event.fragment)
        elif isinstance(event, ToolCallReady | ToolCallInvalid):
            key = (event.choice, event.id)
            if key not in started or key in sealed:
                raise InvariantError("call-order", f"{type(event).__name__} for {event.id}")
            sealed.add(key)
            if isinstance(event, ToolCallReady):
                joined = "".join(fragments[key])
                # a call with no argument text is ready with "{}" (documented in the core)
                if event.arguments != joined and not (
                    event.arguments == "{}" and not joined.strip()
                ):
                    raise InvariantError(
                        "ready-arguments", f"{event.arguments[:60]!r} != {joined[:60]!r}"
                    )
                # the standard library's parser: the core keeps integers past 64 bits exact
                if json.loads(event.arguments) != event.parsed or not isinstance(
                    event.parsed, dict
                ):
                    raise InvariantError("ready-parsed", "parsed differs from the arguments")
    if started != sealed:
        raise InvariantError("call-sealed", f"never sealed: {sorted(started - sealed)[:3]}")
    orjson.dumps(stream.completion())
    orjson.dumps(stream.message())


def run_case(options: Options, body: bytes, fractions: list[float]) -> str | None:
    """Feed ``body`` whole and in pieces; check everything. Returns the error kind, if any."""
    split, stream = feed(options, pieces(body, fractions))
    check_events(split.events, stream)
    whole, _ = feed(options, [body])
    # and one event per read, as a proxy reads: those reads take the template before the decoder
    by_event, _ = feed(options, split_events(body))
    for name, other in (("split-invariance", split), ("event-read-invariance", by_event)):
        if whole.events != other.events:
            first = next(
                (
                    i
                    for i, (a, b) in enumerate(zip(whole.events, other.events, strict=False))
                    if a != b
                ),
                min(len(whole.events), len(other.events)),
            )
            raise InvariantError(
                name,
                f"whole: {len(whole.events)} events, the other feed: {len(other.events)}; first "
                f"difference at {first}: {whole.events[first : first + 1]!r} "
                f"vs {other.events[first : first + 1]!r}",
            )
    return split.error


# ---------------------------------------------------------------------------------- fuzzing


@dataclass(slots=True)
class Finding:
    signature: str
    count: int
    example: str
    trace: str


@dataclass(slots=True)
class Report:
    cases: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    findings: dict[str, Finding] = field(default_factory=dict)
    slowest: float = 0.0
    directory: Path | None = None

    def record(self, target: str, data: bytes, describe: str, failure: BaseException) -> None:
        if isinstance(failure, InvariantError):
            signature = f"invariant {failure.name}"
        else:
            frames = traceback.extract_tb(failure.__traceback__)
            ours = [frame for frame in frames if "streamproxy" in frame.filename] or frames
            where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
            signature = f"{type(failure).__name__} at {where}"
        finding = self.findings.get(signature)
        if finding is not None:
            finding.count += 1
            return
        trace = "".join(traceback.format_exception(failure))
        self.findings[signature] = Finding(signature, 1, describe, trace)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(signature.encode()).hexdigest()[:12]
            (self.directory / f"{target}-{name}.bin").write_bytes(data)
            (self.directory / f"{target}-{name}.txt").write_text(
                f"{signature}\n{describe}\n\n{trace}"
            )
        print(f"  FINDING [{target}] {signature}\n{trace}", file=sys.stderr)


def guarded(
    report: Report, target: str, guard: float, data: bytes, describe: str, run: Callable[[], Any]
) -> None:
    report.cases[target] += 1
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, guard)
    try:
        kind = run()
        if kind:
            report.errors[kind] += 1
    except (Exception, Hang) as failure:
        report.record(target, data, describe, failure)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        report.slowest = max(report.slowest, time.perf_counter() - started)


def fuzz(target: str, cases: int, report: Report, guard: float, seed: int | None) -> None:
    bodies = recording_bodies()
    names = sorted(bodies)
    config = settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )

    if target == "bytes":
        noise = st.one_of(
            st.binary(max_size=2000),
            st.lists(st.sampled_from(SSE_TOKENS) | st.binary(max_size=6), max_size=120).map(
                b"".join
            ),
        )

        @config
        @given(body=noise, options=OPTIONS, fractions=CUTS)
        def case(body: bytes, options: Options, fractions: list[float]) -> None:
            guarded(
                report,
                target,
                guard,
                body,
                f"{options} cuts={fractions}",
                lambda: run_case(options, body, fractions),
            )

    elif target == "resplit":

        @config
        @given(name=st.sampled_from(names), options=OPTIONS, fractions=CUTS)
        def case(name: str, options: Options, fractions: list[float]) -> None:
            body = bodies[name]
            guarded(
                report,
                target,
                guard,
                body,
                f"{name} {options} cuts={fractions}",
                lambda: run_case(options, body, fractions),
            )

    elif target == "mutated":
        mutation = st.tuples(
            st.sampled_from(
                [
                    "delete",
                    "duplicate",
                    "overwrite",
                    "truncate",
                    "insert",
                    "after-string",
                    "repeat-event",
                ]
            ),
            st.floats(0.0, 1.0),
            st.integers(1, 64),
            st.binary(min_size=1, max_size=8)
            | st.sampled_from(SSE_TOKENS)
            | st.sampled_from([b" ", b"\t", b"\n", b"\r", b" \r\n", b"\n\n", b"\r\n\r\n"]),
            st.sampled_from([1, 2, 3, 5, 8, 40, 3000]),
        )

        @config
        @given(
            name=st.sampled_from(names),
            mutations=st.lists(mutation, min_size=1, max_size=4),
            options=OPTIONS,
            fractions=CUTS,
        )
        def case(
            name: str,
            mutations: list[tuple[str, float, int, bytes, int]],
            options: Options,
            fractions: list[float],
        ) -> None:
            body = mutate_bytes(bodies[name], mutations)
            guarded(
                report,
                target,
                guard,
                body,
                f"{name} {mutations} {options} cuts={fractions}",
                lambda: run_case(options, body, fractions),
            )

    else:
        edit = st.tuples(
            st.sampled_from(
                ["replace", "drop-key", "duplicate", "drop-chunk", "swap", "tool-field", "add-key"]
            ),
            st.floats(0.0, 1.0),
            st.floats(0.0, 1.0),
            JSON_VALUES,
        )

        @config
        @given(
            name=st.sampled_from(names),
            edits=st.lists(edit, min_size=1, max_size=4),
            options=OPTIONS,
            fractions=CUTS,
            as_chunks=st.booleans(),
        )
        def case(
            name: str,
            edits: list[tuple[str, float, float, object]],
            options: Options,
            fractions: list[float],
            as_chunks: bool,
        ) -> None:
            body, chunks = mutate_structure(bodies[name], edits)
            describe = f"{name} {edits!r} {options} cuts={fractions} as_chunks={as_chunks}"
            if as_chunks:

                def run() -> str | None:
                    outcome, stream = feed(options, None, chunks)
                    check_events(outcome.events, stream)
                    return outcome.error

                guarded(report, target, guard, body, describe, run)
            else:
                guarded(
                    report,
                    target,
                    guard,
                    body,
                    describe,
                    lambda: run_case(options, body, fractions),
                )

    if seed is not None:
        case = hypothesis_seed(seed)(case)
    case()


def mutate_bytes(body: bytes, mutations: list[tuple[str, float, int, bytes, int]]) -> bytes:
    data = bytearray(body)
    for kind, where, length, noise, repeats in mutations:
        at = int(where * len(data))
        if kind == "delete":
            del data[at : at + length]
        elif kind == "duplicate":
            data[at:at] = data[at : at + length]
        elif kind == "overwrite":
            data[at : at + len(noise)] = noise
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = noise
        elif kind == "after-string":
            # after the closing quote of a string value, picked among them all: the edge of
            # the chunk template's string, where whitespace that holds a line end ends an SSE
            # line and orjson would skip it
            ends = [match.end() for match in STRING_END.finditer(data)]
            if ends:
                end = ends[min(int(where * len(ends)), len(ends) - 1)]
                data[end:end] = noise
        else:
            events = split_events(bytes(data))
            if events:
                index = min(int(where * len(events)), len(events) - 1)
                events[index:index] = [events[index]] * repeats
                data = bytearray(b"".join(events))
    return bytes(data)


def _payloads(body: bytes) -> list[object]:
    out: list[object] = []
    for event in split_events(body):
        for line in event.splitlines():
            if line.startswith(b"data:"):
                data = line[5:].strip()
                try:
                    out.append(orjson.loads(data))
                except orjson.JSONDecodeError:
                    out.append(data.decode("utf-8", "replace"))
    return out


def _paths(value: object, prefix: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _set(root: object, path: tuple[object, ...], value: object, *, delete: bool = False) -> object:
    if not path:
        return value
    parent: Any = root
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return root


def mutate_structure(
    body: bytes, edits: list[tuple[str, float, float, object]]
) -> tuple[bytes, list[object]]:
    """Mutate the chunks of ``body`` as JSON; return the re-encoded body and the chunks."""
    chunks = _payloads(body)
    for kind, where, which, value in edits:
        if not chunks:
            break
        index = min(int(where * len(chunks)), len(chunks) - 1)
        chunk = chunks[index]
        if kind == "duplicate":
            chunks.insert(index, copy.deepcopy(chunk))
        elif kind == "drop-chunk":
            del chunks[index]
        elif kind == "swap":
            other = min(int(which * len(chunks)), len(chunks) - 1)
            chunks[index], chunks[other] = chunks[other], chunks[index]
        elif kind == "add-key" and isinstance(chunk, dict):
            chunk[str(value)[:8] if not isinstance(value, str) else value] = value
        elif kind == "tool-field":
            paths = [
                path
                for path in _paths(chunk)
                if path and path[-1] in ("index", "id", "name", "arguments", "type", "tool_calls")
            ]
            if paths:
                path = paths[min(int(which * len(paths)), len(paths) - 1)]
                chunks[index] = _set(chunk, path, value)
        else:
            paths = [path for path in _paths(chunk) if path]
            if not paths:
                chunks[index] = value
                continue
            path = paths[min(int(which * len(paths)), len(paths) - 1)]
            if kind == "drop-key":
                chunks[index] = _set(chunk, path, None, delete=True)
            else:
                chunks[index] = _set(chunk, path, value)
    frames = []
    for chunk in chunks:
        # the standard library's encoder: integers past 64 bits stay exact (orjson refuses them)
        text = chunk if isinstance(chunk, str) else json.dumps(chunk, separators=(",", ":"))
        data = text.encode("utf-8", "surrogatepass")
        frames.append(b"data: " + data + b"\n\n")
    return b"".join(frames), chunks


# ---------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="total cases (default 100k)")
    parser.add_argument("--target", choices=("all", *TARGETS), default="all")
    parser.add_argument("--guard", type=float, default=10.0, help="seconds per case before a hang")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (reproducible)")
    parser.add_argument(
        "--findings",
        type=Path,
        default=Path(tempfile.gettempdir()) / "streamproxy-fuzz-findings",
        help="where the first input and traceback of each finding go",
    )
    parser.add_argument(
        "--reproduce",
        type=Path,
        metavar="FILE",
        help="run the checks on one saved input (fed whole and in 4 KiB pieces) and exit",
    )
    parser.add_argument("--tiny-limits", action="store_true", help="with --reproduce")
    args = parser.parse_args()
    if args.reproduce:
        body = args.reproduce.read_bytes()
        options = Options(
            limits=TINY_LIMITS if args.tiny_limits else None, tools=None, previews=True
        )
        fractions = [i / len(body) for i in range(4096, len(body), 4096)] if body else []
        print(f"{args.reproduce}: {len(body):,} bytes, {options}")
        print("documented error:", run_case(options, body, fractions))
        return 0
    signal.signal(signal.SIGALRM, _on_alarm)
    targets = TARGETS if args.target == "all" else (args.target,)
    report = Report(directory=args.findings)
    started = time.perf_counter()
    for target in targets:
        target_started = time.perf_counter()
        fuzz(target, args.cases // len(targets), report, args.guard, args.seed)
        seconds = time.perf_counter() - target_started
        print(f"{target}: {report.cases[target]:,} cases in {seconds:.0f} s", file=sys.stderr)
    elapsed = time.perf_counter() - started
    total = sum(report.cases.values())
    print(
        f"{total:,} cases in {elapsed:.0f} s ({total / elapsed:.0f}/s) on "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print("cases per target: " + ", ".join(f"{k} {v:,}" for k, v in report.cases.items()))
    print("documented errors raised: " + ", ".join(f"{k} {v:,}" for k, v in report.errors.items()))
    print(f"slowest case: {report.slowest * 1000:.0f} ms (guard {args.guard:g} s)")
    if not report.findings:
        print("findings: none")
        return 0
    print(f"findings: {len(report.findings)}")
    for finding in report.findings.values():
        print(f"- {finding.signature} ({finding.count} cases); first: {finding.example[:300]}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
