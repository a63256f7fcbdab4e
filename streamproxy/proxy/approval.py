"""The approval protocol: a ``needs_approval`` tool runs only when the user approves exactly that
call, and runs at most once per approval.

Issuing
-------
When the model calls a ``needs_approval`` tool, the proxy does not run it. It signs the call::

    spw2.<expires>.<nonce>.<issued>.<mac>.<upstream id>

Both macs are HMAC-SHA256 (cut to 128 bits) under a secret kept in the state store, so every
worker and host that shares the store shares it. ``issued`` covers the version, the expiry, a
random nonce, the upstream id and the client's identity (a digest of its client key); ``mac``
covers those and the tool name and the arguments in canonical JSON (sorted keys, no spaces,
integral numbers as integers). Then, by mode:

- ``chat`` (the default; for chat UIs that know nothing of the proxy's tools): the turn ends
  with a short message naming the tool, showing its arguments and asking yes or no. The signed
  call and the round's messages are kept in the store under that message's text. The user's
  next message answers: a word of ``APPROVING_ANSWERS`` (``yes``, ``y``, ``ok``, ``approve``...,
  case and final punctuation ignored) approves exactly the pending calls; anything else declines
  them (the text goes to the model as the reason). The model's turn then goes on in that same
  response.
- ``client`` (for SDK clients that show the call and send a verdict): the call reaches the
  client as an ordinary tool call with the signed id (``finish_reason: "tool_calls"``); a
  ``tool`` message for that id whose content is ``{"approved": true}`` approves it;
  ``{"approved": false, "reason": ...}`` or anything else declines it. The arguments the client
  sends back are compared as JSON values, so a client that re-serialises them can approve; text
  with duplicate keys never validates (the approver would see one value and the tool another).

Verifying
---------
An approval is checked, in order, for: an id this proxy issued to this client (``forged``),
arguments that are one JSON object with unique keys (``invalid``), the name and arguments it
signed (``mismatch``), its expiry (``expired``). Each has its own message for the
model and its own audit outcome.

Exactly once
------------
An approved call runs through ``run_once``: it claims the call in the store's ledger (atomically,
across processes and hosts), runs it, and records the outcome; a repeat of the same approval
(in one request, concurrently, later, on another worker or host) gets the recorded outcome
(``already_ran``) or, while the first run is still going, a message saying so. The ledger key is
the signed call (nonce and mac), never the upstream id alone, so an upstream that reuses ids (or
sends empty ones) cannot make a new call look like an old one. Records live until the approval's
expiry and are not evicted by other clients' traffic (``state/``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import orjson

from streamproxy.config import ApprovalMode
from streamproxy.proxy.request import content_text
from streamproxy.proxy.state import StateStore

__all__ = [
    "APPROVING_ANSWERS",
    "ApprovalMode",
    "ApprovalSigner",
    "PendingCall",
    "SignedCall",
    "Verdict",
    "approval_prompt",
    "approval_record_key",
    "canonical_arguments",
    "chat_verdict",
    "client_identity",
    "client_verdict",
    "declined_text",
    "run_once",
]

VerdictKind = Literal["approved", "declined", "forged", "mismatch", "expired", "invalid"]

PREFIX = "spw2"
# Answers that approve a pending call in chat mode, compared lower-case without final punctuation.
APPROVING_ANSWERS = frozenset(
    {
        "y",
        "yes",
        "yep",
        "yeah",
        "ok",
        "okay",
        "sure",
        "approve",
        "approved",
        "allow",
        "confirm",
        "confirmed",
        "go",
        "go ahead",
        "do it",
        "run it",
    }
)
_NONCE_BYTES = 9
# A ledger entry lives this long past its signature's expiry (clock skew between hosts).
LEDGER_MARGIN = 300.0


@dataclass(frozen=True, slots=True)
class SignedCall:
    """The parts of a signed call id."""

    upstream_id: str
    expires: int
    nonce: str
    issued: str
    """A mac over the id without the call: tells a changed call from a made-up id."""
    mac: str

    @property
    def ledger_key(self) -> str:
        """The key of this approval in the exactly-once ledger."""
        return f"approval:{self.nonce}.{self.issued}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an approval answer says: ``approved``, or why the call does not run."""

    kind: VerdictKind
    reason: str | None = None

    @property
    def is_approved(self) -> bool:
        return self.kind == "approved"


