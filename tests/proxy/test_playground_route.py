"""``GET /`` serves the playground with a policy that allows only its own inline blocks."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

import pytest

from streamproxy.cli import build_parser
from streamproxy.commands.serve import config_from_arguments
from streamproxy.config import Config
from streamproxy.proxy.playground import content_security_policy

from .helpers import ScriptedUpstream, proxy_client

pytestmark = pytest.mark.anyio

PAGE = (resources.files("streamproxy") / "data" / "playground.html").read_text(encoding="utf-8")


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_the_page_is_served_with_its_policy() -> None:
    async with proxy_client(ScriptedUpstream([])) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == PAGE
    parts = response.headers["content-security-policy"].split(";")
    policy = dict(part.strip().split(" ", 1) for part in parts)
    [script] = re.findall(r"<script>(.*?)</script>", PAGE, re.S)
    [style] = re.findall(r"<style>(.*?)</style>", PAGE, re.S)
    assert policy == {
        "default-src": "'none'",
        "script-src": _digest(script),
        "style-src": _digest(style),
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_page_loads_nothing_from_elsewhere() -> None:
    assert not re.search(r"(src|href)\s*=|@import|url\(|https?://", PAGE)
    assert "innerHTML" not in PAGE and "insertAdjacentHTML" not in PAGE


def test_a_page_without_scripts_gets_none() -> None:
    assert "script-src 'none'" in content_security_policy("<p>hello</p>")


async def test_no_playground_leaves_the_route_out() -> None:
    config = Config(upstream_url="http://upstream.test/v1", playground=False)
    async with proxy_client(ScriptedUpstream([]), config=config) as client:
        response = await client.get("/")
    assert response.status_code == 404


def test_the_flag_turns_it_off() -> None:
    parse = build_parser().parse_args
    assert config_from_arguments(parse(["serve"])).playground is True
    assert config_from_arguments(parse(["serve", "--no-playground"])).playground is False
