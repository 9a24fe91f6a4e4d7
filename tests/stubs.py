"""A manipulator stand-in whose work waits on a gate, for tests of deadlines and overload."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from darkroom_gpu.geometry import Size
from darkroom_gpu.manipulators import ImageJob, ImageResult, Manipulator
from darkroom_gpu.options import OutputFormat


def tiny_jpeg() -> bytes:
    """Return an 8x8 JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buffer, "JPEG")
    return buffer.getvalue()


class GatedManipulator(Manipulator):
    """Returns a tiny JPEG for every job once `gate` is open; counts jobs started and finished.

    Args:
        open_gate: whether the gate starts open, so jobs finish at once.
    """

    device = "cpu"

    def __init__(self, *, open_gate: bool = False) -> None:
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.started = 0
        self.finished = 0
        self.jobs: list[ImageJob] = []
        self._result = tiny_jpeg()

    async def process(self, job: ImageJob) -> ImageResult:
        self.started += 1
        self.jobs.append(job)
        await self.gate.wait()
        self.finished += 1
        return ImageResult(data=self._result, output_format=OutputFormat.JPEG, size=Size(8, 8))
