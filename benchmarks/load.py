"""Closed-loop load: N clients, each sending its next request when the previous one finishes.

Every cell is bounded twice: no new request starts after `max_requests` have started or after
`seconds` have passed, and each HTTP request times out after `REQUEST_TIMEOUT_SECONDS`. Requests
in flight when a bound is reached are awaited and counted, so the throughput is the finished
requests over the time until the last one finished.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from benchmarks.gpu_bench import percentiles
from benchmarks.machine import ProcessTree, machine_busy_seconds
from darkroom_gpu.errors import ServiceError
from darkroom_gpu.manipulators.base import ImageJob, Manipulator

__all__ = (
    "DISTURBANCE_CORES",
    "REQUEST_TIMEOUT_SECONDS",
    "Cell",
    "LoadResult",
    "ClientCalls",
    "RequestCall",
    "closed_loop",
    "http_calls",
    "manipulator_calls",
    "measure_cell",
)

REQUEST_TIMEOUT_SECONDS: Final = 60.0
# Average CPU cores that other processes may use during a cell before it counts as disturbed.
DISTURBANCE_CORES: Final = 0.1
_BYTES_PER_MIB: Final = 1024 * 1024

# Sends one request and returns None on success, else a short description of the failure.
RequestCall = Callable[[], Awaitable[str | None]]
# Returns the request call of client number i (from 0) of a closed loop.
ClientCalls = Callable[[int], RequestCall]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one closed loop measured.

    Attributes:
        latencies: seconds per finished request, failed ones included.
        succeeded: successful requests: HTTP 200, or a result from the manipulator.
        errors: failed requests.
        seconds: from the first request's start to the last one's end.
        first_error: description of the first failure, if any.
    """

    latencies: tuple[float, ...]
    succeeded: int
    errors: int
    seconds: float
    first_error: str | None


@dataclass(frozen=True, slots=True)
class Cell:
    """One workload at one concurrency against one target: a row of the report.

    Attributes:
        target: the server or in-process manipulator measured.
        workload: key and name, such as ``W1 thumbnail``.
        concurrency: closed-loop clients.
        requests: successful requests.
        errors: failed requests.
        seconds: wall time of the cell.
        requests_per_second: successful requests per second.
        p50_ms: median latency in milliseconds; p95_ms and p99_ms likewise.
        server_cpu_seconds: user plus system CPU time of the target's processes in the cell;
            for an in-process target, of the benchmark process itself.
        server_cpu_ms_per_request: ``server_cpu_seconds`` per successful request, in ms.
        client_cpu_seconds: CPU time of the benchmark process (the load generator) in the
            cell, which shares the machine's cores with an HTTP server; 0 for an in-process
            target, whose load generator is the measured process itself.
        other_cpu_seconds: CPU time that other processes on the machine used in the cell;
            more than a small fraction of ``seconds`` means the cell was disturbed.
        peak_rss_mib: peak resident memory of the target's processes so far (VmHWM).
        first_error: description of the first failure, if any.
    """

    target: str
    workload: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu_seconds: float
    server_cpu_ms_per_request: float
    client_cpu_seconds: float
    other_cpu_seconds: float
    peak_rss_mib: float
    first_error: str | None

    @property
    def other_cores(self) -> float:
        """CPU cores that other processes on the machine used, on average, during the cell."""
        return self.other_cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def disturbed(self) -> bool:
        """Whether other processes used more than `DISTURBANCE_CORES` during the cell."""
        return self.other_cores > DISTURBANCE_CORES


async def closed_loop(
    calls: ClientCalls, clients: int, max_requests: int, seconds: float
) -> LoadResult:
    """Run `clients` loops of their own calls until `max_requests` started or `seconds` passed."""
    latencies: list[float] = []
    failures: list[str] = []
    started_requests = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def client(call: RequestCall) -> None:
        nonlocal started_requests
        while started_requests < max_requests and time.perf_counter() < deadline:
            started_requests += 1
            request_started = time.perf_counter()
            failure = await call()
            latencies.append(time.perf_counter() - request_started)
            if failure is not None:
                failures.append(failure)

    await asyncio.gather(*(client(calls(index)) for index in range(clients)))
    return LoadResult(
        latencies=tuple(latencies),
        succeeded=len(latencies) - len(failures),
        errors=len(failures),
        seconds=time.perf_counter() - started,
        first_error=failures[0] if failures else None,
    )


def http_calls(session: aiohttp.ClientSession, urls: Sequence[str]) -> ClientCalls:
    """Return calls that GET a URL and read the whole body; client i always requests ``urls[i]``.

    Only a 200 is a success. With at least as many distinct URLs as clients, no two requests
    in flight are identical, so a server that merges identical requests in flight (darkroom-gpu
    does) still processes every one of them.
    """

    def calls(index: int) -> RequestCall:
        url = urls[index % len(urls)]

        async def call() -> str | None:
            try:
                async with session.get(url) as response:
                    await response.read()
                    return None if response.status == 200 else f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                return f"{type(exc).__name__}: {exc}"

        return call

    return calls


def manipulator_calls(manipulator: Manipulator, job: ImageJob) -> ClientCalls:
    """Return calls that run `job` through `manipulator` directly, without HTTP."""

    async def call() -> str | None:
        try:
            await manipulator.process(job)
        except ServiceError as exc:
            return f"{type(exc).__name__}: {exc.public_message}"
        return None

    return lambda _: call


async def measure_cell(
    target: str,
    workload: str,
    calls: ClientCalls,
    tree: ProcessTree,
    *,
    clients: int,
    max_requests: int,
    seconds: float,
) -> Cell:
    """Run one closed loop and summarise it with the CPU time and memory of `tree`.

    When `tree` is this process (an in-process target), the load generator's CPU time is part
    of the server's and the client's is reported as 0.
    """
    in_process = tree.root_pid == os.getpid()
    machine_before = machine_busy_seconds()
    server_before = tree.cpu_seconds()
    client_before = time.process_time()
    result = await closed_loop(calls, clients, max_requests, seconds)
    client_seconds = 0.0 if in_process else time.process_time() - client_before
    server_seconds = tree.cpu_seconds() - server_before
    other_seconds = machine_busy_seconds() - machine_before - server_seconds - client_seconds

    p50, p95, p99 = percentiles(result.latencies)
    return Cell(
        target=target,
        workload=workload,
        concurrency=clients,
        requests=result.succeeded,
        errors=result.errors,
        seconds=round(result.seconds, 3),
        requests_per_second=round(result.succeeded / result.seconds, 3),
        p50_ms=round(p50, 2),
        p95_ms=round(p95, 2),
        p99_ms=round(p99, 2),
        server_cpu_seconds=round(server_seconds, 3),
        server_cpu_ms_per_request=(
            round(1000 * server_seconds / result.succeeded, 2) if result.succeeded else 0.0
        ),
        client_cpu_seconds=round(client_seconds, 3),
        other_cpu_seconds=round(max(other_seconds, 0.0), 3),
        peak_rss_mib=round(tree.peak_rss_bytes() / _BYTES_PER_MIB, 1),
        first_error=result.first_error,
    )
