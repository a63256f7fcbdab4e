"""A fuzz of the proxy's HTTP API against a real ``streamproxy serve`` process, on demand.

::

    python -m fuzz.fuzz_api --cases 10000            # the full run (benchmarks/README.md)
    python -m fuzz.fuzz_api --cases 2000 --seed 7 --concurrency 8
    python -m fuzz.fuzz_api --reproduce /tmp/streamproxy-api-fuzz-findings/CASE.json

CI runs a short version (``tests/e2e/test_api_fuzz.py``).

Why Hypothesis and not schemathesis: the proxy serves no OpenAPI document (adding one is proxy
work, and a schema-driven generator mostly produces bodies the schema calls valid), while the
fields the proxy reads are few and known. Each strategy below starts from a valid request and
breaks one or more of exactly those fields, or breaks the HTTP framing around it.

The server: ``python -m streamproxy serve`` on 127.0.0.1 (``tests/e2e/processes.py``), the
offline demo (its bundled recordings replayed in process with their pacing, so the whole tool
loop runs: server tools, client tools, in-band upstream errors), with client keys on, a 1 MiB
request limit, the memory state store, and the server tools of ``fuzz/api_tools.py`` (the
demo's read-only ``get_weather`` and a write tool, so approvals are issued and answered).

Cases (Hypothesis generates each one; the family is chosen by Hypothesis too):

- ``chat``: ``POST /v1/chat/completions``, streaming and not, every field the proxy reads
  (``model``, ``messages`` and their roles, contents, parts, ``tool_calls``, ``tool_call_id``,
  ``tools``, ``tool_choice``, ``n``, ``stream``, ``stream_options``, ``max_tokens``,
  ``thinking``, ``reasoning_effort``, the ``streamproxy`` extension: ``tool_progress``,
  ``tool_previews``, ``approvals``) kept valid, dropped or replaced by any JSON value;
- ``responses``: ``POST /v1/responses`` the same way (``input`` as text or items of every type,
  parts, ``instructions``, ``tools``, ``tool_choice``, ``store``, ``metadata``,
  ``previous_response_id``, ``text``, ``reasoning``, unknown and refused fields);
- ``approval``: forged ``spw2.`` tool call ids (made up, cut, with odd expiry digits) answered
  by ``tool`` messages, and chat approval answers to made-up approval questions;
- ``approval_flow``: two requests: a real approval is asked for (chat or client mode), then
  answered (yes, no, anything, the id or arguments changed, the answer sent twice);
- ``json``: not JSON, truncated JSON, ``NaN``, invalid UTF-8, lone surrogates, duplicate keys,
  JSON nested up to 1,100 levels, bodies past the request limit;
- ``route``: ``GET /v1/models``, ``/metrics``, ``/healthz``, ``/``, unknown paths, every
  method (also on the POST routes), and queries;
- ``headers``: every case's headers are also fuzzed: ``Authorization`` forms (missing, other
  schemes, case, spaces, a wrong or longer key, non-ASCII), ``Content-Type``, a
  ``Content-Length`` that lies (longer or shorter than the body), ``Transfer-Encoding:
  chunked``, huge headers (up to 64 KiB) and many headers.

Checked for every response:

- the status is a documented one (``DOCUMENTED_STATUSES`` in ``api_checks.py``): 200; 400
  (``RequestError``), 401 (``AuthenticationError``; client keys are on), 404 and 405 (unknown
  routes and methods, ``app.py``), 413 (``RequestTooLargeError``); 502 for the upstream's
  failures (``UpstreamError``, ``ProtocolError``, ``IncompleteStreamError``,
  ``ToolRoundsExceededError``); an upstream's own 4xx/5xx status passed through (here the
  demo's recorded in-band error, ``code: 503``, answers 503 before the first byte); 504 an
  upstream timeout; 429 (``StateLimitError``) and 503 (``StateUnavailableError``) from the
  state store. Never 500 (``InternalError`` or an unhandled exception), never 499 (what the
  proxy records for a client that left: no client sees it). A request that breaks HTTP itself
  (a lying ``Content-Length``, oversized headers) may instead get uvicorn's own plain-text 400
  or a closed connection: that answer comes from the HTTP server before the app sees anything;
- a JSON body parses; an error body is OpenAI-shaped (``{"error": {"message": str, "type":
  str, "code": ...}}``); a chat answer is a ``chat.completion``, a Responses answer a
  ``response``, ``/v1/models`` a ``list``, ``/healthz`` ``{"status": "ok"}``;
- an SSE body is well framed, every ``data:`` is JSON (or ``[DONE]``), and it ends with
  ``[DONE]`` or one error frame (chat), or with ``response.completed``, ``response.incomplete``
  or ``response.failed`` (Responses); nothing follows the end;
- the client key never appears in a response;
- no case runs past ``--guard`` seconds (a hang), the server never exits (a crash), and its
  RSS (``/proc/PID/status``) stays under ``--rss-bound`` MiB above its size after warm-up;
  ``/healthz`` still answers at the end.

Findings are grouped by signature (status, check, path); the first case of each is written to
``--findings`` as JSON, which ``--reproduce`` sends again (to a fresh server) and checks.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fuzz.api_cases import CLIENT_KEY, MAX_REQUEST_SIZE, OTHER_CLIENT_KEY, Case, generate
from fuzz.api_checks import Expectation, Finding, check_audit, run_case, send

REPO = Path(__file__).resolve().parents[1]
KEYS_ENV = "STREAMPROXY_FUZZ_CLIENT_KEYS"
MIB = 1024 * 1024

# Findings known and not fixed yet (each would be a strict xfail in
# tests/proxy/test_fuzz_findings.py). The first full run's seven findings are fixed, and their
# reproductions in that file now pass.
KNOWN_TRACEBACKS: tuple[str, ...] = ()
"""Server tracebacks (``server_errors`` signatures) of known findings."""
KNOWN_FINDINGS: tuple[str, ...] = ()
"""Finding signatures (other than 500s, counted against ``KNOWN_TRACEBACKS``) already known."""


# ------------------------------------------------------------------------------ server


@dataclass(slots=True)
class Memory:
    """RSS samples of the server process, taken by a thread every ``interval`` seconds."""

    pid: int
    interval: float = 0.2
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def rss(self) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.rss())

    @contextmanager
    def sampling(self) -> Iterator[Memory]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


@contextmanager
def serving(directory: Path) -> Iterator[tuple[tuple[str, int], subprocess.Popen[str], Any]]:
    """A real ``streamproxy serve`` (offline demo, client keys on, the fuzz's tools)."""
    sys.path.insert(0, str(REPO))
    from tests.e2e.processes import Process

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DEEPSEEK_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT")
    }
    env.update({KEYS_ENV: f"{CLIENT_KEY},{OTHER_CLIENT_KEY}", "PYTHONPATH": str(REPO)})
    arguments = [
        "serve",
        "--port",
        "0",
        "--client-keys-env",
        KEYS_ENV,
        "--max-request-size",
        str(MAX_REQUEST_SIZE),
        "--state",
        "memory://",
        "--tools",
        "fuzz.api_tools:TOOLS",
    ]
    process = Process(arguments, cwd=directory, env=env)
    try:
        host, port = urlsplit(process.url).hostname or "", urlsplit(process.url).port or 0
        yield (host, port), process.process, process
    finally:
        process.terminate()


