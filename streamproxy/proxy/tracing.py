"""OpenTelemetry traces: the tracer from the standard ``OTEL_*`` variables, and W3C context.

Off by default. ``OTEL_TRACES_EXPORTER=console`` prints each span, ``otlp`` sends them over
OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME`` and the others are read by
the SDK); both need ``pip install 'streamproxy[otel]'``. Unset (or ``none``), the proxy uses the
global tracer provider: the API's no-op one, unless the program that mounts the app configured
its own. Trace context is read from the client's ``traceparent`` and written to the upstream's
whatever the tracer: with no SDK the client's context is passed through unchanged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

__all__ = ["context_from", "headers_for", "tracer_provider_from_environment"]

logger = logging.getLogger("streamproxy.proxy")

TRACES_EXPORTER_ENV = "OTEL_TRACES_EXPORTER"
SERVICE_NAME = "streamproxy"


def tracer_provider_from_environment(
    environ: Mapping[str, str] = os.environ,
) -> trace.TracerProvider:
    """An SDK provider exporting as ``OTEL_TRACES_EXPORTER`` says; else the global one."""
    names = [
        name.strip().lower()
        for name in environ.get(TRACES_EXPORTER_ENV, "").split(",")
        if name.strip().lower() not in ("", "none")
    ]
    if not names:
        return trace.get_tracer_provider()
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        logger.warning(
            "%s=%s but the OpenTelemetry SDK is not installed (pip install 'streamproxy[otel]'); "
            "traces are off",
            TRACES_EXPORTER_ENV,
            ",".join(names),
        )
        return trace.get_tracer_provider()
    resource = Resource.create({SERVICE_NAME_KEY: SERVICE_NAME})
    if environ.get("OTEL_SERVICE_NAME") or "service.name" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        resource = Resource.create()  # the SDK reads the variables
    provider = TracerProvider(resource=resource)
    for name in names:
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                logger.warning("OTLP needs pip install 'streamproxy[otel]'; spans not sent")
                continue
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            logger.warning("%s: unknown exporter %r ignored", TRACES_EXPORTER_ENV, name)
    return provider


def context_from(headers: Mapping[str, str]) -> Context:
    """The W3C trace context (``traceparent``, ``tracestate``, baggage) a client sent."""
    return propagate.extract(headers)


def headers_for(span: trace.Span) -> dict[str, str]:
    """The headers that make ``span`` the parent of a call (``traceparent``...); empty when
    there is no valid context to pass on."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier
