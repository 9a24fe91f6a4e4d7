"""Benchmark darkroom-gpu over HTTP against thumbor and against its own manipulator in-process.

For each target in turn (only one runs at a time, so none competes for the cores), the five
standard workloads run at each concurrency level as closed-loop cells bounded by a request
count and a duration. The targets are darkroom-gpu on the CPU as a server, thumbor from its own
virtual environment, and darkroom-gpu's CPU manipulator called directly, which is the baseline
for the HTTP overhead. With ``--gpu``, darkroom-gpu and the GPU manipulator also run on CUDA
where a device exists. Each target's first response per workload is scored against a Pillow
reference (SSIM and PSNR). Results go to ``<out>/<name>.json``, ``<name>.md`` and two PNG
charts.

Usage::

    python -m benchmarks.run                        # full CPU run, 6 to 9 minutes on 2 cores
    python -m benchmarks.run --quick                # fewer levels and shorter cells
    python -m benchmarks.run --gpu --name gpu       # on a CUDA machine
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import aiohttp
import torch

from benchmarks.gpu_bench import make_job
from benchmarks.load import (
    DISTURBANCE_CORES,
    REQUEST_TIMEOUT_SECONDS,
    Cell,
    ClientCalls,
    http_calls,
    manipulator_calls,
    measure_cell,
)
from benchmarks.machine import ProcessTree, describe_machine, wait_for_quiet
from benchmarks.quality import decode_result, render_reference, score
from benchmarks.report import (
    DARKROOM_CPU,
    DARKROOM_CUDA,
    IN_PROCESS_CPU,
    IN_PROCESS_CUDA,
    THUMBOR,
    QualityRow,
    Report,
    write_report,
)
from benchmarks.servers import (
    THUMBOR_VERSION,
    ServerProcess,
    ServerStartError,
    ensure_thumbor,
    start_darkroom,
    start_thumbor,
    thumbor_config,
)
from benchmarks.workloads import (
    QUALITY,
    REFERENCES,
    THUMBOR_OPTIONS,
    WORKLOADS,
    Workload,
    select_workloads,
)
from darkroom_gpu.config import BatchSettings
from darkroom_gpu.manipulators.base import Manipulator
from darkroom_gpu.manipulators.cpu import CpuManipulator
from darkroom_gpu.manipulators.gpu import GpuManipulator
from darkroom_gpu.metrics import Metrics

if TYPE_CHECKING:
    # Only for the annotation: tqdm is optional at run time (see Progress).
    from tqdm import tqdm

__all__ = ("RunSettings", "benchmark", "main")

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUT: Final = REPO / "benchmarks" / "results"
DEFAULT_THUMBOR_VENV: Final = REPO / "benchmarks" / ".venv-thumbor"
TARGET_KINDS: Final = ("darkroom", "thumbor", "inprocess")
FULL_CONCURRENCY: Final = (1, 4, 16)
QUICK_CONCURRENCY: Final = (1, 4)
FULL_SECONDS: Final = 6.0
QUICK_SECONDS: Final = 1.5
FULL_MAX_REQUESTS: Final = 2000
QUICK_MAX_REQUESTS: Final = 100
# Untimed requests per target and workload before its cells; the first is also scored.
WARMUP_REQUESTS: Final = 2
# Bounds on the time a run spends waiting for a quiet machine and on the cells it measures again.
DEFAULT_QUIET_WAIT: Final = 60.0
MAX_QUIET_WAIT_PER_CELL: Final = 10.0
MAX_RETRIES: Final = 6


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What one run measures and where it writes.

    Attributes:
        targets: kinds of target to run: ``darkroom``, ``thumbor``, ``inprocess``.
        workloads: the workloads, in order.
        concurrency: closed-loop client counts, each a cell.
        seconds: duration bound of a cell.
        max_requests: request count bound of a cell.
        gpu: whether to add the CUDA targets (skipped with a note where CUDA is missing).
        device: the CUDA device of the GPU targets.
        out: folder for the report files.
        name: prefix of the report file names.
        charts: whether to draw the PNG charts.
        thumbor_venv: thumbor's virtual environment, created when missing.
        thumbor_python: the interpreter that creates it.
        thumbor_processes: thumbor's forked server processes.
        quiet_wait: seconds the whole run may wait for other processes to go quiet before
            its cells; 0 never waits.
        command: the command line, recorded in the report.
    """

    targets: frozenset[str]
    workloads: tuple[Workload, ...]
    concurrency: tuple[int, ...]
    seconds: float
    max_requests: int
    gpu: bool
    device: str
    out: Path
    name: str
    charts: bool
    thumbor_venv: Path
    thumbor_python: str
    thumbor_processes: int
    quiet_wait: float
    command: str