def server_errors(log: str) -> Counter[str]:
    """The server's tracebacks by signature: the exception and its last frame in the package."""
    found: Counter[str] = Counter()
    for block in log.split("Traceback (most recent call last):")[1:]:
        where = "?"
        for line in block.splitlines():
            match = re.match(r'\s*File "(.*)", line (\d+), in (\S+)', line)
            if match and "/streamproxy/" in match[1]:
                where = f"{Path(match[1]).name}:{match[2]} ({match[3]})"
            elif match is None and line and not line[0].isspace():
                found[f"{line.strip()[:160]} at {where}"] += 1
                break
    return found


# -------------------------------------------------------------------------------- runs


@dataclass(slots=True)
class Findings:
    by_signature: dict[str, tuple[int, Case, str]] = field(default_factory=dict)
    directory: Path | None = None

    def add(self, case: Case, check: str, detail: str) -> None:
        signature = f"{check} {case.family} {urlsplit(case.path).path}"
        if signature in self.by_signature:
            count, first, first_detail = self.by_signature[signature]
            self.by_signature[signature] = (count + 1, first, first_detail)
            return
        self.by_signature[signature] = (1, case, detail)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(signature.encode()).hexdigest()[:12]
            (self.directory / f"{case.family}-{name}.json").write_text(case.to_json())
            (self.directory / f"{case.family}-{name}.txt").write_text(
                f"{signature}\n{detail}\n\n{case.describe()}\n"
            )
        print(
            f"  FINDING {signature}: {detail[:300]}\n    {case.describe()[:600]}", file=sys.stderr
        )


