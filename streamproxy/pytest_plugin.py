"""pytest plugin: replay recorded streams into your httpx2 or ``openai`` clients (and record them).

Installed with streamproxy (entry point ``pytest11``). In the spirit of pytest-recording::

    import pytest

    @pytest.mark.streamproxy_cassette("weather")  # optional: default name is the test's name
    def test_weather(streamproxy_cassette):
        client = streamproxy_cassette.openai_client()  # openai.OpenAI on the cassette
        stream = client.chat.completions.create(model="deepseek-chat", messages=[...], stream=True)
        ...

    async def test_weather_async(streamproxy_cassette):
        client = streamproxy_cassette.async_openai_client()  # or .async_httpx_client(), .transport

The cassette lives at ``<test dir>/cassettes/<test module>/<name>.cassette.json`` (override the
``streamproxy_cassette_dir`` fixture to move it; an absolute marker path is used as is). In the
``none`` mode any format :func:`~streamproxy.cassette.read_cassette` reads can be replayed, VCR YAML
included.

Record modes, from ``--streamproxy-record-mode``, the ``streamproxy_record_mode`` ini option or
the marker's ``record_mode=`` (marker wins):

``none`` (default)
    Replay only; a missing cassette or a request that matches nothing fails the test.
``once``
    If the cassette exists, as ``none``. If not, every request goes to the real upstream and the
    cassette is written when the test ends.
``new`` (alias ``new_episodes``)
    Matching requests are replayed; the others go to the real upstream and are appended.
``all``
    Every request goes to the real upstream; the cassette is replaced by this run's recordings.

Matching is strict (method, path and normalised body, repeats in recorded order), even for a
one-interaction cassette. Keys are redacted before anything is written. The real upstream is
``httpx2.HTTPTransport()`` / ``httpx2.AsyncHTTPTransport()``; override the
``streamproxy_upstream_transport`` fixture to return another transport (or a ``(sync, async)``
pair). ``httpx_client()`` and ``async_httpx_client()`` are ``httpx2`` clients (what the ``openai``
3.x SDK takes); ``session.transport`` also fits a plain ``httpx`` client when replaying (with
httpx transports as the upstream fixture, when recording too). The marker also takes
``timing=`` and ``faults=`` (a :class:`~streamproxy.cassette.Faults`) to replay with recorded
pacing or damage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import httpx2
import pytest

from streamproxy.cassette.faults import Faults
from streamproxy.cassette.format import SUFFIX, Cassette, dump
from streamproxy.cassette.http import Timing
from streamproxy.cassette.http_libraries import AsyncBaseTransport, BaseTransport
from streamproxy.cassette.importers import read_cassette
from streamproxy.cassette.record import RecordTransport
from streamproxy.cassette.replay import ReplayTransport, recorded_from_httpx
from streamproxy.errors import CassetteError

if TYPE_CHECKING:
    import openai

RecordMode = Literal["none", "once", "new", "all"]
RECORD_MODES: tuple[str, ...] = ("none", "once", "new", "new_episodes", "all")
MARKER = "streamproxy_cassette"
READABLE_SUFFIXES = (".json", ".sse", ".yaml", ".yml", ".jsonl", ".txt")

AnyTransport = httpx2.BaseTransport | httpx2.AsyncBaseTransport
UpstreamTransports = AnyTransport | tuple[httpx2.BaseTransport, httpx2.AsyncBaseTransport]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("streamproxy", "streamproxy cassettes")
    group.addoption(
        "--streamproxy-record-mode",
        choices=RECORD_MODES,
        default=None,
        help="cassette record mode: none (default), once, new, all",
    )
    parser.addini(
        "streamproxy_record_mode", "default streamproxy cassette record mode", default="none"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(path=None, *, record_mode=None, timing='instant', faults=None): "
        "replay (or record) this test's streamproxy cassette",
    )


def normalise_mode(mode: str) -> RecordMode:
    """A record mode name (``new_episodes`` is accepted for ``new``).

    Raises:
        ValueError: an unknown mode.
    """
    if mode == "new_episodes":
        return "new"
    if mode not in RECORD_MODES:
        raise ValueError(f"unknown record mode {mode!r}; choose one of none, once, new, all")
    return cast(RecordMode, mode)


class CassetteSession:
    """One test's cassette: an httpx2 transport (sync and async) and clients built on it.

    Args:
        path: where the cassette is read from and written to.
        mode: the record mode (see the module docstring).
        upstream: the real transport(s) used when recording.
        timing, faults: as for :class:`~streamproxy.cassette.ReplayTransport`.
    """

    def __init__(
        self,
        path: Path,
        *,
        mode: RecordMode = "none",
        upstream: UpstreamTransports | None = None,
        timing: Timing = "instant",
        faults: Faults | None = None,
    ) -> None:
        self.path = path
        self.mode = mode
        self.has_file = path.exists()
        if mode in ("once", "new", "all") and not path.name.endswith(SUFFIX):
            raise CassetteError(f"{path}: recorded cassettes must be named *{SUFFIX}")
        if mode == "none" and not self.has_file:
            raise CassetteError(
                f"cassette {path} does not exist; record it with --streamproxy-record-mode=once"
            )
        existing = read_cassette(path) if self.has_file and mode != "all" else Cassette()
        self.is_recording = mode == "all" or (mode == "once" and not self.has_file) or mode == "new"
        self.recorded = Cassette(
            source=existing.source or f"recorded by the streamproxy pytest plugin for {path.name}"
        )
        self.replay = ReplayTransport(existing, timing=timing, faults=faults)
        self.replay.replayer.player.is_strict = True
        self.existing = existing
        sync_upstream, async_upstream = _split_upstream(upstream)
        self._sync_recorder = RecordTransport(sync_upstream, cassette=self.recorded)
        self._async_recorder = RecordTransport(async_upstream, cassette=self.recorded)
        self.transport = _SessionTransport(self)
        self._clients: list[httpx2.Client] = []

    @property
    def requests(self) -> list[Any]:
        """The requests the cassette answered (redacted ``RecordedRequest`` objects)."""
        return list(self.replay.replayer.received)

    def httpx_client(self, **options: Any) -> httpx2.Client:
        """An ``httpx2.Client`` on the cassette (closed when the test ends)."""
        client = httpx2.Client(transport=self.transport, **options)
        self._clients.append(client)
        return client

    def async_httpx_client(self, **options: Any) -> httpx2.AsyncClient:
        """An ``httpx2.AsyncClient`` on the cassette."""
        return httpx2.AsyncClient(transport=self.transport, **options)

    def openai_client(self, **options: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` on the cassette (``max_retries=0`` unless given)."""
        import openai

        options.setdefault("api_key", "sk-streamproxy-cassette")
        options.setdefault("max_retries", 0)
        return openai.OpenAI(http_client=self.httpx_client(), **options)

    def async_openai_client(self, **options: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` on the cassette (``max_retries=0`` unless given)."""
        import openai

        options.setdefault("api_key", "sk-streamproxy-cassette")
        options.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(http_client=self.async_httpx_client(), **options)

    def should_forward(self, request: httpx2.Request) -> bool:
        """Whether ``request`` goes to the real upstream (else it is replayed)."""
        if self.mode == "all" or (self.mode == "once" and not self.has_file):
            return True
        if self.mode == "new":
            candidate = recorded_from_httpx(request, request.read())
            return (
                self.replay.replayer.player.matcher(candidate, self.existing.interactions) is None
            )
        return False

    def finish(self) -> None:
        """Close the clients and write the cassette the mode asks for."""
        for client in self._clients:
            client.close()
        if not self.is_recording or not self.recorded.interactions:
            return
        if self.mode == "new":
            merged = Cassette(
                interactions=[*self.existing.interactions, *self.recorded.interactions],
                source=self.existing.source or self.recorded.source,
            )
            dump(merged, self.path)
        else:
            dump(self.recorded, self.path)


class _SessionTransport(BaseTransport, AsyncBaseTransport):
    def __init__(self, session: CassetteSession) -> None:
        self.session = session

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        if self.session.should_forward(request):
            return self.session._sync_recorder.handle_request(request)
        return self.session.replay.handle_request(request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        if self.session.should_forward(request):
            return await self.session._async_recorder.handle_async_request(request)
        return await self.session.replay.handle_async_request(request)


def _split_upstream(
    upstream: UpstreamTransports | None,
) -> tuple[AnyTransport, AnyTransport]:
    if upstream is None:
        return httpx2.HTTPTransport(), httpx2.AsyncHTTPTransport()
    if isinstance(upstream, tuple):
        return upstream
    return upstream, upstream


@pytest.fixture
def streamproxy_cassette_dir(request: pytest.FixtureRequest) -> Path:
    """Where this module's cassettes live: ``<test dir>/cassettes/<module name>``."""
    module = Path(str(request.node.fspath))
    return module.parent / "cassettes" / module.stem


@pytest.fixture
def streamproxy_upstream_transport() -> UpstreamTransports | None:
    """The real transport used when recording; ``None`` means httpx2's default transports."""
    return None


@pytest.fixture
def streamproxy_cassette(
    request: pytest.FixtureRequest,
    streamproxy_cassette_dir: Path,
    streamproxy_upstream_transport: UpstreamTransports | None,
) -> Iterator[CassetteSession]:
    """This test's :class:`CassetteSession` (see the module docstring)."""
    marker = request.node.get_closest_marker(MARKER)
    args = marker.args if marker else ()
    kwargs = dict(marker.kwargs) if marker else {}
    name = str(args[0]) if args else request.node.name
    path = Path(name)
    if not path.is_absolute():
        path = streamproxy_cassette_dir / path
    if path.suffix not in READABLE_SUFFIXES:
        path = path.with_name(path.name + SUFFIX)
    mode_name = (
        kwargs.pop("record_mode", None)
        or request.config.getoption("--streamproxy-record-mode")
        or request.config.getini("streamproxy_record_mode")
    )
    timing = kwargs.pop("timing", "instant")
    faults = kwargs.pop("faults", None)
    if kwargs:
        raise TypeError(f"unknown {MARKER} marker arguments: {sorted(kwargs)}")
    session = CassetteSession(
        path,
        mode=normalise_mode(str(mode_name)),
        upstream=streamproxy_upstream_transport,
        timing=timing,
        faults=faults,
    )
    yield session
    session.finish()
