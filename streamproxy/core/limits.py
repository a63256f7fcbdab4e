"""Limits that bound every buffer the core keeps.

Each is a named default with the reason for its size; pass a ``Limits`` to ``ChatStream`` to
change them. A limit that is hit never truncates silently: an SSE event or text field over its
limit raises ``LimitExceededError``; a tool call over its limit becomes ``ToolCallInvalid`` with
``kind="too_large"`` (its text is dropped, so memory stays bounded).
"""

from __future__ import annotations

from dataclasses import dataclass

# One SSE event. The largest real chunks are whole tool calls sent in one event (Groq, Gemini);
# 16 MiB is far above any seen, and small enough that a runaway event cannot exhaust memory
# (h11's DEFAULT_MAX_INCOMPLETE_EVENT_SIZE plays the same role for headers).
DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024

# One tool call's arguments. vLLM reports 128 KiB string arguments (vllm-project/vllm#52865);
# the benchmark runs 1 MiB; 8 MiB leaves room for generated files while bounding a bad stream.
DEFAULT_MAX_ARGUMENTS_SIZE = 8 * 1024 * 1024

# One text field of one choice (content, reasoning, refusal). Models stop at a few hundred
# thousand tokens; 64 MiB is about ten times the largest context window in characters.
DEFAULT_MAX_TEXT_SIZE = 64 * 1024 * 1024

# Tool calls in one choice, and choices in one stream (`n`). OpenAI caps parallel calls at 128.
DEFAULT_MAX_TOOL_CALLS = 128
DEFAULT_MAX_CHOICES = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The sizes and counts past which the core refuses input."""

    max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    max_arguments_size: int = DEFAULT_MAX_ARGUMENTS_SIZE
    max_text_size: int = DEFAULT_MAX_TEXT_SIZE
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS
    max_choices: int = DEFAULT_MAX_CHOICES
