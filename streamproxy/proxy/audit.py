"""The audit log: one line per tool call outcome, on the ``streamproxy.audit`` logger.

::

    tool_call request_id=req_… tool=write_note call_id=call_1 args_sha256=… outcome=ok
        duration_ms=3.1

Outcomes: ``started``, ``ok``, ``error``, ``timeout``, ``too_large``, ``cancelled`` (the client
left, or the round was cut), ``refused`` (unknown name, invalid arguments; ``kind=`` says which),
``awaiting_approval``, ``approved``, ``declined``, ``mismatch``, ``expired``, ``forged``,
``invalid`` (approval arguments that are not one object with unique keys), ``already_ran`` (a
repeated approval answered from the ledger) and ``running`` (a repeat while the first run is
still going). Arguments are never logged, only a digest of their text.
"""

from __future__ import annotations

import hashlib
import logging

__all__ = ["arguments_digest", "audit"]

logger = logging.getLogger("streamproxy.audit")


def arguments_digest(arguments: str) -> str:
    """A short digest of a call's arguments text, for audit lines (never the arguments)."""
    return hashlib.sha256(arguments.encode()).hexdigest()[:16]


def audit(
    request_id: str,
    tool: str,
    call_id: str,
    arguments: str,
    outcome: str,
    duration: float = 0.0,
    **details: object,
) -> None:
    """Write one audit line."""
    extra = "".join(f" {key}={value}" for key, value in details.items())
    logger.info(
        "tool_call request_id=%s tool=%s call_id=%s args_sha256=%s outcome=%s duration_ms=%.1f%s",
        request_id,
        tool,
        call_id,
        arguments_digest(arguments),
        outcome,
        duration * 1000,
        extra,
    )