class Progress:
    """A progress bar over the cells of a run, on stderr.

    Without tqdm (a GPU machine given only the project's own wheels, say), each finished cell
    is printed as a line instead.
    """

    def __init__(self, total: int) -> None:
        self._total = total
        self._done = 0
        self._cell = ""
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar: tqdm[NoReturn] | None = None
        else:
            self._bar = tqdm(total=total, unit="cell", file=sys.stderr, dynamic_ncols=True)

    def start(self, target: str, workload: str, clients: int) -> None:
        """Show the cell that is running."""
        self._cell = f"{target} {workload.split()[0]} c={clients}"
        if self._bar is not None:
            self._bar.set_description(self._cell)

    def finish(self, cell: Cell) -> None:
        """Count a finished cell and show its throughput."""
        summary = f"{cell.requests_per_second:.1f} req/s, {cell.errors} errors"
        self._done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(summary)
            self._bar.update()
        else:
            print(f"[{self._done}/{self._total}] {self._cell}: {summary}", file=sys.stderr)

    def skip(self, cells: int) -> None:
        """Count cells that will not run."""
        self._done += cells
        if self._bar is not None:
            self._bar.update(cells)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()


@dataclass(slots=True)
class Run:
    """The state of one run: settings, photos, report and progress."""

    settings: RunSettings
    photos: Path
    work: Path
    report: Report
    progress: Progress
    quiet_wait_left: float
    retries_left: int = MAX_RETRIES

    async def measure(
        self,
        target: str,
        workload: Workload,
        clients: int,
        calls: ClientCalls,
        tree: ProcessTree,
    ) -> Cell:
        """Measure one cell once the machine is quiet, and again if others disturbed it.

        The less disturbed of the two measurements is recorded. Waiting and retrying draw on
        the run's budgets (`RunSettings.quiet_wait` seconds, `MAX_RETRIES` retries).
        """
        self.progress.start(target, _label(workload), clients)
        best: Cell | None = None
        while True:
            await self._wait_for_quiet()
            cell = await measure_cell(
                target,
                _label(workload),
                calls,
                tree,
                clients=clients,
                max_requests=self.settings.max_requests,
                seconds=self.settings.seconds,
            )
            if best is None or cell.other_cores < best.other_cores:
                best = cell
            if not best.disturbed or self.retries_left <= 0:
                break
            self.retries_left -= 1
        self.report.cells.append(best)
        self.progress.finish(best)
        return best

    async def _wait_for_quiet(self) -> None:
        if self.quiet_wait_left <= 0:
            return
        started = time.monotonic()
        await wait_for_quiet(DISTURBANCE_CORES, min(MAX_QUIET_WAIT_PER_CELL, self.quiet_wait_left))
        self.quiet_wait_left -= time.monotonic() - started

    def cells_per_target(self) -> int:
        """Return how many cells each target runs."""
        return len(self.settings.workloads) * len(self.settings.concurrency)

    def add_quality(
        self, target: str, workload: Workload, data: bytes, fmt: str, *, clockwise: bool = True
    ) -> None:
        """Score one result against its reference and record it."""
        reference = render_reference(workload.path, REFERENCES[workload.key], clockwise=clockwise)
        measured = score(decode_result(data), reference)
        self.report.quality.append(
            QualityRow(
                target=target,
                workload=_label(workload),
                ssim=None if measured.ssim is None else round(measured.ssim, 4),
                psnr_db=None if measured.psnr_db is None else round(measured.psnr_db, 2),
                result_width=measured.result_width,
                result_height=measured.result_height,
                reference_width=measured.reference_width,
                reference_height=measured.reference_height,
                result_format=fmt,
                result_bytes=len(data),
            )
        )


