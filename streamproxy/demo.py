"""The built-in offline default: ``streamproxy serve`` with no key and no ``--upstream``.

The upstream is a cassette replayed in process (two interactions matched on the conversation's
shape: the model calls ``get_weather``, then answers from its result), with recorded pacing, and
the server tool is ``get_weather`` below, which answers from a table. Nothing touches the network,
so the README's first command works on a fresh machine.

The cassette is ``streamproxy/data/demo-tool-loop.cassette.json``, shipped with the package (a
pip install has no ``recordings/`` folder); its ``source`` line says how it was written.
"""

from __future__ import annotations

from importlib import resources

from streamproxy.cassette.format import loads as load
from streamproxy.cassette.match import match_turn
from streamproxy.cassette.replay import ReplayTransport
from streamproxy.proxy.tools import ToolSet, tool

DEMO_UPSTREAM_URL = "https://offline-demo.streamproxy.invalid/v1"
DEMO_MODEL = "deepseek-v4-flash"
CASSETTE_NAME = "demo-tool-loop.cassette.json"

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


def demo_transport() -> ReplayTransport:
    """The replay transport standing in for the upstream: the bundled cassette, matched by turn."""
    cassette = resources.files("streamproxy") / "data" / CASSETTE_NAME
    return ReplayTransport(load(cassette.read_text()), timing="recorded", matcher=match_turn)


def demo_models() -> dict[str, object]:
    """The model list the demo reports."""
    return {
        "object": "list",
        "data": [{"id": DEMO_MODEL, "object": "model", "created": 0, "owned_by": "offline-demo"}],
    }


__all__ = [
    "DEMO_UPSTREAM_URL",
    "demo_models",
    "demo_tools",
    "demo_transport",
    "get_weather",
]
