"""The proxy's Prometheus instruments and the ``GET /metrics`` text.

Names follow the OpenTelemetry GenAI semantic conventions (open-telemetry/semantic-conventions-
genai at commit 066d4a7f, ``docs/observability.md``) mapped to Prometheus the OpenTelemetry way:
dots become underscores, seconds get ``_seconds``, counters ``_total``, ``{token}`` units no
suffix. The proxy's own instruments start with ``streamproxy_``.

Under several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set before the workers start,
``streamproxy serve --workers N`` does it) every value lives in a file of that directory and
``render`` sums them; the active-streams gauge counts live processes only (``livesum``).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROCESS_ENV", "Metrics", "bounded"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The conventions' advisory buckets for GenAI durations and chunk times (seconds).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96)
FIRST_CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5)
CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
ROUND_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16)

# Label sets (OpenTelemetry attribute names, dots as underscores).
GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
GENAI_WITH_ERROR = (*GENAI, "error_type")
TOKENS = (*GENAI, "gen_ai_token_modality")

# A label value a client chooses (the model) is kept for this many distinct values per process;
# later ones are reported as ``_OTHER`` (the conventions' name for "outside the known set").
MAX_LABEL_VALUES = 64
OTHER = "_OTHER"


def bounded(value: str, seen: set[str]) -> str:
    """``value``, or ``_OTHER`` once ``seen`` holds ``MAX_LABEL_VALUES`` other values."""
    if value in seen:
        return value
    if len(seen) >= MAX_LABEL_VALUES or len(value) > 128:
        return OTHER
    seen.add(value)
    return value


class Metrics:
    """Every instrument of one app, in its own registry (tests make one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.is_multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        into = self.registry
        self.request_duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Client chat request duration, to the last byte sent (all rounds and tools).",
            GENAI_WITH_ERROR,
            buckets=DURATION_BUCKETS,
            registry=into,
        )
        self.inference_duration = Histogram(
            "gen_ai_client_inference_duration_seconds",
            "One upstream round: from the request sent to the response closed.",
            GENAI_WITH_ERROR,
            buckets=DURATION_BUCKETS,
            registry=into,
        )
        self.time_to_first_chunk = Histogram(
            "gen_ai_client_inference_time_to_first_chunk_seconds",
            "From the upstream request sent to its first chunk (the upstream call always streams).",
            GENAI,
            buckets=FIRST_CHUNK_BUCKETS,
            registry=into,
        )
        self.time_per_output_chunk = Histogram(
            "gen_ai_client_inference_time_per_output_chunk_seconds",
            "Time between the output chunks after the first (streaming clients).",
            GENAI,
            buckets=CHUNK_BUCKETS,
            registry=into,
        )
        self.input_tokens = Counter(
            "gen_ai_client_inference_usage_input_tokens",
            "Input (prompt) tokens, cached ones included, as the upstream reported them.",
            TOKENS,
            registry=into,
        )
        self.output_tokens = Counter(
            "gen_ai_client_inference_usage_output_tokens",
            "Output (completion) tokens, reasoning included.",
            TOKENS,
            registry=into,
        )
        self.cache_read_tokens = Counter(
            "gen_ai_client_inference_usage_cache_read_input_tokens",
            "Input tokens served from the provider's cache (a part of the input tokens).",
            TOKENS,
            registry=into,
        )
        self.reasoning_tokens = Counter(
            "gen_ai_client_inference_usage_reasoning_output_tokens",
            "Output tokens spent on reasoning (a part of the output tokens).",
            TOKENS,
            registry=into,
        )
        self.tool_duration = Histogram(
            "gen_ai_execute_tool_duration_seconds",
            "One server tool run; error_type is its outcome when not ok.",
            ("gen_ai_operation_name", "gen_ai_tool_name", "error_type"),
            buckets=DURATION_BUCKETS,
            registry=into,
        )
        self.tool_calls = Counter(
            "streamproxy_tool_calls",
            "Server tool calls by outcome (ok, error, timeout, too_large, refused).",
            ("gen_ai_tool_name", "outcome"),
            registry=into,
        )
        self.active_streams = Gauge(
            "streamproxy_active_streams",
            "Client event streams open now.",
            registry=into,
            multiprocess_mode="livesum",
        )
        self.upstream_retries = Counter(
            "streamproxy_upstream_retries",
            "Upstream attempts retried before the first byte, by the failed attempt's status.",
            ("gen_ai_provider_name", "status"),
            registry=into,
        )
        self.errors = Counter(
            "streamproxy_errors",
            "Client requests that failed, by the error code the client got.",
            ("code",),
            registry=into,
        )
        self.rounds = Histogram(
            "streamproxy_rounds_per_request",
            "Upstream rounds per client chat request.",
            buckets=ROUND_BUCKETS,
            registry=into,
        )
        self.approvals = Counter(
            "streamproxy_approvals",
            "Approvals settled, by outcome (approved, declined, expired, ...).",
            ("gen_ai_tool_name", "outcome"),
            registry=into,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every value (every worker's when multiprocess)."""
        if self.is_multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