async def benchmark(settings: RunSettings) -> tuple[Report, list[Path]]:
    """Run every target, then write the report and charts.

    Returns:
        The report and the paths of the files written.
    """
    machine = describe_machine()
    report = Report(header=_header(settings, machine))
    http_targets = _http_targets(settings, report)
    in_process = _in_process_targets(settings)
    total = (len(http_targets) + len(in_process)) * len(settings.workloads)
    progress = Progress(total * len(settings.concurrency))
    with tempfile.TemporaryDirectory(prefix="darkroom-bench-") as temporary:
        work = Path(temporary)
        photos = work / "photos"
        photos.mkdir()
        # One copy of each photo per client, so that no two concurrent requests are identical.
        for workload in settings.workloads:
            for copy_name in _copy_names(workload, max(settings.concurrency)):
                shutil.copy(workload.path, photos / copy_name)
        run = Run(settings, photos, work, report, progress, quiet_wait_left=settings.quiet_wait)
        try:
            # The report is written after each target too, so a run stopped by a time limit
            # keeps the targets it finished.
            for target in http_targets:
                await _run_server(run, target)
                write_report(report, settings.out, settings.name)
            for name, factory in in_process:
                await _run_in_process(run, name, factory)
                write_report(report, settings.out, settings.name)
        finally:
            progress.close()
    _note_disturbance(report)

    charts: list[Path] = []
    if settings.charts:
        # Imported here so that a machine without matplotlib can still run with --no-charts.
        from benchmarks.charts import write_charts

        title = f"{machine['cpu_model']}, {machine['cpu_count']} CPUs"
        if machine.get("cuda"):
            title += f", {machine['cuda']}"
        title += f", {report.header['date']}"
        charts = write_charts(report.cells, settings.out, settings.name, title)
    written = write_report(report, settings.out, settings.name, charts)
    return report, written + charts


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """A server to start and measure.

    Attributes:
        name: label in the report.
        start: starts the server for a run.
        url_for: builds a workload's URL from the base URL and the name of a photo copy.
        ready_path: path that returns 200 once the server is ready.
        clockwise: the direction in which the server turns a 90-degree rotation request.
        merges_identical_requests: whether the server shares one transform among identical
            requests in flight, which the run checks it did not do.
    """

    name: str
    start: Callable[[Run], ServerProcess]
    url_for: Callable[[str, Workload, str], str]
    ready_path: str
    clockwise: bool
    merges_identical_requests: bool


def _http_targets(settings: RunSettings, report: Report) -> list[HttpTarget]:
    targets: list[HttpTarget] = []
    if "darkroom" in settings.targets:
        targets.append(_darkroom_target(DARKROOM_CPU, "cpu"))
        if _cuda_ready(settings, report):
            targets.append(_darkroom_target(DARKROOM_CUDA, settings.device))
    if "thumbor" in settings.targets:
        try:
            executable, version = ensure_thumbor(settings.thumbor_venv, settings.thumbor_python)
        except ServerStartError as exc:
            report.failures.append(f"thumbor was not measured: {exc}")
        else:
            report.header["thumbor_version"] = version
            targets.append(
                HttpTarget(
                    name=THUMBOR,
                    start=lambda run: start_thumbor(
                        THUMBOR, executable, run.photos, run.settings.thumbor_processes, run.work
                    ),
                    url_for=_thumbor_url,
                    ready_path="/healthcheck",
                    # thumbor's PIL engine turns rotate(90) counter-clockwise.
                    clockwise=False,
                    merges_identical_requests=False,
                )
            )
    return targets


def _darkroom_target(name: str, device: str) -> HttpTarget:
    return HttpTarget(
        name=name,
        start=lambda run: start_darkroom(name, run.photos, device, run.work),
        url_for=_darkroom_url,
        ready_path="/readyz",
        clockwise=True,
        merges_identical_requests=True,
    )


def _in_process_targets(settings: RunSettings) -> list[tuple[str, Callable[[], Manipulator]]]:
    if "inprocess" not in settings.targets:
        return []
    workers = os.cpu_count() or 1
    targets: list[tuple[str, Callable[[], Manipulator]]] = [
        (IN_PROCESS_CPU, lambda: CpuManipulator(workers=workers))
    ]
    if settings.gpu and torch.cuda.is_available():
        device = torch.device(settings.device)
        targets.append(
            (
                IN_PROCESS_CUDA,
                lambda: GpuManipulator(
                    device, workers=workers, batching=BatchSettings(), metrics=Metrics()
                ),
            )
        )
    return targets


def _cuda_ready(settings: RunSettings, report: Report) -> bool:
    if not settings.gpu:
        return False
    if not torch.cuda.is_available():
        report.notes.append("--gpu was given but torch finds no CUDA device: no GPU target ran")
        return False
    return True


def _darkroom_url(base_url: str, workload: Workload, photo: str) -> str:
    return f"{base_url}/{photo}?{workload.query}"


def _thumbor_url(base_url: str, workload: Workload, photo: str) -> str:
    return f"{base_url}/unsafe/{THUMBOR_OPTIONS[workload.key]}/{photo}"


def _copy_names(workload: Workload, copies: int) -> list[str]:
    # jolla.jpg -> jolla-00.jpg, jolla-01.jpg, ...: identical bytes under distinct names.
    path = workload.path
    return [f"{path.stem}-{index:02d}{path.suffix}" for index in range(copies)]


