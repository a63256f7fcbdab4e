"""The API fuzz's client and checks: one request on a raw socket (so headers and framing can
lie), the answer parsed, and every rule of ``fuzz_api.py``'s docstring checked (``Finding``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from fuzz.api_cases import CLIENT_KEY, OTHER_CLIENT_KEY, RESPONSES_PATHS, Case, encode

DOCUMENTED_STATUSES = frozenset({200, 400, 401, 404, 405, 413, 429, 502, 503, 504})
"""Every status the proxy may answer (``fuzz_api.py``'s docstring); never 500 or 499."""
HTTP_SERVER_STATUSES = frozenset({400})
"""What uvicorn answers itself to a request that breaks HTTP (plain text)."""
UVICORN_REFUSAL = b"Invalid HTTP request received."
"""The body of uvicorn's own 400 when its HTTP parser refuses a request."""
RESPONSES_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


# ------------------------------------------------------------------------ raw HTTP client


@dataclass(slots=True)
class Answer:
    """One HTTP response as read off the socket (``status`` 0: closed without one)."""

    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool = True
    """False when the chunked body stopped before its last chunk."""


def request_bytes(case: Case, host: str, body: bytes) -> bytes:
    lines = [f"{case.method} {case.path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    names = {name.lower() for name, _ in case.headers}
    lines += [f"{name}: {value}" for name, value in case.headers]
    if case.framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        sent = (
            b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096])
                for i in range(0, len(body), 4096)
            )
            + b"0\r\n\r\n"
        )
    else:
        if "content-length" not in names:
            declared = {"longer": len(body) + 10, "shorter": max(len(body) - 3, 0)}
            lines.append(f"Content-Length: {declared.get(case.framing, len(body))}")
        sent = body
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head + sent


async def send(case: Case, address: tuple[str, int], body: bytes | None = None) -> Answer:
    """Send one request on a new connection and read the whole answer (to EOF)."""
    body = case.body_bytes() if body is None else body
    reader, writer = await asyncio.open_connection(*address)
    pieces: list[bytes] = []

    async def read() -> None:
        # reads while the request is written: the server may answer (401, 413) before the
        # body is in, and close; what it sent is kept even if the connection is reset after
        while piece := await reader.read(65536):
            pieces.append(piece)

    reading = asyncio.ensure_future(read())
    try:
        try:
            writer.write(request_bytes(case, f"{address[0]}:{address[1]}", body))
            await writer.drain()
            if case.framing == "longer":
                writer.write_eof()
        except (ConnectionError, OSError):
            pass  # the server closed the connection before the request was all sent
        with contextlib.suppress(ConnectionError, OSError):
            await reading
        raw = b"".join(pieces)
    finally:
        reading.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return parse_answer(raw, is_head=case.method == "HEAD")


