"""Usage summed over the upstream rounds of one client request.

Each round's usage is the last one its stream reported (usage is cumulative within a stream,
ANCHORS B.47); rounds are then added field by field, nested objects included, so DeepSeek's
``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens`` and
``completion_tokens_details.reasoning_tokens`` are summed like the top-level counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def sum_usage(rounds: Iterable[Mapping[str, object] | None]) -> dict[str, object] | None:
    """The field-by-field sum of every round's usage; None when no round reported any."""
    total: dict[str, object] | None = None
    for usage in rounds:
        if usage is None:
            continue
        total = _add(total or {}, usage)
    return total


def _add(total: dict[str, object], usage: Mapping[str, object]) -> dict[str, object]:
    for key, value in usage.items():
        current = total.get(key)
        if isinstance(value, bool):
            total.setdefault(key, value)
        elif isinstance(value, int | float):
            total[key] = (current if isinstance(current, int | float) else 0) + value
        elif isinstance(value, Mapping):
            total[key] = _add(dict(current) if isinstance(current, Mapping) else {}, value)
        elif key not in total:
            total[key] = value
    return total
