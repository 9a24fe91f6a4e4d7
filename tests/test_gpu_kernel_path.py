"""The GPU manipulator's switch between the Triton resize kernels and the torch ops.

`GpuManipulator(torch.device("cpu"))` with ``batching.kernels: triton`` runs the kernels in
Triton's CPU interpreter (turned on by tests/__init__.py), so the whole kernel path of a batch
runs here without a GPU and is compared with the torch path on the same jobs. The ``cuda``
case compares the two paths on a GPU, with the kernels compiled.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pytest
import torch
from PIL import Image

from darkroom_gpu.codecs import ImageFormat, ImageInfo
from darkroom_gpu.config import BatchSettings
from darkroom_gpu.geometry import Size
from darkroom_gpu.kernels import (
    MAX_LEVEL_DIFFERENCE,
    KernelBackend,
    KernelUnavailableError,
    ResizeSpec,
    dispatch,
)
from darkroom_gpu.manipulators.base import ImageJob, ImageResult
from darkroom_gpu.manipulators.gpu import GpuManipulator
from darkroom_gpu.manipulators.kernel_path import split_plan
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.options import OutputFormat, parse_options
from darkroom_gpu.pipeline import plan_transform
from tests.conftest import DATA, SAMPLES, open_image

# torchvision 0.29 deprecates its image codecs in favour of torchcodec, but the manipulator
# still uses them, so the warning is expected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)
with_triton = pytest.mark.skipif(not dispatch.triton_importable(), reason="triton is not installed")
interpreted = pytest.mark.skipif(
    not dispatch.triton_importable() or not dispatch.interpreter_enabled(),
    reason="needs triton with TRITON_INTERPRET=1 to run the kernels on the CPU",
)

# Large enough that a batch in these tests is never split by the bounds.
TRITON: Final = BatchSettings(max_images=64, max_megapixels=1000.0, kernels="triton")
TORCH: Final = BatchSettings(max_images=64, max_megapixels=1000.0, kernels="torch")

# Bounds on the kernel path's difference from the torch path, in 8-bit levels per channel.
# The kernels keep float32 between their horizontal and vertical pass, as torch does for CUDA
# tensors. On the CPU, torch resizes uint8 RGB with its uint8 kernel instead, which rounds to
# 8 bits between the passes. So here resized RGB results often differ by one level, and the mean
# difference measured at most 0.16 (on the "enlarge" job). RGBA, which torch resizes in float,
# and linear light measured no difference at all.
MAX_DIFFERENCE: Final = MAX_LEVEL_DIFFERENCE
MAX_MEAN_DIFFERENCE: Final = 0.25


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def make_sources() -> dict[str, bytes]:
    with Image.open(SAMPLES / "DSCN0010.jpg") as original:
        photo = original.convert("RGB").resize((160, 120))
    rgba = photo.convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (120, 1))
    alpha[40:80, 50:110] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return {
        "jpeg": encoded(photo, "JPEG"),
        "png": encoded(photo, "PNG"),
        "rgba": encoded(rgba, "PNG"),
        "rotated": (DATA / "exif-orientation" / "Landscape_6.jpg").read_bytes(),
    }


SOURCES: Final = make_sources()


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    query: str


CASES: Final = [
    Case("resize", "jpeg", "w=64&format=png"),
    Case("enlarge", "jpeg", "w=300&format=png"),
    Case("grayscale", "jpeg", "w=50&mono=000000&format=png"),
    Case("tint in linear light", "jpeg", "w=70&mono=ff8000&linear=1&format=png"),
    Case("mono without resize", "png", "mono=000000&format=png"),
    Case("crop and flip", "jpeg", "w=120&h=80&fit=crop&flip=h&format=png"),
    Case("rgba", "rgba", "w=40&format=png"),
    Case("flatten on white", "rgba", "w=40&bg=ffffff&format=png"),
    Case("flatten half transparent", "rgba", "w=52&bg=2040c880&mono=000000&format=png"),
    Case("pad keeps mono in torch", "rgba", "w=40&h=40&fit=pad&mono=ff0000&format=png"),
    Case("blur keeps flatten in torch", "rgba", "w=60&blur=1.5&bg=ffffff&format=png"),
    Case("quarter turn", "rgba", "w=48&rot=90&bg=ffffff&format=png"),
    Case("other angle", "rgba", "w=48&rot=30&bg=ffffff&format=png"),
    Case("exif orientation", "rotated", "w=90&format=png"),
    Case("jpeg output", "rgba", "w=64&format=jpg"),
]


def make_job(case: Case) -> ImageJob:
    pairs = [pair.partition("=") for pair in case.query.split("&")]
    return ImageJob(
        data=SOURCES[case.source],
        options=parse_options([(name, value) for name, _, value in pairs]),
        negotiated_format=None,
        allow_enlarge=True,
        max_pixels=50_000_000,
    )


def pixels(result: ImageResult | Exception) -> np.ndarray:
    assert isinstance(result, ImageResult), result
    return np.asarray(open_image(result.data).convert("RGBA"), dtype=np.int16)


async def run_jobs(
    batching: BatchSettings, jobs: Sequence[ImageJob], device: str = "cpu"
) -> list[ImageResult]:
    manipulator = GpuManipulator(
        torch.device(device), workers=2, batching=batching, metrics=Metrics()
    )
    try:
        outcomes = await manipulator.process_many(jobs)
    finally:
        await manipulator.close()
    # A kernel failure switches the manipulator to the torch ops, whose results would then
    # match the torch path trivially.
    assert manipulator.kernels.value == batching.kernels
    results = []
    for outcome in outcomes:
        assert isinstance(outcome, ImageResult), outcome
        results.append(outcome)
    return results


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the batch size of every kernel launch pair."""
    from darkroom_gpu.kernels import resize

    calls: list[int] = []
    original = resize.resize_images

    def recording(
        images: Sequence[torch.Tensor], specs: Sequence[ResizeSpec]
    ) -> list[torch.Tensor]:
        calls.append(len(images))
        return original(images, specs)

    monkeypatch.setattr(resize, "resize_images", recording)
    return calls


