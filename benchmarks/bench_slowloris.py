"""Slowloris against ``streamproxy serve``: 1,000 connections that dribble their request heads.

A real ``streamproxy serve`` (the offline demo, on 127.0.0.1 only) is attacked from a separate
process (this module with ``--attacker``): it keeps ``--connections`` connections open, each
sending a partial request head and then one header byte every second, and opens a new one as
soon as the server closes one (a real slowloris does). Meanwhile this process sends one normal
request (``GET /healthz``, a new connection each time) every 0.2 s and samples the server's RSS.
Everything is bounded by ``--seconds`` per scenario.

Scenarios:

- **default limits** (``--header-timeout 10``, ``--max-connections 2048``): the 1,000 dribblers
  fit under the cap; each is answered 408 and closed at the head deadline.
- **cap below the attack** (``--max-connections 256``): each new connection evicts the one that
  has waited longest for its head, so normal requests still get in.
- **no head deadline to speak of** (``--header-timeout 3600``), for comparison: what uvicorn alone
  does (every dribbler stays open for the whole run).

Run::

    .venv/bin/python -m benchmarks.bench_slowloris                 # both scenarios, 20 s each
    .venv/bin/python -m benchmarks.bench_slowloris --seconds 30 --connections 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import orjson

PARTIAL_HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
)
DRIBBLE_EVERY = 1.0
PROBE_EVERY = 0.2


# ---------------------------------------------------------------------------------- the attacker


@dataclass
class AttackReport:
    opened: int = 0
    closed_by_server: int = 0
    answered_408: int = 0
    closed_silently: int = 0
    open_at_end: int = 0
    lifetimes: list[float] = field(default_factory=list)


async def attack(host: str, port: int, connections: int, seconds: float) -> AttackReport:
    report = AttackReport()
    end = time.monotonic() + seconds

    async def slot() -> None:
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            report.opened += 1
            opened_at = time.monotonic()
            writer.write(PARTIAL_HEAD)
            closed = False
            received = b""
            while time.monotonic() < end:
                try:
                    data = await asyncio.wait_for(reader.read(4096), DRIBBLE_EVERY)
                except TimeoutError:
                    try:
                        writer.write(b"X")  # one more byte of a header line, never finished
                        await writer.drain()
                    except OSError:
                        closed = True
                        break
                    continue
                except OSError:
                    closed = True
                    break
                if not data:
                    closed = True
                    break
                received += data
            if closed:
                report.closed_by_server += 1
                report.lifetimes.append(time.monotonic() - opened_at)
                if received.startswith(b"HTTP/1.1 408"):
                    report.answered_408 += 1
                else:
                    report.closed_silently += 1
            else:
                report.open_at_end += 1
            writer.close()
            await asyncio.sleep(0.01)

    await asyncio.gather(*(slot() for _ in range(connections)))
    return report


def run_attacker(host: str, port: int, connections: int, seconds: float) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, connections + 256)), hard))
    report = asyncio.run(attack(host, port, connections, seconds))
    summary: dict[str, object] = {**report.__dict__}
    lifetimes = sorted(summary.pop("lifetimes"))  # type: ignore[call-overload]
    summary["life_median"] = statistics.median(lifetimes) if lifetimes else None
    summary["life_max"] = lifetimes[-1] if lifetimes else None
    print(orjson.dumps(summary).decode(), flush=True)  # small: the pipe is read at the end


# ---------------------------------------------------------------------------------- the measure


@dataclass
class Scenario:
    name: str
    flags: list[str]


@dataclass
class Result:
    scenario: Scenario
    attack: dict[str, object]
    probe_ms: list[float]
    probe_failures: int
    rss_idle_mib: float
    rss_peak_mib: float


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_server(flags: list[str], directory: Path) -> tuple[subprocess.Popen[str], str]:
    env = {key: value for key, value in os.environ.items() if key != "DEEPSEEK_API_KEY"}
    env["XDG_STATE_HOME"] = str(directory)
    arguments = [sys.executable, "-m", "streamproxy", "serve", "--port", "0", *flags]
    arguments += ["--log-level", "warning", "--state", "memory://"]
    process = subprocess.Popen(
        arguments, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on http://" not in line:
        process.kill()
        raise RuntimeError(f"serve did not start: {line!r}")
    return process, line.rsplit(" ", 1)[-1].strip()


def measure(scenario: Scenario, connections: int, seconds: float) -> Result:
    with tempfile.TemporaryDirectory() as directory:
        server, url = start_server(scenario.flags, Path(directory))
        try:
            time.sleep(0.5)
            rss_idle = rss_mib(server.pid)
            host, port = url.removeprefix("http://").rsplit(":", 1)
            attacker = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_slowloris", "--attacker", host, port,
                 str(connections), str(seconds)],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            probe_ms: list[float] = []
            failures = 0
            peak = rss_idle
            time.sleep(min(2.0, seconds / 4))  # let the attack fill its connections
            while attacker.poll() is None:
                started = time.perf_counter()
                try:
                    with httpx2.Client(timeout=5.0) as client:
                        response = client.get(f"{url}/healthz")
                    if response.status_code == 200:
                        probe_ms.append((time.perf_counter() - started) * 1000)
                    else:
                        failures += 1
                except httpx2.HTTPError:
                    failures += 1
                peak = max(peak, rss_mib(server.pid))
                time.sleep(PROBE_EVERY)
            output, _ = attacker.communicate(timeout=seconds + 30)
            report = orjson.loads(output.strip().splitlines()[-1])
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    return Result(scenario, report, probe_ms, failures, rss_idle, peak)


def table(results: list[Result], connections: int, seconds: float) -> str:
    lines = [
        f"{connections} dribbling connections for {seconds:g} s per scenario; one `GET /healthz` "
        f"on a new connection every {PROBE_EVERY:g} s during the attack "
        f"({platform.python_version()}, {os.cpu_count()} cores)",
        "",
        "| scenario | probes ok / failed | probe p50 / max ms | attacker connections opened | "
        "closed by the server (408 / silently) | life median / max s | open at the end | "
        "RSS idle / peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        report = result.attack
        median, longest = report["life_median"], report["life_max"]
        life = "-" if median is None else f"{median:.1f} / {longest:.1f}"
        probes = result.probe_ms
        p50 = f"{statistics.median(probes):.1f}" if probes else "-"
        worst = f"{max(probes):.1f}" if probes else "-"
        lines.append(
            f"| {result.scenario.name} | {len(probes)} / {result.probe_failures} | {p50} / {worst} "
            f"| {report['opened']} | {report['closed_by_server']} ({report['answered_408']} / "
            f"{report['closed_silently']}) | {life} | {report['open_at_end']} | "
            f"{result.rss_idle_mib:.0f} / {result.rss_peak_mib:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--attacker":
        host, port, connections, seconds = sys.argv[2:6]
        run_attacker(host, int(port), int(connections), float(seconds))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    scenarios = [
        Scenario("default limits (head 10 s, cap 2048)", []),
        Scenario("cap below the attack (--max-connections 256)", ["--max-connections", "256"]),
        Scenario(
            "no head deadline to speak of (--header-timeout 3600)", ["--header-timeout", "3600"]
        ),
    ]
    results = [measure(scenario, args.connections, args.seconds) for scenario in scenarios]
    print(table(results, args.connections, args.seconds))


if __name__ == "__main__":
    main()
