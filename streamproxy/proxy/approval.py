"""Write-tool approval: a write call reaches the client signed, and runs only when it comes back
approved with the same name and arguments.

When the model calls a write tool, the proxy does not run it. The call goes to the client as an
ordinary tool call (``finish_reason: "tool_calls"``) whose id is::

    spw1.<expires>.<mac>.<upstream id>

``mac`` is an HMAC-SHA256 (cut to 128 bits) over the version, the expiry, the upstream id, the tool
name, the exact arguments text and the client's identity (a digest of its client key), under a
secret shared by the proxy's workers. To approve, the client sends the conversation back with a
``tool`` message for that id whose content is ``{"approved": true}``; anything else declines.
The proxy runs the call only if the signature matches the name and arguments in the assistant
message the client sent back, so a client cannot approve arguments it did not see, reuse a
signature for other arguments, forge one for a call the model never made, or use one issued to
another client key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

PREFIX = "spw1"


@dataclass(frozen=True, slots=True)
class SignedCall:
    """The parts of a signed call id."""

    upstream_id: str
    expires: int
    mac: str


class ApprovalError(Exception):
    """A signed call failed verification; the message says why (safe to show the model)."""


class ApprovalSigner:
    """Signs write calls and verifies them when they come back."""

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
        """The id the client sees for this write call."""
        expires = int(self._clock() + self.ttl)
        mac = self._mac(expires, upstream_id, name, arguments, client)
        return f"{PREFIX}.{expires}.{mac}.{upstream_id}"

    @staticmethod
    def parse(call_id: str) -> SignedCall | None:
        """The parts of a signed id, or None when ``call_id`` is not one."""
        parts = call_id.split(".", 3)
        if len(parts) != 4 or parts[0] != PREFIX or not parts[1].isdigit():
            return None
        return SignedCall(upstream_id=parts[3], expires=int(parts[1]), mac=parts[2])

    def verify(self, call_id: str, name: str, arguments: str, *, client: str) -> str:
        """The upstream id when ``call_id`` signs exactly this call for this client.

        Raises:
            ApprovalError: not signed, signed for something else, or expired.
        """
        signed = self.parse(call_id)
        if signed is None:
            raise ApprovalError("the call was not issued by this proxy")
        expected = self._mac(signed.expires, signed.upstream_id, name, arguments, client)
        if not hmac.compare_digest(expected, signed.mac):
            raise ApprovalError("the call's name or arguments differ from the ones approved")
        if signed.expires < self._clock():
            raise ApprovalError("the approval request expired")
        return signed.upstream_id

    def _mac(self, expires: int, upstream_id: str, name: str, arguments: str, client: str) -> str:
        message = "\0".join((PREFIX, str(expires), upstream_id, name, arguments, client))
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def approval_verdict(content: object) -> tuple[bool, str | None]:
    """``(is_approved, reason)`` from a ``tool`` message's content.

    Only the JSON object ``{"approved": true}`` approves; ``{"approved": false, "reason": ...}``
    declines with a reason; anything else declines.
    """
    text = content if isinstance(content, str) else _text_parts(content)
    try:
        value = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return False, None
    if isinstance(value, dict) and value.get("approved") is True:
        return True, None
    reason = value.get("reason") if isinstance(value, dict) else None
    return False, reason if isinstance(reason, str) else None


def client_identity(client_key: str | None) -> str:
    """A stable, non-secret name for a client key (empty when keys are not in use)."""
    if not client_key:
        return ""
    return hashlib.sha256(client_key.encode()).hexdigest()[:32]


def _text_parts(content: object) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""
