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
        self.overload_rejections = Counter(
            "darkroom_overload_rejections",
            "Image requests answered 503 because max_concurrency + max_queue were in flight.",
            registry=self.registry,
        )
        self.source_errors = Counter(
            "darkroom_source_errors",
            "Failed source fetches, by source and error kind (the error code).",
            ["source", "kind"],
            registry=self.registry,
        )
        self.cache_requests = Counter(
            "darkroom_cache_requests",
            "Result cache look-ups, by result: hit (memory), shared_store (the S3 store), "
            "shared (joined an identical transform in flight), miss (processed).",
            ["result"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "darkroom_batch_size",
            "Images per batch dispatched to a GPU manipulator.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "darkroom_queue_depth",
            "Images waiting in the micro-batcher's queue.",
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "darkroom_queue_wait_seconds",
            "Time an image waits in the micro-batcher's queue before its batch starts.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.gpu_fallbacks = Counter(
            "darkroom_gpu_fallbacks",
            "Images the GPU manipulator handed to the CPU, by reason (out_of_memory, "
            "cuda_error, cpu_decode).",
            ["reason"],
            registry=self.registry,
        )
        self.gpu_memory = Gauge(
            "darkroom_gpu_memory_bytes",
            "CUDA memory allocated by torch on the serving device.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """Return every metric in the Prometheus text format."""
        return generate_latest(self.registry)