@dataclass(slots=True)
class RunResult:
    cases: int
    seconds: float
    statuses: Counter[int]
    families: Counter[str]
    findings: Findings
    rss_start: int
    rss_after_warmup: int
    rss_max: int
    rss_end: int
    slowest: float
    server_errors: Counter[str] = field(default_factory=Counter)
    family_statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    def unexplained(self) -> list[str]:
        """What the run found beyond the known findings (``KNOWN_TRACEBACKS``,
        ``KNOWN_FINDINGS``; reproduced in ``tests/proxy/test_fuzz_findings.py``): new finding
        signatures, new server tracebacks, and more 500s than known tracebacks explain."""
        problems = [
            signature
            for signature in self.findings.by_signature
            if not signature.startswith("status-500 ")
            and not any(re.search(known, signature) for known in KNOWN_FINDINGS)
        ]
        known_tracebacks = 0
        for signature, count in self.server_errors.items():
            if any(re.search(known, signature) for known in KNOWN_TRACEBACKS):
                known_tracebacks += count
            else:
                problems.append(f"server traceback: {signature}")
        explained = known_tracebacks - self.server_errors_without_a_response()
        if self.statuses[500] > explained:
            problems.append(f"{self.statuses[500]} answers 500, {explained} known causes")
        return problems

    def server_errors_without_a_response(self) -> int:
        """Known tracebacks whose client was already gone (they answer nobody)."""
        return sum(
            count
            for signature, count in self.server_errors.items()
            if signature.startswith("starlette.requests.ClientDisconnect")
        )


async def fuzz_cases(
    cases_: list[Case],
    address: tuple[str, int],
    process: subprocess.Popen[str],
    *,
    guard: float,
    concurrency: int,
    findings: Findings,
    expectations: list[Expectation],
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Counter[tuple[str, int]], float]:
    statuses: Counter[tuple[str, int]] = Counter()
    slowest = 0.0
    semaphore = asyncio.Semaphore(concurrency)
    done = 0

    async def one(case: Case) -> None:
        nonlocal slowest, done
        async with semaphore:
            if process.poll() is not None:
                return
            started = time.perf_counter()
            try:
                seen, expected = await asyncio.wait_for(run_case(case, address), guard)
                statuses.update((case.family, status) for status in seen)
                expectations.extend(expected)
            except Finding as finding:
                findings.add(case, finding.check, finding.detail)
                if finding.status is not None:
                    statuses[case.family, finding.status] += 1
            except TimeoutError:
                findings.add(case, "hang", f"no complete answer within {guard:g} s")
            except Exception as error:  # the harness's own failure: reported like a finding
                findings.add(case, f"harness-{type(error).__name__}", repr(error)[:500])
            slowest = max(slowest, time.perf_counter() - started)
            if process.poll() is not None:
                findings.add(case, "crash", f"the server exited with {process.returncode}")
            done += 1
            if on_progress is not None:
                on_progress(done)

    await asyncio.gather(*(one(case) for case in cases_))
    return statuses, slowest


