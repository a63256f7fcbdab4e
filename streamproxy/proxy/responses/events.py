"""The tool loop's ``chat.completion.chunk`` dicts -> Responses API stream events (SSE bytes).

``ResponsesEncoder`` is sans-I/O: feed it the chunk dicts the ``Turn`` emits, then ``finish()``
(or ``error()``); each call returns the frames to send. The same encoder builds the
non-streaming ``response`` object (``response_from_completion``), so both forms agree.

Theory of operation
-------------------
The output is a list of items, each opened with ``response.output_item.added`` and closed with
``response.output_item.done``, every event numbered by ``sequence_number`` from 0:

- ``reasoning_content`` deltas make a ``reasoning`` item. Its text streams as a *summary*
  (``response.reasoning_summary_part.added``, ``response.reasoning_summary_text.delta`` /
  ``.done``, ``response.reasoning_summary_part.done``): openai-python accepts both summary and
  ``reasoning_text`` events, but the Vercel AI SDK's provider reads reasoning from the summary
  events only, so the summary form is the one both show;
- ``content`` / ``refusal`` deltas make a ``message`` item with ``output_text`` / ``refusal``
  content parts (``response.content_part.added``, ``response.output_text.delta`` / ``.done``
  or ``response.refusal.delta`` / ``.done``, ``response.content_part.done``);
- ``tool_calls`` deltas make one ``function_call`` item per chunk-level ``index``; its
  ``call_id`` is the chat call id, so the client's ``function_call_output`` comes back under
  the id the tool loop knows. Argument fragments stream as
  ``response.function_call_arguments.delta``; ``.done`` carries the whole arguments.

Reasoning and message items follow one another: a delta of the other kind closes the open one
(a later tool round's reasoning opens a new reasoning item). Function-call items stay open
until the end, since calls of one round may interleave. ``finish()`` closes every open item
and sends ``response.completed``, or ``response.incomplete`` when the finish reason was
``length`` (``max_output_tokens``) or ``content_filter``; the response carries the mapped
usage. ``error()`` sends an ``error`` event, then ``response.failed``.

The ``error`` event has the documented top-level ``code`` / ``message`` / ``param`` and also
a nested ``error`` object, the shape OpenAI sends for early failures: openai-python raises
``APIError`` on it (as it does for a chat error frame), and the Vercel AI SDK accepts both.
The ``response.failed`` that follows serves clients that read on. Extension chunks (a
``streamproxy`` key: tool progress) become ``streamproxy.tool_progress`` events, which both
SDKs pass over as unknown types. No ``[DONE]`` is sent: Responses streams end after the
terminal event.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import orjson

from streamproxy.errors import StreamProxyError
from streamproxy.proxy.responses.items import (
    FunctionCallItem,
    Item,
    ItemStatus,
    MessageItem,
    OutputItem,
    PartKind,
    ReasoningItem,
    TextPart,
    new_id,
    responses_usage,
)
from streamproxy.proxy.responses.request import ResponsesRequest

__all__ = ["ResponsesEncoder", "response_from_completion", "stored_items"]

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
"""Chat finish reasons that end a response as ``incomplete``, with the Responses reason."""

# ---------------------------------------------------------------- the encoder


class ResponsesEncoder:
    """Chunk dicts of one turn in, Responses SSE frames out (no I/O)."""

    def __init__(
        self,
        request: ResponsesRequest,
        *,
        response_id: str | None = None,
        created_at: int | None = None,
    ) -> None:
        self.request = request
        self.id = response_id or new_id("resp")
        self.created_at = created_at if created_at is not None else int(time.time())
        self.model = request.model
        self.finish_reason: str | None = None
        self.usage: dict[str, object] | None = None
        self.status: str = "in_progress"
        self.error_body: dict[str, object] | None = None
        self.completed_at: int | None = None
        self._sequence = 0
        self._is_started = False
        self._outputs: list[OutputItem] = []
        self._current: MessageItem | ReasoningItem | None = None
        self._calls: dict[int, FunctionCallItem] = {}

    @property
    def is_ended(self) -> bool:
        """Whether a terminal event (completed, incomplete or failed) was produced."""
        return self.status != "in_progress"

    # ---------------------------------------------------------------- input

    def start(self) -> list[bytes]:
        """``response.created`` and ``response.in_progress`` (sent once; ``feed`` calls it)."""
        if self._is_started:
            return []
        self._is_started = True
        snapshot = self.response()
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed(self, chunk: Mapping[str, object]) -> list[bytes]:
        """The frames for one ``chat.completion.chunk`` dict (or extension or error dict)."""
        if self.is_ended:
            raise RuntimeError(f"the response is already {self.status}")
        frames = self.start()
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self.model = model
        error = chunk.get("error")
        if isinstance(error, Mapping):
            return frames + self._fail(_error_fields(error))
        extension = chunk.get("streamproxy")
        if isinstance(extension, Mapping):
            for key, value in extension.items():
                frames.append(self._event(f"streamproxy.{key}", **{key: value}))
            return frames
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self.usage = dict(usage)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                frames.extend(self._choice(choice))
        return frames

    def finish(self) -> list[bytes]:
        """Close every open item; ``response.completed`` or ``response.incomplete``."""
        if self.is_ended:
            return []
        frames = self.start()
        frames.extend(self._close_all())
        reason = INCOMPLETE_REASONS.get(self.finish_reason or "")
        if reason is None:
            self.status = "completed"
            self.completed_at = int(time.time())
            frames.append(self._event("response.completed", response=self.response()))
        else:
            self.status = "incomplete"
            frames.append(self._event("response.incomplete", response=self.response()))
        return frames

    def error(self, error: StreamProxyError) -> list[bytes]:
        """An ``error`` event, then ``response.failed`` (nothing when already ended)."""
        if self.is_ended:
            return []
        fields = {
            "message": error.message,
            "type": error.code,
            "code": error.code,
            "status": error.status_hint,
        }
        return self.start() + self._fail(fields)

    # ---------------------------------------------------------------- output

    def response(self) -> dict[str, object]:
        """The ``response`` object as it stands (final after ``finish`` or ``error``)."""
        echo = self.request.echo
        # items still open when a response fails were cut short
        open_status: ItemStatus = "incomplete" if self.status == "failed" else "in_progress"
        output = [
            output.as_dict(open_status if output.is_open else output.status)
            for output in self._outputs
        ]
        reason = INCOMPLETE_REASONS.get(self.finish_reason or "")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": False,
            "completed_at": self.completed_at,
            "error": self.error_body,
            "incomplete_details": {"reason": reason} if self.status == "incomplete" else None,
            "instructions": echo.get("instructions"),
            "max_output_tokens": echo.get("max_output_tokens"),
            "max_tool_calls": None,
            "metadata": echo.get("metadata", {}),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": echo.get("parallel_tool_calls", True),
            "previous_response_id": echo.get("previous_response_id"),
            "reasoning": echo.get("reasoning"),
            "store": echo.get("store", True),
            "temperature": echo.get("temperature"),
            "text": echo.get("text", {"format": {"type": "text"}}),
            "tool_choice": echo.get("tool_choice", "auto"),
            "tools": echo.get("tools", []),
            "top_p": echo.get("top_p"),
            "truncation": echo.get("truncation", "disabled"),
            "usage": responses_usage(self.usage) if self.status != "in_progress" else None,
            "user": echo.get("user"),
        }

    # ---------------------------------------------------------------- deltas

    def _choice(self, choice: Mapping[str, object]) -> list[bytes]:
        frames: list[bytes] = []
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                frames.extend(self._reasoning(reasoning))
            for key in ("content", "refusal"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    kind: PartKind = "output_text" if key == "content" else "refusal"
                    frames.extend(self._text(kind, text))
            calls = delta.get("tool_calls")
            for entry in calls if isinstance(calls, list) else []:
                if isinstance(entry, Mapping):
                    frames.extend(self._tool_call(entry))
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str):
            self.finish_reason = finish_reason
        return frames

    def _reasoning(self, text: str) -> list[bytes]:
        frames: list[bytes] = []
        current = self._current
        if not isinstance(current, ReasoningItem):
            frames.extend(self._close_current())
            current = ReasoningItem(id=new_id("rs"), output_index=len(self._outputs))
            self._open(current)
            frames.append(self._added(current))
            frames.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    item_id=current.id,
                    output_index=current.output_index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        current.texts.append(text)
        frames.append(
            self._event(
                "response.reasoning_summary_text.delta",
                item_id=current.id,
                output_index=current.output_index,
                summary_index=0,
                delta=text,
            )
        )
        return frames

    def _text(self, kind: PartKind, text: str) -> list[bytes]:
        frames: list[bytes] = []
        message = self._current
        if not isinstance(message, MessageItem):
            frames.extend(self._close_current())
            message = MessageItem(id=new_id("msg"), output_index=len(self._outputs))
            self._open(message)
            frames.append(self._added(message))
        if not message.parts or message.parts[-1].kind != kind:
            if message.parts:
                frames.extend(self._close_part(message))
            message.parts.append(TextPart(kind))
            frames.append(
                self._event(
                    "response.content_part.added",
                    item_id=message.id,
                    output_index=message.output_index,
                    content_index=len(message.parts) - 1,
                    part=message.parts[-1].as_dict(),
                )
            )
        message.parts[-1].texts.append(text)
        location = {
            "item_id": message.id,
            "output_index": message.output_index,
            "content_index": len(message.parts) - 1,
        }
        if kind == "refusal":
            frames.append(self._event("response.refusal.delta", **location, delta=text))
        else:
            frames.append(
                self._event("response.output_text.delta", **location, delta=text, logprobs=[])
            )
        return frames

    def _tool_call(self, entry: Mapping[str, object]) -> list[bytes]:
        frames: list[bytes] = []
        index = entry.get("index")
        if not isinstance(index, int):
            index = len(self._calls)
        function = entry.get("function")
        function = function if isinstance(function, Mapping) else {}
        call = self._calls.get(index)
        if call is None:
            frames.extend(self._close_current())
            call_id, name = entry.get("id"), function.get("name")
            call = FunctionCallItem(
                id=new_id("fc"),
                output_index=len(self._outputs),
                call_id=call_id if isinstance(call_id, str) else new_id("call"),
                name=name if isinstance(name, str) else "",
            )
            self._calls[index] = call
            self._outputs.append(call)
            frames.append(self._added(call))
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            call.arguments.append(fragment)
            frames.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call.id,
                    output_index=call.output_index,
                    delta=fragment,
                )
            )
        return frames

    # ---------------------------------------------------------------- closing

    def _open(self, output: MessageItem | ReasoningItem) -> None:
        self._outputs.append(output)
        self._current = output

    def _close_current(self) -> list[bytes]:
        current, self._current = self._current, None
        if current is None:
            return []
        return self._close(current)

    def _close_all(self) -> list[bytes]:
        frames = self._close_current()
        for call in self._calls.values():
            if call.is_open:
                frames.extend(self._close(call))
        return frames

    def _close(self, output: OutputItem) -> list[bytes]:
        frames: list[bytes] = []
        location = {"item_id": output.id, "output_index": output.output_index}
        if isinstance(output, MessageItem) and output.parts:
            frames.extend(self._close_part(output))
        elif isinstance(output, ReasoningItem):
            text = "".join(output.texts)
            frames.append(
                self._event(
                    "response.reasoning_summary_text.done", **location, summary_index=0, text=text
                )
            )
            frames.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    **location,
                    summary_index=0,
                    part={"type": "summary_text", "text": text},
                )
            )
        elif isinstance(output, FunctionCallItem):
            frames.append(
                self._event(
                    "response.function_call_arguments.done",
                    **location,
                    name=output.name,
                    arguments="".join(output.arguments),
                )
            )
        output.status = "incomplete" if self.finish_reason in INCOMPLETE_REASONS else "completed"
        frames.append(
            self._event(
                "response.output_item.done",
                output_index=output.output_index,
                item=output.as_dict(output.status),
            )
        )
        return frames

    def _close_part(self, message: MessageItem) -> list[bytes]:
        part = message.parts[-1]
        location = {
            "item_id": message.id,
            "output_index": message.output_index,
            "content_index": len(message.parts) - 1,
        }
        if part.kind == "refusal":
            done = self._event("response.refusal.done", **location, refusal=part.text())
        else:
            done = self._event(
                "response.output_text.done", **location, text=part.text(), logprobs=[]
            )
        return [done, self._event("response.content_part.done", **location, part=part.as_dict())]

    def _fail(self, fields: Mapping[str, object]) -> list[bytes]:
        message = str(fields.get("message") or "the response failed")
        code = str(fields.get("code") or "server_error")
        kind = str(fields.get("type") or code)
        status = fields.get("status")
        frames = [
            self._event(
                "error",
                code=code,
                message=message,
                param=None,
                error={"type": kind, "code": code, "message": message, "param": None},
            )
        ]
        # Response.error.code is a closed list in OpenAI's schema; the proxy's own code goes in type
        self.error_body = {
            "code": "rate_limit_exceeded" if status == 429 else "server_error",
            "message": message,
            "type": code,
        }
        self.status = "failed"
        frames.append(self._event("response.failed", response=self.response()))
        return frames

    def _added(self, output: OutputItem) -> bytes:
        return self._event(
            "response.output_item.added",
            output_index=output.output_index,
            item=output.as_dict("in_progress"),
        )

    def _event(self, kind: str, **fields: object) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _error_fields(error: Mapping[str, object]) -> dict[str, object]:
    """The fields of an OpenAI error body (``{"error": {...}}`` frames of the tool loop)."""
    code = error.get("code")
    status = code if isinstance(code, int) else None
    return {
        "message": error.get("message"),
        "type": error.get("type"),
        "code": code if isinstance(code, str) else error.get("type"),
        "status": status,
    }


# ---------------------------------------------------------------- non-streaming and storage


def response_from_completion(
    completion: Mapping[str, object],
    request: ResponsesRequest,
    *,
    response_id: str | None = None,
) -> dict[str, object]:
    """The ``response`` object for a finished ``chat.completion`` (the non-streaming answer)."""
    created = completion.get("created")
    encoder = ResponsesEncoder(
        request,
        response_id=response_id,
        created_at=created if isinstance(created, int) else None,
    )
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, Mapping) else None
    delta = dict(message) if isinstance(message, Mapping) else {}
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        delta["tool_calls"] = [
            {**entry, "index": index}
            for index, entry in enumerate(calls)
            if isinstance(entry, dict)
        ]
    chunk = {
        "model": completion.get("model"),
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "finish_reason": choice.get("finish_reason")
                if isinstance(choice, Mapping)
                else None,
            }
        ],
        "usage": completion.get("usage"),
    }
    encoder.feed(chunk)
    encoder.finish()
    return encoder.response()


def stored_items(request: ResponsesRequest, response: Mapping[str, object]) -> list[Item]:
    """What to keep under ``response["id"]`` for a later ``previous_response_id``.

    The whole conversation as Responses items: the chained items and this request's input
    (``request.items``), then the response's output. Pass it back as ``previous_items``.
    """
    output = response.get("output")
    return (
        [*request.items, *(dict(item) for item in output if isinstance(item, dict))]
        if isinstance(output, list)
        else list(request.items)
    )
