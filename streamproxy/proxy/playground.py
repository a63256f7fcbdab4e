"""``GET /``: the playground, one page that chats through this proxy (``data/playground.html``).

The page is plain HTML with one inline ``<style>`` and one inline ``<script>``, no build step and
no external resources. Its ``Content-Security-Policy`` allows exactly those two blocks (by their
SHA-256) and requests to this origin, nothing else: no other script, style, image, font, frame or
connection, so even text that slipped past the page's own care (it writes the model's text and tool
arguments only as ``textContent``) could not load or send anything. ``Config(playground=False)``
(``streamproxy serve --no-playground``) leaves the route out.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["PAGE_NAME", "content_security_policy", "playground"]

PAGE_NAME = "playground.html"
_NONE = "'none'"


def content_security_policy(page: str) -> str:
    """The policy for ``page``: its inline scripts and styles by hash, requests to itself only."""
    scripts = " ".join(_hash(block) for block in re.findall(r"<script>(.*?)</script>", page, re.S))
    styles = " ".join(_hash(block) for block in re.findall(r"<style>(.*?)</style>", page, re.S))
    return "; ".join(
        [
            f"default-src {_NONE}",
            f"script-src {scripts or _NONE}",
            f"style-src {styles or _NONE}",
            "connect-src 'self'",
            f"base-uri {_NONE}",
            f"form-action {_NONE}",
            f"frame-ancestors {_NONE}",
        ]
    )


@cache
def _page() -> tuple[bytes, str]:
    text = (resources.files("streamproxy") / "data" / PAGE_NAME).read_text(encoding="utf-8")
    return text.encode(), content_security_policy(text)


async def playground(request: Request) -> Response:
    """The page, with its policy; no key needed (the page asks for one for its API calls)."""
    body, policy = _page()
    headers = {
        "content-security-policy": policy,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }
    return Response(body, media_type="text/html", headers=headers)


def _hash(block: str) -> str:
    digest = hashlib.sha256(block.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"
