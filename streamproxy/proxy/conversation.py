"""Rebuilding the upstream conversation from what the client sends back.

Chat clients send back only what they saw: one assistant message per turn, without the server
tool calls and results that happened inside it, and often without ``reasoning_content``. The
proxy keeps, in the state store (``state/``), what the client will send back mapped to the
full upstream messages it stands for:

- an assistant message whose ``tool_calls`` ids are exactly ``ids`` (a turn that handed calls to
  the client) -> the upstream assistant message with every call and its reasoning, followed by
  the results of the server calls made in that turn (``calls_key``);
- an assistant message with a given visible text (a finished turn that ran server tools, or one
  that asked for an approval in chat) -> every assistant and tool message of that turn
  (``content_key``).

Keys are per client identity, so one client key cannot read another's tool results. When an
entry is missing (expired, or a store the worker does not share) the client's own messages are
sent as they are, which is still a valid conversation, only a less complete one.

``rebuild`` also finds the approvals the request answers (``approval.py``): in chat mode a user
message right after a message that asked for approval; in client mode ``tool`` messages for
signed call ids. Each becomes a ``Settlement`` for the driver, which runs the approved ones once
before the first round; the answering message is replaced by the ``tool`` result the model
needs. Every assistant message gets a ``content`` key (DeepSeek rejects one without it), and a
second ``tool`` message for the same call id is dropped (a client that repeats its answer).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from streamproxy.errors import StateUnavailableError
from streamproxy.proxy.approval import (
    ApprovalSigner,
    PendingCall,
    SignedCall,
    Verdict,
    approval_record_key,
    chat_verdict,
    client_verdict,
)
from streamproxy.proxy.request import content_text
from streamproxy.proxy.state import StateStore

__all__ = ["Message", "Settlement", "calls_key", "content_key", "rebuild"]

Message = dict[str, object]

logger = logging.getLogger("streamproxy.proxy")


async def _lookups(stash: StateStore, client: str, keys: list[str | None]) -> list[object | None]:
    """The stash entry of each key (None for a None key) in one round trip to the store: a
    conversation of many turns waits for the store once, not once per assistant message.

    An entry is None when missing or when the store cannot be reached: the client's own
    messages are then sent as they are (still a valid conversation, only a less complete one).
    """
    wanted = [key for key in keys if key is not None]
    if not wanted:
        return [None] * len(keys)
    try:
        values = iter(await stash.get_many(client, wanted))
    except StateUnavailableError as error:
        logger.warning("the state store is unavailable (%s): %s", error.store, error.reason)
        return [None] * len(keys)
    return [None if key is None else next(values) for key in keys]


def content_key(content: str) -> str:
    """The store key for a finished turn's visible content."""
    return "content:" + hashlib.sha256(content.strip().encode()).hexdigest()


def calls_key(ids: Sequence[str]) -> str:
    """The store key for a turn that handed these call ids to the client."""
    return "calls:" + hashlib.sha256("\0".join(ids).encode()).hexdigest()


@dataclass(slots=True, kw_only=True)
class Settlement:
    """An approval answered in this request: run it (once) or tell the model why not."""

    name: str
    upstream_id: str
    arguments: str
    verdict: Verdict
    signed: SignedCall | None
    """The signed call: its ledger entry makes the approval run once."""
    message: Message
    """The ``tool`` message (already in the conversation) whose content receives the result."""
    is_answer: bool
    """True for the answer to the last assistant message: only those may run."""
    keeps: tuple[str, list[Message]] | None = None
    """A chat approval's round, to keep again once settled: its question's store key and the
    round's messages with the results, so later requests rebuild a conversation in which every
    call has its result."""


async def rebuild(
    messages: list[Message],
    *,
    stash: StateStore,
    signer: ApprovalSigner | None,
    client: str,
) -> tuple[list[Message], list[Settlement]]:
    """The upstream conversation for the client's ``messages``, and the approvals to settle.

    ``signer`` is None when the state store (which keeps the approval secret) cannot be
    reached: plain conversations still rebuild, an approval in them raises.

    Raises:
        StateUnavailableError: the conversation answers an approval and the store is down.
    """
    settlements: list[Settlement] = []
    question = _question(messages)
    # the approval record a chat answer may settle, and each assistant message's stash entry
    found = await _lookups(
        stash,
        client,
        [
            approval_record_key(question) if question is not None else None,
            *(_stash_key(message) for message in messages),
        ],
    )
    records, stashed = found[0], found[1:]
    if question is not None:
        answered = await _with_chat_answer(
            messages, question, records, stash, signer, client, settlements
        )
        if answered is not messages:  # the answer became the pending calls' round
            messages = answered
            stashed = await _lookups(stash, client, [_stash_key(message) for message in messages])
    signed_calls: dict[str, tuple[str, str]] = {}  # signed id -> (name, arguments) as sent back
    expanded: list[Message] = []
    for message, entry in zip(messages, stashed, strict=True):
        if message.get("role") == "assistant":
            _record_signed_calls(message, signed_calls)
        replacement = _restored(entry)
        expanded.extend(replacement if replacement is not None else [message])
    answer_start = _answer_start(expanded)
    rebuilt: list[Message] = []
    answered_ids: set[str] = set()
    for position, message in enumerate(expanded):
        role = message.get("role")
        if role == "assistant":
            message = _with_upstream_ids(message)
            if message.get("content") is None:
                message["content"] = ""
            answered_ids = set()
        elif role == "tool" and isinstance(message.get("tool_call_id"), str):
            call_id = str(message["tool_call_id"])
            signed = ApprovalSigner.parse(call_id)
            if signed is not None:
                if signer is None:
                    raise StateUnavailableError("(secret)", "an approval needs the secret")
                message = dict(message, tool_call_id=signed.upstream_id)
                name, arguments = signed_calls.get(call_id, ("", ""))
                verdict = signer.verify(call_id, name, arguments, client=client)
                if verdict.is_approved:
                    verdict = client_verdict(message.get("content"))
                settlements.append(
                    Settlement(
                        name=name,
                        upstream_id=signed.upstream_id,
                        arguments=arguments,
                        verdict=verdict,
                        signed=signed,
                        message=message,
                        is_answer=position >= answer_start,
                    )
                )
            if str(message["tool_call_id"]) in answered_ids:
                continue  # the same call answered twice: the first answer counts
            answered_ids.add(str(message["tool_call_id"]))
        rebuilt.append(message)
    return rebuilt, settlements


