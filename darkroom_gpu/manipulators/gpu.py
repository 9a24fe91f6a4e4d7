"""The GPU manipulator: concurrent requests decoded, transformed and encoded in batches.

A `MicroBatcher` groups concurrent jobs. Each batch then runs these phases:

1. Prepare, per job on CPU threads before it is queued: probe the header, choose the output
   format, plan the transform, check the pixel limit and pick the decoder.
2. Decode. Baseline 8-bit YCbCr JPEGs are decoded together by nvJPEG through torchvision's
   batched ``decode_jpeg``. Every other input (PNG, WebP, GIF, BMP, TIFF, AVIF, progressive,
   CMYK or grayscale JPEG, and any JPEG that nvJPEG rejects) is decoded by Pillow on CPU
   threads, with the CPU manipulator's shrink-on-load, and uploaded through pinned memory.
3. Process on the device: an integer box reduction for large downscales (standing in for
   shrink-on-load, which nvJPEG lacks), then the plan's steps. With the Triton kernels on
   (``batching.kernels``), the images' resizes, and their mono and flatten steps where that
   gives the same pixels, run together in two kernel launches (`kernel_path.split_plan`), and
   each image's other steps run after them. Otherwise `pipeline.run_steps` runs per image.
4. Encode. JPEG results are encoded together by nvJPEG through ``encode_jpeg``, one call per
   quality. Other formats are copied to the host and encoded by Pillow on CPU threads.

Isolation and fallback: an image that fails to decode or transform fails alone with its own
error. CUDA out-of-memory splits the failing group in halves and retries, and a single image
still out of memory runs through the CPU manipulator. Any other CUDA error sends the rest of
the batch to the CPU manipulator, and a tiny probe then shows whether the device still works.
Some CUDA errors (an illegal memory access, a device-side assert) leave the CUDA context
unusable until the process ends. After one of those, `failure` is set, every later job runs
on the CPU manipulator (queued ones included), and ``/healthz`` and ``/readyz`` report the
failure so that an orchestrator restarts the process. Each image handed to the CPU is counted
in ``darkroom_gpu_fallbacks_total{reason}``.

One dedicated thread per manipulator owns every call that touches the device, because
torchvision keeps one process-wide nvJPEG decoder behind a lock and because CUDA work issued
from one thread runs in order on that thread's stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Final, TypeVar

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from darkroom_gpu import codecs, pipeline
from darkroom_gpu.codecs import ImageFormat
from darkroom_gpu.codecs.color import changes_rgb_colours
from darkroom_gpu.config import BatchSettings
from darkroom_gpu.geometry import Size
from darkroom_gpu.kernels import (
    KernelBackend,
    resize_batch,
    resolve_backend,
    verify_kernels,
)
from darkroom_gpu.manipulators.base import (
    ImageJob,
    ImageResult,
    Manipulator,
    plan_job,
)
from darkroom_gpu.manipulators.batcher import BatcherClosedError, MicroBatcher
from darkroom_gpu.manipulators.cpu import CpuManipulator
from darkroom_gpu.manipulators.device_input import is_device_decodable_jpeg, reduce_for_resize
from darkroom_gpu.manipulators.fallback import FALLBACK_LOG_INTERVAL, FallbackLog, FallbackReason
from darkroom_gpu.manipulators.kernel_path import KernelWork, split_plan
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.options import OutputFormat, ProcessingOptions
from darkroom_gpu.pipeline import TransformPlan

__all__ = ("GpuManipulator",)

logger = logging.getLogger(__name__)

# Failures of the device itself rather than of one image. Both subclass RuntimeError, so they
# are caught before any handler for image errors.
DEVICE_FAILURES: Final = (torch.cuda.OutOfMemoryError, torch.AcceleratorError)

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One job after its CPU-side planning, as the batcher queues it."""

    job: ImageJob
    source_format: ImageFormat
    plan: TransformPlan
    quality: int
    megapixels: float
    decode_on_device: bool
    prepare_seconds: float
    prepared_at: float
    needs_host: bool = False


