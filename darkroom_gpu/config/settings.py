"""The validated configuration: frozen dataclasses with documented defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = (
    "DEFAULT_SAMPLES_ROOT",
    "KERNEL_CHOICES",
    "LOG_FORMATS",
    "ONE_YEAR_SECONDS",
    "QUEUE_PER_WORKER",
    "BatchSettings",
    "CacheSettings",
    "SharedStoreSettings",
    "CircuitBreakerSettings",
    "Limits",
    "LoggingSettings",
    "ServerSettings",
    "Settings",
    "SourceSettings",
)

DEFAULT_SAMPLES_ROOT: Final = Path(__file__).parent.parent / "samples"
ONE_YEAR_SECONDS: Final = 31_536_000
# Values of logging.format: lines of text, or one JSON object per line for log collectors.
LOG_FORMATS: Final = ("text", "json")
# Values of batching.kernels: Triton kernels on CUDA when Triton is installed, always, or never.
KERNEL_CHOICES: Final = ("auto", "triton", "torch")


# Default number of admitted requests per worker thread beyond those being processed. A queued
# request then waits for at most about 64 images' processing time per slot (an estimate: a few
# seconds for photos), well inside the default request deadline; past that, a quick 503 with
# Retry-After serves a client better than a long wait.
QUEUE_PER_WORKER: Final = 64


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where the HTTP server listens, how many images it processes at once, and how it stops.

    Attributes:
        host: the address to listen on.
        port: the TCP port to listen on.
        workers: worker threads that decode, transform and encode.
        watch_config: whether to reload the configuration file when it changes.
        max_concurrency: image requests processed at once; ``None`` means `workers` with the
            CPU manipulator, and at least two batches (``2 * batching.max_images``) with a GPU.
        max_queue: image requests admitted beyond `max_concurrency` (fetching, or waiting for
            a processing slot); past it a request gets 503 with ``Retry-After``. ``None``
            means `QUEUE_PER_WORKER` times `workers`.
        shutdown_timeout: seconds that requests in flight get to finish after ``SIGTERM``.
        metrics_host: the address ``/metrics`` listens on when `metrics_port` is set; ``None``
            means `host`.
        metrics_port: a TCP port of its own for ``/metrics``, which the main port then no
            longer serves; ``None`` serves ``/metrics`` on `port`.
    """

    host: str = "127.0.0.1"
    port: int = 3000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    watch_config: bool = False
    max_concurrency: int | None = None
    max_queue: int | None = None
    shutdown_timeout: float = 30.0
    metrics_host: str | None = None
    metrics_port: int | None = None

    @property
    def concurrency_limit(self) -> int:
        """`max_concurrency` with the CPU manipulator's default applied."""
        return self.max_concurrency if self.max_concurrency is not None else self.workers

    @property
    def queue_limit(self) -> int:
        """`max_queue` with its default applied."""
        return self.max_queue if self.max_queue is not None else QUEUE_PER_WORKER * self.workers


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a request may make the server read and produce.

    Attributes:
        max_source_bytes: size of a source object in bytes.
        max_source_pixels: stored width x height of a source image, summed over its frames
            when it is animated.
        max_output_side: bound on ``w``, ``h``, each side after ``dpr`` and each side of the
            result, in pixels.
        max_output_pixels: bound on the result's width x height.
        max_request_seconds: deadline of one image request, from its arrival to its response
            being ready; past it the request gets a 504 response.
    """

    max_source_bytes: int = 50 * 1024 * 1024
    max_source_pixels: int = 50_000_000
    max_output_side: int = 8192
    max_output_pixels: int = 40_000_000
    max_request_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How the micro-batcher in front of a GPU manipulator groups requests.

    Attributes:
        max_wait_ms: longest time a request waits for batch-mates while the GPU is busy.
        max_images: most images in one batch.
        max_megapixels: most source megapixels (stored width x height / 1e6) in one batch.
        max_queue: most requests waiting; past it a request gets 503 with ``Retry-After``.
        kernels: what resizes a batch's images, one of `KERNEL_CHOICES`: ``auto`` runs the
            Triton kernels of `darkroom_gpu.kernels` on a CUDA device when Triton is installed
            and the torch ops otherwise, ``triton`` always runs the kernels, ``torch`` never.
    """

    max_wait_ms: float = 2.0
    max_images: int = 32
    max_megapixels: float = 200.0
    max_queue: int = 256
    kernels: str = "auto"


@dataclass(frozen=True, slots=True)
class SharedStoreSettings:
    """An S3 bucket (or S3-compatible store) where replicas share finished results.

    Attributes:
        bucket: the bucket name.
        region: the bucket's region.
        endpoint_url: the store's URL, for S3-compatible services; ``None`` for AWS.
        prefix: key prefix of every stored result.
        access_key_id: credentials; ``None`` uses the standard AWS credential chain.
        secret_access_key: the secret paired with `access_key_id`.
        session_token: an optional session token for temporary credentials.
    """

    bucket: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    prefix: str = "darkroom-results/"
    access_key_id: str | None = None
    # Left out of repr, so that printing or logging the settings never shows a secret.
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The result cache.

    Attributes:
        max_bytes: bound on the in-memory cache's summed result sizes; 0 turns it off.
        shared: an optional S3 store that replicas share, consulted after a memory miss.
    """

    max_bytes: int = 256 * 1024 * 1024
    shared: SharedStoreSettings | None = None


@dataclass(frozen=True, slots=True)
class CircuitBreakerSettings:
    """When a source stops contacting a failing origin.

    Attributes:
        failures: consecutive failures that open the circuit.
        reset_after: seconds the circuit stays open before one request tries the origin again.
    """

    failures: int = 5
    reset_after: float = 10.0


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """One registered image source and its per-source policy.

    Attributes:
        name: bounded label used in metrics and logs.
        kind: source kind: ``filesystem``, ``http``, ``s3`` or an import path
            ``package.module:Class``.
        prefix: path prefix the source is routed by, ``""`` or ``/name`` without a trailing
            slash; ``None`` when the source is routed by `hosts` only.
        hosts: ``Host`` header names (lower case, no port) the source is routed by.
        options: the kind's own validated options, such as `FilesystemOptions`.
        cache_ttl: seconds for ``Cache-Control: max-age``.
        defaults: URL parameters applied when a request omits them.
        allow_enlarge: whether results may be larger than the source.
        limits: the global limits with this source's overrides applied.
        circuit_breaker: when the source stops contacting a failing origin.
        signing_keys: HMAC keys of which any one may sign a URL; empty when the source serves
            unsigned URLs.
    """

    name: str
    kind: str
    prefix: str | None
    hosts: tuple[str, ...]
    options: object
    cache_ttl: int = ONE_YEAR_SECONDS
    defaults: Mapping[str, str] = field(default_factory=dict)
    allow_enlarge: bool = True
    limits: Limits = field(default_factory=Limits)
    circuit_breaker: CircuitBreakerSettings = field(default_factory=CircuitBreakerSettings)
    # Left out of repr, like every secret in the settings.
    signing_keys: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """The format of log records on stderr.

    Attributes:
        format: ``text`` for ``<time> <LEVEL> <logger> <message>`` lines, or ``json`` for one
            JSON object per line (see `darkroom_gpu.logs`).
    """

    format: str = "text"


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole validated configuration."""

    server: ServerSettings
    device: str
    limits: Limits
    sources: tuple[SourceSettings, ...]
    batching: BatchSettings = field(default_factory=BatchSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
