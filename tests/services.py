"""Outside services for tests: a real ``redis-server`` on 127.0.0.1.

When ``redis-server`` is not installed the tests that need it skip with the command that
installs it, except under ``CI=true``, where they fail (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

INSTALL_REDIS = "apt-get install -y redis-server"


def require_redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = f"redis-server is not installed: {INSTALL_REDIS}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT``: a private redis-server for this session, always stopped."""
    binary = require_redis_server()
    directory = tmp_path_factory.mktemp("redis")
    for _ in range(3):  # another process may take the free port before redis binds it
        port = free_port()
        log = (directory / f"redis-{port}.log").open("wb")
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if _wait_for_redis(port, process):
                yield f"redis://127.0.0.1:{port}"
                return
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
    output = "\n".join(p.read_text(errors="replace") for p in directory.glob("*.log"))
    pytest.fail(f"redis-server did not start:\n{output}")


def _wait_for_redis(port: int, process: subprocess.Popen[bytes]) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        return False
    finally:
        client.close()
