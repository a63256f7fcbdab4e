"""Keep credentials out of cassettes.

Headers and query parameters whose names look like credentials are replaced by ``<redacted>``;
then every secret value seen that way is also scrubbed from the rest of the interaction (request
body, response headers and body chunks), so a key the upstream echoes back cannot leak either.
The scrubbing is :class:`streamproxy.redaction.Redactor`'s (raw, JSON-escaped and URL-encoded
forms); this module only finds the secrets and keeps chunk boundaries.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, urlencode

from streamproxy.cassette.format import Chunk
from streamproxy.redaction import MIN_SECRET_LENGTH, REDACTED, Redactor

__all__ = [
    "REDACTED",
    "is_secret_name",
    "redact_headers",
    "redact_query",
    "scrub_bytes",
    "scrub_chunks",
    "scrub_json",
]

# Names are matched case-insensitively anywhere in the header or parameter name:
# authorization, proxy-authorization, api-key (Azure), x-api-key (Anthropic), x-goog-api-key,
# cookie / set-cookie, x-auth-token, x-amz-security-token, ...-secret, ...-signature, session ids.
# "token(?!s)" keeps rate-limit headers such as x-ratelimit-remaining-tokens readable.
SECRET_NAME = re.compile(
    r"auth|api[-_]?key|^key$|token(?!s)|secret|cookie|session|signature|password|credential",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether a header or query parameter with this name carries a credential."""
    return SECRET_NAME.search(name) is not None


def redact_headers(headers: Iterable[tuple[str, str]], secrets: set[str]) -> dict[str, str]:
    """Lower-cased headers with credential values replaced; the values are added to ``secrets``.

    Repeated headers are joined with ``", "`` (``set-cookie`` is redacted anyway).
    """
    result: dict[str, str] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        if is_secret_name(name):
            _remember(value, secrets)
            value = REDACTED
        result[name] = f"{result[name]}, {value}" if name in result else value
    return result


def redact_query(query: str, secrets: set[str]) -> str:
    """The query string with credential parameters' values replaced."""
    if not query:
        return ""
    pairs = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if is_secret_name(name):
            _remember(value, secrets)
            value = REDACTED
        pairs.append((name, value))
    return urlencode(pairs, safe="<>")


def scrub_bytes(data: bytes, secrets: Iterable[str], *, is_cut: bool = False) -> bytes:
    """``data`` with every secret replaced by ``<redacted>``, in any encoding."""
    return Redactor(secrets).redact_bytes(data, is_cut=is_cut)


def scrub_json(value: object, secrets: Iterable[str]) -> object:
    """A copy of a JSON value with secrets replaced inside every string (keys included)."""
    return Redactor(secrets).redact_json(value)


def _remember(value: str, secrets: set[str]) -> None:
    for candidate in (value, *value.split()):
        if len(candidate) >= MIN_SECRET_LENGTH:
            secrets.add(candidate)


def scrub_chunks(
    chunks: Sequence[Chunk], secrets: Iterable[str], *, is_cut: bool = False
) -> list[Chunk]:
    """``chunks`` with every secret replaced, even one split across chunk boundaries.

    A replacement goes into the chunk where the secret started; chunks left empty are dropped;
    all other boundaries stay where they were. With ``is_cut`` (a body that ended early), a
    secret's prefix at the very end is replaced too.
    """
    body = b"".join(chunk.data for chunk in chunks)
    redactor = Redactor(secrets)
    spans = redactor.spans(body)
    tail = redactor.trailing_prefix_start(body) if is_cut else None
    if tail is not None and (not spans or spans[-1][1] <= tail):
        spans.append((tail, len(body)))
    if not spans:
        return list(chunks)
    ends = list(itertools.accumulate(len(chunk.data) for chunk in chunks))
    pieces: list[bytearray] = [bytearray() for _ in chunks]

    def copy(start: int, stop: int) -> None:
        while start < stop:
            index = bisect.bisect_right(ends, start)
            end = min(stop, ends[index])
            pieces[index] += body[start:end]
            start = end

    position = 0
    for start, stop in spans:
        copy(position, start)
        pieces[bisect.bisect_right(ends, start)] += REDACTED.encode()
        position = stop
    copy(position, len(body))
    return [
        Chunk(chunk.offset_ms, bytes(data))
        for chunk, data in zip(chunks, pieces, strict=True)
        if data
    ]
