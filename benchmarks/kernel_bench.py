"""Triton resize kernels versus their torch reference, for the GPU benchmark (gpu_bench.py).

Two suites, each run with both backends:

- resize step: one ragged batch made of the five standard workloads' images, as the GPU
  manipulator hands them to the kernels (decoded, box-reduced, in stored orientation, with
  their planned sizes and colour work), resized by `darkroom_gpu.kernels.resize_batch`. It
  reports device kernel launches and memory copies per batch (counted by torch.profiler on
  CUDA), time per batch (CUDA events on CUDA, the wall clock on the CPU) and the largest
  difference between the backends' results in 8-bit levels.
- end to end: `GpuManipulator.process_many` on the five workloads together, with
  ``batching.kernels`` set to ``triton`` and to ``torch``, in requests per second.

The dry run on the CPU interprets the kernels (``TRITON_INTERPRET=1``), which takes seconds
per megapixel, so it shrinks every image 16 times and runs the end-to-end suite on small
generated images.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import torch
from PIL import Image
from torch.profiler import DeviceType, ProfilerActivity, profile
from torchvision.io import ImageReadMode, decode_jpeg

from darkroom_gpu import ops, pipeline
from darkroom_gpu.config import BatchSettings
from darkroom_gpu.kernels import KernelBackend, ResizeSpec, resize_batch
from darkroom_gpu.manipulators.base import ImageJob, plan_job
from darkroom_gpu.manipulators.device_input import reduce_for_resize
from darkroom_gpu.manipulators.gpu import GpuManipulator
from darkroom_gpu.manipulators.kernel_path import split_plan
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.options import parse_options

__all__ = ("KernelRow", "kernel_cells", "kernel_markdown", "kernel_suites")

FULL_BATCH_SIZES: Final = (5, 40)
DRY_BATCH_SIZES: Final = (5,)
# The dry run divides every image side and target side by this.
DRY_SHRINK: Final = 16
# Queries of the dry run's small generated jobs: resize, grayscale, crop, and a tint in linear
# light.
DRY_QUERIES: Final = ("w=40", "w=30&mono=000000", "w=24&h=24&fit=crop", "w=36&mono=ff8000&linear=1")


@dataclass(frozen=True, slots=True)
class KernelRow:
    """One measured cell of the kernel comparison.

    Attributes:
        suite: ``resize step`` or ``end to end``.
        backend: ``triton`` or ``torch``.
        batch_size: images per batch.
        batches: timed batches.
        launches: device kernel launches per batch; ``None`` where no CUDA profiler runs.
        copies: device memory copies and fills per batch; ``None`` likewise.
        ms_per_batch: mean time per batch in milliseconds.
        images_per_second: images (requests, end to end) per second.
        max_difference: largest difference from the other backend's results, in levels
            (resize step only).
    """

    suite: str
    backend: str
    batch_size: int
    batches: int
    launches: int | None
    copies: int | None
    ms_per_batch: float
    images_per_second: float
    max_difference: int | None


def kernel_cells(dry_run: bool) -> int:
    """Return how many cells `kernel_suites` runs, for the time budget."""
    sizes = DRY_BATCH_SIZES if dry_run else FULL_BATCH_SIZES
    return 2 * len(sizes) + 2 * len(sizes)


async def kernel_suites(
    device: torch.device,
    jobs: Sequence[ImageJob],
    *,
    dry_run: bool,
    iterations: int,
    next_cell: Callable[[], float],
    add: Callable[[KernelRow], None],
) -> None:
    """Run both suites with both backends and hand each row to `add`.

    Args:
        device: where the images are processed.
        jobs: one job per standard workload.
        dry_run: shrink the work for the CPU interpreter.
        iterations: timed batches per cell, at most.
        next_cell: returns the seconds the next cell may run.
        add: records a row.
    """
    sizes = DRY_BATCH_SIZES if dry_run else FULL_BATCH_SIZES
    images, specs = ragged_batch(jobs, device, shrink=DRY_SHRINK if dry_run else 1)
    for size in sizes:
        batch = [images[index % len(images)] for index in range(size)]
        batch_specs = [specs[index % len(specs)] for index in range(size)]
        results: dict[KernelBackend, list[torch.Tensor]] = {}
        for backend in KernelBackend:
            results[backend] = resize_batch(batch, batch_specs, backend)
        difference = max_difference(results[KernelBackend.TRITON], results[KernelBackend.TORCH])
        for backend in KernelBackend:
            add(measure_resize(batch, batch_specs, backend, iterations, next_cell(), difference))

    end_to_end = small_jobs() if dry_run else list(jobs)
    for size in sizes:
        batch_jobs = [end_to_end[index % len(end_to_end)] for index in range(size)]
        for backend in KernelBackend:
            add(await measure_end_to_end(device, batch_jobs, backend, iterations, next_cell()))


def ragged_batch(
    jobs: Sequence[ImageJob], device: torch.device, shrink: int
) -> tuple[list[torch.Tensor], list[ResizeSpec]]:
    """Prepare each job's image as the GPU manipulator hands it to the kernels.

    The JPEG is decoded on `device`, box-reduced toward twice the planned size and left in
    stored orientation; `split_plan` gives its spec. With `shrink` > 1 the image and the target
    are made that many times smaller.
    """
    images: list[torch.Tensor] = []
    specs: list[ResizeSpec] = []
    for job in jobs:
        _, plan = plan_job(job)
        data = torch.frombuffer(bytearray(job.data), dtype=torch.uint8)
        image = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        image = reduce_for_resize(image, pipeline.decode_size(plan))
        split = split_plan(plan, image)
        if split is None:
            continue
        spec = split.spec
        if shrink > 1:
            height, width = (max(1, side // shrink) for side in image.shape[-2:])
            image = ops.resize(
                image, height, width, interpolation=ops.Interpolation.BICUBIC, antialias=True
            )
            spec = dataclasses.replace(
                spec, height=max(1, spec.height // shrink), width=max(1, spec.width // shrink)
            )
        images.append(image)
        specs.append(spec)
    return images, specs


def measure_resize(
    images: list[torch.Tensor],
    specs: list[ResizeSpec],
    backend: KernelBackend,
    iterations: int,
    seconds: float,
    difference: int,
) -> KernelRow:
    """Time `resize_batch` on one batch, after a warm-up call that compiles the kernels."""

    def run() -> None:
        resize_batch(images, specs, backend)

    run()
    launches, copies = count_device_work(run, images[0].device)
    elapsed = timed(run, images[0].device, iterations, seconds)
    batches = len(elapsed)
    mean = sum(elapsed) / batches
    return KernelRow(
        suite="resize step",
        backend=backend.value,
        batch_size=len(images),
        batches=batches,
        launches=launches,
        copies=copies,
        ms_per_batch=round(mean * 1000, 3),
        images_per_second=round(len(images) / mean, 1),
        max_difference=difference,
    )


async def measure_end_to_end(
    device: torch.device,
    jobs: list[ImageJob],
    backend: KernelBackend,
    iterations: int,
    seconds: float,
) -> KernelRow:
    """Time `process_many` on the jobs as one batch, decoding and encoding included."""
    batching = BatchSettings(
        max_wait_ms=2.0,
        max_images=max(64, len(jobs)),
        max_megapixels=100_000.0,
        max_queue=4096,
        kernels=backend.value,
    )
    manipulator = GpuManipulator(device, workers=4, batching=batching, metrics=Metrics())
    elapsed: list[float] = []
    try:
        await manipulator.process_many(jobs)
        started = time.perf_counter()
        for _ in range(iterations):
            call_started = time.perf_counter()
            outcomes = await manipulator.process_many(jobs)
            elapsed.append(time.perf_counter() - call_started)
            failures = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
            if failures:
                raise RuntimeError(f"{len(failures)} jobs failed, the first with {failures[0]!r}")
            if time.perf_counter() - started >= seconds:
                break
    finally:
        await manipulator.close()
    mean = sum(elapsed) / len(elapsed)
    return KernelRow(
        suite="end to end",
        backend=backend.value,
        batch_size=len(jobs),
        batches=len(elapsed),
        launches=None,
        copies=None,
        ms_per_batch=round(mean * 1000, 3),
        images_per_second=round(len(jobs) / mean, 1),
        max_difference=None,
    )


def count_device_work(
    run: Callable[[], None], device: torch.device
) -> tuple[int | None, int | None]:
    """Count the CUDA kernel launches and the memory copies and fills of one call of `run`.

    Returns ``(None, None)`` on the CPU, where the interpreter launches nothing on a device.
    """
    if device.type != "cuda":
        return None, None
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        run()
        torch.cuda.synchronize(device)
    launches = 0
    copies = 0
    for event in profiler.events():
        if event.device_type != DeviceType.CUDA:
            continue
        if event.name.startswith(("Memcpy", "Memset")):
            copies += 1
        else:
            launches += 1
    return launches, copies


def timed(
    run: Callable[[], None], device: torch.device, iterations: int, seconds: float
) -> list[float]:
    """Time up to `iterations` calls of `run`, within about `seconds`, in seconds each."""
    elapsed: list[float] = []
    deadline = time.perf_counter() + seconds
    for _ in range(iterations):
        if device.type == "cuda":
            # torch.cuda.Event's constructor carries no annotations in torch 2.14.
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            run()
            end.record()
            end.synchronize()
            elapsed.append(start.elapsed_time(end) / 1000)
        else:
            started = time.perf_counter()
            run()
            elapsed.append(time.perf_counter() - started)
        if time.perf_counter() >= deadline:
            break
    return elapsed


def max_difference(first: Sequence[torch.Tensor], second: Sequence[torch.Tensor]) -> int:
    """Return the largest difference between two backends' results, in 8-bit levels."""
    largest = 0
    for left, right in zip(first, second, strict=True):
        if left.shape != right.shape:
            raise RuntimeError(
                f"the backends' results differ in shape: {left.shape} vs {right.shape}"
            )
        largest = max(largest, int((left.int() - right.int()).abs().max()))
    return largest


