"""The GPU manipulator on CPU tensors: batching, decoder routing, isolation and fallback.

`GpuManipulator(torch.device("cpu"))` runs every phase of the batched path (torchvision's
batched decode and encode, the box reduction, the per-image steps) on the CPU, so these tests
cover its logic without a GPU. Failures of the device are injected by overriding its hooks.
Comparisons with the CPU manipulator use the mean absolute difference in 8-bit levels, bounded
per case by `TOLERANCES`.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pytest
import torch
from PIL import Image
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.config import BatchSettings
from darkroom_gpu.errors import UnprocessableImageError, UnsupportedMediaTypeError
from darkroom_gpu.geometry import Size
from darkroom_gpu.manipulators.base import ImageJob, ImageResult
from darkroom_gpu.manipulators.batcher import BatcherClosedError
from darkroom_gpu.manipulators.cpu import CpuManipulator
from darkroom_gpu.manipulators.device_input import is_device_decodable_jpeg, reduce_for_resize
from darkroom_gpu.manipulators.fallback import FallbackReason
from darkroom_gpu.manipulators.gpu import GpuManipulator
from darkroom_gpu.manipulators.select import UnsupportedDeviceError, create_manipulator
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.options import OutputFormat, parse_options
from darkroom_gpu.pipeline import TransformPlan
from darkroom_gpu.server import create_app
from tests.conftest import DATA, SAMPLES, make_settings, open_image, source_settings
from tests.images import broken_huffman_table, swapped_profile

# torchvision 0.29 deprecates its image codecs in favour of torchcodec, but the manipulator
# still uses them, so the warning is expected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)

ORIENTATION = DATA / "exif-orientation"
# Large enough that a batch in these tests is never split by the bounds.
ROOMY: Final = BatchSettings(max_wait_ms=2.0, max_images=64, max_megapixels=1000.0)

# Maximum mean absolute difference from the CPU manipulator, in 8-bit levels.
TOLERANCES: Final = {
    # Both decode with libjpeg-turbo's default IDCT and upsampling at full size and then run
    # the same tensor steps and Pillow encoders, and the results were measured equal.
    "same_decode": 0.05,
    # A box average at 1/2, 1/4 or 1/8 scale replaces the CPU path's DCT-scaled decode. The
    # difference measured 0.10 to 0.22 on these photos.
    "reduced": 0.5,
    # torchvision's libjpeg encoder and Pillow's write the result at the same quality, but their
    # outputs differ. The difference measured 0.68 on jolla.jpg.
    "jpeg_output": 1.5,
}


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    query: str
    tolerance: str


CASES: Final = [
    Case("W1 thumbnail", SAMPLES / "jolla.jpg", "w=300&format=png", "reduced"),
    Case("W2 crop", SAMPLES / "jolla.jpg", "w=800&h=800&fit=crop&format=png", "same_decode"),
    Case("W3 blur", ORIENTATION / "Landscape_1.jpg", "w=1200&blur=5&format=png", "same_decode"),
    Case("W4 webp", ORIENTATION / "Landscape_1.jpg", "w=1200&format=webp", "same_decode"),
    Case(
        "W5 orient mono rot",
        SAMPLES / "canon_hdr_NO.jpg",
        "w=600&mono=000000&rot=90&format=png",
        "same_decode",
    ),
    Case("reduce by 4", SAMPLES / "canon_hdr_NO.jpg", "w=100&format=png", "reduced"),
    Case("jpeg output", SAMPLES / "jolla.jpg", "w=300", "jpeg_output"),
    Case(
        "pad rot", SAMPLES / "DSCN0010.jpg", "w=200&h=200&fit=pad&rot=30&format=png", "same_decode"
    ),
    *(
        Case(path.name, path, "w=300&format=png", "reduced")
        for path in sorted(ORIENTATION.glob("*.jpg"))
    ),
]


class Recording(GpuManipulator):
    """Records the sizes of batched decode and encode calls, and can inject failures.

    Attributes:
        decode_calls: number of sources per `decode_jpegs` call.
        encode_calls: (number of images, quality) per `encode_jpegs` call.
        decode_failure: raised by batched decodes of more than one source.
        rejected_size: byte length of a source that the decoder rejects.
        transform_failure: raised by every transform.
        probe_failure: raised by every device probe.
    """

    def __init__(self, batching: BatchSettings = ROOMY, metrics: Metrics | None = None) -> None:
        super().__init__(
            torch.device("cpu"), workers=2, batching=batching, metrics=metrics or Metrics()
        )
        self.decode_calls: list[int] = []
        self.encode_calls: list[tuple[int, int]] = []
        self.decode_failure: Exception | None = None
        self.rejected_size = -1
        self.transform_failure: Exception | None = None
        self.probe_failure: Exception | None = None

    def decode_jpegs(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        self.decode_calls.append(len(sources))
        if self.decode_failure is not None and len(sources) > 1:
            raise self.decode_failure
        if any(source.numel() == self.rejected_size for source in sources):
            raise RuntimeError("the stand-in decoder rejects this image")
        return super().decode_jpegs(sources)

    def transform(self, image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
        if self.transform_failure is not None:
            raise self.transform_failure
        return super().transform(image, plan)

    def encode_jpegs(self, images: list[torch.Tensor], quality: int) -> list[torch.Tensor]:
        self.encode_calls.append((len(images), quality))
        return super().encode_jpegs(images, quality)

    def probe_device(self) -> None:
        if self.probe_failure is not None:
            raise self.probe_failure
        super().probe_device()


def make_job(data: bytes, query: str, max_pixels: int = 50_000_000) -> ImageJob:
    pairs = [pair.partition("=") for pair in query.split("&")]
    options = parse_options([(name, value) for name, _, value in pairs])
    return ImageJob(
        data=data,
        options=options,
        negotiated_format=None,
        allow_enlarge=True,
        max_pixels=max_pixels,
    )


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def mean_abs_diff(first: bytes, second: bytes) -> float:
    actual = np.asarray(open_image(first).convert("RGBA"), dtype=np.float64)
    expected = np.asarray(open_image(second).convert("RGBA"), dtype=np.float64)
    return float(np.abs(actual - expected).mean())


def fallbacks(metrics: Metrics, reason: FallbackReason) -> float | None:
    return metrics.registry.get_sample_value("darkroom_gpu_fallbacks_total", {"reason": reason})


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(SAMPLES / "DSCN0010.jpg") as image:
        return image.convert("RGB").resize((160, 120))


@pytest.fixture
async def cpu() -> AsyncIterator[CpuManipulator]:
    manipulator = CpuManipulator(workers=2)
    yield manipulator
    await manipulator.close()


async def test_batch_matches_cpu(cpu: CpuManipulator) -> None:
    metrics = Metrics()
    manipulator = Recording(metrics=metrics)
    jobs = [make_job(case.path.read_bytes(), case.query) for case in CASES]

    outcomes = await manipulator.process_many(jobs)
    await manipulator.close()

    assert metrics.registry.get_sample_value("darkroom_batch_size_count") == 1
    for case, job, outcome in zip(CASES, jobs, outcomes, strict=True):
        expected = await cpu.process(job)
        assert isinstance(outcome, ImageResult), case.name
        assert outcome.output_format is expected.output_format, case.name
        assert outcome.size == expected.size, case.name
        assert open_image(outcome.data).size == (expected.size.width, expected.size.height)
        assert mean_abs_diff(outcome.data, expected.data) <= TOLERANCES[case.tolerance], case.name


async def test_timings_cover_every_stage() -> None:
    manipulator = Recording()
    result = await manipulator.process(make_job((SAMPLES / "DSCN0010.jpg").read_bytes(), "w=50"))
    await manipulator.close()

    assert set(result.timings) == {"queue", "decode", "process", "encode"}
    assert all(seconds >= 0 for seconds in result.timings.values())


async def test_bad_images_fail_alone(photo: Image.Image) -> None:
    good = (SAMPLES / "DSCN0010.jpg").read_bytes()
    truncated = good[: len(good) // 2]
    jobs = [
        make_job(good, "w=100"),
        make_job(truncated, "w=100"),
        make_job(encoded(photo, "PNG"), "w=100"),
        make_job(b"not an image at all", "w=100"),
        make_job(good, "w=100", max_pixels=1000),
        make_job(good, "w=120&format=png"),
        make_job(broken_huffman_table(good), "w=100"),
    ]
    manipulator = Recording()

    outcomes = await manipulator.process_many(jobs)
    await manipulator.close()

    assert isinstance(outcomes[0], ImageResult)
    assert isinstance(outcomes[1], UnprocessableImageError)
    assert isinstance(outcomes[2], ImageResult)
    assert isinstance(outcomes[3], UnsupportedMediaTypeError)
    assert isinstance(outcomes[4], UnprocessableImageError)
    assert "over this source's limit of 1000" in outcomes[4].public_message
    assert isinstance(outcomes[5], ImageResult)
    assert isinstance(outcomes[6], UnprocessableImageError)
    # The truncated JPEG has no EOI marker, so Pillow decodes it. The device decoder gets the
    # other three JPEGs together, rejects the batch, and then gets each one alone.
    assert manipulator.decode_calls == [3, 1, 1, 1]


async def test_rejected_jpeg_decodes_on_host() -> None:
    metrics = Metrics()
    manipulator = Recording(metrics=metrics)
    rejected = (ORIENTATION / "Landscape_3.jpg").read_bytes()
    manipulator.rejected_size = len(rejected)
    jobs = [
        make_job((SAMPLES / "DSCN0010.jpg").read_bytes(), "w=100"),
        make_job(rejected, "w=100"),
    ]

    outcomes = await manipulator.process_many(jobs)
    await manipulator.close()

    assert [type(outcome) for outcome in outcomes] == [ImageResult, ImageResult]
    assert manipulator.decode_calls == [2, 1, 1]
    assert fallbacks(metrics, FallbackReason.CPU_DECODE) == 1


async def test_non_jpeg_inputs_decode_on_host(photo: Image.Image) -> None:
    metrics = Metrics()
    manipulator = Recording(metrics=metrics)
    jobs = [
        make_job(encoded(photo, "PNG"), "w=80"),
        make_job(encoded(photo, "WEBP", quality=90), "w=80"),
        make_job(encoded(photo, "JPEG", progressive=True), "w=80"),
        make_job(encoded(photo.convert("L"), "JPEG"), "w=80"),
        make_job(encoded(photo, "JPEG"), "w=80"),
    ]

    outcomes = await manipulator.process_many(jobs)
    await manipulator.close()

    assert all(isinstance(outcome, ImageResult) for outcome in outcomes)
    assert manipulator.decode_calls == [1]
    assert fallbacks(metrics, FallbackReason.CPU_DECODE) == 4


async def test_jpeg_output_batched_by_quality() -> None:
    data = (SAMPLES / "DSCN0010.jpg").read_bytes()
    jobs = [
        make_job(data, "w=100"),
        make_job(data, "w=90&q=50"),
        make_job(data, "w=80"),
        make_job(data, "w=70&format=png"),
    ]
    manipulator = Recording()

    outcomes = await manipulator.process_many(jobs)
    await manipulator.close()

    assert manipulator.encode_calls == [(1, 50), (2, 80)]
    assert [outcome.output_format for outcome in outcomes if isinstance(outcome, ImageResult)] == [
        OutputFormat.JPEG,
        OutputFormat.JPEG,
        OutputFormat.JPEG,
        OutputFormat.PNG,
    ]


async def test_oom_splits_batch() -> None:
    metrics = Metrics()
    manipulator = Recording(metrics=metrics)
    manipulator.decode_failure = torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    data = (SAMPLES / "DSCN0010.jpg").read_bytes()

    outcomes = await manipulator.process_many([make_job(data, f"w={w}") for w in (40, 50, 60, 70)])
    await manipulator.close()

    assert all(isinstance(outcome, ImageResult) for outcome in outcomes)
    assert manipulator.decode_calls == [4, 2, 1, 1, 2, 1, 1]
    assert fallbacks(metrics, FallbackReason.OUT_OF_MEMORY) is None


async def test_oom_falls_back_to_cpu(cpu: CpuManipulator, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    manipulator = Recording(metrics=metrics)
    manipulator.transform_failure = torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
    jobs = [make_job((SAMPLES / "DSCN0010.jpg").read_bytes(), f"w={w}") for w in (40, 50, 60)]

    with caplog.at_level(logging.WARNING, logger="darkroom_gpu.manipulators.gpu"):
        outcomes = await manipulator.process_many(jobs)
    await manipulator.close()

    assert fallbacks(metrics, FallbackReason.OUT_OF_MEMORY) == 3
    assert len(caplog.records) == 1
    assert "reason=out_of_memory" in caplog.records[0].getMessage()
    for job, outcome in zip(jobs, outcomes, strict=True):
        expected = await cpu.process(job)
        assert isinstance(outcome, ImageResult)
        assert outcome.data == expected.data


async def test_cuda_error_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    manipulator = Recording(metrics=metrics)
    manipulator.transform_failure = torch.AcceleratorError("CUDA error: an illegal memory access")
    data = (SAMPLES / "DSCN0010.jpg").read_bytes()

    with caplog.at_level(logging.WARNING, logger="darkroom_gpu.manipulators.gpu"):
        first = await manipulator.process_many([make_job(data, "w=40"), make_job(data, "w=50")])
        second = await manipulator.process(make_job(data, "w=60"))
    await manipulator.close()

    assert all(isinstance(outcome, ImageResult) for outcome in first)
    assert second.size == Size(width=60, height=45)
    assert fallbacks(metrics, FallbackReason.CUDA_ERROR) == 3
    # The second batch's fallback is within the rate limit, so it is counted but not logged.
    assert len(caplog.records) == 1
    assert "reason=cuda_error" in caplog.records[0].getMessage()


async def test_broken_device_moves_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    manipulator = Recording(metrics=metrics)
    manipulator.transform_failure = torch.AcceleratorError("CUDA error: an illegal memory access")
    manipulator.probe_failure = torch.AcceleratorError("CUDA error: an illegal memory access")
    data = (SAMPLES / "DSCN0010.jpg").read_bytes()

    with caplog.at_level(logging.ERROR, logger="darkroom_gpu.manipulators.gpu"):
        first = await manipulator.process_many([make_job(data, "w=40"), make_job(data, "w=50")])
    decodes = len(manipulator.decode_calls)
    manipulator.transform_failure = None
    later = await manipulator.process(make_job(data, "w=60"))
    jobs = [make_job(data, "w=70"), make_job(b"not an image", "w=9")]
    many = await manipulator.process_many(jobs)
    await manipulator.close()

    assert all(isinstance(outcome, ImageResult) for outcome in first)
    assert manipulator.failure == "CUDA error: an illegal memory access"
    assert len(caplog.records) == 1
    assert "unusable after a CUDA error" in caplog.records[0].getMessage()
    assert later.device == "cpu"
    assert later.size == Size(width=60, height=45)
    assert isinstance(many[0], ImageResult)
    assert isinstance(many[1], UnsupportedMediaTypeError)
    assert len(manipulator.decode_calls) == decodes
    assert fallbacks(metrics, FallbackReason.CUDA_ERROR) == 5


async def test_queued_jobs_skip_broken_device(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    manipulator = Recording(BatchSettings(max_wait_ms=2.0, max_images=1), metrics)
    manipulator.transform_failure = torch.AcceleratorError("CUDA error: an illegal memory access")
    manipulator.probe_failure = torch.AcceleratorError("CUDA error: an illegal memory access")
    data = (SAMPLES / "DSCN0010.jpg").read_bytes()

    with caplog.at_level(logging.ERROR, logger="darkroom_gpu.manipulators.gpu"):
        results = await asyncio.gather(
            *(manipulator.process(make_job(data, f"w={w}")) for w in (40, 50, 60))
        )
    await manipulator.close()

    assert [result.size.width for result in results] == [40, 50, 60]
    assert manipulator.decode_calls == [1]
    assert len(caplog.records) == 1
    assert fallbacks(metrics, FallbackReason.CUDA_ERROR) == 3


async def test_decode_failure_spares_host_decoded(
    photo: Image.Image, caplog: pytest.LogCaptureFixture
) -> None:
    manipulator = Recording()
    manipulator.decode_failure = torch.AcceleratorError("CUDA error: an illegal memory access")
    manipulator.probe_failure = torch.AcceleratorError("CUDA error: an illegal memory access")
    # Any transform on the device would fail the image, so a result shows that none ran.
    manipulator.transform_failure = ValueError("the broken device transformed an image")
    data = (SAMPLES / "DSCN0010.jpg").read_bytes()
    jobs = [make_job(data, "w=40"), make_job(data, "w=50"), make_job(encoded(photo, "PNG"), "w=60")]

    with caplog.at_level(logging.ERROR, logger="darkroom_gpu.manipulators.gpu"):
        outcomes = await manipulator.process_many(jobs)
    await manipulator.close()

    assert [type(outcome) for outcome in outcomes] == [ImageResult] * 3
    assert manipulator.failure == "CUDA error: an illegal memory access"
    assert len(caplog.records) == 1


async def test_passing_probe_keeps_device() -> None:
    manipulator = Recording()
    manipulator.transform_failure = torch.AcceleratorError("CUDA error: invalid configuration")
    data = (SAMPLES / "DSCN0010.jpg").read_bytes()

    await manipulator.process(make_job(data, "w=40"))
    decodes = len(manipulator.decode_calls)
    manipulator.transform_failure = None
    result = await manipulator.process(make_job(data, "w=50"))
    await manipulator.close()

    assert manipulator.failure is None
    assert result.device is None
    assert len(manipulator.decode_calls) == decodes + 1


async def test_transform_error_fails_alone() -> None:
    manipulator = Recording()
    manipulator.transform_failure = ValueError("a bug in one transform")
    data = (SAMPLES / "DSCN0010.jpg").read_bytes()

    outcomes = await manipulator.process_many([make_job(data, "w=40")])
    await manipulator.close()

    assert isinstance(outcomes[0], ValueError)


async def test_warm_up_checks_device() -> None:
    healthy = Recording()
    broken = Recording()
    broken.transform_failure = torch.AcceleratorError("CUDA error: no kernel image (injected)")

    await healthy.warm_up()
    with pytest.raises(RuntimeError, match=r"warm-up on cpu fell back to the CPU \(cuda_error\)"):
        await broken.warm_up()
    await healthy.close()
    await broken.close()


async def test_closed_rejects_jobs() -> None:
    manipulator = Recording()
    await manipulator.close()

    with pytest.raises(BatcherClosedError):
        await manipulator.process(make_job((SAMPLES / "DSCN0010.jpg").read_bytes(), "w=40"))


async def test_serves_http_on_stand_in(aiohttp_client: AiohttpClient, image_root: Path) -> None:
    manipulator = GpuManipulator(torch.device("cpu"), workers=2, batching=ROOMY, metrics=Metrics())
    app = create_app(make_settings(source_settings(image_root)), manipulator=manipulator)
    client = await aiohttp_client(app)
    ready = await client.get("/readyz")
    for _ in range(200):
        if ready.status == 200:
            break
        await asyncio.sleep(0.05)
        ready = await client.get("/readyz")

    thumbnail, webp, *crops = await asyncio.gather(
        client.get("/jolla.jpg?w=300"),
        client.get("/DSCN0010.jpg?w=100&format=webp"),
        *(client.get(f"/DSCN0010.jpg?w={w}&h={w}&fit=crop") for w in (50, 60, 70)),
    )

    assert await ready.json() == {"status": "ready", "device": "cpu"}
    assert thumbnail.status == 200
    assert thumbnail.content_type == "image/jpeg"
    assert open_image(await thumbnail.read()).size == (300, 225)
    timing = thumbnail.headers["Server-Timing"]
    assert all(f"{stage};dur=" in timing for stage in ("queue", "decode", "process", "encode"))
    assert webp.status == 200
    assert webp.content_type == "image/webp"
    assert [response.status for response in crops] == [200, 200, 200]
    assert [open_image(await response.read()).size for response in crops] == [
        (50, 50),
        (60, 60),
        (70, 70),
    ]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("baseline", True),
        ("progressive", False),
        ("grayscale", False),
        ("cmyk", False),
        ("png", False),
        ("truncated header", False),
        ("truncated scan", False),
        ("zero padding", True),
        ("data appended", True),
    ],
)
def test_device_decodable_jpeg(photo: Image.Image, kind: str, expected: bool) -> None:
    samples = {
        "baseline": lambda: encoded(photo, "JPEG"),
        "progressive": lambda: encoded(photo, "JPEG", progressive=True),
        "grayscale": lambda: encoded(photo.convert("L"), "JPEG"),
        "cmyk": lambda: encoded(photo.convert("CMYK"), "JPEG"),
        "png": lambda: encoded(photo, "PNG"),
        "truncated header": lambda: encoded(photo, "JPEG")[:100],
        "truncated scan": lambda: encoded(photo, "JPEG")[:-100],
        "zero padding": lambda: encoded(photo, "JPEG") + bytes(16),
        "data appended": lambda: encoded(photo, "JPEG") + b"trailer",
    }
    assert is_device_decodable_jpeg(samples[kind]()) is expected


@pytest.mark.parametrize(
    ("height", "width", "target", "expected"),
    [
        pytest.param(2448, 3264, Size(300, 225), (612, 816), id="by 4"),
        pytest.param(2448, 3264, Size(800, 600), (1224, 1632), id="by 2"),
        pytest.param(2448, 3264, Size(1200, 900), (2448, 3264), id="kept"),
        pytest.param(4000, 4000, Size(100, 100), (500, 500), id="at most 8"),
        pytest.param(9, 11, Size(1, 1), (3, 3), id="partial blocks"),
    ],
)
def test_reduce_for_resize_size(
    height: int, width: int, target: Size, expected: tuple[int, int]
) -> None:
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    result = reduce_for_resize(image, target)
    assert tuple(result.shape) == (3, *expected)
    assert result.dtype == torch.uint8


def test_reduce_for_resize_averages_blocks() -> None:
    image = torch.arange(30, dtype=torch.uint8).reshape(1, 5, 6) * 8
    result = reduce_for_resize(image, Size(width=1, height=1))
    # Blocks are 2 x 2, and the bottom row of blocks covers only row 4.
    expected = torch.tensor([[[28, 44, 60], [124, 140, 156], [196, 212, 228]]], dtype=torch.uint8)
    assert torch.equal(result, expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the host without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_select_cuda_without_gpu(device: str) -> None:
    with pytest.raises(UnsupportedDeviceError, match=f"device '{device}' is not supported"):
        create_manipulator(device, workers=1, batching=BatchSettings(), metrics=Metrics())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the host without a GPU")
async def test_select_auto_without_gpu() -> None:
    manipulator = create_manipulator("auto", workers=1, batching=BatchSettings(), metrics=Metrics())
    await manipulator.close()

    assert isinstance(manipulator, CpuManipulator)
    assert manipulator.device == "cpu"


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_select_rejects_triton_on_cpu(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    # The CPU manipulator never runs the kernels, whatever the value of TRITON_INTERPRET.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    batching = BatchSettings(kernels="triton")

    with pytest.raises(UnsupportedDeviceError, match=r"batching\.kernels is triton, but device"):
        create_manipulator(device, workers=1, batching=batching, metrics=Metrics())


def test_select_rejects_unknown_device() -> None:
    with pytest.raises(UnsupportedDeviceError, match="expected auto, cpu, cuda or cuda:N"):
        create_manipulator("cuda:x", workers=1, batching=BatchSettings(), metrics=Metrics())


async def test_profiled_jpeg_decodes_on_host() -> None:
    manipulator = Recording()
    stored_red = encoded(
        Image.new("RGB", (32, 32), (255, 0, 0)), "JPEG", icc_profile=swapped_profile()
    )
    result = await manipulator.process(make_job(stored_red, "w=16&format=png"))
    await manipulator.close()
    pixel = open_image(result.data).convert("RGB").getpixel((8, 8))
    assert manipulator.decode_calls == []
    assert pixel[2] > 200  # type: ignore[index]
    assert pixel[0] < 60  # type: ignore[index]


async def test_animation_keeps_frames() -> None:
    manipulator = Recording()
    frames = [Image.new("RGB", (40, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = await manipulator.process(make_job(buffer.getvalue(), "w=20"))
    await manipulator.close()
    assert getattr(open_image(result.data), "n_frames", 1) == 2


async def test_progressive_jpeg_encoded_by_pillow() -> None:
    manipulator = Recording()
    source = (SAMPLES / "DSCN0010.jpg").read_bytes()
    result = await manipulator.process(make_job(source, "w=64&progressive=1"))
    await manipulator.close()
    assert manipulator.encode_calls == []
    assert open_image(result.data).info.get("progressive") == 1
