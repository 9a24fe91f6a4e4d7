"""Soak test: a long, mixed load on a server started here, watching errors, latency and memory.

The script starts ``darkroom-gpu serve`` on 127.0.0.1 (CPU device) over a temporary folder with
the bundled sample photos, an EXIF test photo, generated PNG, GIF and WebP files, a truncated
JPEG and an HTML file named like a JPEG. It then sends a fixed-seed mix of requests from a
closed loop of clients. The mix has thumbnails, crops, format conversions, blur, rotation,
repeats that hit the result cache and cache busters. It also has requests that must fail:
invalid parameters, missing files, damaged and non-image files. Optionally a burst at a
multiple of the concurrency follows, then an idle period. Every phase stops by itself at its
request count or at ``--max-seconds``.

Each request kind has the statuses it may get; 503 with ``Retry-After`` (overload) is allowed
for every kind. Anything else, and any connection error or client timeout, counts as
unexpected. The server's resident memory (``VmRSS`` from ``/proc``, so Linux only) is sampled
once a second.

Usage::

    python -m benchmarks.soak --requests 20000 --concurrency 32 --max-seconds 600 --out DIR

Results go to ``DIR/soak.json`` and a Markdown summary ``DIR/soak.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
import numpy as np
from PIL import Image

__all__ = (
    "PhaseResult",
    "Request",
    "SoakResult",
    "ServerUnderTest",
    "make_requests",
    "prepare_images",
    "run_soak",
)

REPO: Final = Path(__file__).resolve().parent.parent
SAMPLES: Final = REPO / "darkroom_gpu" / "samples"
EXIF_PHOTO: Final = REPO / "tests" / "data" / "exif-orientation" / "Landscape_1.jpg"
READY_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 40.0
REQUEST_TIMEOUT_SECONDS: Final = 60.0
SAMPLE_INTERVAL_SECONDS: Final = 1.0
# The memory mark taken early in the run, after this many finished requests.
EARLY_MARK_REQUESTS: Final = 200
PERCENTILES: Final = (50, 90, 99)
_OVERLOAD: Final = 503
# An access-log line of a 503, with its in-server duration.
_OVERLOAD_LINE: Final = re.compile(r"status=503 bytes=\d+ duration_ms=([0-9.]+)")
SERVE_COMMAND: Final = (sys.executable, "-m", "darkroom_gpu", "--log-level", "warning", "serve")


@dataclass(frozen=True, slots=True)
class Request:
    """One request of the mix.

    Attributes:
        kind: the request's category, for the report.
        target: path and query.
        expected: the statuses this kind may get besides 503.
    """

    kind: str
    target: str
    expected: frozenset[int]


@dataclass(slots=True)
class PhaseResult:
    """What one load phase saw.

    Attributes:
        name: ``main`` or ``burst``.
        concurrency: clients sending requests at once.
        sent: requests finished, with a response or a failure.
        seconds: wall time of the phase.
        statuses: responses per status code; ``error`` for connection errors and timeouts.
        unexpected: per kind, responses outside its expected statuses, and 503s without
            ``Retry-After``.
        latency_ms: percentiles and maximum per outcome: ``expected`` (a status the kind may
            get) and ``503``.
        first_unexpected: description of the first unexpected response, if any.
    """

    name: str
    concurrency: int
    sent: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    first_unexpected: str | None = None


@dataclass(slots=True)
class SoakResult:
    """The whole run: phases, memory samples and the memory marks.

    Attributes:
        phases: the load phases in order.
        memory: samples of (seconds since start, requests finished, VmRSS in MiB).
        rss_early_mib: VmRSS after the first `EARLY_MARK_REQUESTS` requests.
        rss_after_load_mib: VmRSS right after the last phase.
        rss_after_idle_mib: VmRSS after the idle period.
        idle_seconds: length of the idle period.
        machine: host description.
        server_exit_code: the server's exit status after SIGTERM.
        server_503_ms: percentiles of the time the server itself spent on each 503, from
            its access log: from the request reaching the middleware to the response.
        server_tracebacks: tracebacks in the server's log; each one is a bug.
    """

    phases: list[PhaseResult] = field(default_factory=list)
    memory: list[tuple[float, int, float]] = field(default_factory=list)
    rss_early_mib: float = 0.0
    rss_after_load_mib: float = 0.0
    rss_after_idle_mib: float = 0.0
    idle_seconds: float = 0.0
    machine: str = ""
    server_exit_code: int | None = None
    server_503_ms: dict[str, float] = field(default_factory=dict)
    server_tracebacks: int = 0


# --- images and requests -------------------------------------------------------------------


def prepare_images(folder: Path) -> None:
    """Fill `folder` with the photos, generated images and damaged files the mix requests."""
    folder.mkdir(parents=True, exist_ok=True)
    for photo in SAMPLES.glob("*.jpg"):
        shutil.copy(photo, folder / photo.name)
    shutil.copy(EXIF_PHOTO, folder / "landscape.jpg")

    gradient = np.linspace(0, 255, 400 * 300 * 3).reshape(300, 400, 3).astype(np.uint8)
    rgb = Image.fromarray(gradient, "RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((400, 300)))
    frames = [rgb.rotate(angle).resize((120, 90)) for angle in (0, 90, 180, 270)]

    rgba.save(folder / "alpha.png")
    rgb.save(folder / "plain.webp", quality=80)
    frames[0].save(
        folder / "spin.gif", save_all=True, append_images=frames[1:], duration=80, loop=0
    )
    landscape = EXIF_PHOTO.read_bytes()
    (folder / "cut.jpg").write_bytes(landscape[: len(landscape) * 6 // 10])
    (folder / "page.jpg").write_bytes(b"<!doctype html><p>not an image</p>")


PHOTOS: Final = ("DSCN0010.jpg", "canon_hdr_NO.jpg", "jolla.jpg", "landscape.jpg")
SMALL: Final = ("alpha.png", "plain.webp", "spin.gif")
_OK: Final = frozenset({200})


def make_requests(count: int, seed: int, *, valid_only: bool = False) -> list[Request]:
    """Draw `count` requests of the mix with a fixed seed.

    Args:
        count: number of requests.
        seed: seed of the draw.
        valid_only: leave out the kinds that must fail, so every response should be 200 or 503.
    """
    rng = random.Random(seed)
    kinds: list[tuple[str, int]] = [
        ("hot thumbnail", 30),
        ("thumbnail", 12),
        ("crop", 10),
        ("convert", 8),
        ("blur", 4),
        ("rotate mono", 5),
        ("small", 8),
        ("passthrough", 5),
        ("cache buster", 6),
    ]
    if not valid_only:
        kinds += [("invalid", 5), ("missing", 3), ("damaged", 2), ("not an image", 2)]
    names = [name for name, _ in kinds]
    weights = [weight for _, weight in kinds]
    return [_draw(rng, kind) for kind in rng.choices(names, weights, k=count)]


def _draw(rng: random.Random, kind: str) -> Request:
    photo = rng.choice(PHOTOS)
    if kind == "hot thumbnail":
        # A small set of URLs repeated throughout, so most of them are result-cache hits.
        return Request(kind, f"/{photo}?w={rng.choice((160, 320))}", _OK)
    if kind == "thumbnail":
        return Request(kind, f"/{photo}?w={rng.randrange(64, 640)}", _OK)
    if kind == "crop":
        side = rng.choice((100, 200, 300))
        anchor = rng.choice(("top", "bottom,left", "right"))
        return Request(kind, f"/{photo}?w={side}&h={side}&fit=crop&crop={anchor}", _OK)
    if kind == "convert":
        fmt = rng.choice(("webp", "png"))
        return Request(kind, f"/{photo}?w={rng.choice((200, 400))}&format={fmt}", _OK)
    if kind == "blur":
        return Request(kind, f"/{photo}?w=240&blur={rng.choice((1, 3, 8))}", _OK)
    if kind == "rotate mono":
        angle = rng.choice((90, 33, 180))
        return Request(kind, f"/{photo}?w=200&rot={angle}&mono=000000", _OK)
    if kind == "small":
        name = rng.choice(SMALL)
        return Request(kind, f"/{name}?w={rng.randrange(40, 300)}&fit=pad&h=120", _OK)
    if kind == "passthrough":
        return Request(kind, f"/{rng.choice(SMALL)}", _OK)
    if kind == "cache buster":
        return Request(kind, f"/{photo}?w=160&v={rng.randrange(1_000_000)}", _OK)
    if kind == "invalid":
        query = rng.choice(("w=abc", "fit=zoom", "blur=0", "w=10&w=20", "q=101"))
        return Request(kind, f"/{photo}?{query}", frozenset({400}))
    if kind == "missing":
        return Request(kind, f"/missing-{rng.randrange(1000)}.jpg?w=100", frozenset({404}))
    if kind == "damaged":
        return Request(kind, "/cut.jpg?w=100", frozenset({422}))
    return Request(kind, "/page.jpg?w=100", frozenset({415}))


# --- the server ----------------------------------------------------------------------------


@dataclass(slots=True)
class ServerUnderTest:
    """A ``darkroom-gpu serve`` process started by this script.

    Attributes:
        process: the process, leader of its own session.
        base_url: ``http://127.0.0.1:<port>``.
        log_path: its standard output and error.
    """

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def rss_mib(self) -> float:
        """Return the server's resident set size (``VmRSS``) in MiB, 0 once it has exited."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> int | None:
        """Send SIGTERM, wait for the exit, and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(work: Path, images: Path, extra_config: str = "") -> ServerUnderTest:
    """Start the server over `images` on a free port of 127.0.0.1, on the CPU."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    config = work / "darkroom.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            server:
              host: 127.0.0.1
              port: {port}
            device: cpu
            sources:
              - name: soak
                kind: filesystem
                root: {images}
            """
        )
        + extra_config,
        encoding="utf-8",
    )
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("DARKROOM")
    }
    log_path = work / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*SERVE_COMMAND, "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    return ServerUnderTest(process, f"http://127.0.0.1:{port}", log_path)


async def wait_ready(server: ServerUnderTest) -> None:
    """Poll ``/readyz`` until it returns 200.

    Raises:
        RuntimeError: the server exited, or was not ready within `READY_TIMEOUT_SECONDS`.
    """
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                log = server.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"server exited with {server.process.returncode}: {log}")
            try:
                async with session.get(server.base_url + "/readyz") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"server was not ready within {READY_TIMEOUT_SECONDS:g} s")


# --- load ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Progress:
    finished: int = 0
    early_mark: asyncio.Event = field(default_factory=asyncio.Event)


async def _run_phase(
    name: str,
    session: aiohttp.ClientSession,
    base_url: str,
    requests: Sequence[Request],
    concurrency: int,
    max_seconds: float,
    progress: _Progress,
) -> PhaseResult:
    result = PhaseResult(name=name, concurrency=concurrency)
    latencies: dict[str, list[float]] = {"expected": [], "503": []}
    queue = iter(requests)
    started = time.monotonic()

    def note_unexpected(request: Request, outcome: str) -> None:
        result.unexpected[request.kind] += 1
        if result.first_unexpected is None:
            result.first_unexpected = f"{request.kind} {request.target}: {outcome}"

    async def client() -> None:
        for request in queue:
            if time.monotonic() - started > max_seconds:
                return
            sent_at = time.monotonic()
            try:
                async with session.get(base_url + request.target) as response:
                    await response.read()
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.statuses["error"] += 1
                note_unexpected(request, f"{type(exc).__name__}: {exc}")
                continue
            finally:
                result.sent += 1
                progress.finished += 1
                if progress.finished >= EARLY_MARK_REQUESTS:
                    progress.early_mark.set()
            elapsed_ms = (time.monotonic() - sent_at) * 1000
            result.statuses[str(status)] += 1
            if status == _OVERLOAD:
                latencies["503"].append(elapsed_ms)
                if retry_after is None:
                    note_unexpected(request, "503 without Retry-After")
            elif status in request.expected:
                latencies["expected"].append(elapsed_ms)
            else:
                note_unexpected(request, f"status {status}")

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    result.latency_ms = {
        outcome: _summarise(values) for outcome, values in latencies.items() if values
    }
    return result


def _summarise(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    summary = {f"p{point}": round(float(np.percentile(array, point)), 1) for point in PERCENTILES}
    summary["max"] = round(float(array.max()), 1)
    summary["count"] = len(values)
    return summary


async def _sample_memory(
    server: ServerUnderTest, result: SoakResult, progress: _Progress, started: float
) -> None:
    while True:
        result.memory.append(
            (round(time.monotonic() - started, 1), progress.finished, round(server.rss_mib(), 1))
        )
        await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)


async def run_soak(
    requests: int,
    *,
    concurrency: int = 32,
    max_seconds: float = 600.0,
    burst_requests: int = 0,
    burst_factor: int = 5,
    idle_seconds: float = 0.0,
    seed: int = 1,
    valid_only: bool = False,
    work: Path,
) -> SoakResult:
    """Start a server, run the phases, stop the server, and return what was measured.

    Args:
        requests: requests of the main phase.
        concurrency: clients of the main phase.
        max_seconds: time limit of each phase.
        burst_requests: requests of the burst phase that follows; 0 skips it.
        burst_factor: the burst's clients as a multiple of `concurrency`.
        idle_seconds: quiet time after the load, before the last memory mark.
        seed: seed of the request mix.
        valid_only: send only requests that should succeed.
        work: folder for the images, the configuration and the server log.
    """
    result = SoakResult(machine=describe_machine())
    images = work / "images"
    prepare_images(images)
    server = start_server(work, images)
    progress = _Progress()
    started = time.monotonic()
    sampler: asyncio.Task[None] | None = None
    try:
        await wait_ready(server)
        sampler = asyncio.create_task(_sample_memory(server, result, progress, started))
        connector = aiohttp.TCPConnector(limit=concurrency * max(1, burst_factor))
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            mix = make_requests(requests + burst_requests, seed, valid_only=valid_only)
            main = asyncio.create_task(
                _run_phase(
                    "main",
                    session,
                    server.base_url,
                    mix[:requests],
                    concurrency,
                    max_seconds,
                    progress,
                )
            )
            await asyncio.wait(
                [main, asyncio.create_task(progress.early_mark.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            result.rss_early_mib = round(server.rss_mib(), 1)
            result.phases.append(await main)
            if burst_requests:
                result.phases.append(
                    await _run_phase(
                        "burst",
                        session,
                        server.base_url,
                        mix[requests:],
                        concurrency * burst_factor,
                        max_seconds,
                        progress,
                    )
                )
        result.rss_after_load_mib = round(server.rss_mib(), 1)
        await asyncio.sleep(idle_seconds)
        result.idle_seconds = idle_seconds
        result.rss_after_idle_mib = round(server.rss_mib(), 1)
    finally:
        if sampler is not None:
            sampler.cancel()
        result.server_exit_code = server.stop()
        _read_server_log(server.log_path, result)
    return result


def _read_server_log(path: Path, result: SoakResult) -> None:
    overload_ms = []
    for line in path.read_text(errors="replace").splitlines():
        if "Traceback" in line:
            result.server_tracebacks += 1
        match = _OVERLOAD_LINE.search(line)
        if match is not None:
            overload_ms.append(float(match.group(1)))
    if overload_ms:
        result.server_503_ms = _summarise(overload_ms)


def describe_machine() -> str:
    """Return CPU count, memory, OS and Python of this host in one line."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPU cores, {memory_gib:.0f} GiB memory, no GPU used (device cpu), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


