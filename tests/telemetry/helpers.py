"""An in-process proxy with its own metrics registry and an in-memory span exporter."""

from __future__ import annotations

from dataclasses import dataclass

import httpx2
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamproxy.config import Config
from streamproxy.proxy import create_app
from streamproxy.proxy.tools import ToolSet
from tests.proxy.helpers import ScriptedUpstream

UPSTREAM_URL = "https://api.deepseek.com"


@dataclass
class Observed:
    client: httpx2.AsyncClient
    exporter: InMemorySpanExporter

    async def scrape(self, headers: dict[str, str] | None = None) -> Scrape:
        response = await self.client.get("/metrics", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=")
        return Scrape(response.text)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [span for span in self.spans() if span.name == name]
        assert len(found) == 1, [span.name for span in self.spans()]
        return found[0]


class Scrape:
    """The samples of a ``/metrics`` text, read with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The one sample named ``name`` whose labels include ``labels`` (0 when absent)."""
        found = [
            sample.value
            for sample in self.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        ]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample named ``name`` whose labels include ``labels``."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def labels(self, name: str) -> list[dict[str, str]]:
        return [sample.labels for sample in self.samples if sample.name == name]


def observed_proxy(
    upstream: ScriptedUpstream, *, tools: ToolSet | None = None, config: Config | None = None
) -> Observed:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(
        config or Config(upstream_url=UPSTREAM_URL, api_key="sk-upstream-secret-key"),
        tools=tools or ToolSet(),
        transport=upstream.transport(),
        registry=CollectorRegistry(),
        tracer_provider=provider,
    )
    client = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://proxy.test"
    )
    return Observed(client, exporter)