class ApprovalSigner:
    """Signs approval calls and verifies them when they come back."""

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.ttl = ttl
        self._clock = clock

    def sign(self, upstream_id: str, name: str, arguments: str, *, client: str) -> str:
        """The id the client sees for this call."""
        expires = str(int(self._clock() + self.ttl))
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(_NONCE_BYTES)).decode()
        issued = self._mac(expires, nonce, upstream_id, client)
        canonical = canonical_arguments(arguments) or arguments
        mac = self._mac(expires, nonce, upstream_id, client, name, canonical)
        return f"{PREFIX}.{expires}.{nonce}.{issued}.{mac}.{upstream_id}"

    @staticmethod
    def parse(call_id: str) -> SignedCall | None:
        """The parts of a signed id, or None when ``call_id`` is not one."""
        parts = call_id.split(".", 5)
        if len(parts) != 6 or parts[0] != PREFIX or not _is_expiry(parts[1]):
            return None
        _, expires, nonce, issued, mac, upstream_id = parts
        return SignedCall(upstream_id, int(expires), nonce, issued, mac)

    def verify(self, call_id: str, name: str, arguments: str, *, client: str) -> Verdict:
        """``approved`` when ``call_id`` signs exactly this call for this client, unexpired;
        otherwise the kind of failure, with a message safe to show the model."""
        signed = self.parse(call_id)
        if signed is None:
            return Verdict("forged", "the call was not issued by this proxy")
        expires = str(signed.expires)
        issued = self._mac(expires, signed.nonce, signed.upstream_id, client)
        if not _same(issued, signed.issued):
            return Verdict("forged", "the call was not issued by this proxy to this client")
        canonical = canonical_arguments(arguments)
        if canonical is None:
            return Verdict(
                "invalid", "the arguments sent back are not one JSON object with unique keys"
            )
        expected = self._mac(expires, signed.nonce, signed.upstream_id, client, name, canonical)
        if not _same(expected, signed.mac):
            return Verdict("mismatch", "the call's name or arguments differ from the ones approved")
        if signed.expires < self._clock():
            return Verdict("expired", "the approval request expired")
        return Verdict("approved")

    def _mac(self, *parts: str) -> str:
        message = "\0".join((PREFIX, *parts))
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _is_expiry(text: str) -> bool:
    """ASCII digits of a plausible timestamp (``isdigit`` alone admits ``²`` and 5,000 digits)."""
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison that also takes text a client made up (any characters)."""
    return hmac.compare_digest(expected.encode(), given.encode(errors="surrogatepass"))


def canonical_arguments(text: str) -> str | None:
    """Arguments text as canonical JSON, or None when it is not one object with unique keys.

    Two texts that a client could produce from the same value (other spacing, key order,
    escapes, ``1.0`` for ``1``) give the same canonical text.
    """
    try:
        value = json.loads(text or "{}", object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return json.dumps(_normalised(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _normalised(value: object) -> object:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return value


def chat_verdict(text: str) -> Verdict:
    """A chat user's answer: a word of ``APPROVING_ANSWERS`` approves, anything else declines."""
    answer = " ".join(text.strip().lower().rstrip(".!").split())
    if answer in APPROVING_ANSWERS:
        return Verdict("approved")
    return Verdict("declined", text.strip()[:500] or None)


def client_verdict(content: object) -> Verdict:
    """An SDK client's answer in a ``tool`` message: only ``{"approved": true}`` approves;
    ``{"approved": false, "reason": ...}`` declines with a reason; anything else declines."""
    text = content_text(content)
    try:
        value = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return Verdict("declined")
    if isinstance(value, dict) and value.get("approved") is True:
        return Verdict("approved")
    reason = value.get("reason") if isinstance(value, dict) else None
    return Verdict("declined", reason if isinstance(reason, str) else None)


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A call that waits for the user's answer in chat mode (kept in the state store)."""

    signed_id: str
    upstream_id: str
    name: str
    arguments: str

    def to_record(self) -> dict[str, str]:
        return {
            "signed_id": self.signed_id,
            "upstream_id": self.upstream_id,
            "name": self.name,
            "arguments": self.arguments,
        }

    @classmethod
    def from_record(cls, record: object) -> PendingCall | None:
        if not isinstance(record, Mapping):
            return None
        fields = [record.get(key) for key in ("signed_id", "upstream_id", "name", "arguments")]
        if not all(isinstance(item, str) for item in fields):
            return None
        signed_id, upstream_id, name, arguments = (str(item) for item in fields)
        return cls(signed_id, upstream_id, name, arguments)


def approval_prompt(calls: list[PendingCall]) -> str:
    """The message that asks a chat user to approve or decline the pending calls."""
    parts = []
    for call in calls:
        parts.append(
            f"**{call.name}** needs your approval before it runs, with these arguments:\n\n"
            f"```json\n{_readable(call.arguments)}\n```"
        )
    what = "it" if len(calls) == 1 else "them"
    parts.append(f"Answer **yes** to run {what}, or **no** to cancel.")
    return "\n\n".join(parts)


def approval_record_key(visible_content: str) -> str:
    """The store key of the calls a chat message asks the user to approve."""
    return "pending:" + hashlib.sha256(visible_content.strip().encode()).hexdigest()


def declined_text(name: str, verdict: Verdict) -> str:
    """The tool result the model gets for a call that did not run."""
    if verdict.kind == "declined":
        text = f"The user declined this {name} call; it was not run."
        return f"{text} The user said: {verdict.reason}" if verdict.reason else text
    return f"error: the call was not run: {verdict.reason}"


RunOutcome = tuple[str, str]
"""``(status, content)`` of one run: status ``ok``, ``error``, ``timeout``... or ``already_ran``."""


async def run_once(
    ledger: StateStore,
    client: str,
    signed: SignedCall,
    run: Callable[[], Awaitable[RunOutcome]],
    *,
    clock: Callable[[], float] = time.time,
) -> RunOutcome:
    """Run an approved call unless its approval already ran (or is running) somewhere.

    Claims the signed call atomically, runs, records the outcome; a repeat gets the recorded
    content with status ``already_ran`` (or ``running`` while the first run goes on). The ledger
    entry outlives the signature, so once it expires no approval for it verifies any more.
    """
    ttl = max(signed.expires - clock(), 0.0) + LEDGER_MARGIN
    claim = await ledger.claim(client, signed.ledger_key, ttl)
    if claim.status == "claimed":
        outcome = await run()
        await ledger.record(
            client, signed.ledger_key, {"status": outcome[0], "content": outcome[1]}, ttl
        )
        return outcome
    recorded = claim.outcome
    if isinstance(recorded, Mapping) and isinstance(recorded.get("content"), str):
        return "already_ran", str(recorded["content"])
    return "running", "error: this approved call is already running; it was not run again"


def client_identity(client_key: str | None) -> str:
    """A stable, non-secret name for a client key (empty when keys are not in use)."""
    if not client_key:
        return ""
    return hashlib.sha256(client_key.encode()).hexdigest()[:32]


def _readable(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments or "{}"), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments
