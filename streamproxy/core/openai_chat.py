"""Reader for the OpenAI chat-completions dialect (``chat.completion.chunk`` payloads).

DeepSeek, OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, Groq, Mistral,
OpenRouter, Azure, Gemini's compatibility layer...) speak it. The reader checks each chunk's
shape, then hands its parts to the ``Assembler`` in the order that matters: the delta before the
``finish_reason`` of the same chunk (vllm-project/vllm-ascend#8327; DeepSeek's last chunk carries
both), and usage last. Fields it does not know (``obfuscation``, ``x_groq``, ``p``...) are ignored.

Payload rules: ``null`` and ``""`` are not deltas; ``reasoning_content`` and ``reasoning`` are both
reasoning; ``delta.content`` may be a list of parts (Mistral: ``{"type": "text"}`` parts are
content, ``{"type": "thinking"}`` parts are reasoning); ``function.arguments`` given as an object
rather than a string is serialised once; a top-level ``error`` is an in-band error even when
``choices`` are present (the chunk is still applied).
"""

from __future__ import annotations

from typing import Any

import orjson

from streamproxy.core.assembler import Assembler, ToolCall
from streamproxy.errors import ProtocolError

# The delta keys whose string is text, and the kind of text each carries.
TEXT_KINDS = {
    "content": "content",
    "reasoning_content": "reasoning",
    "reasoning": "reasoning",
    "refusal": "refusal",
}


def read_chunk(assembler: Assembler, chunk: dict[str, Any]) -> None:
    """Apply one parsed chunk, every field checked; raises ``ProtocolError`` on a wrong shape.

    This is the dialect's one decoding path: ``ChatStream`` sends every chunk here except those
    a chunk template (``template.py``) applies, and a template hit makes the same assembler
    calls this reader would (``Assembler.text``, ``Assembler.continue_arguments``).
    """
    if "error" in chunk and chunk["error"] is not None:
        assembler.error({"error": chunk["error"]})
        if "choices" not in chunk:
            return
    if not assembler.is_started:
        _start(assembler, chunk)
    choices = chunk.get("choices")
    if choices:
        if type(choices) is not list:
            raise ProtocolError("chunk.choices is not a list")
        for choice in choices:
            _read_choice(assembler, choice)
    elif choices is not None and type(choices) is not list:
        raise ProtocolError("chunk.choices is not a list")
    usage = chunk.get("usage")
    if usage:
        if type(usage) is not dict:
            raise ProtocolError("chunk.usage is not an object")
        assembler.usage(usage)


def _start(assembler: Assembler, chunk: dict[str, Any]) -> None:
    created = chunk.get("created")
    assembler.start(
        "openai-chat",
        _string(chunk.get("id")),
        _string(chunk.get("model")),
        created if type(created) is int else 0,
    )
    fingerprint = chunk.get("system_fingerprint")
    if isinstance(fingerprint, str) and fingerprint:
        assembler.system_fingerprint = fingerprint


def _read_choice(assembler: Assembler, choice: object) -> None:
    if type(choice) is not dict:
        raise ProtocolError("a choice is not an object")
    index = choice.get("index", 0)
    if type(index) is not int or index < 0:
        if index is not None:
            raise ProtocolError(f"choice index {index!r} is not a non-negative integer")
        index = 0
    delta = choice.get("delta")
    if delta is not None:
        if type(delta) is not dict:
            raise ProtocolError("choice.delta is not an object")
        if delta:
            _read_delta(assembler, index, delta)
    logprobs = choice.get("logprobs")
    if logprobs and type(logprobs) is dict:
        assembler.extend_logprobs(index, logprobs)
    finish_reason = choice.get("finish_reason")
    if finish_reason:
        if type(finish_reason) is not str:
            raise ProtocolError("finish_reason is not a string")
        assembler.finish(index, finish_reason)


def _read_delta(assembler: Assembler, index: int, delta: dict[str, Any]) -> None:
    # one pass over the keys present: most deltas carry one or two
    for key, value in delta.items():
        if value is None:
            continue
        if key == "tool_calls":
            if type(value) is not list:
                raise ProtocolError("delta.tool_calls is not a list")
            claimed: set[ToolCall] = set()
            for tool_call in value:
                _read_tool_call(assembler, index, tool_call, claimed)
        elif key == "content":
            if type(value) is str:
                assembler.text(index, "content", value)
            elif type(value) is list:
                _read_content_parts(assembler, index, value)
            else:
                raise ProtocolError("delta.content is neither a string nor a list of parts")
        elif key == "reasoning_content" or key == "reasoning":
            if type(value) is not str:
                raise ProtocolError(f"delta.{key} is not a string")
            assembler.text(index, "reasoning", value)
        elif key == "refusal":
            if type(value) is not str:
                raise ProtocolError("delta.refusal is not a string")
            assembler.text(index, "refusal", value)
        elif key == "role":
            state = assembler.choice(index)
            if state.role is None and type(value) is str and value:
                state.role = value
        elif key == "reasoning_details" and type(value) is list and value:
            state = assembler.choice(index)
            state.reasoning_details = (state.reasoning_details or []) + value


def _read_content_parts(assembler: Assembler, index: int, parts: list[Any]) -> None:
    for part in parts:
        if not isinstance(part, dict):
            raise ProtocolError("a delta.content part is not an object")
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            assembler.text(index, "content", part["text"])
        elif kind == "thinking":
            thinking = part.get("thinking")
            if isinstance(thinking, str):
                assembler.text(index, "reasoning", thinking)
            elif isinstance(thinking, list):
                for inner in thinking:
                    if isinstance(inner, dict) and isinstance(inner.get("text"), str):
                        assembler.text(index, "reasoning", inner["text"])


def _read_tool_call(
    assembler: Assembler, index: int, tool_call: object, claimed: set[ToolCall]
) -> None:
    if not isinstance(tool_call, dict):
        raise ProtocolError("a tool_calls entry is not an object")
    call_index = tool_call.get("index")
    if call_index is not None and (not isinstance(call_index, int) or isinstance(call_index, bool)):
        raise ProtocolError(f"tool call index {call_index!r} is not an integer")
    id = tool_call.get("id")
    if id is not None and not isinstance(id, str):
        raise ProtocolError("tool call id is not a string")
    function = tool_call.get("function") or {}
    if not isinstance(function, dict):
        raise ProtocolError("tool call function is not an object")
    name = function.get("name")
    if name is not None and not isinstance(name, str):
        raise ProtocolError("tool call name is not a string")
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, str):
        if not isinstance(arguments, dict):
            raise ProtocolError("tool call arguments are neither a string nor an object")
        arguments = orjson.dumps(arguments).decode()
    extra = tool_call.get("extra_content")
    assembler.tool_delta(
        index,
        call_index=call_index,
        id=id,
        name=name,
        arguments=arguments,
        claimed=claimed,
        extra_content=extra if isinstance(extra, dict) else None,
    )


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""
