"""Choose the manipulator for the configured device."""

from __future__ import annotations

import logging

import torch

from darkroom_gpu.config import BatchSettings
from darkroom_gpu.manipulators.base import Manipulator
from darkroom_gpu.manipulators.cpu import CpuManipulator
from darkroom_gpu.metrics import Metrics

__all__ = ("UnsupportedDeviceError", "create_manipulator")

logger = logging.getLogger(__name__)


class UnsupportedDeviceError(Exception):
    """The configured device cannot be used on this host."""


def create_manipulator(
    device: str, *, workers: int, batching: BatchSettings, metrics: Metrics
) -> Manipulator:
    """Create the manipulator for `device` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    ``auto`` picks CUDA device 0 when `torch.cuda.is_available()`, else the CPU. ``cuda``
    means ``cuda:0``.

    Args:
        device: the configured device.
        workers: CPU worker threads.
        batching: micro-batcher bounds, used by GPU manipulators.
        metrics: where batch, queue and fallback metrics are recorded.

    Raises:
        UnsupportedDeviceError: a CUDA device was requested but torch sees no GPU, or the
            index is not below the number of GPUs; or `device` is none of the forms above.
            Also when ``batching.kernels`` is ``triton`` and Triton is not installed, or the
            CPU manipulator is chosen, which never runs the kernels.
    """
    if device == "cpu":
        _check_kernels_on_cpu(batching, "device is cpu")
        return CpuManipulator(workers=workers)
    if device == "auto":
        if not torch.cuda.is_available():
            _check_kernels_on_cpu(batching, "device is auto and torch finds no CUDA GPU")
            logger.info("device auto: torch finds no CUDA GPU, using the CPU manipulator")
            return CpuManipulator(workers=workers)
        device = "cuda:0"
        logger.info("device auto: using %s (%s)", device, torch.cuda.get_device_name(0))

    index = _cuda_index(device)
    if not torch.cuda.is_available():
        raise UnsupportedDeviceError(
            f"device {device!r} is not supported on this host: torch {torch.__version__} finds no "
            "CUDA GPU; use cpu or auto"
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise UnsupportedDeviceError(
            f"device {device!r} is not supported on this host: torch finds {count} CUDA "
            f"device(s), cuda:0 to cuda:{count - 1}"
        )
    # Imported here because loading torchvision took about 2.5 s on a 2-core host, a start-up
    # cost that CPU-only hosts need not pay.
    from darkroom_gpu.kernels import KernelUnavailableError
    from darkroom_gpu.manipulators.gpu import GpuManipulator

    try:
        return GpuManipulator(
            torch.device("cuda", index), workers=workers, batching=batching, metrics=metrics
        )
    except KernelUnavailableError as exc:
        raise UnsupportedDeviceError(str(exc)) from exc


def _check_kernels_on_cpu(batching: BatchSettings, reason: str) -> None:
    # TRITON_INTERPRET=1 does not help here: it runs the kernels on the CPU only inside a GPU
    # manipulator built for a CPU device (as tests and benchmarks do), never in the CPU one.
    if batching.kernels == "triton":
        raise UnsupportedDeviceError(
            f"batching.kernels is triton, but {reason}, so images are processed by the CPU "
            "manipulator, which does not batch and never runs the Triton kernels; set "
            "batching.kernels to auto or torch, or use a CUDA device"
        )


def _cuda_index(device: str) -> int:
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise UnsupportedDeviceError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    return int(index) if index else 0
