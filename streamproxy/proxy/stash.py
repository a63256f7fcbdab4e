"""What the proxy remembers between requests so the conversation sent upstream stays complete.

Chat clients send back only what they saw: one assistant message per turn, without the server
tool calls and results that happened inside it, and often without ``reasoning_content``. The
stash maps what the client will send back to the full upstream messages it stands for:

- an assistant message whose ``tool_calls`` ids are exactly ``ids`` (a turn that handed calls to
  the client) -> the upstream assistant message with every call and its reasoning, followed by
  the results of the server calls made in that turn;
- an assistant message whose content has a given digest (a finished turn that ran server tools)
  -> every assistant and tool message of that turn.

Keys include the client's identity, so one client key cannot read another's tool results. The
stash is per process, bounded (least recently used first out) and entries expire; when an entry
is missing (another worker, a restart) the client's own messages are sent as they are, which is
still a valid conversation, only a less complete one.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

Message = dict[str, object]

DEFAULT_MAX_ENTRIES = 1024


def content_key(content: str) -> str:
    """The stash key part for a finished turn's visible content."""
    return "content:" + hashlib.sha256(content.strip().encode()).hexdigest()


def calls_key(ids: Sequence[str]) -> str:
    """The stash key part for a turn that handed these call ids to the client."""
    return "calls:" + "\0".join(ids)


class TranscriptStash:
    """A bounded, expiring map from (client, key) to upstream messages."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[float, list[Message]]] = OrderedDict()
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock

    def put(self, client: str, key: str, messages: list[Message]) -> None:
        self._entries[(client, key)] = (self._clock() + self.ttl, messages)
        self._entries.move_to_end((client, key))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, client: str, key: str) -> list[Message] | None:
        entry = self._entries.get((client, key))
        if entry is None:
            return None
        expires, messages = entry
        if expires < self._clock():
            del self._entries[(client, key)]
            return None
        self._entries.move_to_end((client, key))
        return messages

    def __len__(self) -> int:
        return len(self._entries)