def parse_answer(raw: bytes, *, is_head: bool) -> Answer:
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator:
        return Answer(0, {}, raw, complete=False)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
        return parse_answer(rest, is_head=is_head)
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if is_head:
        return Answer(status, headers, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, complete = dechunk(rest)
        return Answer(status, headers, body, complete)
    return Answer(status, headers, rest)


def dechunk(data: bytes) -> tuple[bytes, bool]:
    pieces: list[bytes] = []
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            return b"".join(pieces), False
        size = int(data[position:end].split(b";")[0] or b"0", 16)
        if size == 0:
            return b"".join(pieces), True
        pieces.append(data[end + 2 : end + 2 + size])
        if end + 2 + size > len(data):
            return b"".join(pieces), False
        position = end + 4 + size


# ------------------------------------------------------------------------------- checks


class Finding(Exception):
    """A response outside the documented behaviour; ``check`` names the rule it broke."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail
        self.status: int | None = None
        """The status of the answer that broke the rule (set by ``check_answer``)."""


def check_answer(case: Case, answer: Answer) -> None:
    """Every rule of ``fuzz_api.py``'s docstring for one response (raises ``Finding``)."""
    try:
        _check_answer(case, answer)
    except Finding as finding:
        finding.status = answer.status
        raise


def _check_answer(case: Case, answer: Answer) -> None:
    if case.breaks_http and (answer.status == 0 or answer.status in HTTP_SERVER_STATUSES):
        return  # uvicorn refused what is not HTTP (or closed); the app never saw it
    if answer.status in HTTP_SERVER_STATUSES and answer.body == UVICORN_REFUSAL:
        return  # the HTTP parser refused it (httptools is stricter than h11: odd methods, bad
        # percent-escapes in the target); the app never saw it
    if answer.status == 0:
        raise Finding("no-response", f"the connection closed with {answer.body[:200]!r}")
    if answer.status not in DOCUMENTED_STATUSES:
        raise Finding(f"status-{answer.status}", answer.body[:500].decode("utf-8", "replace"))
    if CLIENT_KEY.encode() in answer.body:
        raise Finding("key-leak", "the client key is in the response")
    kind = answer.headers.get("content-type", "").split(";")[0].strip()
    if case.method == "HEAD":
        return
    if kind == "text/event-stream":
        if answer.status != 200:
            raise Finding("stream-status", f"an event stream under {answer.status}")
        check_stream(case, answer)
    elif kind == "application/json":
        check_json(case, answer)
    elif answer.status != 200:
        raise Finding(f"error-not-json-{answer.status}", f"{kind!r}: {answer.body[:300]!r}")
    elif kind not in ("text/html", "text/plain") or case.method not in ("GET", "HEAD"):
        raise Finding("unexpected-content-type", f"{kind!r} for {case.method} {case.path}")


def check_json(case: Case, answer: Answer) -> None:
    try:
        value = json.loads(answer.body)
    except ValueError as error:
        raise Finding("json-invalid", f"{error}: {answer.body[:300]!r}") from None
    route = urlsplit(case.path).path
    if answer.status != 200:
        error = value.get("error") if isinstance(value, dict) else None
        if not (
            isinstance(error, dict)
            and isinstance(error.get("message"), str)
            and isinstance(error.get("type"), str)
            and "code" in error
        ):
            raise Finding(
                f"error-shape-{answer.status}", answer.body[:300].decode("utf-8", "replace")
            )
        return
    expected = {
        "/v1/chat/completions": "chat.completion",
        "/chat/completions": "chat.completion",
        "/v1/responses": "response",
        "/responses": "response",
        "/v1/models": "list",
        "/models": "list",
    }.get(route)
    if route == "/healthz":
        if value != {"status": "ok"}:
            raise Finding("healthz-shape", repr(value)[:300])
    elif expected is None or not isinstance(value, dict) or value.get("object") != expected:
        raise Finding("answer-shape", f"{route}: {repr(value)[:300]}")


def sse_events(body: bytes) -> Iterator[tuple[str | None, str]]:
    """``(event, data)`` of each event of an SSE body (comments skipped)."""
    text = body.decode("utf-8")
    if text and not text.endswith("\n\n"):
        raise Finding("sse-framing", f"the stream does not end with a blank line: {text[-200:]!r}")
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event, data = None, []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            else:
                raise Finding("sse-framing", f"unknown SSE field in {line[:200]!r}")
        if data:
            yield event, "\n".join(data)


def check_stream(case: Case, answer: Answer) -> None:
    if not answer.complete:
        raise Finding("stream-cut", f"the chunked body ended early: {answer.body[-300:]!r}")
    try:
        events = list(sse_events(answer.body))
    except UnicodeDecodeError as error:
        raise Finding("sse-utf8", str(error)) from None
    if not events:
        raise Finding("stream-empty", repr(answer.body[:300]))
    is_responses = urlsplit(case.path).path in RESPONSES_PATHS
    payloads: list[Any] = []
    for position, (_, data) in enumerate(events):
        if data == "[DONE]" and not is_responses:
            if position != len(events) - 1:
                raise Finding("after-done", "events after [DONE]")
            return
        try:
            payloads.append(json.loads(data))
        except ValueError:
            raise Finding("sse-data-not-json", data[:300]) from None
    last = payloads[-1]
    if is_responses:
        kind = last.get("type") if isinstance(last, dict) else None
        if kind not in RESPONSES_ENDS:
            raise Finding("responses-end", f"the stream ends with {kind!r}: {str(last)[:300]}")
        ends = [p for p in payloads if isinstance(p, dict) and p.get("type") in RESPONSES_ENDS]
        if len(ends) != 1:
            raise Finding("responses-end", f"{len(ends)} end events")
        return
    error = last.get("error") if isinstance(last, dict) else None
    if not (isinstance(error, dict) and isinstance(error.get("message"), str)):
        raise Finding("chat-end", f"no [DONE] and no error frame at the end: {str(last)[:300]}")
    if any(isinstance(p, dict) and "error" in p for p in payloads[:-1]):
        raise Finding("chat-end", "more than one error frame")


# ---------------------------------------------------------------------- approval flows


def answered(case: Case, first: Answer) -> list[bytes] | None:
    """The follow-up bodies of an ``approval_flow`` case, from the first answer (None: the
    first answer asked for no approval, which happens when the demo picks another scenario)."""
    mode, _, how = (case.follow_up or "").partition(":")
    if first.status != 200:
        return None
    completion = json.loads(first.body)
    message = completion["choices"][0]["message"]
    history = [{"role": "user", "content": "archive my notes"}]
    extension = {"approvals": mode}
    if mode == "chat":
        question = message.get("content") or ""
        if "needs your approval" not in question:
            return None
        reply = {"yes": "yes", "no": "no", "text": "maybe later, thanks"}.get(how, "Yes.")
        body = {
            "model": "deepseek-v4-flash",
            "messages": [
                *history,
                {"role": "assistant", "content": question},
                {"role": "user", "content": reply},
            ],
            "streamproxy": extension,
        }
        return [encode(body)] * (2 if how == "twice" else 1)
    calls = message.get("tool_calls") or []
    if not calls or not str(calls[0].get("id", "")).startswith("spw2."):
        return None
    call = dict(calls[0])
    verdict = {"decline": '{"approved": false, "reason": "no"}', "garbage": "{"}.get(
        how, '{"approved": true}'
    )
    sent_id = call["id"]
    if how == "changed-arguments":
        call["function"] = {**call["function"], "arguments": '{"all": true}'}
    if how == "changed-id":
        sent_id = call["id"][:-1] + ("A" if call["id"][-1] != "A" else "B")
        call["id"] = sent_id
    assistant = {"role": "assistant", "content": message.get("content") or "", "tool_calls": [call]}
    body = {
        "model": "deepseek-v4-flash",
        "messages": [
            *history,
            assistant,
            {"role": "tool", "tool_call_id": sent_id, "content": verdict},
        ],
        "streamproxy": extension,
        "stream": how == "twice",
    }
    return [encode(body)] * (2 if how == "twice" else 1)


# What the audit log must say of ``archive_notes`` in the first follow-up of each kind (None:
# nothing required), and whether the call may run (``outcome=ok``) in it. A repeat of a client
# approval (``client:twice``) must never run it again. A repeated chat "yes" may: chat-mode
# pending calls are kept under the question's text (per client key), and every case asks the
# same question (``archive_notes`` with ``{}``), so a "yes" can approve the call another case
# left pending (which then runs once, as it should) and find its own already run (or running)
# by another.
# ``must`` alternatives are separated by ``|``.
APPROVAL_OUTCOMES: dict[str, tuple[str | None, bool]] = {
    "chat:yes": ("ok|already_ran|running", True),
    "chat:twice": ("ok|already_ran|running", True),
    "chat:no": ("declined", False),
    "chat:text": ("declined", False),
    "client:approve": ("ok", True),
    "client:twice": ("ok", True),
    "client:decline": ("declined", False),
    "client:garbage": ("declined", False),
    "client:changed-arguments": ("mismatch", False),
    "client:changed-id": ("forged", False),
    "client:other-key": ("forged", False),
}


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the server's audit log must show for one follow-up request."""

    case: Case
    request_id: str
    must: str | None
    may_run: bool


async def run_case(case: Case, address: tuple[str, int]) -> tuple[list[int], list[Expectation]]:
    """Send the case (and its follow-ups) and check each answer; the statuses seen and what
    the audit log must show (``check_audit``, once the log is complete)."""
    first = await send(case, address)
    check_answer(case, first)
    statuses = [first.status]
    expectations: list[Expectation] = []
    if case.follow_up is None:
        return statuses, expectations
    for position, body in enumerate(answered(case, first) or []):
        headers = case.headers
        if case.follow_up == "client:other-key":
            headers = (
                ("Authorization", f"Bearer {OTHER_CLIENT_KEY}"),
                ("Content-Type", "application/json"),
            )
        second = replace(case, headers=headers, body=body)
        answer = await send(second, address)
        check_answer(second, answer)
        statuses.append(answer.status)
        must, may_run = APPROVAL_OUTCOMES[case.follow_up]
        request_id = answer.headers.get("x-request-id", "")
        if position == 0:
            expectations.append(Expectation(second, request_id, must, may_run))
        else:
            may_repeat = case.follow_up.startswith("chat:")
            expectations.append(Expectation(second, request_id, None, may_repeat))
    return statuses, expectations


def check_audit(expectation: Expectation, log: str) -> None:
    """The audit lines of ``archive_notes`` in that request say what the approval allows."""
    outcomes = re.findall(
        rf"request_id={re.escape(expectation.request_id)} tool=archive_notes .*? outcome=(\w+)",
        log,
    )
    if expectation.must is not None and not set(expectation.must.split("|")) & set(outcomes):
        raise Finding(
            "approval-outcome",
            f"{expectation.case.follow_up}: no outcome={expectation.must} in {outcomes}",
        )
    if not expectation.may_run and "ok" in outcomes:
        raise Finding("approval-ran", f"{expectation.case.follow_up}: the call ran: {outcomes}")
