"""Prometheus metrics, all defined here with help text, base units and bounded labels.

Each application owns its own registry, so several servers (or tests) in one process never
collide. Label values come from small fixed sets: configured source names, status classes,
output formats, pipeline stages and devices; never a URL, path, host or user value.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ("CONTENT_TYPE", "Metrics")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (
    0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Metrics:
    """The server's metrics and the registry that exposes them on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "darkroom_requests",
            "Image requests answered, by source, status class (2xx..5xx) and output format.",
            ["source", "status_class", "format"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "darkroom_request_duration_seconds",
            "Time from receiving an image request to having its response ready.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_duration = Histogram(
            "darkroom_stage_duration_seconds",
            "Time spent per pipeline stage (fetch, queue, decode, process, encode).",
            ["stage", "device"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "darkroom_inflight_requests",
            "Image requests being handled right now.",
            registry=self.registry,
        )
        self.source_errors = Counter(
            "darkroom_source_errors",
            "Failed source fetches, by source and error kind (the error code).",
            ["source", "kind"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """Return every metric in the Prometheus text format."""
        return generate_latest(self.registry)
