"""GPU against CPU on real photos: every URL operation, and two servers answering the same URLs.

Runs only where torch finds a CUDA device; elsewhere every test skips. All cases run through
`GpuManipulator.process_many` as one batch, so they also exercise batched nvJPEG decode and
encode, and each result is compared with the CPU manipulator's by the mean absolute difference
in 8-bit levels, bounded per kind of case in `TOLERANCES`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path
from typing import Final

import numpy as np
import pytest
import torch
from PIL import Image
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.config import BatchSettings
from darkroom_gpu.errors import UnprocessableImageError
from darkroom_gpu.manipulators.base import ImageJob, ImageResult
from darkroom_gpu.manipulators.cpu import CpuManipulator
from darkroom_gpu.manipulators.gpu import GpuManipulator
from darkroom_gpu.manipulators.select import UnsupportedDeviceError, create_manipulator
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.options import parse_options
from darkroom_gpu.server import create_app
from tests.conftest import DATA, SAMPLES, Client, make_settings, open_image, source_settings
from tests.images import broken_huffman_table

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    # torchvision 0.29 deprecates its image codecs in favour of torchcodec, but the manipulator
    # still uses them.
    pytest.mark.filterwarnings(
        "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
    ),
]

# Maximum mean absolute difference between GPU and CPU results, in 8-bit levels.
# NOTE: these bounds are estimates, because this file has not yet run on a GPU. They add room for
# nvJPEG's own IDCT and chroma upsampling to what the CPU stand-in measured.
TOLERANCES: Final = {
    # nvJPEG and libjpeg-turbo decode the same file to slightly different pixels, and every
    # later step is the same tensor code.
    "decode": 1.5,
    # As "decode", plus a box reduction in place of libjpeg's DCT-scaled decode, which differs
    # by 0.10 to 0.22 levels on the CPU stand-in.
    "reduced": 2.0,
    # As "decode", plus bilinear sampling at the rotated edges in float32 on both devices.
    "rotate": 2.0,
    # nvJPEG's and Pillow's JPEG encoders differ at the same quality, which adds to the decode
    # difference.
    "jpeg_output": 3.0,
    # The WebP encoder chooses other coding modes for inputs that differ slightly (about 3.4
    # levels for +-1 noise, see tests/test_reference.py).
    "webp_output": 5.0,
}

ORIENTATION = DATA / "exif-orientation"
DSCN = SAMPLES / "DSCN0010.jpg"
# One batch contains every case below.
ROOMY: Final = BatchSettings(max_wait_ms=2.0, max_images=128, max_megapixels=2000.0)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    path: Path
    query: str
    tolerance: str


CASES: Final = [
    Case("w", DSCN, "w=320&format=png", "decode"),
    Case("h", DSCN, "h=120&format=png", "reduced"),
    Case("w h inside", DSCN, "w=200&h=200&format=png", "decode"),
    Case("fit=crop", DSCN, "w=200&h=200&fit=crop&format=png", "decode"),
    Case("fit=scale", DSCN, "w=200&h=200&fit=scale&format=png", "decode"),
    Case("fit=pad", DSCN, "w=200&h=200&fit=pad&format=png", "decode"),
    Case("fit=pad bg", DSCN, "w=200&h=200&fit=pad&bg=00ff00&format=png", "decode"),
    Case("crop=top,left", DSCN, "w=200&h=100&fit=crop&crop=top,left&format=png", "decode"),
    Case("crop=bottom,right", DSCN, "w=200&h=100&fit=crop&crop=bottom,right&format=png", "decode"),
    Case("crop=left", DSCN, "w=200&h=200&fit=crop&crop=left&format=png", "decode"),
    Case("mono gray", DSCN, "w=320&mono=000000&format=png", "decode"),
    Case("mono tint", DSCN, "w=320&mono=ff8000&format=png", "decode"),
    Case("blur 5", DSCN, "w=320&blur=5&format=png", "decode"),
    Case("blur 30", DSCN, "w=320&blur=30&format=png", "decode"),
    Case("rot=90", DSCN, "w=320&rot=90&format=png", "decode"),
    Case("rot=30", DSCN, "w=320&rot=30&format=png", "rotate"),
    Case("flip=h", DSCN, "w=320&flip=h&format=png", "decode"),
    Case("flip=v", DSCN, "w=320&flip=v&format=png", "decode"),
    Case("flip=hv", DSCN, "w=320&flip=hv&format=png", "decode"),
    Case("dpr", DSCN, "w=160&dpr=2&format=png", "decode"),
    Case("format=jpeg", DSCN, "w=320&format=jpeg&q=80", "jpeg_output"),
    Case("format=png", DSCN, "w=320&format=png", "decode"),
    Case("format=webp", DSCN, "w=320&format=webp", "webp_output"),
    Case("W1 thumbnail", SAMPLES / "jolla.jpg", "w=300&q=80", "jpeg_output"),
    Case("W2 crop", SAMPLES / "jolla.jpg", "w=800&h=800&fit=crop&format=png", "decode"),
    Case("W3 blur", ORIENTATION / "Landscape_1.jpg", "w=1200&blur=5&format=png", "decode"),
    Case("W4 webp", ORIENTATION / "Landscape_1.jpg", "w=1200&format=webp", "webp_output"),
    Case(
        "W5 orient mono rot",
        SAMPLES / "canon_hdr_NO.jpg",
        "w=600&mono=000000&rot=90&format=png",
        "decode",
    ),
    *(
        Case(f"orientation {path.name}", path, "w=300&format=png", "reduced")
        for path in sorted(ORIENTATION.glob("*.jpg"))
    ),
]

# URLs requested from a device=cpu and a device=cuda server, with the bound for each.
SERVER_URLS: Final = [
    ("/jolla.jpg?w=300", "jpeg_output"),
    ("/jolla.jpg?w=800&h=800&fit=crop&format=png", "decode"),
    ("/DSCN0010.jpg?w=200&mono=000000&rot=90&format=png", "decode"),
    ("/DSCN0010.jpg?w=320&blur=5&format=webp", "webp_output"),
    ("/canon_hdr_NO.jpg?w=600&mono=000000&rot=90&format=png", "decode"),
]


def make_job(data: bytes, query: str) -> ImageJob:
    pairs = [pair.partition("=") for pair in query.split("&")]
    return ImageJob(
        data=data,
        options=parse_options([(name, value) for name, _, value in pairs]),
        negotiated_format=None,
        allow_enlarge=True,
        max_pixels=50_000_000,
    )


def mean_abs_diff(first: bytes, second: bytes) -> float:
    actual = np.asarray(open_image(first).convert("RGBA"), dtype=np.float64)
    expected = np.asarray(open_image(second).convert("RGBA"), dtype=np.float64)
    return float(np.abs(actual - expected).mean())


async def run_both(jobs: list[ImageJob]) -> list[tuple[ImageResult | Exception, ImageResult]]:
    gpu = GpuManipulator(torch.device("cuda:0"), workers=4, batching=ROOMY, metrics=Metrics())
    cpu = CpuManipulator(workers=4)
    try:
        await gpu.warm_up()
        gpu_outcomes = await gpu.process_many(jobs)
        cpu_results = [await cpu.process(job) for job in jobs]
    finally:
        await gpu.close()
        await cpu.close()
    return list(zip(gpu_outcomes, cpu_results, strict=True))


@pytest.fixture(scope="module")
def outcomes() -> dict[str, tuple[ImageResult | Exception, ImageResult]]:
    jobs = [make_job(case.path.read_bytes(), case.query) for case in CASES]
    pairs = asyncio.run(run_both(jobs))
    return {case.name: pair for case, pair in zip(CASES, pairs, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_gpu_matches_cpu(
    case: Case, outcomes: dict[str, tuple[ImageResult | Exception, ImageResult]]
) -> None:
    gpu, cpu = outcomes[case.name]

    assert isinstance(gpu, ImageResult)
    assert gpu.output_format is cpu.output_format
    assert gpu.size == cpu.size
    assert open_image(gpu.data).size == (cpu.size.width, cpu.size.height)
    assert mean_abs_diff(gpu.data, cpu.data) <= TOLERANCES[case.tolerance]


def test_batched_decode_on_device() -> None:
    manipulator = GpuManipulator(
        torch.device("cuda:0"), workers=2, batching=ROOMY, metrics=Metrics()
    )
    sources = [
        torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        for path in (DSCN, SAMPLES / "jolla.jpg")
    ]
    try:
        decoded = manipulator.decode_jpegs(sources)
    finally:
        asyncio.run(manipulator.close())

    assert [image.device.type for image in decoded] == ["cuda", "cuda"]
    assert [tuple(image.shape) for image in decoded] == [(3, 480, 640), (3, 2448, 3264)]
    assert all(image.dtype == torch.uint8 for image in decoded)


async def test_corrupt_jpeg_fails_alone_on_cuda() -> None:
    good = DSCN.read_bytes()
    manipulator = GpuManipulator(
        torch.device("cuda:0"), workers=2, batching=ROOMY, metrics=Metrics()
    )
    jobs = [
        make_job(good, "w=100"),
        make_job(good[: len(good) // 2], "w=100"),
        # Its header passes as baseline and it ends with EOI, so nvJPEG gets it.
        make_job(broken_huffman_table(good), "w=100"),
    ]

    results = await manipulator.process_many(jobs)
    await manipulator.close()

    assert isinstance(results[0], ImageResult)
    assert isinstance(results[1], UnprocessableImageError)
    assert isinstance(results[2], UnprocessableImageError)


async def test_gpu_memory_gauge_set() -> None:
    metrics = Metrics()
    manipulator = GpuManipulator(torch.device("cuda:0"), workers=2, batching=ROOMY, metrics=metrics)

    await manipulator.process(make_job(DSCN.read_bytes(), "w=100"))
    await manipulator.close()

    memory = metrics.registry.get_sample_value("darkroom_gpu_memory_bytes")
    assert memory is not None
    assert memory >= 0


async def ready_client(aiohttp_client: AiohttpClient, root: Path, device: str) -> Client:
    settings = dataclasses.replace(make_settings(source_settings(root)), device=device)
    client = await aiohttp_client(create_app(settings))
    # Warm-up on CUDA creates the context, starts nvJPEG and compiles the resize kernels, so
    # it gets up to a minute.
    for _ in range(600):
        response = await client.get("/readyz")
        if response.status == 200:
            break
        await asyncio.sleep(0.1)
    return client


async def test_servers_answer_alike(aiohttp_client: AiohttpClient, image_root: Path) -> None:
    cpu = await ready_client(aiohttp_client, image_root, "cpu")
    cuda = await ready_client(aiohttp_client, image_root, "cuda")

    ready = await cuda.get("/readyz")
    assert await ready.json() == {"status": "ready", "device": "cuda:0"}
    for url, tolerance in SERVER_URLS:
        expected = await cpu.get(url)
        actual = await cuda.get(url)
        assert actual.status == expected.status == 200, url
        assert actual.content_type == expected.content_type, url
        assert actual.headers["ETag"] == expected.headers["ETag"], url
        difference = mean_abs_diff(await actual.read(), await expected.read())
        assert difference <= TOLERANCES[tolerance], url


def test_png_input_matches_cpu() -> None:
    with Image.open(DSCN) as image:
        buffer = io.BytesIO()
        image.convert("RGBA").save(buffer, "PNG")
    jobs = [make_job(buffer.getvalue(), "w=200&rot=30")]

    ((gpu, cpu),) = asyncio.run(run_both(jobs))

    # The PNG is decoded by Pillow on both paths, so only the tensor steps differ.
    assert isinstance(gpu, ImageResult)
    assert gpu.size == cpu.size
    assert mean_abs_diff(gpu.data, cpu.data) <= TOLERANCES["rotate"]


@pytest.mark.parametrize(("device", "expected"), [("cuda", "cuda:0"), ("auto", "cuda:0")])
async def test_select_picks_gpu(device: str, expected: str) -> None:
    manipulator = create_manipulator(device, workers=1, batching=ROOMY, metrics=Metrics())
    await manipulator.close()

    assert isinstance(manipulator, GpuManipulator)
    assert manipulator.device == expected


def test_select_rejects_missing_index() -> None:
    index = torch.cuda.device_count()
    with pytest.raises(UnsupportedDeviceError, match=f"finds {index} CUDA device"):
        create_manipulator(f"cuda:{index}", workers=1, batching=ROOMY, metrics=Metrics())
