"""The server tools of the API fuzz's ``streamproxy serve`` (``--tools fuzz.api_tools:TOOLS``).

The offline demo's ``get_weather`` (read-only: the demo's weather loop runs it) and a tool
without arguments that needs approval, so that the demo's "client call" recording (arguments
``{}``, the first tool of the request) becomes a call waiting for approval: every request that
is not about the weather then goes through the approval paths (a chat question, or a signed
``spw2.`` call in client mode).
"""

from __future__ import annotations

from streamproxy.demo import get_weather
from streamproxy.proxy.tools import tool


@tool(needs_approval=True, timeout=5)
def archive_notes() -> str:
    """Archive the user's notes (needs approval; does nothing in the fuzz)."""
    return "archived 0 notes"


TOOLS = [get_weather, archive_notes]