def run(
    count: int,
    *,
    seed: int | None = None,
    guard: float = 30.0,
    concurrency: int = 16,
    findings_directory: Path | None = None,
    quiet: bool = False,
) -> RunResult:
    """Generate ``count`` cases, send them to a fresh server, check every answer."""
    started = time.perf_counter()
    all_cases = generate(count, seed)
    if not quiet:
        print(
            f"generated {len(all_cases):,} cases in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    findings = Findings(directory=findings_directory)
    expectations: list[Expectation] = []
    warmup = min(200, len(all_cases) // 10)
    with tempfile.TemporaryDirectory(prefix="streamproxy-api-fuzz-") as directory:
        with serving(Path(directory)) as (address, process, server):
            memory = Memory(process.pid)
            rss_start = memory.rss()
            with memory.sampling():
                statuses, slowest = asyncio.run(
                    fuzz_cases(
                        all_cases[:warmup],
                        address,
                        process,
                        guard=guard,
                        concurrency=concurrency,
                        findings=findings,
                        expectations=expectations,
                    )
                )
                rss_after_warmup = memory.rss()
                fuzz_started = time.perf_counter()

                def progress(done: int) -> None:
                    if not quiet and done % 1000 == 0:
                        rate = done / (time.perf_counter() - fuzz_started)
                        now = memory.rss() / MIB
                        print(f"  {done + warmup:,} cases ({rate:.0f}/s), RSS {now:.0f} MiB")

                more, slower = asyncio.run(
                    fuzz_cases(
                        all_cases[warmup:],
                        address,
                        process,
                        guard=guard,
                        concurrency=concurrency,
                        findings=findings,
                        expectations=expectations,
                        on_progress=progress,
                    )
                )
                statuses.update(more)
                slowest = max(slowest, slower)
                health = asyncio.run(send(Case("final", "GET", "/healthz", (), b""), address))
                if health.status != 200:
                    findings.add(
                        Case("final", "GET", "/healthz", (), b""), "unhealthy", repr(health)
                    )
            rss_end = memory.rss()
            samples = [sample for sample in memory.samples if sample] or [rss_end]
        log = server.log()
        errors = server_errors(log)
        for expectation in expectations:
            try:
                check_audit(expectation, log)
            except Finding as finding:
                findings.add(expectation.case, finding.check, finding.detail)
    return RunResult(
        cases=len(all_cases),
        seconds=time.perf_counter() - started,
        statuses=Counter(status for (_, status) in statuses.elements()),
        family_statuses=statuses,
        families=Counter(case.family for case in all_cases),
        findings=findings,
        rss_start=rss_start,
        rss_after_warmup=rss_after_warmup,
        rss_max=max(samples),
        rss_end=rss_end,
        slowest=slowest,
        server_errors=errors,
    )


def reproduce(path: Path, guard: float) -> int:
    case = Case.from_json(path.read_text())
    print(case.describe())
    with (
        tempfile.TemporaryDirectory(prefix="streamproxy-api-fuzz-") as directory,
        serving(Path(directory)) as (address, _, server),
    ):
        try:
            statuses, expectations = asyncio.run(asyncio.wait_for(run_case(case, address), guard))
        except Finding as finding:
            print(f"FINDING {finding.check}: {finding.detail}")
            print(server.log()[-3000:])
            return 1
        except TimeoutError:
            print(f"FINDING hang: no complete answer within {guard:g} s")
            return 1
        log = server.log()
    try:
        for expectation in expectations:
            check_audit(expectation, log)
    except Finding as finding:
        print(f"FINDING {finding.check}: {finding.detail}")
        return 1
    for signature, count in server_errors(log).items():
        print(f"server traceback ({count}x): {signature}")
    print(f"passes: statuses {statuses}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases (default 10,000)")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (reproducible)")
    parser.add_argument("--guard", type=float, default=30.0, help="seconds per case before a hang")
    parser.add_argument("--concurrency", type=int, default=16, help="cases in flight at once")
    parser.add_argument(
        "--rss-bound",
        type=float,
        default=128.0,
        metavar="MIB",
        help="largest RSS growth over the size after warm-up (default 128 MiB)",
    )
    parser.add_argument(
        "--findings",
        type=Path,
        default=Path(tempfile.gettempdir()) / "streamproxy-api-fuzz-findings",
        help="where the first case of each finding goes (JSON, for --reproduce)",
    )
    parser.add_argument(
        "--reproduce", type=Path, metavar="FILE", help="send one saved case and exit"
    )
    args = parser.parse_args()
    if args.reproduce:
        return reproduce(args.reproduce, args.guard)
    result = run(
        args.cases,
        seed=args.seed,
        guard=args.guard,
        concurrency=args.concurrency,
        findings_directory=args.findings,
    )
    growth = result.rss_max - result.rss_after_warmup
    print(
        f"{result.cases:,} cases in {result.seconds:.0f} s "
        f"({result.cases / result.seconds:.0f}/s), "
        f"concurrency {args.concurrency}, seed {args.seed}, on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(
        "cases per family: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.families.items()))
    )
    print("statuses: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.statuses.items())))
    for family in sorted(result.families):
        seen = sorted((s, n) for (f, s), n in result.family_statuses.items() if f == family)
        print(f"  {family}: " + ", ".join(f"{status} {count:,}" for status, count in seen))
    print(
        f"server RSS: {result.rss_start / MIB:.1f} MiB at start, "
        f"{result.rss_after_warmup / MIB:.1f} after warm-up, {result.rss_max / MIB:.1f} max, "
        f"{result.rss_end / MIB:.1f} at the end "
        f"(growth {growth / MIB:.1f} MiB, bound {args.rss_bound:g})"
    )
    print(f"slowest case: {result.slowest:.1f} s (guard {args.guard:g} s)")
    failed = growth > args.rss_bound * MIB
    if failed:
        print("RSS bound exceeded")
    for signature, count in result.server_errors.items():
        print(f"server traceback ({count}x): {signature}")
    print(f"findings: {len(result.findings.by_signature) or 'none'}")
    for signature, (count, case, detail) in result.findings.by_signature.items():
        print(f"- {signature} ({count} cases): {detail[:200]}\n    {case.describe()[:400]}")
    unexplained = result.unexplained()
    print(f"new (not in KNOWN_TRACEBACKS, KNOWN_FINDINGS): {unexplained or 'none'}")
    return 1 if failed or unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
