"""GPU-versus-CPU benchmark of the five standard workloads, through the manipulators directly.

Two suites, both without HTTP:

- batch: `GpuManipulator.process_many` with a fixed number of copies of one job (1, 2, 4, ...
  64), so every timed call is one batch of that size.
- concurrency: N clients, each awaiting `Manipulator.process` in a loop, against the GPU
  manipulator (with the default batching settings, so the micro-batcher forms the batches) and
  against the CPU manipulator.

- kernels: the Triton resize kernels against their torch reference, on the resize step alone
  and end to end (see benchmarks/kernel_bench.py).

Each cell runs until it reaches its iteration count or its time share of ``--budget-seconds``,
whichever comes first, after one untimed warm-up call. Results go to ``bench.json`` and a
Markdown summary ``bench.md`` in ``--out``. On the CPU stand-in the kernel comparison runs only
with ``TRITON_INTERPRET=1`` in the environment (gpu_check.sh sets it for ``--dry-run``),
because Triton reads it when torchvision first imports Triton.

Usage, from the repository root (the script imports ``benchmarks.kernel_bench``)::

    python -m benchmarks.gpu_bench --device cuda:0 --out /tmp/out --budget-seconds 240
    python -m benchmarks.gpu_bench --device cpu --out /tmp/out --dry-run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import numpy as np
import torch

from benchmarks.kernel_bench import KernelRow, kernel_cells, kernel_markdown, kernel_suites
from darkroom_gpu.config import BatchSettings
from darkroom_gpu.kernels import KernelBackend, dispatch
from darkroom_gpu.manipulators.base import ImageJob, ImageResult, Manipulator
from darkroom_gpu.manipulators.cpu import CpuManipulator
from darkroom_gpu.manipulators.gpu import GpuManipulator
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.options import parse_options

REPO: Final = Path(__file__).resolve().parent.parent
SAMPLES: Final = REPO / "darkroom_gpu" / "samples"
ORIENTATION: Final = REPO / "tests" / "data" / "exif-orientation"

FULL_BATCH_SIZES: Final = (1, 2, 4, 8, 16, 32, 64)
FULL_CONCURRENCY: Final = (1, 8, 32, 64)
DRY_BATCH_SIZES: Final = (1, 2)
DRY_CONCURRENCY: Final = (1, 2)
# Timed calls per batch cell and requests per client per concurrency cell, at most.
FULL_ITERATIONS: Final = 20
DRY_ITERATIONS: Final = 1
# No cell runs longer than this, even when the budget would allow more.
MAX_CELL_SECONDS: Final = 10.0
FIXED_BATCHES: Final = BatchSettings(
    max_wait_ms=2.0, max_images=64, max_megapixels=100_000.0, max_queue=4096
)


@dataclass(frozen=True, slots=True)
class Workload:
    """One standard workload: a source photo and the request applied to it."""

    key: str
    name: str
    path: Path
    query: str


WORKLOADS: Final = (
    Workload("W1", "thumbnail", SAMPLES / "jolla.jpg", "w=300&q=80"),
    Workload("W2", "crop", SAMPLES / "jolla.jpg", "w=800&h=800&fit=crop"),
    Workload("W3", "blur", ORIENTATION / "Landscape_1.jpg", "w=1200&blur=5"),
    Workload("W4", "convert", ORIENTATION / "Landscape_1.jpg", "w=1200&format=webp"),
    Workload("W5", "orient+mono+rotate", SAMPLES / "canon_hdr_NO.jpg", "w=600&mono=000000&rot=90"),
)


@dataclass(frozen=True, slots=True)
class Row:
    """One measured cell: throughput and latency of one workload at one setting."""

    suite: str
    workload: str
    manipulator: str
    batch_size: int
    concurrency: int
    images: int
    errors: int
    seconds: float
    images_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float


@dataclass(slots=True)
class Budget:
    """Shares the remaining time evenly among the cells still to run."""

    deadline: float
    cells_left: int

    def next_cell(self) -> float:
        """Return the seconds the next cell may run, and count it as started."""
        remaining = max(self.deadline - time.perf_counter(), 0.0)
        share = remaining / max(self.cells_left, 1)
        self.cells_left -= 1
        return min(share, MAX_CELL_SECONDS)


def make_job(workload: Workload) -> ImageJob:
    """Build the job of `workload`, as the image route would for its query."""
    pairs = [pair.partition("=") for pair in workload.query.split("&")]
    return ImageJob(
        data=workload.path.read_bytes(),
        options=parse_options([(name, value) for name, _, value in pairs]),
        negotiated_format=None,
        allow_enlarge=True,
        max_pixels=50_000_000,
    )


def percentiles(latencies: Sequence[float]) -> tuple[float, float, float]:
    """Return the 50th, 95th and 99th percentiles of `latencies` (seconds), in milliseconds."""
    if not latencies:
        return (float("nan"),) * 3
    p50, p95, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def count_errors(outcomes: Sequence[ImageResult | Exception]) -> int:
    """Count the failed jobs of a `process_many` call."""
    return sum(1 for outcome in outcomes if isinstance(outcome, Exception))


async def run_batch_cell(
    gpu: GpuManipulator, job: ImageJob, batch_size: int, iterations: int, seconds: float
) -> tuple[list[float], int, int, float]:
    """Time up to `iterations` batches of `batch_size` copies of `job`, within `seconds`."""
    jobs = [job] * batch_size
    await gpu.process_many(jobs)
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    for _ in range(iterations):
        call_started = time.perf_counter()
        errors += count_errors(await gpu.process_many(jobs))
        latencies.append(time.perf_counter() - call_started)
        if time.perf_counter() - started >= seconds:
            break
    return latencies, len(latencies) * batch_size, errors, time.perf_counter() - started


async def run_concurrency_cell(
    manipulator: Manipulator, job: ImageJob, clients: int, iterations: int, seconds: float
) -> tuple[list[float], int, int, float]:
    """Run `clients` loops of up to `iterations` requests each, within `seconds`."""
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def client() -> None:
        nonlocal errors
        for _ in range(iterations):
            request_started = time.perf_counter()
            try:
                await manipulator.process(job)
            except Exception:  # noqa: BLE001 - counted and reported in the row, not fatal
                errors += 1
            latencies.append(time.perf_counter() - request_started)
            if time.perf_counter() >= deadline:
                return

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, len(latencies) - errors, errors, time.perf_counter() - started


def make_row(
    suite: str,
    workload: Workload,
    manipulator: str,
    measured: tuple[list[float], int, int, float],
    *,
    batch_size: int,
    concurrency: int,
    mean_batch: float,
) -> Row:
    """Summarise one cell's measurements (latencies, images, errors, seconds) as a row."""
    latencies, images, errors, seconds = measured
    p50, p95, p99 = percentiles(latencies)
    return Row(
        suite=suite,
        workload=f"{workload.key} {workload.name}",
        manipulator=manipulator,
        batch_size=batch_size,
        concurrency=concurrency,
        images=images,
        errors=errors,
        seconds=round(seconds, 3),
        images_per_second=round(images / seconds, 2) if seconds > 0 else 0.0,
        p50_ms=round(p50, 2),
        p95_ms=round(p95, 2),
        p99_ms=round(p99, 2),
        mean_batch=round(mean_batch, 2),
    )


