"""Choose the manipulator for the configured device."""

from __future__ import annotations

import logging

from darkroom_gpu.config import BatchSettings
from darkroom_gpu.manipulators.base import Manipulator
from darkroom_gpu.manipulators.cpu import CpuManipulator
from darkroom_gpu.metrics import Metrics

__all__ = ("UnsupportedDeviceError", "create_manipulator")

logger = logging.getLogger(__name__)


class UnsupportedDeviceError(Exception):
    """The configured device cannot be used by this build."""


def create_manipulator(
    device: str, *, workers: int, batching: BatchSettings, metrics: Metrics
) -> Manipulator:
    """Create the manipulator for `device` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    Args:
        device: the configured device.
        workers: CPU worker threads.
        batching: micro-batcher bounds, used by GPU manipulators.
        metrics: where batch, queue and fallback metrics are recorded.

    Raises:
        UnsupportedDeviceError: a CUDA device was requested.
    """
    if device.startswith("cuda"):
        # TODO: serve CUDA devices once the batched GPU manipulator exists; until then a
        # request for one fails at start rather than silently running on the CPU.
        raise UnsupportedDeviceError(
            f"device {device!r} is not supported by this version; use cpu or auto"
        )
    if device == "auto":
        logger.info("device auto: using the CPU manipulator")
    return CpuManipulator(workers=workers)
