"""The upstream adapter: POST ``URL/chat/completions`` with httpx and hand back the raw bytes.

``Upstream.open_chat`` returns only once the upstream answered 2xx; before that it retries
429, 500 and 503 answers and connection failures (refused, reset, a connect timeout: the request
never reached the model) with exponential backoff, honouring ``Retry-After`` up to a ceiling. A
read timeout while waiting for the response head is not retried: the upstream may be computing
the answer, and a second request would pay for it twice. The whole wait (every attempt and every
backoff) is bounded by ``timeout``: a retry that could not start before it is not made, and the
last error goes to the caller. Every failure becomes an ``UpstreamError`` carrying the
upstream's status and error body (with the API key scrubbed out); a 2xx answer whose body is
JSON (an error some gateways send under 200) is one too, with status 502. Once bytes flow,
nothing is retried: ``UpstreamResponse.aiter_bytes`` maps transport failures to
``UpstreamError`` and the caller decides what the client sees.

The connection itself is ``Http1Transport`` (``http1.py``: HTTP/1.1 parsed in C, the body handed
on one piece per read, not one per HTTP chunk), or httpx2's own transport when the environment
names a proxy for the upstream (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``; ``NO_PROXY`` is
honoured). Any ``httpx2.AsyncBaseTransport`` can be injected instead (a cassette replay,
``httpx2.MockTransport``).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx2
import orjson

from streamproxy.errors import UpstreamError
from streamproxy.proxy.content_encoding import BoundedDecoding
from streamproxy.proxy.http1 import Http1Transport
from streamproxy.redaction import Redactor

__all__ = [
    "IdleBoundedReads",
    "RetryPolicy",
    "Upstream",
    "UpstreamHooks",
    "UpstreamResponse",
    "connection_transport",
    "is_deepseek_url",
]

# Statuses worth a second try: rate limited, and the two "try again" server errors.
RETRY_STATUSES = frozenset({429, 500, 503})
# An error body is read for its message only; a larger one is cut.
_MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how long to retry before the first byte."""

    retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0
    """A ``Retry-After`` longer than this is not waited for: the error goes to the client."""

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based); None: do not retry."""
        if attempt > self.retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        backoff: float = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)


class UpstreamHooks(Protocol):
    """What one request's telemetry adds to its upstream calls (``telemetry.py``)."""

    def request_headers(self) -> Mapping[str, str]:
        """Extra headers for each attempt (the W3C ``traceparent``)."""
        ...

    def retrying(self, attempt: int, error: UpstreamError) -> None: ...

    def failed_upstream(self, error: UpstreamError) -> None: ...

    def response_closed(self) -> None: ...


def is_deepseek_url(url: str) -> bool:
    """True when ``url`` points at DeepSeek's own API."""
    host = urlsplit(url).hostname or ""
    return host == "api.deepseek.com" or host.endswith(".deepseek.com")


def connection_transport(url: str, limits: httpx2.Limits) -> httpx2.AsyncBaseTransport:
    """The transport that reaches ``url``: ``Http1Transport``, or httpx2's own through the proxy
    the environment names for it (``urllib.request.getproxies``, ``NO_PROXY`` honoured)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return httpx2.AsyncHTTPTransport(proxy=proxy, limits=limits)
    return Http1Transport(limits=limits)


class UpstreamResponse:
    """An open 2xx streaming response; close it (or use ``async with``) when done."""

    def __init__(
        self,
        response: httpx2.Response,
        *,
        secret: str | None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._response = response
        self._secret = secret
        self._on_close = on_close
        self.status_code = response.status_code
        self.headers = response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives (content-encoding undone, no re-chunking)."""
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx2.TimeoutException:
            raise UpstreamError("the upstream stopped sending (read timeout)", status=504) from None
        except httpx2.TransportError as error:
            message = _scrub(f"the upstream connection failed: {error!r}", self._secret)
            raise UpstreamError(message, status=502) from None

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class IdleBoundedReads:
    """An upstream body's reads, ended by an ``UpstreamError`` once ``idle`` seconds pass
    without ``progressed()`` (an event completed), even while bytes (comments) keep coming.

    Reads after progress go straight through (no timer on the hot path); only after a read that
    completed no event does the next one wait under the time left.
    """

    def __init__(self, response: UpstreamResponse, idle: float) -> None:
        self._reads = response.aiter_bytes().__aiter__()
        self._idle = idle
        self._loop = asyncio.get_running_loop()
        self._last_progress = self._loop.time()
        self._is_quiet = False  # the last read completed no event

    def progressed(self) -> None:
        self._last_progress = self._loop.time()
        self._is_quiet = False

    def __aiter__(self) -> IdleBoundedReads:
        return self

    async def __anext__(self) -> bytes:
        if not self._is_quiet:
            self._is_quiet = True  # until the caller says the read completed an event
            return await self._reads.__anext__()
        deadline = self._last_progress + self._idle
        try:
            async with asyncio.timeout_at(deadline):
                return await self._reads.__anext__()
        except TimeoutError:
            raise UpstreamError(
                f"the upstream stopped sending (idle timeout: no event for {self._idle:g} s, "
                "only keep-alive comments)",
                status=504,
            ) from None