def assert_paths_match(with_kernels: list[ImageResult], with_torch: list[ImageResult]) -> None:
    for case, kernel_result, torch_result in zip(CASES, with_kernels, with_torch, strict=True):
        assert kernel_result.size == torch_result.size, case.name
        assert kernel_result.output_format is torch_result.output_format, case.name
        if kernel_result.output_format is OutputFormat.JPEG:
            # JPEG compression can turn a one-level difference into more.
            continue
        difference = np.abs(pixels(kernel_result) - pixels(torch_result))
        assert difference.max() <= MAX_DIFFERENCE, case.name
        assert difference.mean() <= MAX_MEAN_DIFFERENCE, case.name


@interpreted
async def test_kernel_path_matches_torch_path(kernel_calls: list[int]) -> None:
    jobs = [make_job(case) for case in CASES]

    with_kernels = await run_jobs(TRITON, jobs)
    with_torch = await run_jobs(TORCH, jobs)

    # Every case is resized or coloured by the kernels, all in one launch.
    assert kernel_calls == [len(CASES)]
    assert_paths_match(with_kernels, with_torch)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@with_triton
async def test_kernel_path_matches_torch_path_on_cuda(kernel_calls: list[int]) -> None:
    jobs = [make_job(case) for case in CASES]

    with_kernels = await run_jobs(TRITON, jobs, "cuda:0")
    with_torch = await run_jobs(TORCH, jobs, "cuda:0")

    assert kernel_calls == [len(CASES)]
    assert_paths_match(with_kernels, with_torch)


@interpreted
async def test_kernel_failure_falls_back_to_torch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from darkroom_gpu.kernels import resize

    def failing(images: Sequence[torch.Tensor], specs: Sequence[ResizeSpec]) -> list[torch.Tensor]:
        raise RuntimeError("a kernel bug")

    monkeypatch.setattr(resize, "resize_images", failing)
    jobs = [make_job(case) for case in CASES[:4]]
    manipulator = GpuManipulator(torch.device("cpu"), workers=2, batching=TRITON, metrics=Metrics())

    with caplog.at_level(logging.ERROR, logger="darkroom_gpu.manipulators.gpu"):
        outcomes = await manipulator.process_many(jobs)
    await manipulator.close()

    assert manipulator.kernels is KernelBackend.TORCH
    assert "the torch ops resize from now on" in caplog.text
    expected = await run_jobs(TORCH, jobs)
    for outcome, reference in zip(outcomes, expected, strict=True):
        assert np.array_equal(pixels(outcome), pixels(reference))


@interpreted
async def test_warm_up_keeps_working_kernels() -> None:
    manipulator = GpuManipulator(torch.device("cpu"), workers=2, batching=TRITON, metrics=Metrics())

    await manipulator.warm_up()
    await manipulator.close()

    assert manipulator.kernels is KernelBackend.TRITON


@interpreted
async def test_warm_up_turns_off_wrong_kernels(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from darkroom_gpu.kernels import resize

    def blank(images: Sequence[torch.Tensor], specs: Sequence[ResizeSpec]) -> list[torch.Tensor]:
        return [
            torch.zeros(
                spec.result_channels(int(image.shape[0])),
                spec.height,
                spec.width,
                dtype=torch.uint8,
            )
            for image, spec in zip(images, specs, strict=True)
        ]

    monkeypatch.setattr(resize, "resize_images", blank)
    manipulator = GpuManipulator(torch.device("cpu"), workers=2, batching=TRITON, metrics=Metrics())

    with caplog.at_level(logging.ERROR, logger="darkroom_gpu.manipulators.gpu"):
        await manipulator.warm_up()
    await manipulator.close()

    assert manipulator.kernels is KernelBackend.TORCH
    assert "failed their check" in caplog.text


@with_triton
async def test_torch_choice_never_runs_kernels(kernel_calls: list[int]) -> None:
    await run_jobs(TORCH, [make_job(case) for case in CASES[:3]])

    assert kernel_calls == []


def test_auto_choice_uses_torch_on_cpu() -> None:
    manipulator = GpuManipulator(
        torch.device("cpu"), workers=1, batching=BatchSettings(), metrics=Metrics()
    )

    assert manipulator.kernels is KernelBackend.TORCH


@with_triton
def test_triton_choice_needs_interpreter_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "interpreter_enabled", lambda: False)

    with pytest.raises(KernelUnavailableError, match="TRITON_INTERPRET=1"):
        GpuManipulator(torch.device("cpu"), workers=1, batching=TRITON, metrics=Metrics())


