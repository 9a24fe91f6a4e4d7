"""The interface shared by the CPU and GPU manipulators."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from darkroom_gpu import codecs, pipeline
from darkroom_gpu.codecs import ImageInfo
from darkroom_gpu.errors import ProcessingTimeoutError, UnprocessableImageError
from darkroom_gpu.geometry import Size
from darkroom_gpu.options import OutputFormat, ProcessingOptions
from darkroom_gpu.pipeline import TransformPlan

__all__ = (
    "ImageJob",
    "ImageResult",
    "Manipulator",
    "check_animation_output",
    "check_deadline",
    "check_source_pixels",
    "plan_job",
)


@dataclass(frozen=True, slots=True)
class ImageJob:
    """One image to transform.

    Attributes:
        data: the encoded source bytes.
        options: the validated request options with source defaults applied.
        negotiated_format: the format chosen from ``Accept`` for ``auto=format``, if any.
        allow_enlarge: whether the result may be larger than the source.
        max_pixels: limit on the source's stored width x height.
        max_output_side: limit on each side of the result, in pixels.
        max_output_pixels: limit on the result's width x height.
        deadline: `time.monotonic` value after which the work is abandoned, because the
            request has already received its 504 response. ``None`` means no deadline.
    """

    data: bytes
    options: ProcessingOptions
    negotiated_format: OutputFormat | None
    allow_enlarge: bool
    max_pixels: int
    max_output_side: int = 8192
    max_output_pixels: int = 40_000_000
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class ImageResult:
    """An encoded result with what it took to make it.

    Attributes:
        data: the encoded bytes.
        output_format: their format.
        size: their width and height in pixels.
        timings: seconds spent per stage (``decode``, ``process``, ``encode``, ``queue``).
        device: the device that processed the image, such as ``cpu`` when a GPU manipulator
            handed it to the CPU. ``None`` means the manipulator's own `Manipulator.device`.
    """

    data: bytes
    output_format: OutputFormat
    size: Size
    timings: dict[str, float] = field(default_factory=dict)
    device: str | None = None


class Manipulator(ABC):
    """Decodes, transforms and encodes images on one device.

    Implementations never block the event loop: `process` hands the work to worker threads
    (or a GPU batch) and awaits it.
    """

    device: str
    failure: str | None = None
    """The reason the manipulator can no longer use its device, or None while it can.

    Once set, it stays set until the process ends, and ``/healthz`` fails with it.
    """

    @abstractmethod
    async def process(self, job: ImageJob) -> ImageResult:
        """Transform one image.

        Raises:
            UnsupportedMediaTypeError: the bytes are no image format the server reads.
            UnprocessableImageError: the image is corrupt or over a limit.
        """

    async def warm_up(self) -> None:
        """Run one small image through every stage so the first request pays no set-up cost."""
        return None

    async def close(self) -> None:
        """Stop worker threads and release device memory."""
        return None


def check_source_pixels(job: ImageJob, info: ImageInfo) -> None:
    """Reject a source whose header declares more pixels than ``job.max_pixels``.

    Every frame of an animation counts, even when only the first is decoded, so the limit
    means the same for every output format. Manipulators call this right after probing the
    header, so a small file that declares a huge size is rejected before any pixel is decoded.

    Raises:
        UnprocessableImageError: width x height x frames is over ``job.max_pixels``.
    """
    width, height = info.size.width, info.size.height
    pixel_count = width * height * info.frames
    if pixel_count <= job.max_pixels:
        return
    frames = f" x {info.frames} frames" if info.frames > 1 else ""
    raise UnprocessableImageError(
        f"image is {width}x{height}{frames} = {pixel_count} pixels, "
        f"over this source's limit of {job.max_pixels}"
    )


def check_animation_output(job: ImageJob, result: Size, frames: int) -> None:
    """Reject an animated result whose frames together have more pixels than allowed.

    Planning bounds each frame by ``job.max_output_pixels``. An animation that keeps every
    frame costs that much per frame, so all its frames share the one bound.

    Raises:
        UnprocessableImageError: width x height x frames is over ``job.max_output_pixels``.
    """
    pixel_count = result.width * result.height * frames
    if pixel_count <= job.max_output_pixels:
        return
    raise UnprocessableImageError(
        f"the animated result would be {result.width}x{result.height} x {frames} frames = "
        f"{pixel_count} pixels, over this source's limit of {job.max_output_pixels}; "
        "request a smaller w or h, or a format that does not animate"
    )


def check_deadline(job: ImageJob) -> None:
    """Stop work whose request has already received its 504 response.

    Manipulators call this between stages, which frees the worker for requests that can still
    be served; a running stage is not cut short.

    Raises:
        ProcessingTimeoutError: the job's deadline has passed.
    """
    if job.deadline is not None and time.monotonic() > job.deadline:
        raise ProcessingTimeoutError("processing did not finish within the request deadline")


def plan_job(job: ImageJob) -> tuple[ImageInfo, TransformPlan]:
    """Probe the header, check the source limits and plan the transform, decoding no pixel.

    Raises:
        ProcessingTimeoutError: the job's deadline has passed.
        UnsupportedMediaTypeError: the bytes are no image format the server reads.
        UnprocessableImageError: the header is corrupt, or the source or result is over a limit.
    """
    check_deadline(job)
    info = codecs.probe(job.data)
    # Checked before planning, so an oversized source gets the source-limit message.
    check_source_pixels(job, info)
    output_format = pipeline.choose_output_format(job.options, info, job.negotiated_format)
    plan = pipeline.plan_transform(
        job.options,
        info,
        output_format,
        allow_enlarge=job.allow_enlarge,
        max_output_side=job.max_output_side,
        max_output_pixels=job.max_output_pixels,
    )
    return info, plan
