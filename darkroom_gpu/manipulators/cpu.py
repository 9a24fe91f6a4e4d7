"""The CPU manipulator: Pillow codecs and torch tensor ops in a pool of worker threads."""

from __future__ import annotations

import asyncio
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image

from darkroom_gpu import codecs, pipeline
from darkroom_gpu.geometry import Size
from darkroom_gpu.manipulators.base import (
    ImageJob,
    ImageResult,
    Manipulator,
    check_animation_output,
    check_deadline,
    plan_job,
)
from darkroom_gpu.options import ProcessingOptions

__all__ = ("CpuManipulator", "share_cores")


class CpuManipulator(Manipulator):
    """Runs the whole pipeline for each request on one CPU worker thread.

    Args:
        workers: number of worker threads, which bounds how many images are processed at once.
    """

    device = "cpu"

    def __init__(self, workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="darkroom-cpu")
        share_cores(workers)

    async def process(self, job: ImageJob) -> ImageResult:
        """Transform one image on a worker thread; the event loop only awaits it."""
        queued_at = time.perf_counter()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _process, job, queued_at)

    async def warm_up(self) -> None:
        """Process a small generated JPEG so the thread pool and torch kernels are initialised."""
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, "JPEG")
        options = ProcessingOptions(width=32, blur=1.0, rotation=10.0)
        job = ImageJob(
            data=buffer.getvalue(),
            options=options,
            negotiated_format=None,
            allow_enlarge=True,
            max_pixels=64 * 48,
        )
        await self.process(job)

    async def close(self) -> None:
        """Wait for running work and stop the worker threads."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def share_cores(workers: int) -> None:
    """Give torch's intra-op thread pool the cores per worker thread, at least one.

    The pool is process-wide. With as many workers as cores, each image already has a core of
    its own, and more intra-op threads only contend with the other workers. On 2 cores under
    load, a 2-thread pool made each image 2 to 3 times slower than a 1-thread pool.
    """
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // workers))


def _process(job: ImageJob, queued_at: float) -> ImageResult:
    started = time.perf_counter()
    info, plan = plan_job(job)
    output_format = plan.output_format
    # An animation keeps every frame: (B, C, H, W) runs through the same steps as one image.
    animation: codecs.DecodedAnimation | None = None
    if plan.animate:
        check_animation_output(job, plan.result_size, info.frames)
        animation = codecs.decode_animation(job.data, max_pixels=job.max_pixels)
        source_pixels = animation.frames
    else:
        source_pixels = codecs.decode(
            job.data, max_pixels=job.max_pixels, draft_size=pipeline.decode_size(plan)
        ).pixels
    decoded_at = time.perf_counter()
    check_deadline(job)

    pixels = pipeline.run_steps(source_pixels, plan)
    processed_at = time.perf_counter()
    check_deadline(job)

    quality = job.options.quality or codecs.default_quality(
        output_format, compress=job.options.auto_compress
    )
    if animation is not None:
        data = codecs.encode_animation(
            pixels,
            output_format,
            quality,
            durations=animation.durations,
            plays=animation.plays,
        )
    else:
        data = codecs.encode(pixels, output_format, quality, progressive=plan.progressive)
    encoded_at = time.perf_counter()

    return ImageResult(
        data=data,
        output_format=output_format,
        size=Size(width=int(pixels.shape[-1]), height=int(pixels.shape[-2])),
        timings={
            "queue": started - queued_at,
            "decode": decoded_at - started,
            "process": processed_at - decoded_at,
            "encode": encoded_at - processed_at,
        },
        device="cpu",
    )