# --- which steps the kernels take over --------------------------------------------------------

UPRIGHT: Final = ImageInfo(
    format=ImageFormat.PNG,
    size=Size(width=160, height=120),
    orientation=1,
    has_alpha=True,
    frames=1,
)


@dataclass(frozen=True)
class SplitCase:
    query: str
    output: OutputFormat
    spec: ResizeSpec | None
    rest_mono: bool
    rest_flatten: bool


SPLIT_CASES: Final = [
    pytest.param(
        SplitCase("w=80", OutputFormat.PNG, ResizeSpec(60, 80), False, False), id="resize"
    ),
    pytest.param(
        SplitCase(
            "w=80&mono=000000", OutputFormat.PNG, ResizeSpec(60, 80, grayscale=True), False, False
        ),
        id="grayscale fused",
    ),
    pytest.param(
        SplitCase(
            "w=80&linear=1",
            OutputFormat.JPEG,
            ResizeSpec(60, 80, linear=True, background=(255, 255, 255, 255)),
            False,
            False,
        ),
        id="jpeg flattens on white",
    ),
    pytest.param(
        SplitCase(
            "w=80&h=80&fit=pad&mono=ff0000", OutputFormat.PNG, ResizeSpec(60, 80), True, False
        ),
        id="pad keeps mono",
    ),
    pytest.param(
        SplitCase(
            "w=80&blur=2&bg=ff000080&mono=00ff00",
            OutputFormat.PNG,
            ResizeSpec(60, 80, tint=(0, 255, 0)),
            False,
            True,
        ),
        id="blur keeps flatten",
    ),
    pytest.param(
        SplitCase("w=80&rot=45&bg=ffffff", OutputFormat.PNG, ResizeSpec(60, 80), False, True),
        id="rotation keeps flatten",
    ),
    pytest.param(
        SplitCase(
            "w=80&rot=270&bg=ffffff",
            OutputFormat.PNG,
            ResizeSpec(60, 80, background=(255, 255, 255, 255)),
            False,
            False,
        ),
        id="quarter turn fuses flatten",
    ),
    pytest.param(
        SplitCase(
            "mono=000000", OutputFormat.PNG, ResizeSpec(120, 160, grayscale=True), False, False
        ),
        id="mono without resize",
    ),
    pytest.param(SplitCase("flip=v", OutputFormat.PNG, None, False, False), id="nothing to do"),
]


@pytest.mark.parametrize("case", SPLIT_CASES)
def test_split_plan(case: SplitCase) -> None:
    pairs = [pair.partition("=") for pair in case.query.split("&")]
    options = parse_options([(name, value) for name, _, value in pairs])
    plan = plan_transform(options, UPRIGHT, case.output, allow_enlarge=True)
    image = torch.zeros(4, 120, 160, dtype=torch.uint8)

    split = split_plan(plan, image)

    if case.spec is None:
        assert split is None
        return
    assert split is not None
    assert split.spec == case.spec
    assert (split.rest.mono is not None) is case.rest_mono
    assert (split.rest.flatten is not None) is case.rest_flatten
    assert split.rest.resize == plan.resize
    assert split.rest.rotation == plan.rotation


def test_split_plan_leaves_crop_first_to_torch() -> None:
    strip = ImageInfo(
        format=ImageFormat.PNG,
        size=Size(width=20, height=2000),
        orientation=1,
        has_alpha=False,
        frames=1,
    )
    options = parse_options([("w", "300"), ("h", "300"), ("fit", "crop")])
    plan = plan_transform(options, strip, OutputFormat.PNG, allow_enlarge=True)

    assert plan.crop_first
    assert split_plan(plan, torch.zeros(3, 2000, 20, dtype=torch.uint8)) is None


def test_split_plan_resizes_in_stored_orientation() -> None:
    # Stored 120 wide and 160 high; orientation 6 turns it into 160 x 120 upright.
    stored = ImageInfo(
        format=ImageFormat.JPEG,
        size=Size(width=120, height=160),
        orientation=6,
        has_alpha=False,
        frames=1,
    )
    options = parse_options([("w", "80"), ("mono", "000000")])
    plan = plan_transform(options, stored, OutputFormat.PNG, allow_enlarge=True)

    split = split_plan(plan, torch.zeros(3, 160, 120, dtype=torch.uint8))

    assert split is not None
    assert (split.spec.height, split.spec.width) == (80, 60)
    assert split.rest.orientation == 6
    assert split.rest.mono is None
