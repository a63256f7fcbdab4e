"""``conversation.rebuild``: what it restores from the stash, and how often it asks the store."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streamproxy.proxy.conversation import calls_key, content_key, rebuild
from streamproxy.proxy.state.memory import MemoryStateStore

pytestmark = pytest.mark.anyio

HOUR = 3600.0


class CountingStore(MemoryStateStore):
    """A memory store that counts its lookups."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.get_manys: list[list[str]] = []

    async def get(self, client: str, key: str) -> object | None:
        self.gets += 1
        return await super().get(client, key)

    async def get_many(self, client: str, keys: Sequence[str]) -> list[object | None]:
        self.get_manys.append(list(keys))
        return await super().get_many(client, keys)


async def test_a_conversation_of_many_turns_is_looked_up_in_one_round_trip() -> None:
    store = CountingStore()
    first_round = [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "24 C"},
        {"role": "assistant", "content": "It is 24 C.", "reasoning_content": "thought"},
    ]
    await store.put("alice", content_key("It is 24 C."), first_round, HOUR)
    handed = [{"role": "assistant", "content": "", "tool_calls": [{"id": "call_2"}]}]
    await store.put("alice", calls_key(["call_2"]), handed, HOUR)
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "It is 24 C."},
        {"role": "user", "content": "And a note?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "written"},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "Thanks"},
    ]

    rebuilt, settlements = await rebuild(messages, stash=store, signer=None, client="alice")

    assert settlements == []
    assert store.gets == 0
    assert len(store.get_manys) == 1  # the approval record and the three assistant messages
    assert len(store.get_manys[0]) == 4
    assert [message["role"] for message in rebuilt] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert rebuilt[3]["reasoning_content"] == "thought"


async def test_a_first_message_asks_the_store_nothing() -> None:
    store = CountingStore()
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]

    rebuilt, _ = await rebuild(messages, stash=store, signer=None, client="alice")

    assert rebuilt == messages
    assert store.gets == 0 and store.get_manys == []
