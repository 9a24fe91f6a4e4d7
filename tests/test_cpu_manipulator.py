"""The CPU manipulator's share of torch's intra-op threads."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from darkroom_gpu.manipulators import cpu


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("cores", "workers", "expected"),
    [(8, 8, 1), (8, 2, 4), (8, 3, 2), (2, 16, 1), (1, 1, 1)],
)
def test_share_cores_divides_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int, expected: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)

    cpu.share_cores(workers)

    assert torch.get_num_threads() == expected


async def test_manipulator_sets_thread_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)

    manipulator = cpu.CpuManipulator(workers=4)
    await manipulator.close()

    assert torch.get_num_threads() == 1