def batch_totals(metrics: Metrics) -> tuple[float, float]:
    """Return the images and the batches the micro-batcher has dispatched so far."""
    images = metrics.registry.get_sample_value("darkroom_batch_size_sum") or 0.0
    batches = metrics.registry.get_sample_value("darkroom_batch_size_count") or 0.0
    return images, batches


async def batch_suite(
    device: torch.device,
    batch_sizes: Sequence[int],
    iterations: int,
    budget: Budget,
    report: Report,
) -> None:
    """Measure fixed batch sizes on the GPU manipulator, for every workload."""
    gpu = GpuManipulator(device, workers=_workers(), batching=FIXED_BATCHES, metrics=Metrics())
    try:
        await gpu.warm_up()
        for workload in WORKLOADS:
            job = make_job(workload)
            for batch_size in batch_sizes:
                measured = await run_batch_cell(
                    gpu, job, batch_size, iterations, budget.next_cell()
                )
                row = make_row(
                    "batch",
                    workload,
                    label(gpu),
                    measured,
                    batch_size=batch_size,
                    concurrency=1,
                    mean_batch=batch_size,
                )
                report.add(row)
    finally:
        await gpu.close()


async def concurrency_suite(
    device: torch.device,
    levels: Sequence[int],
    iterations: int,
    budget: Budget,
    report: Report,
) -> None:
    """Measure concurrent clients on the GPU and the CPU manipulator, for every workload."""
    factories: list[Callable[[Metrics], Manipulator]] = [
        lambda metrics: GpuManipulator(
            device, workers=_workers(), batching=BatchSettings(), metrics=metrics
        ),
        lambda metrics: CpuManipulator(workers=_workers()),
    ]
    for factory in factories:
        for workload in WORKLOADS:
            for clients in levels:
                # A fresh manipulator per cell, so the batch-size metric covers this cell only.
                metrics = Metrics()
                manipulator = factory(metrics)
                try:
                    await manipulator.warm_up()
                    job = make_job(workload)
                    await manipulator.process(job)
                    images_before, batches_before = batch_totals(metrics)
                    measured = await run_concurrency_cell(
                        manipulator, job, clients, iterations, budget.next_cell()
                    )
                    images_after, batches_after = batch_totals(metrics)
                finally:
                    await manipulator.close()
                batches = batches_after - batches_before
                row = make_row(
                    "concurrency",
                    workload,
                    label(manipulator),
                    measured,
                    batch_size=0,
                    concurrency=clients,
                    mean_batch=(images_after - images_before) / batches if batches else 0.0,
                )
                report.add(row)


