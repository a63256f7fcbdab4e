"""Small helpers shared by the httpx transports and the servers: requests, headers, timing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from streamproxy.cassette.format import RecordedRequest, parse_body
from streamproxy.cassette.redact import redact_headers, redact_query, scrub_bytes, scrub_json

Timing = Literal["instant", "recorded"] | float
"""``"instant"`` (no waits), ``"recorded"`` (as recorded) or a factor (``0.5`` = twice as fast)."""

# Headers that describe one connection or one encoding of the body, not the response itself;
# a replay re-frames the body, so it must not repeat them.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def timing_factor(timing: Timing) -> float:
    """The factor recorded offsets are multiplied by.

    Raises:
        ValueError: ``timing`` is neither a known name nor a number >= 0.
    """
    if timing == "instant":
        return 0.0
    if timing == "recorded":
        return 1.0
    if isinstance(timing, int | float) and not isinstance(timing, bool) and timing >= 0:
        return float(timing)
    raise ValueError(f"timing must be 'instant', 'recorded' or a factor >= 0, not {timing!r}")


def parse_timing(text: str) -> Timing:
    """A ``--timing`` argument: ``instant``, ``recorded`` or a number."""
    if text in ("instant", "recorded"):
        return text  # type: ignore[return-value]
    try:
        factor = float(text)
    except ValueError:
        raise ValueError(
            f"timing must be 'instant', 'recorded' or a number, not {text!r}"
        ) from None
    timing_factor(factor)
    return factor


def recorded_request(
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    content: bytes,
    secrets: set[str],
) -> RecordedRequest:
    """A request as a cassette keeps it: credentials redacted, body parsed when it is JSON.

    Secret values found in headers and the query are added to ``secrets`` and scrubbed from the
    body too.
    """
    clean_headers = redact_headers(headers, secrets)
    clean_query = redact_query(query, secrets)
    body, raw_body = parse_body(content)
    if raw_body is not None:
        raw_body = scrub_bytes(raw_body, secrets)
    return RecordedRequest(
        method=method.upper(),
        path=path,
        query=clean_query,
        headers={k: v for k, v in clean_headers.items() if k not in HOP_BY_HOP},
        body=scrub_json(body, secrets),
        raw_body=raw_body,
    )


def replayed_headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    """Recorded response headers fit to send again (hop-by-hop headers removed)."""
    return [(name, value) for name, value in headers.items() if name not in HOP_BY_HOP]