async def _run_server(run: Run, target: HttpTarget) -> None:
    try:
        server = target.start(run)
    except ServerStartError as exc:
        run.report.failures.append(str(exc))
        run.progress.skip(run.cells_per_target())
        return
    measured = 0
    try:
        await server.wait_ready(target.ready_path)
        run.report.commands[server.name] = " ".join(server.command).replace(str(run.work), "<tmp>")
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        copies = max(run.settings.concurrency)
        for workload in run.settings.workloads:
            urls = [
                target.url_for(server.base_url, workload, name)
                for name in _copy_names(workload, copies)
            ]
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await _warm_up_http(run, target, session, urls[0], workload)
            for clients in run.settings.concurrency:
                connector = aiohttp.TCPConnector(limit=clients)
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                    await run.measure(
                        server.name, workload, clients, http_calls(session, urls), server.tree
                    )
                measured += 1
        if target.merges_identical_requests:
            await _check_no_merged_requests(run, server)
    except Exception as exc:  # noqa: BLE001 - recorded in the report; the other targets go on
        run.report.failures.append(f"{server.name}: {type(exc).__name__}: {exc}")
        run.progress.skip(run.cells_per_target() - measured)
    finally:
        server.stop()


async def _check_no_merged_requests(run: Run, server: ServerProcess) -> None:
    # Requests served from the result cache or from another request's transform did no work
    # of their own, so any of them would inflate the throughput.
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(server.base_url + "/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        for result in ("hit", "shared"):
            if line.startswith(f'darkroom_cache_requests_total{{result="{result}"}}'):
                count = float(line.split()[-1])
                if count > 0:
                    run.report.failures.append(
                        f"{server.name} answered {count:.0f} requests with result={result} "
                        "instead of processing them: its throughput is overstated"
                    )


async def _warm_up_http(
    run: Run, target: HttpTarget, session: aiohttp.ClientSession, url: str, workload: Workload
) -> None:
    for attempt in range(WARMUP_REQUESTS):
        async with session.get(url) as response:
            data = await response.read()
            if response.status != 200:
                run.report.failures.append(
                    f"{target.name} {workload.key}: warm-up request answered HTTP "
                    f"{response.status}: {data[:200]!r}"
                )
                return
            if attempt == 0:
                run.add_quality(
                    target.name, workload, data, response.content_type, clockwise=target.clockwise
                )


async def _run_in_process(run: Run, name: str, factory: Callable[[], Manipulator]) -> None:
    manipulator = factory()
    measured = 0
    try:
        await manipulator.warm_up()
        tree = ProcessTree(os.getpid())
        for workload in run.settings.workloads:
            job = make_job(workload)
            result = await manipulator.process(job)
            run.add_quality(name, workload, result.data, result.output_format.value)
            for _ in range(WARMUP_REQUESTS - 1):
                await manipulator.process(job)
            for clients in run.settings.concurrency:
                await run.measure(
                    name, workload, clients, manipulator_calls(manipulator, job), tree
                )
                measured += 1
    except Exception as exc:  # noqa: BLE001 - recorded in the report; the other targets go on
        run.report.failures.append(f"{name}: {type(exc).__name__}: {exc}")
        run.progress.skip(run.cells_per_target() - measured)
    finally:
        await manipulator.close()


def _note_disturbance(report: Report) -> None:
    disturbed = [cell for cell in report.cells if cell.disturbed]
    if disturbed:
        worst = max(disturbed, key=lambda cell: cell.other_cores)
        report.notes.append(
            f"{len(disturbed)} of {len(report.cells)} cells ran while other processes used more "
            f"than {DISTURBANCE_CORES} CPU cores (column 'other cores'; worst: {worst.target} "
            f"{worst.workload} c={worst.concurrency} with {worst.other_cores:.2f}): their "
            "throughput and latency are worse than on a quiet machine"
        )


def _label(workload: Workload) -> str:
    return f"{workload.key} {workload.name}"


def _header(settings: RunSettings, machine: dict[str, object]) -> dict[str, object]:
    return {
        "name": settings.name,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": settings.command,
        "machine": machine,
        "settings": {
            "concurrency": list(settings.concurrency),
            "seconds_per_cell": settings.seconds,
            "max_requests_per_cell": settings.max_requests,
            "warmup_requests": WARMUP_REQUESTS,
            "quiet_wait_seconds": settings.quiet_wait,
            "quality": QUALITY,
            "darkroom_result_cache": "off (cache.max_bytes: 0)",
            "thumbor_version_requested": THUMBOR_VERSION,
            "thumbor_processes": settings.thumbor_processes,
            "thumbor_config": thumbor_config(Path("<photos>")),
            "workloads": {
                workload.key: {
                    "source": workload.path.name,
                    "darkroom": workload.query,
                    "thumbor": THUMBOR_OPTIONS[workload.key],
                }
                for workload in settings.workloads
            },
        },
    }


def parse_settings(argv: Sequence[str] | None = None) -> RunSettings:
    """Parse the command line into run settings."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark darkroom-gpu over HTTP against thumbor and in-process.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"concurrency {','.join(map(str, QUICK_CONCURRENCY))}, {QUICK_SECONDS} s and at "
        f"most {QUICK_MAX_REQUESTS} requests per cell, unless given explicitly",
    )
    parser.add_argument(
        "--concurrency",
        help="comma-separated closed-loop client counts "
        f"(default {','.join(map(str, FULL_CONCURRENCY))})",
    )
    parser.add_argument(
        "--duration", type=float, help=f"seconds per cell, at most (default {FULL_SECONDS})"
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        help=f"requests per cell, at most (default {FULL_MAX_REQUESTS})",
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGET_KINDS),
        help=f"comma-separated targets to run (default {','.join(TARGET_KINDS)})",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(workload.key for workload in WORKLOADS),
        help="comma-separated workload keys (default W1,W2,W3,W4,W5)",
    )
    parser.add_argument(
        "--gpu", action="store_true", help="also run darkroom-gpu and its GPU manipulator on CUDA"
    )
    parser.add_argument("--device", default="cuda", help="CUDA device for --gpu (default cuda)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for the results (default %(default)s)"
    )
    parser.add_argument(
        "--name", help="prefix of the result files (default cpu, or gpu with --gpu)"
    )
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument(
        "--thumbor-venv",
        type=Path,
        default=DEFAULT_THUMBOR_VENV,
        help="thumbor's virtual environment, created when missing (default %(default)s)",
    )
    parser.add_argument(
        "--thumbor-python",
        default="python3",
        help="interpreter that creates thumbor's environment (default python3)",
    )
    parser.add_argument(
        "--thumbor-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="thumbor server processes (default: the CPU count, as darkroom-gpu's workers)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=DEFAULT_QUIET_WAIT,
        help="seconds the whole run may wait, at most 10 before each cell, for other processes "
        f"to use under {DISTURBANCE_CORES} CPU cores (default {DEFAULT_QUIET_WAIT:g}; 0: never)",
    )
    args = parser.parse_args(argv)

    targets = frozenset(_split(args.targets))
    unknown = targets - set(TARGET_KINDS)
    if unknown:
        parser.error(f"--targets: expected names from {','.join(TARGET_KINDS)}, got {unknown}")
    try:
        workloads = select_workloads(_split(args.workloads))
        levels = args.concurrency or ",".join(
            map(str, QUICK_CONCURRENCY if args.quick else FULL_CONCURRENCY)
        )
        concurrency = tuple(int(level) for level in _split(levels))
    except ValueError as exc:
        parser.error(str(exc))
    if not concurrency or min(concurrency) < 1:
        parser.error(f"--concurrency: expected positive integers, got {args.concurrency!r}")
    seconds = args.duration or (QUICK_SECONDS if args.quick else FULL_SECONDS)
    max_requests = args.max_requests or (QUICK_MAX_REQUESTS if args.quick else FULL_MAX_REQUESTS)
    command = " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])])
    return RunSettings(
        targets=targets,
        workloads=workloads,
        concurrency=concurrency,
        seconds=seconds,
        max_requests=max_requests,
        gpu=args.gpu,
        device=args.device,
        out=args.out,
        name=args.name or ("gpu" if args.gpu else "cpu"),
        charts=not args.no_charts,
        thumbor_venv=args.thumbor_venv,
        thumbor_python=args.thumbor_python,
        thumbor_processes=args.thumbor_processes,
        quiet_wait=args.quiet_wait,
        command=command,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the Markdown summary.

    Returns:
        0, or 1 when a request or a target failed (the report is written either way).
    """
    settings = parse_settings(argv)
    report, written = asyncio.run(benchmark(settings))
    print((settings.out / f"{settings.name}.md").read_text())
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for failure in report.failures:
        print(f"failure: {failure}", file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    errors = sum(cell.errors for cell in report.cells)
    return 1 if errors or report.failures else 0


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


if __name__ == "__main__":
    sys.exit(main())
