"""The assembled result: the ``chat.completion`` object and its assistant messages.

The message is what the non-streaming API would have returned, and can be appended to
``messages`` as is for the next request:

- ``content`` is always present (``None`` when no content was sent; DeepSeek rejects an
  assistant message without the key, ANCHORS B.38);
- ``reasoning_content`` is kept whenever reasoning was streamed, whichever field carried it
  (DeepSeek's thinking mode rejects a tool loop without it, ANCHORS B.35; it is never an empty
  placeholder, B.37);
- ``tool_calls`` lists every call in order as ``{id, type: "function", function: {name,
  arguments}}``; a sealed call carries the arguments it was judged on (``{}`` for blank ones), and
  provider fields that must round-trip (Gemini's ``extra_content`` thought signatures, OpenRouter's
  ``reasoning_details``) are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamproxy.core.assembler import Assembler, Choice


def build_message(choice: Choice) -> dict[str, object]:
    """The assistant message assembled for one choice."""
    message: dict[str, object] = {
        "role": choice.role or "assistant",
        "content": "".join(choice.content) if choice.content is not None else None,
    }
    if choice.reasoning:
        message["reasoning_content"] = "".join(choice.reasoning)
    if choice.refusal:
        message["refusal"] = "".join(choice.refusal)
    if choice.reasoning_details:
        message["reasoning_details"] = choice.reasoning_details
    if choice.calls:
        tool_calls: list[dict[str, object]] = []
        for call in choice.calls:
            arguments = call.final_arguments
            if arguments is None:
                arguments = call.arguments.text()
            entry: dict[str, object] = {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments},
            }
            if call.extra_content:
                entry["extra_content"] = call.extra_content
            tool_calls.append(entry)
        message["tool_calls"] = tool_calls
    return message


def build_completion(assembler: Assembler) -> dict[str, object]:
    """The ``chat.completion`` object for everything assembled so far."""
    choices: list[dict[str, object]] = []
    for index in sorted(assembler.choices):
        choice = assembler.choices[index]
        choices.append(
            {
                "index": index,
                "message": build_message(choice),
                "logprobs": choice.logprobs,
                "finish_reason": choice.finish_reason,
            }
        )
    completion: dict[str, object] = {
        "id": assembler.id,
        "object": "chat.completion",
        "created": assembler.created,
        "model": assembler.model,
        "choices": choices,
        "usage": assembler.last_usage,
    }
    if assembler.system_fingerprint:
        completion["system_fingerprint"] = assembler.system_fingerprint
    return completion