class Upstream:
    """One upstream base URL with its key, connection pool and retry policy."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.is_deepseek = is_deepseek_url(self.base_url)
        self._api_key = api_key
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        """The longest the upstream may stay silent: before the 2xx head (all attempts and
        backoffs together), and mid-stream between events (keep-alive comments are silence)."""
        self.open_responses = 0
        """Responses ``open_chat`` returned that were not closed yet (for diagnostics)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        pool = httpx2.Limits(max_connections=1000, max_keepalive_connections=200)
        # content-encoding is undone in bounded steps (httpx inflates a chunk at once)
        self._transport = BoundedDecoding(transport or connection_transport(self.base_url, pool))
        self._client = httpx2.AsyncClient(
            transport=self._transport,
            headers=headers,
            timeout=httpx2.Timeout(timeout, connect=connect_timeout),
        )
        self._chat_requests = _ChatRequests(
            self._client, self.chat_url(is_strict=False), self.chat_url(is_strict=True)
        )

    def chat_url(self, *, is_strict: bool = False) -> str:
        """``URL/chat/completions``; strict tools on DeepSeek go to its ``/beta`` base URL."""
        base = self.base_url
        if is_strict and self.is_deepseek and not base.endswith("/beta"):
            base = base.removesuffix("/v1") + "/beta"
        return f"{base}/chat/completions"

    def with_hooks(self, hooks: UpstreamHooks) -> Upstream:
        """This upstream (same pool and counters) for one request, telling ``hooks``."""
        return _HookedUpstream(self, hooks)

    async def open_chat(
        self,
        body: Mapping[str, object],
        *,
        is_strict: bool = False,
        hooks: UpstreamHooks | None = None,
    ) -> UpstreamResponse:
        """POST the chat request and return the open 2xx response, retrying before any byte.

        Raises:
            UpstreamError: every attempt failed; ``status`` is the upstream's (or 502/504).
        """
        if hooks is None:
            return await self._open_chat(body, is_strict, None)
        try:
            return await self._open_chat(body, is_strict, hooks)
        except UpstreamError as error:
            hooks.failed_upstream(error)
            raise

    async def _open_chat(
        self, body: Mapping[str, object], is_strict: bool, hooks: UpstreamHooks | None
    ) -> UpstreamResponse:
        content = orjson.dumps(body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        attempt = 0
        while True:
            attempt += 1
            extra = hooks.request_headers() if hooks is not None else None
            request = self._chat_requests.build(content, is_strict=is_strict, extra=extra)
            error: UpstreamError
            retry_after: float | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self._transport.handle_async_request(request)
                    response.request = request
                    if response.is_success and _is_json(response.headers):
                        # an error body under a success status (some gateways do this): never a
                        # stream, so the client gets the upstream's message, not "ended early"
                        raise await self._status_error(response, status=502)
                    if not response.is_success:
                        error = await self._status_error(response)
            except TimeoutError:
                raise self._no_answer(attempt) from None
            except httpx2.ConnectTimeout:
                error = UpstreamError("cannot reach the upstream: connect timeout", status=504)
            except httpx2.TimeoutException:
                raise self._no_answer(attempt) from None  # the request was sent: never twice
            except httpx2.TransportError as failure:
                message = _scrub(f"cannot reach the upstream: {failure!r}", self._api_key)
                error = UpstreamError(message, status=502)
            else:
                if response.is_success:
                    self.open_responses += 1
                    on_close = self._response_closed
                    if hooks is not None:
                        on_close = _both(hooks.response_closed, on_close)
                    return UpstreamResponse(response, secret=self._api_key, on_close=on_close)
                retry_after = _retry_after(response.headers)
                if response.status_code not in RETRY_STATUSES:
                    raise error
            delay = self.retry.delay(attempt, retry_after)
            if delay is None or loop.time() + delay >= deadline:
                raise error
            if hooks is not None:
                hooks.retrying(attempt, error)
            await asyncio.sleep(delay)

    def _no_answer(self, attempts: int) -> UpstreamError:
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        return UpstreamError(
            f"the upstream did not answer in time ({self.timeout:g} s, {tries})", status=504
        )

    async def list_models(self) -> dict[str, object]:
        """``GET URL/models`` as JSON.

        Raises:
            UpstreamError: the upstream failed or answered with something that is not JSON.
        """
        try:
            response = await self._client.get(f"{self.base_url}/models")
        except httpx2.TransportError as failure:
            message = _scrub(f"cannot reach the upstream: {failure!r}", self._api_key)
            raise UpstreamError(message, status=502) from None
        if not response.is_success:
            raise await self._status_error(response)
        try:
            value = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamError("the upstream's model list is not JSON", status=502) from None
        if not isinstance(value, dict):
            raise UpstreamError("the upstream's model list is not an object", status=502)
        return value

    async def aclose(self) -> None:
        await self._client.aclose()

    def _response_closed(self) -> None:
        self.open_responses -= 1

    async def _status_error(
        self, response: httpx2.Response, *, status: int | None = None
    ) -> UpstreamError:
        """Read (a bounded part of) an error response and turn it into an ``UpstreamError``.

        ``status`` replaces the response's own (a JSON error body under 200 becomes a 502).
        """
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= _MAX_ERROR_BODY:
                    break
        except httpx2.TransportError:
            pass
        finally:
            await response.aclose()
        kept = b"".join(chunks)
        raw = _scrub(
            kept[:_MAX_ERROR_BODY].decode(errors="replace"),
            self._api_key,
            is_cut=len(kept) >= _MAX_ERROR_BODY,
        )
        body: object = raw
        message = raw.strip() or response.reason_phrase or "no message"
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                message = error["message"]
            elif isinstance(error, str):
                message = error
        return UpstreamError(
            f"upstream answered {response.status_code}: {message}",
            status=status or response.status_code,
            body=body,
        )


class _HookedUpstream(Upstream):
    """An ``Upstream`` for one request: the shared one's chat calls, with the request's hooks."""

    def __init__(self, shared: Upstream, hooks: UpstreamHooks) -> None:  # shares, no new pool
        self.base_url = shared.base_url
        self.is_deepseek = shared.is_deepseek
        self.retry = shared.retry
        self.timeout = shared.timeout
        self._shared = shared
        self._hooks = hooks
        self._api_key = shared._api_key
        self._client = shared._client
        self._transport = shared._transport
        self._chat_requests = shared._chat_requests

    async def open_chat(
        self,
        body: Mapping[str, object],
        *,
        is_strict: bool = False,
        hooks: UpstreamHooks | None = None,
    ) -> UpstreamResponse:
        return await self._shared.open_chat(body, is_strict=is_strict, hooks=hooks or self._hooks)


class _ChatRequests:
    """The chat POST as httpx2's client would build it (its default headers and the key, then
    ``Host`` first and ``Content-Length`` last, its timeouts), sent straight to the transport.

    The client's per-request layers (auth, cookies, redirects, event hooks) never apply to this
    one POST, and an ``httpx2.Request`` built from a string URL parses it and rebuilds its
    headers twice: about 0.1 ms of the first token on a slow machine. Here the URLs are parsed
    and the fixed headers listed once.
    """

    __slots__ = ("_headers", "_targets", "_timeouts")

    def __init__(self, client: httpx2.AsyncClient, url: str, strict_url: str) -> None:
        fixed = client.headers.copy()
        fixed.update({"Content-Type": "application/json", "Accept": "text/event-stream"})
        self._headers = fixed.raw  # the names as given, not lower-cased
        self._timeouts = client.timeout.as_dict()
        self._targets = {
            is_strict: (parsed, (b"Host", parsed.netloc))
            for is_strict, parsed in ((False, httpx2.URL(url)), (True, httpx2.URL(strict_url)))
        }

    def build(
        self, content: bytes, *, is_strict: bool, extra: Mapping[str, str] | None
    ) -> httpx2.Request:
        """The POST of ``content``; ``extra`` headers (trace context) replace any of the same
        name."""
        url, host = self._targets[is_strict]
        headers = [host, *self._headers]
        if extra:
            names = {name.lower().encode("latin-1") for name in extra}
            headers = [item for item in headers if item[0].lower() not in names]
            headers.extend(
                (name.encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()
            )
        headers.append((b"Content-Length", b"%d" % len(content)))
        request = httpx2.Request(
            "POST",
            url,
            headers=headers,
            stream=httpx2.ByteStream(content),
            extensions={"timeout": self._timeouts},
        )
        request.read()  # ``request.content`` for transports that look (mocks, cassettes)
        return request


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        try:
            first()
        finally:
            second()

    return call


def _is_json(headers: httpx2.Headers) -> bool:
    """Whether the response says it is JSON (``application/json``, ``...+json``)."""
    media_type = str(headers.get("content-type", "")).split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _retry_after(headers: httpx2.Headers) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _scrub(text: str, secret: str | None, *, is_cut: bool = False) -> str:
    """``text`` with the key redacted in every encoding (``streamproxy.redaction``), and with
    ``is_cut`` also a prefix of it where the text was cut."""
    return Redactor({secret or ""}).redact_text(text, is_cut=is_cut)
