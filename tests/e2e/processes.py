"""Real ``python -m streamproxy`` processes for end-to-end tests, always terminated.

``Process(["serve", "--upstream", url, "--port", "0"], cwd=..., env=...)`` starts a subcommand;
``url`` waits (bounded) for its first stdout line, ``... listening on http://HOST:PORT``, and is
that address (start several processes, then ask for their URLs: they start side by side).
Stderr goes to a file (a pipe nobody reads could fill up and block the process), readable with
``log()``. ``terminate()`` stops it (SIGTERM, then SIGKILL after 10 s) and returns the log; use
the process as a context manager, or in a fixture's ``finally``.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class Process:
    """A CLI process whose first stdout line names its URL; always terminated."""

    def __init__(self, arguments: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.log_path = cwd / f"{arguments[0]}-{time.monotonic_ns()}.stderr.log"
        # the state store's default path is under XDG_STATE_HOME: one per test directory
        env = {"XDG_STATE_HOME": str(cwd / "state"), **env}
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamproxy", *arguments],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The bound URL, once the process printed it (it is terminated if it never does)."""
        if self._url is None:
            try:
                self._url = self._read_url()
            except BaseException:
                self.terminate()
                raise
        return self._url

    def _read_url(self) -> str:
        assert self.process.stdout is not None
        line = ""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + START_TIMEOUT
            while not line and time.monotonic() < deadline and self.process.poll() is None:
                if selector.select(timeout=0.1):
                    line = self.process.stdout.readline()  # the CLI prints the URL once bound
        if "listening on http://" not in line:
            raise RuntimeError(f"process did not start: {line!r} {self.log()[-3000:]}")
        return line.rsplit(" ", 1)[-1].strip()

    def log(self) -> str:
        return self.log_path.read_text()

    def terminate(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        return self.log()

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.terminate()
