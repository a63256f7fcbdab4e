"""The built-in offline default: ``streamproxy serve`` with no key and no ``--upstream``.

The upstream is a bundled cassette replayed in process (and ``GET /models`` lists
``deepseek-v4-flash``) with its recorded pacing, and the server
tool is ``get_weather`` below, which answers from a table. Nothing touches the network, so the
README's first command works on a fresh machine. Any model name works; the README uses
``deepseek-v4-flash``. ``DemoTransport`` picks the recording by what the request asks:

- the last user message mentions an error: a stream that breaks with an in-band upstream error;
- the request carries tools of its own: the model calls the first of them (a client tool call,
  ``finish_reason: "tool_calls"``), then answers once the client sends the result;
- it mentions the weather or a city of the table: a server tool loop (the model calls
  ``get_weather`` for that city, the proxy runs it mid-stream, the model answers from the result);
- anything else: a plain answer that says what the demo can show.

Every answer says it is a recording. The cassette is ``streamproxy/data/demo.cassette.json``,
shipped with the package: each interaction is named by its ``demo_scenario`` and its ``{city}``,
``{tool}``... placeholders are filled in from the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources

import httpx2
import orjson

from streamproxy.cassette.format import Cassette, Chunk, Interaction, RecordedResponse
from streamproxy.cassette.format import loads as load
from streamproxy.cassette.replay import ReplayTransport
from streamproxy.proxy.request import content_text
from streamproxy.proxy.tools import ToolSet, tool

DEMO_UPSTREAM_URL = "https://offline-demo.streamproxy.invalid/v1"
DEMO_MODEL = "deepseek-v4-flash"
CASSETTE_NAME = "demo.cassette.json"
_SERVER_TOOL = "get_weather"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")

_WEATHER = {
    "paris": {"condition": "sunny", "temperature_c": 24},
    "london": {"condition": "light rain", "temperature_c": 16},
    "tokyo": {"condition": "cloudy", "temperature_c": 21},
}


@tool(read_only=True, timeout=5)
def get_weather(city: str) -> dict[str, object]:
    """Current weather for a city (offline demo data).

    Args:
        city: The city name, e.g. "Paris".
    """
    found = _WEATHER.get(city.strip().lower())
    if found is None:
        return {"city": city, "error": "no data for this city in the offline demo"}
    return {"city": city, **found}


def demo_tools() -> ToolSet:
    """The demo's server tools."""
    return ToolSet([get_weather])


def demo_transport() -> DemoTransport:
    """The transport standing in for the upstream."""
    return DemoTransport()


class DemoTransport(httpx2.AsyncBaseTransport):
    """Answers each upstream request with the demo recording it asks for (module docstring)."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path.endswith("/models"):
            return httpx2.Response(200, json=demo_models(), request=request)
        try:
            body = orjson.loads(await request.aread())
        except orjson.JSONDecodeError:
            body = {}
        body = body if isinstance(body, dict) else {}
        scenario, values = choose_scenario(body)
        model = body.get("model")
        values = {**values, "model": model if isinstance(model, str) else DEMO_MODEL}
        recorded = _scenarios()[scenario]
        response = RecordedResponse(
            status=recorded.status,
            headers=dict(recorded.headers),
            chunks=[
                Chunk(chunk.offset_ms, _filled(chunk.data, values)) for chunk in recorded.chunks
            ],
        )
        cassette = Cassette(interactions=[Interaction(request=None, response=response)])
        return await ReplayTransport(cassette, timing="recorded").handle_async_request(request)


def choose_scenario(body: Mapping[str, object]) -> tuple[str, dict[str, str]]:
    """The scenario a chat request asks for, and the values of its placeholders."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    roles = [message.get("role") if isinstance(message, dict) else None for message in messages]
    last_user = max((i for i, role in enumerate(roles) if role == "user"), default=-1)
    question = _text(messages[last_user]) if last_user >= 0 else ""
    tools = [_tool_name(entry) for entry in body.get("tools") or []]  # type: ignore[attr-defined]
    client_tools = [name for name in tools if name and name != _SERVER_TOOL]
    tail = messages[last_user + 1 :]
    if tail and isinstance(tail[-1], dict) and tail[-1].get("role") == "tool":
        result = _text(tail[-1])
        try:
            weather = orjson.loads(result)
        except orjson.JSONDecodeError:
            weather = None
        if isinstance(weather, dict) and "temperature_c" in weather:
            return "weather_answer", {key: str(value) for key, value in weather.items()}
        return "client_answer", {"tool": client_tools[0] if client_tools else "client"}
    lowered = question.lower()
    if "error" in lowered:
        return "error", {}
    if client_tools:
        return "client_call", {"tool": client_tools[0]}
    city = next((name for name in _WEATHER if name in lowered), None)
    if city is not None or "weather" in lowered:
        return "weather_call", {"city": (city or "paris").title()}
    return "plain", {}


@cache
def _scenarios() -> dict[str, RecordedResponse]:
    text = (resources.files("streamproxy") / "data" / CASSETTE_NAME).read_text()
    scenarios: dict[str, RecordedResponse] = {}
    for interaction in load(text).interactions:
        assert interaction.request is not None and isinstance(interaction.request.body, dict)
        scenarios[str(interaction.request.body["demo_scenario"])] = interaction.response
    return scenarios


def _filled(data: bytes, values: Mapping[str, str]) -> bytes:
    """A recorded frame with its placeholders replaced (inside its JSON, so escaping holds)."""
    if not data.startswith(b"data: {"):
        return data
    payload = orjson.loads(data[6:])
    if "model" in payload:
        payload["model"] = values["model"]  # model names pass through

    def fill(value: object) -> object:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda match: values.get(match[1], match[0]), value)
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value

    return b"data: " + orjson.dumps(fill(payload)) + b"\n\n"


def _text(message: object) -> str:
    return content_text(message.get("content") if isinstance(message, dict) else None)


def _tool_name(entry: object) -> str | None:
    function = entry.get("function") if isinstance(entry, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def demo_models() -> dict[str, object]:
    """The model list the demo reports."""
    return {
        "object": "list",
        "data": [{"id": DEMO_MODEL, "object": "model", "created": 0, "owned_by": "offline-demo"}],
    }


__all__ = [
    "DEMO_UPSTREAM_URL",
    "DemoTransport",
    "choose_scenario",
    "demo_models",
    "demo_tools",
    "demo_transport",
    "get_weather",
]
