"""Slow, idle and too many client connections against a real ``streamproxy serve``.

The offline demo is the upstream (nothing else to start). Each case opens raw sockets on
127.0.0.1 that send part of a request and then nothing, and checks what the connection gets
(``408`` with an OpenAI-shaped body, a close, or ``503`` beyond ``--max-connections``) and that a
normal request is still answered. Every socket read has a timeout, so a server that never closes
a slow connection fails the case instead of hanging it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.e2e.processes import Process

pytestmark = pytest.mark.e2e

# Every read of a test socket gives up after this long (the deadlines under test are far shorter).
READ_TIMEOUT = 10.0
HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5


def serve(directory: Path, *extra: str, env: dict[str, str] | None = None) -> Process:
    environment = {
        key: value for key, value in os.environ.items() if key != "DEEPSEEK_API_KEY"
    }  # the offline demo: no key, no --upstream
    environment.update(env or {})
    arguments = ["serve", "--port", "0", "--log-level", "warning", "--state", "memory://"]
    return Process([*arguments, *extra], cwd=directory, env=environment)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


@contextmanager
def raw_connection(url: str, sent: bytes = b"") -> Iterator[socket.socket]:
    with socket.create_connection(address(url), timeout=READ_TIMEOUT) as sock:
        if sent:
            sock.sendall(sent)
        yield sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a read timeout fails the test)."""
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


def response_parts(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_served(url: str) -> None:
    """A normal request gets a normal answer."""
    response = httpx.get(f"{url}/healthz", timeout=READ_TIMEOUT)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


PARTIAL_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nX-Slow: "
HEAD_WITHOUT_BODY = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
)
# The app asks for the body at once, so uvicorn's "100 Continue" says the head was parsed.
HEAD_EXPECTING_CONTINUE = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nExpect: 100-continue\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("slow-clients")
    limits = ["--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)]
    with serve(directory, *limits) as process:
        yield process.url


def assert_408(raw: bytes, fragment: str) -> None:
    status, headers, body = response_parts(raw)
    assert status == 408
    assert headers["connection"] == "close"
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["code"] == "request_timeout"
    assert fragment in error["message"]


def test_a_dribbled_head_gets_408_at_the_deadline(guarded: str) -> None:
    with raw_connection(guarded, PARTIAL_HEAD) as sock:
        for piece in (b"a", b"b", b"c"):  # bytes received do not extend the deadline
            sock.sendall(piece)
        assert_served(guarded)  # answered while the slow head waits
        raw = read_until_closed(sock)
    assert_408(raw, "the request head did not arrive within 0.5 s")
    assert_served(guarded)


def test_an_idle_connection_is_closed_without_a_word(guarded: str) -> None:
    with raw_connection(guarded) as sock:
        assert read_until_closed(sock) == b""


def test_a_body_that_never_arrives_gets_408(guarded: str) -> None:
    with raw_connection(guarded, HEAD_WITHOUT_BODY) as sock:
        raw = read_until_closed(sock)
    assert_408(raw, "the request body did not arrive within 0.5 s")
    assert_served(guarded)


def test_a_keep_alive_connection_dribbling_its_next_head_is_closed(guarded: str) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n"
    with raw_connection(guarded, request) as sock:
        first = b""
        while b'{"status":"ok"}' not in first:
            data = sock.recv(65536)
            assert data, first
            first += data
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: pro")  # the next head, never finished
        raw = read_until_closed(sock)
    assert_408(raw, "the request head did not arrive")


def test_beyond_max_connections_busy_ones_get_a_503(tmp_path: Path) -> None:
    # two connections busy with a request (head in, body pending): the third gets 503
    with (
        serve(tmp_path, "--max-connections", "2", "--body-timeout", "30") as process,
        ExitStack() as stack,
    ):
        for _ in range(2):
            sock = stack.enter_context(raw_connection(process.url, HEAD_EXPECTING_CONTINUE))
            assert sock.recv(100).startswith(b"HTTP/1.1 100 ")  # its head is in: it is busy
        response = httpx.get(f"{process.url}/healthz", timeout=READ_TIMEOUT)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "code"}
        assert error["code"] == "too_many_connections"
        assert "--max-connections" in error["message"]
        stack.close()  # the busy clients leave: room again
        assert_served_when_room(process.url)
        assert "new ones get 503 (--max-connections 2" in process.terminate()


def assert_served_when_room(url: str) -> None:
    for _ in range(200):
        response = httpx.get(f"{url}/healthz", timeout=READ_TIMEOUT)
        if response.status_code == 200:
            return
    pytest.fail("never served again after the busy connections closed")


def test_at_the_cap_the_longest_waiting_slow_connection_makes_room(tmp_path: Path) -> None:
    # two dribbling connections fill --max-connections 2; a normal client is still answered,
    # and the older dribbler is the one closed for it
    with (
        serve(tmp_path, "--max-connections", "2", "--header-timeout", "30") as process,
        raw_connection(process.url, PARTIAL_HEAD) as oldest,
        raw_connection(process.url, PARTIAL_HEAD) as newer,
    ):
        oldest.sendall(b"x")
        newer.sendall(b"x")
        assert_served(process.url)
        assert read_until_closed(oldest) == b""  # evicted: closed, no response
        newer.settimeout(0.2)
        with pytest.raises(TimeoutError):
            newer.recv(1)  # still open, still waiting


def test_the_guard_works_in_every_worker(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "2", "--header-timeout", str(HEADER_TIMEOUT)) as process:
        for _ in range(4):  # the kernel spreads them over the workers
            with raw_connection(process.url, PARTIAL_HEAD) as sock:
                assert_408(read_until_closed(sock), "the request head did not arrive")
        assert_served(process.url)


# ------------------------------------------------------------------ binding beyond loopback


def test_a_non_loopback_address_without_client_keys_logs_a_warning(tmp_path: Path) -> None:
    # bound only: no traffic is sent to the non-loopback address
    with serve(tmp_path, "--host", "0.0.0.0") as process:
        assert process.url.startswith("http://0.0.0.0:")
        log = process.terminate()
    [line] = [line for line in log.splitlines() if "without client keys" in line]
    assert " WARNING " in line
    assert "--client-keys-env" in line


def test_no_warning_with_client_keys_or_on_loopback(tmp_path: Path) -> None:
    keys = {"PROXY_CLIENT_KEYS": "sk-client-1"}
    with serve(
        tmp_path, "--host", "0.0.0.0", "--client-keys-env", "PROXY_CLIENT_KEYS", env=keys
    ) as (process):
        assert process.url
        with_keys = process.terminate()
    with serve(tmp_path) as process:
        assert process.url
        loopback = process.terminate()
    assert "without client keys" not in with_keys + loopback