def _question(messages: list[Message]) -> str | None:
    """The text of an assistant message that a user message answers, last in ``messages``: it
    may have asked for an approval in chat."""
    if len(messages) < 2 or messages[-1].get("role") != "user":
        return None
    question = messages[-2]
    content = question.get("content")
    if question.get("role") != "assistant" or not isinstance(content, str) or not content:
        return None
    return content


async def _with_chat_answer(
    messages: list[Message],
    content: str,
    records: object | None,
    stash: StateStore,
    signer: ApprovalSigner | None,
    client: str,
    settlements: list[Settlement],
) -> list[Message]:
    """Replace a chat user's yes or no with the pending calls' results (to be filled in).

    ``content`` is the question's text (``_question``), ``records`` what the store holds under
    its approval record key."""
    answer = messages[-1]
    pending = [PendingCall.from_record(item) for item in records or []]  # type: ignore[attr-defined]
    calls = [call for call in pending if call is not None]
    if not calls:
        return messages
    (round_messages,) = await _lookups(stash, client, [content_key(content)])
    if not isinstance(round_messages, list):
        return messages
    if signer is None:
        raise StateUnavailableError("(secret)", "an approval needs the secret")
    verdict = chat_verdict(content_text(answer.get("content")))
    results: list[Message] = []
    for call in calls:
        signed = ApprovalSigner.parse(call.signed_id)
        checked = signer.verify(call.signed_id, call.name, call.arguments, client=client)
        message: Message = {"role": "tool", "tool_call_id": call.upstream_id, "content": ""}
        results.append(message)
        settlements.append(
            Settlement(
                name=call.name,
                upstream_id=call.upstream_id,
                arguments=call.arguments,
                verdict=verdict if checked.is_approved else checked,
                signed=signed,
                message=message,
                is_answer=True,
            )
        )
    restored = [dict(item) for item in round_messages if isinstance(item, dict)]
    keeps = (content_key(content), [*restored, *results])
    for settlement in settlements[-len(calls) :]:
        settlement.keeps = keeps
    return [*messages[:-2], *restored, *results]


def _stash_key(message: Message) -> str | None:
    """The key the full upstream messages of an assistant message may be stashed under."""
    if message.get("role") != "assistant":
        return None
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list) and tool_calls:
        return calls_key([str(call.get("id")) for call in tool_calls if isinstance(call, dict)])
    content = message.get("content")
    if isinstance(content, str) and content:
        return content_key(content)
    return None


def _restored(found: object | None) -> list[Message] | None:
    """The stashed messages, copied; None when the entry is missing or not a list."""
    if not isinstance(found, list):
        return None
    return [dict(item) for item in found if isinstance(item, dict)]


def _answer_start(messages: list[Message]) -> int:
    """Index of the first ``tool`` message answering the last assistant message."""
    for position in range(len(messages) - 1, -1, -1):
        if messages[position].get("role") != "tool":
            return position + 1
    return 0


def _record_signed_calls(message: Message, calls: dict[str, tuple[str, str]]) -> None:
    tool_calls = message.get("tool_calls")
    if not isinstance(tool_calls, list):
        return
    for call in tool_calls:
        if isinstance(call, dict) and isinstance(call.get("id"), str):
            if ApprovalSigner.parse(call["id"]) is None:
                continue
            function = call.get("function")
            name = arguments = ""
            if isinstance(function, dict):
                name = str(function.get("name", ""))
                arguments = str(function.get("arguments", ""))
            calls[call["id"]] = (name, arguments)


def _with_upstream_ids(message: Message) -> Message:
    tool_calls = message.get("tool_calls")
    if not isinstance(tool_calls, list):
        return dict(message)
    rewritten: list[object] = []
    for call in tool_calls:
        if isinstance(call, dict) and isinstance(call.get("id"), str):
            signed = ApprovalSigner.parse(call["id"])
            if signed is not None:
                call = dict(call, id=signed.upstream_id)
        rewritten.append(call)
    return dict(message, tool_calls=rewritten)