def small_jobs() -> list[ImageJob]:
    """Build small generated jobs, so that the interpreted kernels finish in a dry run."""
    gradient = Image.linear_gradient("L").resize((96, 64))
    photo = Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient)
    )
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    jobs = []
    for query in DRY_QUERIES:
        pairs = [pair.partition("=") for pair in query.split("&")]
        jobs.append(
            ImageJob(
                data=buffer.getvalue(),
                options=parse_options([(name, value) for name, _, value in pairs]),
                negotiated_format=None,
                allow_enlarge=True,
                max_pixels=50_000_000,
            )
        )
    return jobs


def kernel_markdown(rows: Sequence[KernelRow]) -> list[str]:
    """Render the kernel rows as a Markdown section."""
    lines = [
        "## Triton kernels versus torch reference",
        "",
        "| suite | backend | batch | batches | launches | copies | ms/batch | images/s "
        "| max diff |",
        "| " + " | ".join(["---"] * 9) + " |",
    ]
    for row in rows:
        lines.append(
            f"| {row.suite} | {row.backend} | {row.batch_size} | {row.batches} "
            f"| {_dash(row.launches)} | {_dash(row.copies)} | {row.ms_per_batch} "
            f"| {row.images_per_second} | {_dash(row.max_difference)} |"
        )
    lines.append("")
    return lines


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)
