"""A Responses API request -> the chat-completions body the tool loop sends upstream.

Pure translation: no I/O, no state. The conversation of a chained request
(``previous_response_id``) and items named by ``item_reference`` come in as arguments; the
caller owns the store (see ``streamproxy.proxy.responses``).

Decisions, field by field:

- ``input``: a string is one user message; a list holds items. ``message`` items (also the
  "easy" form without ``type``) map by role; ``developer`` becomes ``system`` (chat upstreams
  such as DeepSeek know no ``developer`` role). Text parts are joined into one string, with a
  line break between parts; image, audio and inline-file parts keep the chat part form.
  ``function_call`` items become the assistant's ``tool_calls``, ``function_call_output``
  items ``tool`` messages, ``reasoning`` items the assistant's ``reasoning_content`` (the text
  of ``content``, else of ``summary``; ``encrypted_content`` is ignored). Consecutive assistant
  items (reasoning, message, calls) merge into one assistant message. Other item types are
  refused.
- ``instructions``: a leading system message, before the chained conversation (instructions
  are not carried over by ``previous_response_id``, as in OpenAI's API).
- ``tools``: only ``function`` tools; ``strict`` is sent only when the client set it (OpenAI's
  Responses default is strict, the chat default is not; a strict schema the client never
  asked for could make the upstream refuse it).
- ``tool_choice``: the string modes pass; a named function and ``allowed_tools`` (the tool list
  is narrowed to the allowed functions) are translated; others are refused.
- ``max_output_tokens`` -> ``max_tokens``; ``reasoning.effort`` -> ``reasoning_effort``;
  ``text.format`` -> ``response_format``; ``temperature``, ``top_p``, ``parallel_tool_calls``,
  ``user`` pass; the ``streamproxy`` extension field passes unchanged.
- ``stream``: the chat body streams when the client streams, always asking for usage (a
  Responses answer reports usage).
- ``store``, ``metadata``, ``previous_response_id``: surfaced on ``ResponsesRequest``.
- Refused (clear 400): ``background: true``, ``conversation``, ``prompt``, and any field the
  Responses API does not define (a typo would otherwise be dropped without a word).
- Accepted without effect: ``include``, ``truncation``, ``stream_options``, ``service_tier``,
  ``top_logprobs``, ``max_tool_calls``, the ``prompt_cache_*`` fields, ``safety_identifier``,
  ``context_management``, ``reasoning.summary``, ``text.verbosity`` and the other fields of
  ``ACCEPTED_FIELDS`` that have no meaning in front of a chat upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from streamproxy.errors import RequestError, RequestTooLargeError
from streamproxy.proxy.request import check_depth

__all__ = [
    "ACCEPTED_FIELDS",
    "ItemLookup",
    "ResponsesRequest",
    "items_to_messages",
    "load_body",
    "translate_request",
]

Item = dict[str, object]
Message = dict[str, object]
ItemLookup = Callable[[str], Mapping[str, object] | None]
"""Finds a stored item by its ``id`` (for ``item_reference`` input items); None when unknown."""

EXTENSION_FIELD = "streamproxy"

TRANSLATED_FIELDS = frozenset(
    {
        "input",
        "instructions",
        "max_output_tokens",
        "metadata",
        "model",
        "parallel_tool_calls",
        "previous_response_id",
        "reasoning",
        "store",
        "stream",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_p",
        "user",
    }
)
IGNORED_FIELDS = frozenset(
    {
        "access_programs",
        "background_options",
        "context_management",
        "image",
        "include",
        "max_tool_calls",
        "moderation",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "stream_options",
        "top_logprobs",
        "truncation",
    }
)
REFUSED_FIELDS = frozenset({"background", "conversation", "prompt"})
ACCEPTED_FIELDS = TRANSLATED_FIELDS | IGNORED_FIELDS | REFUSED_FIELDS | {EXTENSION_FIELD}
"""Every top-level field of ``ResponseCreateParams`` (openai-python 3.57) and the extension."""

TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})


@dataclass(slots=True, kw_only=True)
class ResponsesRequest:
    """A checked ``/v1/responses`` request and the chat body it became."""

    chat_body: dict[str, object]
    """The ``/v1/chat/completions`` body for the tool loop (``model``, ``messages``, ...)."""
    model: str
    is_streaming: bool
    store: bool
    """Whether the client wants the response kept for ``previous_response_id`` (default true)."""
    previous_response_id: str | None
    metadata: dict[str, object]
    items: list[Item]
    """The conversation so far as Responses items: the chained items, then this input (with
    ``item_reference`` resolved). Instructions are not items."""
    echo: dict[str, object] = field(default_factory=dict)
    """The request fields a ``response`` object repeats (``tools``, ``tool_choice``, ...)."""


def load_body(raw: bytes, *, max_size: int) -> dict[str, object]:
    """Parse a request body into a JSON object.

    Raises:
        RequestTooLargeError: ``raw`` is over ``max_size`` bytes.
        RequestError: not JSON, or not an object.
    """
    if len(raw) > max_size:
        raise RequestTooLargeError(f"the request is {len(raw)} bytes; the limit is {max_size}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise RequestError(f"the request body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    check_depth(body)
    return body


def translate_request(
    body: Mapping[str, object],
    *,
    previous_items: Sequence[Mapping[str, object]] | None = None,
    find_item: ItemLookup | None = None,
) -> ResponsesRequest:
    """Check a Responses request body and translate it into a chat-completions body.

    ``previous_items`` are the stored items of ``previous_response_id`` (what
    ``stored_items`` returned for it); ``find_item`` resolves ``item_reference`` items.

    Raises:
        RequestError: a missing or malformed field, an unknown or refused field, a
            non-function tool, an unsupported input item or content part, an unknown
            ``item_reference``.
    """
    unknown = sorted(set(body) - ACCEPTED_FIELDS)
    if unknown:
        raise RequestError(f"unknown request fields: {', '.join(unknown)}")
    _refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required and must be a string")
    previous_response_id = _optional_string(body, "previous_response_id")
    if previous_response_id is not None and previous_items is None:
        raise RequestError(f"the previous response {previous_response_id!r} is not known")
    chained = [dict(item) for item in previous_items or []]
    items = [*chained, *_input_items(body.get("input"), find_item)]
    messages: list[Message] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif instructions is not None and not isinstance(instructions, str):
        raise RequestError("'instructions' must be a string")
    messages.extend(items_to_messages(items))
    if not messages:
        raise RequestError("the request has no input")
    is_streaming = body.get("stream") is True
    chat_body: dict[str, object] = {"model": model, "messages": messages, "stream": is_streaming}
    if is_streaming:
        chat_body["stream_options"] = {"include_usage": True}
    tools = _chat_tools(body.get("tools"))
    tool_choice, tools = _chat_tool_choice(body.get("tool_choice"), tools)
    if tools:
        chat_body["tools"] = tools
    if tool_choice is not None:
        chat_body["tool_choice"] = tool_choice
    _copy_options(body, chat_body)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise RequestError("'metadata' must be an object")
    store = body.get("store", True)
    if not isinstance(store, bool):
        raise RequestError("'store' must be a boolean")
    return ResponsesRequest(
        chat_body=chat_body,
        model=model,
        is_streaming=is_streaming,
        store=store,
        previous_response_id=previous_response_id,
        metadata=dict(metadata or {}),
        items=items,
        echo=_echo(body, metadata or {}),
    )


# ---------------------------------------------------------------- input items -> messages


def _input_items(value: object, find_item: ItemLookup | None) -> list[Item]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise RequestError("'input' must be a string or a list of items")
    items: list[Item] = []
    for position, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise RequestError(f"input item {position} must be an object")
        if entry.get("type") == "item_reference":
            items.append(_resolve_reference(entry, position, find_item))
        elif "type" not in entry and "role" in entry:
            items.append({"type": "message", **entry})  # the "easy" message form
        else:
            items.append(dict(entry))
    return items


def _resolve_reference(entry: Item, position: int, find_item: ItemLookup | None) -> Item:
    item_id = entry.get("id")
    if not isinstance(item_id, str):
        raise RequestError(f"input item {position}: an item_reference needs an 'id'")
    found = find_item(item_id) if find_item is not None else None
    if found is None:
        raise RequestError(
            f"input item {position}: the item {item_id!r} is not known "
            "(send the item itself, or store: true on the response that made it)"
        )
    return dict(found)


def items_to_messages(items: Sequence[Mapping[str, object]]) -> list[Message]:
    """Chat messages for Responses items; consecutive assistant items make one message.

    Raises:
        RequestError: an item of an unsupported type, or a malformed item.
    """
    messages: list[Message] = []
    assistant: _AssistantTurn | None = None
    for position, item in enumerate(items):
        kind = item.get("type")
        is_assistant_item = kind in ("reasoning", "function_call") or (
            kind == "message" and item.get("role") == "assistant"
        )
        if not is_assistant_item and assistant is not None:
            messages.append(assistant.message())
            assistant = None
        if kind == "message":
            role = item.get("role")
            if role == "assistant":
                assistant = assistant or _AssistantTurn()
                assistant.content.append(_text(item.get("content"), position, "assistant"))
            else:
                messages.append(_message(item, position))
        elif kind == "reasoning":
            assistant = assistant or _AssistantTurn()
            assistant.reasoning.append(_reasoning_text(item))
        elif kind == "function_call":
            assistant = assistant or _AssistantTurn()
            assistant.tool_calls.append(_tool_call(item, position))
        elif kind == "function_call_output":
            messages.append(_tool_message(item, position))
        else:
            raise RequestError(
                f"input item {position}: items of type {kind!r} are not supported "
                "(the proxy serves message, function_call, function_call_output and reasoning)"
            )
    if assistant is not None:
        messages.append(assistant.message())
    return messages


@dataclass(slots=True)
class _AssistantTurn:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, object]] = field(default_factory=list)

    def message(self) -> Message:
        message: Message = {"role": "assistant", "content": "".join(self.content)}
        reasoning = "".join(self.reasoning)
        if reasoning:
            message["reasoning_content"] = reasoning
        if self.tool_calls:
            message["tool_calls"] = list(self.tool_calls)
        return message


def _message(item: Mapping[str, object], position: int) -> Message:
    role = item.get("role")
    if role in ("system", "developer"):
        return {"role": "system", "content": _text(item.get("content"), position, str(role))}
    if role != "user":
        raise RequestError(f"input item {position}: unknown message role {role!r}")
    return {"role": "user", "content": _user_content(item.get("content"), position)}


def _parts(content: object, position: int) -> list[Mapping[str, object]]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(part, dict) for part in content):
        raise RequestError(f"input item {position}: 'content' must be a string or a list of parts")
    return content


def _part_text(part: Mapping[str, object], position: int) -> str | None:
    """The text of a text-like part (refusals count as text); None for other parts."""
    kind = part.get("type")
    key = "refusal" if kind == "refusal" else "text" if kind in TEXT_PARTS else None
    if key is None:
        return None
    text = part.get(key)
    if not isinstance(text, str):
        raise RequestError(f"input item {position}: a {kind} part needs a string {key!r}")
    return text


def _text(content: object, position: int, role: str) -> str:
    texts = []
    for part in _parts(content, position):
        text = _part_text(part, position)
        if text is None:
            raise RequestError(
                f"input item {position}: {role} messages take text only, not {part.get('type')!r}"
            )
        texts.append(text)
    return "\n".join(texts)


def _user_content(content: object, position: int) -> str | list[dict[str, object]]:
    parts = _parts(content, position)
    texts = [_part_text(part, position) for part in parts]
    if all(text is not None for text in texts):
        return "\n".join(text for text in texts if text is not None)
    return [
        {"type": "text", "text": text} if text is not None else _media_part(part, position)
        for part, text in zip(parts, texts, strict=True)
    ]


def _media_part(part: Mapping[str, object], position: int) -> dict[str, object]:
    kind = part.get("type")
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise RequestError(
                f"input item {position}: an input_image needs an 'image_url' (file ids are "
                "not supported: the proxy has no file store)"
            )
        image: dict[str, object] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        data = part.get("file_data")
        if not isinstance(data, str):
            raise RequestError(
                f"input item {position}: an input_file needs 'file_data' (file ids and urls "
                "are not supported)"
            )
        file: dict[str, object] = {"file_data": data}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise RequestError(f"input item {position}: an input_audio needs 'input_audio'")
        return {"type": "input_audio", "input_audio": dict(audio)}
    raise RequestError(f"input item {position}: content parts of type {kind!r} are not supported")


def _reasoning_text(item: Mapping[str, object]) -> str:
    for key in ("content", "summary"):
        parts = item.get(key)
        if isinstance(parts, list):
            texts = [
                str(part["text"])
                for part in parts
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            ]
            if texts:
                return "\n\n".join(texts)
    return ""


def _tool_call(item: Mapping[str, object], position: int) -> dict[str, object]:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise RequestError(f"input item {position}: a function_call needs 'call_id' and 'name'")
    if not isinstance(arguments, str):
        raise RequestError(f"input item {position}: a function_call needs string 'arguments'")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_message(item: Mapping[str, object], position: int) -> Message:
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        raise RequestError(f"input item {position}: a function_call_output needs 'call_id'")
    output = item.get("output")
    if not isinstance(output, str | list):
        raise RequestError(f"input item {position}: 'output' must be a string or a list of parts")
    return {"role": "tool", "tool_call_id": call_id, "content": _text(output, position, "tool")}


# ---------------------------------------------------------------- tools and options


def _chat_tools(value: object) -> list[dict[str, object]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError("'tools' must be a list")
    tools: list[dict[str, object]] = []
    for position, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise RequestError(f"tool {position} must be an object")
        if tool.get("type") != "function":
            raise RequestError(
                f"tool {position}: tools of type {tool.get('type')!r} are not supported "
                "(the proxy serves function tools; its own tools run server-side)"
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError(f"tool {position}: a function tool needs a 'name'")
        function: dict[str, object] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        tools.append({"type": "function", "function": function})
    return tools


def _chat_tool_choice(
    value: object, tools: list[dict[str, object]]
) -> tuple[object, list[dict[str, object]]]:
    if value is None or value in ("auto", "none", "required"):
        return value, tools
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if not isinstance(name, str):
            raise RequestError("'tool_choice' of type function needs a 'name'")
        return {"type": "function", "function": {"name": name}}, tools
    if isinstance(value, dict) and value.get("type") == "allowed_tools":
        mode = value.get("mode", "auto")
        allowed = value.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise RequestError("'tool_choice' allowed_tools needs a mode and a list of tools")
        names = set()
        for entry in allowed:
            if not isinstance(entry, dict) or entry.get("type") != "function":
                raise RequestError("'tool_choice' allowed_tools may name function tools only")
            names.add(entry.get("name"))
        narrowed = [tool for tool in tools if _function_name(tool) in names]
        return mode, narrowed
    raise RequestError(f"'tool_choice' {value!r} is not supported")


def _function_name(tool: Mapping[str, object]) -> object:
    function = tool.get("function")
    return function.get("name") if isinstance(function, dict) else None


def _copy_options(body: Mapping[str, object], chat_body: dict[str, object]) -> None:
    for key in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(key) is not None:
            chat_body[key] = body[key]
    max_output_tokens = body.get("max_output_tokens")
    if max_output_tokens is not None:
        if not isinstance(max_output_tokens, int) or isinstance(max_output_tokens, bool):
            raise RequestError("'max_output_tokens' must be an integer")
        chat_body["max_tokens"] = max_output_tokens
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise RequestError("'reasoning' must be an object")
        if reasoning.get("effort") is not None:
            chat_body["reasoning_effort"] = reasoning["effort"]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat_body["response_format"] = response_format
    if EXTENSION_FIELD in body:
        chat_body[EXTENSION_FIELD] = body[EXTENSION_FIELD]


def _response_format(text: object) -> dict[str, object] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise RequestError("'text' must be an object")
    format_ = text.get("format")
    if format_ is None:
        return None
    kind = format_.get("type") if isinstance(format_, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(format_, dict)
        if not isinstance(format_.get("name"), str) or not isinstance(format_.get("schema"), dict):
            raise RequestError("'text.format' json_schema needs a 'name' and a 'schema'")
        schema = {
            key: format_[key]
            for key in ("name", "schema", "description", "strict")
            if format_.get(key) is not None
        }
        return {"type": "json_schema", "json_schema": schema}
    raise RequestError(f"'text.format' of type {kind!r} is not supported")


def _refuse_unsupported(body: Mapping[str, object]) -> None:
    if body.get("background") is True:
        raise RequestError("background responses are not supported; send background: false")
    if body.get("conversation") is not None:
        raise RequestError("conversations are not supported; use previous_response_id")
    if body.get("prompt") is not None:
        raise RequestError("prompt templates are not supported; send the input itself")


def _optional_string(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(f"{key!r} must be a string")
    return value


def _echo(body: Mapping[str, object], metadata: Mapping[str, object]) -> dict[str, object]:
    reasoning = body.get("reasoning")
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": dict(metadata),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
        if isinstance(reasoning, dict)
        else None,
        "store": body.get("store", True),
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": list(tools) if isinstance(tools := body.get("tools"), list) else [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation", "disabled"),
        "user": body.get("user"),
    }
