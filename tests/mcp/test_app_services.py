"""``create_app(services=...)``: started in order before the app serves, stopped in reverse."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from streamproxy.config import Config
from streamproxy.proxy import create_app


class Recorder:
    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.events = events

    async def start(self) -> None:
        self.events.append(f"start {self.name}")

    async def stop(self) -> None:
        self.events.append(f"stop {self.name}")


def test_services_start_before_serving_and_stop_in_reverse() -> None:
    events: list[str] = []
    app = create_app(
        Config(upstream_url="http://127.0.0.1:9/v1", state_url="memory://"),
        services=[Recorder("a", events), Recorder("b", events)],
    )
    with TestClient(app) as client:
        assert events == ["start a", "start b"]
        assert client.get("/healthz").json() == {"status": "ok"}
    assert events == ["start a", "start b", "stop b", "stop a"]


class Failing(Recorder):
    async def start(self) -> None:
        raise RuntimeError("cannot start")


def test_a_service_that_fails_to_start_stops_the_ones_started() -> None:
    events: list[str] = []
    app = create_app(
        Config(upstream_url="http://127.0.0.1:9/v1", state_url="memory://"),
        services=[Recorder("a", events), Failing("b", events), Recorder("c", events)],
    )
    with pytest.raises(RuntimeError, match="cannot start"), TestClient(app):
        pass
    assert events == ["start a", "stop a"]