@dataclass(frozen=True, slots=True)
class _Fallback:
    reason: FallbackReason
    detail: str


@dataclass(frozen=True, slots=True)
class _Encoded:
    data: bytes
    size: Size


@dataclass(frozen=True, slots=True)
class _Work:
    """Input of the device phase: ``pixels`` is ``(C, H, W)`` uint8, on the host or device."""

    pixels: torch.Tensor
    plan: TransformPlan
    quality: int
    reduce: bool


@dataclass(slots=True)
class _Clock:
    process: float = 0.0
    encode: float = 0.0


@dataclass(slots=True)
class _Slot:
    """The state of one image while its batch runs; exactly one outcome field ends up set."""

    item: _Prepared
    pixels: torch.Tensor | None = None
    decoded_on_device: bool = False
    host_result: torch.Tensor | None = None
    encoded: _Encoded | None = None
    fallback: _Fallback | None = None
    cpu_result: ImageResult | None = None
    error: Exception | None = None


class GpuManipulator(Manipulator):
    """Processes concurrent jobs in batches on one CUDA device.

    ``torch.device("cpu")`` is accepted too: every phase then runs on CPU tensors, which lets
    the batching, isolation and fallback logic run in tests on machines without a GPU.

    Args:
        device: ``cuda:N``, or ``cpu`` as a stand-in.
        workers: CPU threads for probing, Pillow decodes and encodes, and CPU fallbacks.
        batching: the micro-batcher's bounds, and whether the Triton kernels resize.
        metrics: where batch, queue, fallback and memory metrics are recorded.

    Raises:
        KernelUnavailableError: ``batching.kernels`` is ``triton`` but the kernels cannot run
            on `device`.

    Note:
        The hooks `decode_jpegs`, `transform`, `encode_jpegs` and `probe_device` run on the
        device thread.
        Subclasses may override them, for example to inject failures in tests.
    """

    def __init__(
        self, device: torch.device, *, workers: int, batching: BatchSettings, metrics: Metrics
    ) -> None:
        index: int | None = device.index
        if device.type == "cuda" and index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self._device = device
        self.device = str(device)
        # First, so that an unusable choice fails before any thread or batcher exists.
        self._kernels = resolve_backend(batching.kernels, device)
        self._metrics = metrics
        self._cuda = device.type == "cuda"
        self._device_thread = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"darkroom-{device.type}{device.index or 0}",
            initializer=self._init_device_thread,
        )
        self._cpu_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="darkroom-io")
        self._cpu = CpuManipulator(workers=workers)
        self._batcher: MicroBatcher[_Prepared, ImageResult] = MicroBatcher(
            self._run_batch,
            settings=batching,
            metrics=metrics,
            megapixels=lambda item: item.megapixels,
        )
        self._fallback_log = FallbackLog(self.device, FALLBACK_LOG_INTERVAL)
        self.fallback_counts: Counter[FallbackReason] = Counter()
        self.failure: str | None = None

    @property
    def kernels(self) -> KernelBackend:
        """The backend that resizes the images of a batch now: Triton kernels or torch ops."""
        return self._kernels

    async def process(self, job: ImageJob) -> ImageResult:
        """Prepare the job on a CPU thread, then run it in the next batch.

        Raises:
            OverloadedError: the batcher's queue is full.
            BatcherClosedError: the manipulator is closed.
            UnsupportedMediaTypeError: the bytes are no image format the server reads.
            UnprocessableImageError: the image is corrupt or over a limit.
        """
        if self._batcher.closed:
            raise BatcherClosedError()
        if self.failure is not None:
            return await self._process_on_cpu(job)
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._cpu_pool, self._prepare, job)
        if prepared.needs_host:
            return await self._cpu.process(job)
        return await self._batcher.submit(prepared)

    async def process_many(self, jobs: Sequence[ImageJob]) -> list[ImageResult | Exception]:
        """Prepare several jobs and queue them together, so an idle device runs them as one batch.

        Returns:
            One outcome per job, in order: its result or the error it alone failed with.

        Raises:
            OverloadedError: the batcher's queue has no room for all of them.
            BatcherClosedError: the manipulator is closed.
        """
        if self._batcher.closed:
            raise BatcherClosedError()
        if self.failure is not None:
            return await _gather_outcomes(self._process_on_cpu(job) for job in jobs)
        loop = asyncio.get_running_loop()
        prepared = await asyncio.gather(
            *(loop.run_in_executor(self._cpu_pool, self._prepare, job) for job in jobs),
            return_exceptions=True,
        )
        ready = [item for item in prepared if isinstance(item, _Prepared)]
        results = iter(await self._batcher.submit_many(ready))
        outcomes: list[ImageResult | Exception] = []
        for item in prepared:
            if isinstance(item, _Prepared):
                outcomes.append(next(results))
            elif isinstance(item, Exception):
                outcomes.append(item)
            else:
                raise item
        return outcomes

    async def warm_up(self) -> None:
        """Run a JPEG and a PNG together through every phase on the device.

        With the Triton kernels on, a small batch first runs through them and through their
        torch reference. If the kernels fail or disagree, the error is logged and the torch
        ops resize from then on.

        Raises:
            RuntimeError: the device failed and the images fell back to the CPU.
        """
        if self._kernels is KernelBackend.TRITON:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._device_thread, self._check_kernels)
        before = self.fallback_counts.copy()
        jobs = [
            _warm_up_job("JPEG", ProcessingOptions(width=32, blur=1.0, rotation=10.0)),
            _warm_up_job("PNG", ProcessingOptions(width=32, flip_horizontal=True)),
        ]
        for outcome in await self.process_many(jobs):
            if isinstance(outcome, Exception):
                raise outcome
        failures = self.fallback_counts - before
        failures.pop(FallbackReason.CPU_DECODE, None)
        if failures:
            reasons = ", ".join(sorted(failures))
            raise RuntimeError(f"warm-up on {self.device} fell back to the CPU ({reasons})")

    async def close(self) -> None:
        """Fail queued jobs, let the running batch finish, stop the threads and free memory."""
        await self._batcher.close()
        await asyncio.to_thread(self._device_thread.shutdown, wait=True)
        await asyncio.to_thread(self._cpu_pool.shutdown, wait=True)
        await self._cpu.close()
        # A broken CUDA context would raise again here.
        if self._cuda and self.failure is None:
            with torch.cuda.device(self._device):
                torch.cuda.empty_cache()

    def decode_jpegs(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decode JPEGs on the device in one call.

        Args:
            sources: encoded JPEGs, each a ``(N,)`` uint8 CPU tensor of its bytes.

        Returns:
            One ``(3, H, W)`` uint8 RGB tensor in [0, 255] on the device per source, in stored
            orientation.

        Raises:
            RuntimeError: the decoder rejected an input; the batched call does not say which.
        """
        # TODO: move to torchcodec's decoders before torchvision drops these (deprecated in 0.29).
        decoded = decode_jpeg(sources, mode=ImageReadMode.RGB, device=self._device)
        return list(decoded)

    def transform(self, image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
        """Run the planned steps on one image on the device (`pipeline.run_steps`)."""
        return pipeline.run_steps(image, plan)

    def probe_device(self) -> None:
        """Run a tiny operation on the device and wait for it.

        Raises:
            torch.AcceleratorError: the device's CUDA context is no longer usable.
        """
        probe = torch.ones(1, device=self._device).add_(1)
        if self._cuda:
            torch.cuda.synchronize(self._device)
        probe.cpu()

    def encode_jpegs(self, images: list[torch.Tensor], quality: int) -> list[torch.Tensor]:
        """Encode RGB images as JPEG in one call.

        Args:
            images: ``(3, H, W)`` uint8 contiguous tensors on the device.
            quality: JPEG quality 1..100.

        Returns:
            One ``(N,)`` uint8 tensor of encoded bytes per image, on the device or the host.
        """
        return list(encode_jpeg(images, quality=quality))

    def _check_kernels(self) -> None:
        started = time.perf_counter()
        try:
            largest = verify_kernels(self._device)
        except DEVICE_FAILURES as exc:
            if isinstance(exc, torch.AcceleratorError):
                self._check_device_after(_first_line(exc))
            raise
        except Exception:
            # Any failure of the optional kernels leaves the torch ops, which do the same work.
            logger.exception(
                "the Triton resize kernels failed their check on %s, so the torch ops resize",
                self.device,
            )
            self._kernels = KernelBackend.TORCH
            return
        logger.info(
            "Triton resize kernels checked on %s in %.1f s, within %d level(s) of torch",
            self.device,
            time.perf_counter() - started,
            largest,
        )

    def _init_device_thread(self) -> None:
        if self._cuda:
            torch.cuda.set_device(self._device)

    async def _process_on_cpu(self, job: ImageJob) -> ImageResult:
        """Run a job on the CPU manipulator because the device has failed."""
        self._count_fallback(FallbackReason.CUDA_ERROR, 1, f"the device failed: {self.failure}")
        return await self._cpu.process(job)

    def _check_device_after(self, error: str) -> None:
        """Set `failure` when the device no longer works after the CUDA error `error`.

        Runs on the device thread. Errors of a single launch leave the device usable, so only a
        failed probe turns the device off.
        """
        if self.failure is not None:
            return
        try:
            self.probe_device()
        except torch.cuda.OutOfMemoryError:
            # Memory is short, but the context still works.
            return
        except torch.AcceleratorError as exc:
            self.failure = error
            logger.error(
                "%s is unusable after a CUDA error (%s), and the probe that followed failed (%s). "
                "Every image now runs on the CPU, and /healthz and /readyz fail until the server "
                "restarts",
                self.device,
                error,
                _first_line(exc),
            )

    def _prepare(self, job: ImageJob) -> _Prepared:
        started = time.perf_counter()
        info, plan = plan_job(job)
        output_format = plan.output_format
        pixel_count = info.size.width * info.size.height
        quality = job.options.quality or codecs.default_quality(
            output_format, compress=job.options.auto_compress
        )
        # nvJPEG ignores embedded colour profiles, so a JPEG whose profile changes its colours
        # is decoded (and converted to sRGB) by Pillow instead.
        on_device = (
            info.format is ImageFormat.JPEG
            and is_device_decodable_jpeg(job.data)
            and not changes_rgb_colours(info.icc_profile)
        )
        prepared_at = time.perf_counter()
        return _Prepared(
            job=job,
            source_format=info.format,
            plan=plan,
            quality=quality,
            megapixels=pixel_count / 1e6,
            decode_on_device=on_device,
            prepare_seconds=prepared_at - started,
            prepared_at=prepared_at,
            # Animations and progressive JPEG output are done by the CPU manipulator, because
            # nvJPEG writes baseline JPEG only.
            needs_host=plan.animate or plan.progressive,
        )

    async def _run_batch(self, items: list[_Prepared]) -> list[ImageResult | Exception]:
        started = time.perf_counter()
        slots = [_Slot(item) for item in items]
        clock = _Clock()
        # `failure` is checked before each device phase, because it can be set by an earlier
        # batch while these jobs were queued, or by this batch's decode.
        if self.failure is None:
            await self._decode(slots)
        decoded_at = time.perf_counter()
        if self.failure is None:
            clock = await self._process_on_device(slots)
        self._hand_over_after_failure(slots)
        processed_at = time.perf_counter()
        await self._encode_on_host(slots)
        encoded_at = time.perf_counter()
        await self._run_fallbacks(slots)
        if self._cuda:
            self._metrics.gpu_memory.set(torch.cuda.memory_allocated(self._device))

        # Stage times are those of the whole batch, shared by its images.
        host_encode = encoded_at - processed_at
        timings = {
            "decode": decoded_at - started,
            "process": clock.process,
            "encode": clock.encode + host_encode,
        }
        return [_finish(slot, started, timings) for slot in slots]

    def _hand_over_after_failure(self, slots: list[_Slot]) -> None:
        """Send the slots still without an outcome to the CPU manipulator once the device failed."""
        if self.failure is None:
            return
        fallback = _Fallback(FallbackReason.CUDA_ERROR, f"the device failed: {self.failure}")
        for slot in slots:
            finished = (slot.encoded, slot.host_result, slot.fallback, slot.error)
            if all(outcome is None for outcome in finished):
                slot.pixels = None
                slot.fallback = fallback

    async def _decode(self, slots: list[_Slot]) -> None:
        loop = asyncio.get_running_loop()
        device_slots = [slot for slot in slots if slot.item.decode_on_device]
        host_slots = [slot for slot in slots if not slot.item.decode_on_device]
        device_call = loop.run_in_executor(
            self._device_thread,
            self._split_on_failure,
            self._decode_group,
            [slot.item.job.data for slot in device_slots],
        )
        host_calls = asyncio.gather(*(self._decode_on_host(slot) for slot in host_slots))
        outcomes, _ = await asyncio.gather(device_call, host_calls)
        if host_slots:
            formats = sorted({slot.item.source_format.value for slot in host_slots})
            self._count_fallback(
                FallbackReason.CPU_DECODE,
                len(host_slots),
                f"the device decoder does not take these {'/'.join(formats)} inputs",
            )

        rejected: list[_Slot] = []
        reason = ""
        for slot, outcome in zip(device_slots, outcomes, strict=True):
            if isinstance(outcome, torch.Tensor):
                slot.pixels = outcome
                slot.decoded_on_device = True
            elif isinstance(outcome, _Fallback):
                slot.fallback = outcome
            else:
                # The device decoder rejected the image; Pillow decodes it or reports it corrupt.
                rejected.append(slot)
                reason = reason or _first_line(outcome)
        if rejected:
            self._count_fallback(
                FallbackReason.CPU_DECODE, len(rejected), f"the device decoder failed: {reason}"
            )
            await asyncio.gather(*(self._decode_on_host(slot) for slot in rejected))

    async def _decode_on_host(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        try:
            slot.pixels = await loop.run_in_executor(self._cpu_pool, _decode_with_pillow, slot.item)
        except Exception as exc:  # noqa: BLE001 - the image fails alone; its caller re-raises it
            slot.error = exc

    async def _process_on_device(self, slots: list[_Slot]) -> _Clock:
        ready = [slot for slot in slots if slot.pixels is not None]
        works = [
            _Work(slot.pixels, slot.item.plan, slot.item.quality, reduce=slot.decoded_on_device)
            for slot in ready
            if slot.pixels is not None
        ]
        for slot in ready:
            slot.pixels = None
        clock = _Clock()
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(
            self._device_thread,
            self._split_on_failure,
            partial(self._process_group, clock=clock),
            works,
        )
        for slot, outcome in zip(ready, outcomes, strict=True):
            if isinstance(outcome, _Encoded):
                slot.encoded = outcome
            elif isinstance(outcome, torch.Tensor):
                slot.host_result = outcome
            elif isinstance(outcome, _Fallback):
                slot.fallback = outcome
            else:
                slot.error = outcome
        return clock

    async def _encode_on_host(self, slots: list[_Slot]) -> None:
        loop = asyncio.get_running_loop()

        async def encode(slot: _Slot, pixels: torch.Tensor) -> None:
            plan = slot.item.plan
            try:
                data = await loop.run_in_executor(
                    self._cpu_pool, codecs.encode, pixels, plan.output_format, slot.item.quality
                )
            except Exception as exc:  # noqa: BLE001 - the image fails alone; its caller re-raises it
                slot.error = exc
                return
            size = Size(width=int(pixels.shape[-1]), height=int(pixels.shape[-2]))
            slot.encoded = _Encoded(data, size)

        await asyncio.gather(
            *(encode(slot, slot.host_result) for slot in slots if slot.host_result is not None)
        )

    async def _run_fallbacks(self, slots: list[_Slot]) -> None:
        fallbacks = [slot for slot in slots if slot.fallback is not None]
        by_reason: dict[FallbackReason, list[_Fallback]] = {}
        for slot in fallbacks:
            if slot.fallback is not None:
                by_reason.setdefault(slot.fallback.reason, []).append(slot.fallback)
        for reason, members in by_reason.items():
            self._count_fallback(reason, len(members), members[0].detail)

        async def run_on_cpu(slot: _Slot) -> None:
            try:
                slot.cpu_result = await self._cpu.process(slot.item.job)
            except Exception as exc:  # noqa: BLE001 - the image fails alone; its caller re-raises it
                slot.error = exc

        await asyncio.gather(*(run_on_cpu(slot) for slot in fallbacks))

    def _count_fallback(self, reason: FallbackReason, images: int, detail: str) -> None:
        self.fallback_counts[reason] += images
        self._metrics.gpu_fallbacks.labels(reason.value).inc(images)
        self._fallback_log.record(reason, images, detail)

    def _split_on_failure(
        self, run_group: Callable[[list[T]], list[U]], entries: list[T]
    ) -> list[U | _Fallback]:
        """Run `run_group` on `entries`, halving the group on CUDA out-of-memory.

        Runs on the device thread. A single entry still out of memory, and every entry left
        after any other CUDA error, becomes a `_Fallback` for the CPU manipulator.
        """
        outcomes: list[U | _Fallback | None] = [None] * len(entries)
        groups = [(0, len(entries))] if entries else []
        # Halving n entries down to single ones makes at most 2n - 1 groups.
        for _ in range(2 * len(entries)):
            if not groups:
                break
            start, stop = groups.pop()
            failure: _Fallback
            try:
                group_outcomes = run_group(entries[start:stop])
            except torch.cuda.OutOfMemoryError as exc:
                failure = _Fallback(FallbackReason.OUT_OF_MEMORY, _first_line(exc))
            except torch.AcceleratorError as exc:
                failure = _Fallback(FallbackReason.CUDA_ERROR, _first_line(exc))
            else:
                outcomes[start:stop] = group_outcomes
                continue

            if failure.reason is FallbackReason.CUDA_ERROR:
                # Nothing more of this batch runs on the device. Freeing cached memory is left
                # out too, because it raises again when the CUDA context is broken.
                self._check_device_after(failure.detail)
                for left, right in [(start, stop), *groups]:
                    outcomes[left:right] = [failure] * (right - left)
                break
            # The exception and its frames are gone here, so their tensors can be freed.
            self._release_cached_memory()
            if stop - start == 1:
                outcomes[start] = failure
            else:
                middle = (start + stop) // 2
                groups += [(middle, stop), (start, middle)]
        finished: list[U | _Fallback] = []
        for outcome in outcomes:
            if outcome is None:
                raise RuntimeError("a group of the batch was never run")
            finished.append(outcome)
        return finished

    def _decode_group(self, sources: list[bytes]) -> list[torch.Tensor | Exception]:
        # bytearray() copies, because torch.frombuffer warns about read-only buffers.
        tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in sources]
        try:
            return list(self.decode_jpegs(tensors))
        except DEVICE_FAILURES:
            raise
        except (RuntimeError, ValueError) as exc:
            if len(tensors) == 1:
                return [exc]

        # The batched call fails as a whole, so decode each image alone to find the culprits.
        outcomes: list[torch.Tensor | Exception] = []
        for tensor in tensors:
            try:
                outcomes.append(self.decode_jpegs([tensor])[0])
            except DEVICE_FAILURES:
                raise
            except (RuntimeError, ValueError) as exc:
                outcomes.append(exc)
        return outcomes

    def _process_group(
        self, works: list[_Work], clock: _Clock
    ) -> list[_Encoded | torch.Tensor | Exception]:
        started = time.perf_counter()
        # nvJPEG encodes on a stream of its own, so the copies that make the images contiguous
        # are issued here, before the synchronize.
        images = [
            image.contiguous() if isinstance(image, torch.Tensor) else image
            for image in self._transform_all(works)
        ]
        if self._cuda:
            # Kernels run asynchronously; wait so that their time counts as process, not encode.
            torch.cuda.synchronize(self._device)
        transformed_at = time.perf_counter()

        outcomes: list[_Encoded | torch.Tensor | Exception] = list(images)
        jpeg_indices = [
            index
            for index, (work, image) in enumerate(zip(works, images, strict=True))
            if isinstance(image, torch.Tensor) and work.plan.output_format is OutputFormat.JPEG
        ]
        for quality in sorted({works[index].quality for index in jpeg_indices}):
            members = [index for index in jpeg_indices if works[index].quality == quality]
            tensors = [images[index] for index in members]
            encoded = self._encode_jpeg_group(
                [t for t in tensors if isinstance(t, torch.Tensor)], quality
            )
            for index, encoded_image in zip(members, encoded, strict=True):
                outcomes[index] = encoded_image
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, torch.Tensor) and outcome.device.type != "cpu":
                outcomes[index] = outcome.cpu()
        clock.process += transformed_at - started
        clock.encode += time.perf_counter() - transformed_at
        return outcomes

    def _transform_all(self, works: list[_Work]) -> list[torch.Tensor | Exception]:
        """Run each work's plan. With the kernels on, the group's resizes run as one batch."""
        outcomes: list[torch.Tensor | Exception | None] = [None] * len(works)
        batched: list[tuple[int, torch.Tensor, KernelWork]] = []
        for index, work in enumerate(works):
            try:
                image = self._upload(work)
                if self._kernels is KernelBackend.TRITON:
                    split = split_plan(work.plan, image)
                    if split is not None:
                        batched.append((index, image, split))
                        continue
                outcomes[index] = self.transform(image, work.plan)
            except DEVICE_FAILURES:
                raise
            except Exception as exc:  # noqa: BLE001 - the image fails alone; its caller re-raises it
                outcomes[index] = exc
        if batched:
            self._transform_batched(works, batched, outcomes)

        finished: list[torch.Tensor | Exception] = []
        for outcome in outcomes:
            if outcome is None:
                raise RuntimeError("an image of the group was never transformed")
            finished.append(outcome)
        return finished

    def _transform_batched(
        self,
        works: list[_Work],
        batched: list[tuple[int, torch.Tensor, KernelWork]],
        outcomes: list[torch.Tensor | Exception | None],
    ) -> None:
        """Resize images in one kernel batch, then run each image's remaining steps."""
        resized: list[torch.Tensor] | None
        try:
            resized = resize_batch(
                [image for _, image, _ in batched],
                [split.spec for _, _, split in batched],
                KernelBackend.TRITON,
            )
        except DEVICE_FAILURES:
            raise
        except Exception:
            # A kernel failure must not fail the batch, because the torch ops can do the same work.
            logger.exception(
                "the Triton resize kernels failed on %s, so the torch ops resize from now on",
                self.device,
            )
            self._kernels = KernelBackend.TORCH
            resized = None

        for position, (index, image, split) in enumerate(batched):
            try:
                if resized is None:
                    outcomes[index] = self.transform(image, works[index].plan)
                else:
                    outcomes[index] = self.transform(resized[position], split.rest)
            except DEVICE_FAILURES:
                raise
            except Exception as exc:  # noqa: BLE001 - the image fails alone; its caller re-raises it
                outcomes[index] = exc

    def _upload(self, work: _Work) -> torch.Tensor:
        image = work.pixels
        if image.device != self._device:
            if self._cuda:
                image = image.pin_memory().to(self._device, non_blocking=True)
            else:
                image = image.to(self._device)
        if work.reduce:
            image = reduce_for_resize(image, pipeline.decode_size(work.plan))
        return image

    def _encode_jpeg_group(
        self, images: list[torch.Tensor], quality: int
    ) -> list[_Encoded | torch.Tensor]:
        """Encode on the device; an image the encoder rejects goes back for Pillow to encode."""
        images = [image.contiguous() for image in images]
        try:
            encoded = self.encode_jpegs(images, quality)
        except DEVICE_FAILURES:
            raise
        except (RuntimeError, ValueError):
            encoded_or_none: list[torch.Tensor | None] = []
            for image in images:
                try:
                    encoded_or_none.append(self.encode_jpegs([image], quality)[0])
                except DEVICE_FAILURES:
                    raise
                except (RuntimeError, ValueError):
                    encoded_or_none.append(None)
        else:
            encoded_or_none = list(encoded)

        outcomes: list[_Encoded | torch.Tensor] = []
        for image, data in zip(images, encoded_or_none, strict=True):
            if data is None:
                outcomes.append(image)
                continue
            size = Size(width=int(image.shape[-1]), height=int(image.shape[-2]))
            outcomes.append(_Encoded(data.cpu().numpy().tobytes(), size))
        return outcomes

    def _release_cached_memory(self) -> None:
        if self._cuda:
            torch.cuda.empty_cache()


async def _gather_outcomes(
    calls: Iterable[Awaitable[ImageResult]],
) -> list[ImageResult | Exception]:
    """Await `calls` together and return each one's result or the error it failed with."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finished: list[ImageResult | Exception] = []
    for outcome in outcomes:
        if not isinstance(outcome, ImageResult | Exception):
            raise outcome
        finished.append(outcome)
    return finished


def _decode_with_pillow(item: _Prepared) -> torch.Tensor:
    decoded = codecs.decode(
        item.job.data,
        max_pixels=item.job.max_pixels,
        draft_size=pipeline.decode_size(item.plan),
    )
    return decoded.pixels


def _finish(slot: _Slot, started: float, timings: dict[str, float]) -> ImageResult | Exception:
    queue = started - slot.item.prepared_at
    if slot.error is not None:
        return slot.error
    if slot.cpu_result is not None:
        cpu_timings = dict(slot.cpu_result.timings)
        cpu_timings["queue"] = queue + cpu_timings.get("queue", 0.0)
        return dataclasses.replace(slot.cpu_result, timings=cpu_timings)
    if slot.encoded is None:
        return RuntimeError("the batch finished without a result for this image")
    return ImageResult(
        data=slot.encoded.data,
        output_format=slot.item.plan.output_format,
        size=slot.encoded.size,
        timings={
            "queue": queue,
            "decode": slot.item.prepare_seconds + timings["decode"],
            "process": timings["process"],
            "encode": timings["encode"],
        },
    )


def _warm_up_job(pillow_format: str, options: ProcessingOptions) -> ImageJob:
    buffer = io.BytesIO()
    mode = "RGBA" if pillow_format == "PNG" else "RGB"
    Image.new(mode, (64, 48), (200, 120, 40, 255)[: len(mode)]).save(buffer, pillow_format)
    return ImageJob(
        data=buffer.getvalue(),
        options=options,
        negotiated_format=None,
        allow_enlarge=True,
        max_pixels=64 * 48,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