def hardware() -> dict[str, object]:
    """Describe the Python, torch and device this run measured."""
    info: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def markdown(
    header: dict[str, object], rows: Sequence[Row], kernel_rows: Sequence[KernelRow] = ()
) -> str:
    """Render the report as a Markdown page with one table per suite."""
    lines = ["# GPU vs CPU manipulator benchmark", ""]
    lines.append("Hardware and versions: " + json.dumps(header["hardware"], sort_keys=True))
    lines.append("")
    if header["dry_run"]:
        lines += ["DRY RUN on the CPU stand-in with tiny counts: the numbers mean nothing.", ""]
    columns = (
        "| workload | manipulator | batch | clients | images | errors | images/s "
        "| p50 ms | p95 ms | p99 ms | mean batch |"
    )
    for suite, title in (("batch", "Fixed batch sizes"), ("concurrency", "Concurrent clients")):
        lines += [f"## {title}", "", columns, "| " + " | ".join(["---"] * 11) + " |"]
        for row in rows:
            if row.suite != suite:
                continue
            lines.append(
                f"| {row.workload} | {row.manipulator} | {row.batch_size or '-'} "
                f"| {row.concurrency} | {row.images} | {row.errors} | {row.images_per_second} "
                f"| {row.p50_ms} | {row.p95_ms} | {row.p99_ms} | {row.mean_batch or '-'} |"
            )
        lines.append("")
    if kernel_rows:
        lines += kernel_markdown(kernel_rows)
    return "\n".join(lines)