# --- report --------------------------------------------------------------------------------


def to_json(result: SoakResult) -> dict[str, object]:
    """Return the result as plain JSON-ready data."""
    data = asdict(result)
    # asdict() rebuilds a Counter from (key, value) pairs, counting the pairs; use plain dicts.
    data["phases"] = [
        {
            **asdict(phase),
            "statuses": dict(phase.statuses),
            "unexpected": dict(phase.unexpected),
        }
        for phase in result.phases
    ]
    return data


def to_markdown(result: SoakResult, command: str) -> str:
    """Render the result as a Markdown summary."""
    lines = [
        "# Soak run",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {result.machine}.",
        "",
        "| phase | clients | requests | seconds | requests/s | statuses | unexpected |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for phase in result.phases:
        statuses = ", ".join(f"{code}: {count}" for code, count in sorted(phase.statuses.items()))
        unexpected = sum(phase.unexpected.values())
        rate = phase.sent / phase.seconds if phase.seconds else 0.0
        lines.append(
            f"| {phase.name} | {phase.concurrency} | {phase.sent} | {phase.seconds:.1f} | "
            f"{rate:.1f} | {statuses} | {unexpected} |"
        )
    lines += ["", "| phase | outcome | p50 ms | p90 ms | p99 ms | max ms | count |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for phase in result.phases:
        for outcome, summary in phase.latency_ms.items():
            lines.append(
                f"| {phase.name} | {outcome} | {summary['p50']} | {summary['p90']} | "
                f"{summary['p99']} | {summary['max']} | {summary['count']:.0f} |"
            )
    lines += [
        "",
        f"Server memory (VmRSS): {result.rss_early_mib} MiB after the first "
        f"{EARLY_MARK_REQUESTS} requests, {result.rss_after_load_mib} MiB after the load, "
        f"{result.rss_after_idle_mib} MiB after {result.idle_seconds:g} s idle; peak "
        f"{max((sample[2] for sample in result.memory), default=0.0)} MiB.",
        "",
        f"Server exit status after SIGTERM: {result.server_exit_code}; tracebacks in its log: "
        f"{result.server_tracebacks}.",
    ]
    if result.server_503_ms:
        summary = result.server_503_ms
        lines.append(
            f"Time the server spent on each 503 (its access log): p50 {summary['p50']} ms, "
            f"p99 {summary['p99']} ms, max {summary['max']} ms over {summary['count']:.0f}; "
            "the latencies above also hold the wait for the server's event loop and the "
            "client's own scheduling."
        )
    for phase in result.phases:
        if phase.first_unexpected:
            lines.append(f"First unexpected answer in {phase.name}: {phase.first_unexpected}.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak and write its report; return 1 when any response was unexpected."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="requests of the main phase")
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the main phase")
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="time limit of each phase, seconds"
    )
    parser.add_argument("--burst-requests", type=int, default=0, help="requests of the burst")
    parser.add_argument("--burst-factor", type=int, default=5, help="burst clients / clients")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle time at the end")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request mix")
    parser.add_argument("--out", type=Path, required=True, help="folder for soak.json, soak.md")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="darkroom-soak-"))
    try:
        result = asyncio.run(
            run_soak(
                args.requests,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
                burst_requests=args.burst_requests,
                burst_factor=args.burst_factor,
                idle_seconds=args.idle_seconds,
                seed=args.seed,
                work=work,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    command = "python -m benchmarks.soak " + " ".join(argv or sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(to_json(result), indent=2) + "\n")
    markdown = to_markdown(result, command)
    (args.out / "soak.md").write_text(markdown)
    print(markdown)
    unexpected = sum(sum(phase.unexpected.values()) for phase in result.phases)
    return 1 if unexpected or result.server_tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