class Report:
    """Collects the rows and rewrites ``bench.json`` and ``bench.md`` after each one.

    Writing as it goes keeps the finished cells when a time limit stops the run.
    """

    def __init__(self, out: Path, header: dict[str, object]) -> None:
        self.out = out
        self.header = header
        self.rows: list[Row] = []
        self.kernel_rows: list[KernelRow] = []
        self.started = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)

    def add(self, row: Row) -> None:
        """Record one row, print a progress line and save the report."""
        self.rows.append(row)
        _progress(row)
        self.save()

    def add_kernel(self, row: KernelRow) -> None:
        """Record one row of the kernel comparison, print a progress line and save the report."""
        self.kernel_rows.append(row)
        print(
            f"{row.suite:<11} {row.backend:<6} batch={row.batch_size:<3} "
            f"launches={row.launches} {row.ms_per_batch:.2f} ms/batch "
            f"{row.images_per_second:.1f} img/s",
            file=sys.stderr,
            flush=True,
        )
        self.save()

    def save(self) -> str:
        """Write the report files and return the Markdown summary."""
        report = dict(self.header)
        report["elapsed_seconds"] = round(time.perf_counter() - self.started, 1)
        report["rows"] = [asdict(row) for row in self.rows]
        report["kernel_rows"] = [asdict(row) for row in self.kernel_rows]
        (self.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        summary = markdown(self.header, self.rows, self.kernel_rows)
        (self.out / "bench.md").write_text(summary + "\n")
        return summary


async def run(args: argparse.Namespace) -> int:
    """Run both suites, write the report, and return 1 when any request failed, else 0."""
    device = torch.device(args.device)
    if device.type == "cuda":
        # The kernel suite launches Triton from this thread, on its current device.
        torch.cuda.set_device(device.index or 0)
    batch_sizes = DRY_BATCH_SIZES if args.dry_run else FULL_BATCH_SIZES
    levels = DRY_CONCURRENCY if args.dry_run else FULL_CONCURRENCY
    iterations = DRY_ITERATIONS if args.dry_run else FULL_ITERATIONS
    cells = len(WORKLOADS) * (len(batch_sizes) + 2 * len(levels))
    # Triton compiles for CUDA only; on the CPU the kernels need its interpreter.
    with_kernels = dispatch.triton_importable() and (
        device.type == "cuda" or dispatch.interpreter_enabled()
    )
    if with_kernels:
        cells += kernel_cells(args.dry_run)
    budget = Budget(time.perf_counter() + args.budget_seconds, cells)
    report = Report(
        args.out,
        {
            "hardware": hardware(),
            "dry_run": args.dry_run,
            "device": str(device),
            "budget_seconds": args.budget_seconds,
            "workloads": [
                {"key": w.key, "name": w.name, "source": w.path.name, "query": w.query}
                for w in WORKLOADS
            ],
        },
    )

    await batch_suite(device, batch_sizes, iterations, budget, report)
    await concurrency_suite(device, levels, iterations, budget, report)
    kernel_failed = False
    if with_kernels:
        try:
            await kernel_suites(
                device,
                [make_job(workload) for workload in WORKLOADS],
                dry_run=args.dry_run,
                iterations=iterations,
                next_cell=budget.next_cell,
                add=report.add_kernel,
            )
        except Exception:  # noqa: BLE001 - the rows measured so far are kept and the run goes on
            # The kernel comparison comes last, so its failure must not lose the summary.
            traceback.print_exc()
            print("the kernel comparison failed; its rows so far are kept", file=sys.stderr)
            kernel_failed = True
    else:
        print(
            "the kernel comparison is left out: it needs triton, and TRITON_INTERPRET=1 set "
            "before the run on the CPU",
            file=sys.stderr,
        )
    print(report.save())
    errors = sum(row.errors for row in report.rows)
    if errors:
        print(f"{errors} requests failed; see the errors column", file=sys.stderr)
    return 1 if errors or kernel_failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="cuda:0", help="cuda:N, or cpu for the stand-in")
    parser.add_argument("--out", type=Path, required=True, help="folder for bench.json, bench.md")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=240.0,
        help="total seconds shared by all cells (default 240), not counting set-up and warm-ups",
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny counts, for a CPU check")
    args = parser.parse_args(argv)
    # torchvision 0.29 deprecates its image codecs; the warning would repeat in every cell.
    warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
    return asyncio.run(run(args))


def label(manipulator: Manipulator) -> str:
    """Name a manipulator in the report: ``gpu@cuda:0``, ``gpu@cpu`` (the stand-in) or ``cpu``.

    ``+triton`` follows when the Triton kernels resize, so that a run whose kernels failed
    their warm-up check and fell back to the torch ops shows it in every row.
    """
    if isinstance(manipulator, GpuManipulator):
        kernels = "+triton" if manipulator.kernels is KernelBackend.TRITON else ""
        return f"gpu@{manipulator.device}{kernels}"
    return "cpu"


def _workers() -> int:
    return os.cpu_count() or 1


def _progress(row: Row) -> None:
    print(
        f"{row.suite:<11} {row.workload:<22} {row.manipulator:<6} batch={row.batch_size:<3} "
        f"clients={row.concurrency:<3} {row.images_per_second:>9.1f} img/s "
        f"p50={row.p50_ms:.1f} ms",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
