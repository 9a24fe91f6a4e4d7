"""The Triton resize kernels against their torch reference, on ragged batches.

Without CUDA the kernels run in Triton's CPU interpreter, which tests/__init__.py turns on
before anything imports Triton. With CUDA they are compiled, and the ``cuda`` cases run them on
the GPU. Every comparison checks each result's shape, dtype and device, and bounds its
difference from the reference by the table below.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import torch
import torch.nn.functional as F

from darkroom_gpu.kernels import (
    MAX_LEVEL_DIFFERENCE,
    KernelBackend,
    KernelMismatchError,
    KernelUnavailableError,
    ResizeSpec,
    dispatch,
    layout,
    resize_batch,
    resize_reference,
    resolve_backend,
    verify_kernels,
)
from darkroom_gpu.kernels.filters import max_taps, window_weights
from darkroom_gpu.ops import ImageShapeError, Interpolation

TRITON_INSTALLED: Final = importlib.util.find_spec("triton") is not None

# Bounds on the kernels' difference from the reference:
# - At any value, MAX_LEVEL_DIFFERENCE (1 level). Both compute in float32, but the kernels sum
#   the weighted taps before dividing by the weight total, where torch normalises the weights
#   first, so a value within float rounding of a half level can round the other way.
# - The share of values that differ at all. Bilinear weights are simple fractions, so exact
#   results often fall on a half level, where the order of float operations decides: a
#   bilinear downscale of random pixels by 3 measured 0.33 %. 72 random images of up to
#   150 x 150 pixels with every option measured 0.003 % in all.
MAX_DIFFERING_SHARE: Final = 0.01

DEVICES: Final = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Return a device the Triton kernels can run on, or skip."""
    name = str(request.param)
    if not TRITON_INSTALLED:
        pytest.skip("triton is not installed")
    if name == "cpu" and not dispatch.interpreter_enabled():
        pytest.skip("Triton compiles for CUDA only; TRITON_INTERPRET=1 runs the kernels on CPU")
    return torch.device(name)


@dataclass(frozen=True)
class Image:
    """A random test image: shape (C, H, W), and whether some pixels are fully transparent."""

    channels: int
    height: int
    width: int
    transparent: bool = False

    def make(self, generator: torch.Generator) -> torch.Tensor:
        shape = (self.channels, self.height, self.width)
        image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        if self.transparent:
            # A smooth picture with a transparent hole: alpha edges, and colour under alpha 0.
            rows = torch.linspace(0, 255, self.height)[:, None]
            columns = torch.linspace(0, 255, self.width)[None, :]
            image[0] = ((rows + columns) / 2).round().to(torch.uint8)
            hole = torch.zeros(self.height, self.width, dtype=torch.bool)
            hole[self.height // 4 : 3 * self.height // 4, self.width // 4 : 3 * self.width // 4] = (
                True
            )
            image[3] = torch.where(hole, 0, image[3])
        return image


ORANGE: Final = (255, 128, 0)
WHITE: Final = (255, 255, 255, 255)
HALF_BLUE: Final = (20, 40, 200, 128)

# Ragged batches: sizes from 1 x 1 to a few hundred pixels, upscales and downscales, odd sizes,
# 1, 3 and 4 channels, and every kind of colour work.
BATCHES: Final = {
    "rgb sizes": [
        (Image(3, 1, 1), ResizeSpec(7, 5)),
        (Image(3, 300, 211), ResizeSpec(67, 43)),
        (Image(3, 13, 17), ResizeSpec(131, 97)),
        (Image(3, 64, 64), ResizeSpec(64, 64)),
        (Image(3, 41, 1), ResizeSpec(9, 3)),
        (Image(3, 2, 257), ResizeSpec(5, 31)),
        (Image(3, 37, 53), ResizeSpec(1, 1)),
    ],
    "rgba alpha": [
        (Image(4, 120, 90, transparent=True), ResizeSpec(47, 31)),
        (Image(4, 24, 18, transparent=True), ResizeSpec(101, 77)),
        (Image(4, 3, 3), ResizeSpec(2, 5)),
        (Image(4, 50, 50, transparent=True), ResizeSpec(50, 50)),
        (Image(4, 1, 1), ResizeSpec(1, 1)),
        (Image(4, 200, 7), ResizeSpec(19, 29)),
    ],
    "gray": [
        (Image(1, 1, 1), ResizeSpec(3, 2)),
        (Image(1, 255, 129), ResizeSpec(33, 60)),
        (Image(1, 9, 301), ResizeSpec(77, 11)),
        (Image(1, 16, 16), ResizeSpec(16, 16)),
        (Image(1, 5, 6), ResizeSpec(5, 60, linear=True)),
    ],
    "colour work": [
        (Image(3, 90, 70), ResizeSpec(31, 23, grayscale=True)),
        (Image(4, 70, 90, transparent=True), ResizeSpec(23, 31, grayscale=True)),
        (Image(3, 20, 30), ResizeSpec(51, 77, tint=ORANGE)),
        (Image(4, 33, 44, transparent=True), ResizeSpec(12, 16, tint=(10, 200, 90))),
        (Image(4, 80, 60, transparent=True), ResizeSpec(40, 30, background=WHITE)),
        (Image(4, 60, 80, transparent=True), ResizeSpec(31, 41, background=HALF_BLUE)),
        (Image(4, 17, 17, transparent=True), ResizeSpec(17, 17, grayscale=True, background=WHITE)),
        (Image(3, 25, 25), ResizeSpec(12, 12, tint=ORANGE, background=WHITE)),
    ],
    "linear light": [
        (Image(3, 160, 120), ResizeSpec(41, 29, linear=True)),
        (Image(3, 10, 14), ResizeSpec(45, 63, linear=True)),
        (Image(4, 96, 64, transparent=True), ResizeSpec(33, 22, linear=True)),
        (Image(4, 30, 30, transparent=True), ResizeSpec(30, 30, linear=True, background=WHITE)),
        (Image(4, 64, 48, transparent=True), ResizeSpec(21, 16, linear=True, tint=ORANGE)),
    ],
    "bilinear": [
        (Image(3, 150, 100), ResizeSpec(37, 25, interpolation=Interpolation.BILINEAR)),
        (Image(3, 7, 9), ResizeSpec(70, 45, interpolation=Interpolation.BILINEAR)),
        (Image(4, 80, 80, transparent=True), ResizeSpec(27, 81, Interpolation.BILINEAR)),
        (Image(1, 33, 1), ResizeSpec(4, 9, interpolation=Interpolation.BILINEAR, linear=True)),
        (Image(3, 40, 40), ResizeSpec(13, 13, Interpolation.BILINEAR, grayscale=True)),
    ],
}


def make_batch(name: str, device: torch.device) -> tuple[list[torch.Tensor], list[ResizeSpec]]:
    generator = torch.Generator().manual_seed(sum(map(ord, name)))
    images = [image.make(generator).to(device) for image, _ in BATCHES[name]]
    return images, [spec for _, spec in BATCHES[name]]


def assert_close_to_reference(
    actual: list[torch.Tensor], images: list[torch.Tensor], specs: list[ResizeSpec]
) -> None:
    expected = resize_reference(images, specs)
    assert len(actual) == len(expected)
    for index, (result, reference) in enumerate(zip(actual, expected, strict=True)):
        where = f"image {index}: {tuple(images[index].shape)} with {specs[index]}"
        assert result.shape == reference.shape, where
        assert result.dtype == torch.uint8, where
        assert result.device == images[index].device, where
        difference = (result.int() - reference.int()).abs()
        assert int(difference.max()) <= MAX_LEVEL_DIFFERENCE, where
        differing = float((difference > 0).float().mean())
        assert differing <= MAX_DIFFERING_SHARE, f"{where}: {differing:.4%} of values differ"


# --- the filter -------------------------------------------------------------------------------

FILTER_CASES: Final = [(1, 5), (5, 1), (7, 3), (10, 23), (13, 13), (300, 37), (2, 257), (97, 96)]


@pytest.mark.parametrize("interpolation", list(Interpolation))
@pytest.mark.parametrize(("source", "target"), FILTER_CASES)
def test_window_weights_match_interpolate(
    source: int, target: int, interpolation: Interpolation
) -> None:
    starts, weights = window_weights(source, target, interpolation)
    # Resizing the identity matrix gives torch's weight of every source pixel per output pixel.
    identity = torch.eye(source, dtype=torch.float64)[None, None]
    expected = F.interpolate(
        identity,
        size=(source, target),
        mode=interpolation.value,
        antialias=True,
        align_corners=False,
    )[0, 0].T

    dense = torch.zeros(target, source, dtype=torch.float64)
    taps = starts[:, None] + torch.arange(weights.shape[1])[None, :]
    inside = taps < source
    dense.scatter_add_(1, taps.clamp(max=source - 1), torch.where(inside, weights, 0.0))
    torch.testing.assert_close(dense, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("source", "target"), FILTER_CASES)
def test_max_taps_bounds_window(source: int, target: int) -> None:
    for interpolation in Interpolation:
        _, weights = window_weights(source, target, interpolation)
        nonzero = (weights != 0).sum(dim=1)
        assert int(nonzero.max()) <= max_taps(source, target, interpolation)


# --- layout -----------------------------------------------------------------------------------


def test_pack_unpack_round_trip() -> None:
    generator = torch.Generator().manual_seed(3)
    images = [
        torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8, generator=generator),
        torch.randint(0, 256, (4, 9, 2), dtype=torch.uint8, generator=generator).transpose(1, 2),
        torch.randint(0, 256, (1, 1, 1), dtype=torch.uint8, generator=generator),
    ]
    shapes = [(int(c), int(h), int(w)) for c, h, w in (image.shape for image in images)]

    packed = layout.pack(images)
    unpacked = layout.unpack(packed, layout.packed_offsets(shapes), shapes)

    assert packed.numel() == sum(image.numel() for image in images)
    assert layout.packed_offsets(shapes) == [0, 105, 177]
    for image, view in zip(images, unpacked, strict=True):
        assert torch.equal(view, image)
        assert view.data_ptr() >= packed.data_ptr()


def test_launch_table_rows() -> None:
    shapes = [(4, 10, 20), (4, 8, 8), (3, 6, 6), (1, 3, 3)]
    specs = [
        ResizeSpec(5, 10, linear=True, background=WHITE),
        ResizeSpec(8, 8, linear=True, background=HALF_BLUE),
        ResizeSpec(12, 3, interpolation=Interpolation.BILINEAR, tint=ORANGE, background=WHITE),
        ResizeSpec(3, 3),
    ]

    table = layout.build_launch_table(shapes, specs, block=16)
    rows = table.rows.reshape(len(shapes), layout.COLUMNS).tolist()

    assert table.result_shapes == ((3, 5, 10), (4, 8, 8), (3, 12, 3), (1, 3, 3))
    assert table.result_offsets == (0, 150, 406, 514)
    assert [row[layout.SCRATCH_OFFSET] for row in rows] == [0, 400, 656, 710]
    # Blocks of 16 pixels: 10 x 10, 8 x 8, 6 x 3 and 3 x 3 pixels in the horizontal pass.
    assert [row[layout.FIRST_HORIZONTAL_BLOCK] for row in rows] == [0, 7, 11, 13]
    assert (table.horizontal_blocks, table.vertical_blocks) == (14, 12)
    assert rows[0][layout.FLAGS] == (
        layout.FLAG_BICUBIC | layout.FLAG_PREMULTIPLY | layout.FLAG_LINEAR | layout.FLAG_FLATTEN
    )
    # Kept size: no premultiplied round trip and no linear light, but still flattened.
    assert rows[1][layout.FLAGS] == layout.FLAG_BICUBIC | layout.FLAG_FLATTEN
    # No alpha, so nothing to flatten.
    assert rows[2][layout.FLAGS] == layout.FLAG_TINT
    assert rows[2][layout.TINT : layout.TINT + 3] == list(ORANGE)
    # Halving the width spreads the cubic over 4 source pixels each side: 2 * 4 + 1 taps.
    assert rows[0][layout.TAPS_X] == 9
    assert rows[2][layout.TAPS_Y] == 3


# --- kernels against the reference --------------------------------------------------------------


@pytest.mark.parametrize("name", list(BATCHES))
def test_kernels_match_reference(device: torch.device, name: str) -> None:
    images, specs = make_batch(name, device)

    actual = resize_batch(images, specs, KernelBackend.TRITON)

    assert_close_to_reference(actual, images, specs)


def test_kernels_keep_size_exactly(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(5)
    images = [
        Image(4, 20, 30, transparent=True).make(generator).to(device),
        Image(3, 1, 1).make(generator).to(device),
        Image(1, 7, 3).make(generator).to(device),
    ]
    specs = [ResizeSpec(20, 30, linear=True), ResizeSpec(1, 1), ResizeSpec(7, 3)]

    actual = resize_batch(images, specs, KernelBackend.TRITON)

    # Colour under alpha 0 survives too, because nothing is premultiplied.
    for image, result in zip(images, actual, strict=True):
        assert torch.equal(result, image)


def test_kernels_leave_input_unchanged(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(6)
    base = Image(4, 40, 30, transparent=True).make(generator).to(device)
    images = [base.transpose(1, 2), base[:3, ::2, ::3]]
    before = [image.clone() for image in images]
    specs = [ResizeSpec(11, 14, tint=ORANGE), ResizeSpec(31, 9, grayscale=True)]

    actual = resize_batch(images, specs, KernelBackend.TRITON)

    assert all(torch.equal(image, copy) for image, copy in zip(images, before, strict=True))
    assert_close_to_reference(actual, images, specs)


def test_empty_batch(device: torch.device) -> None:
    assert resize_batch([], [], KernelBackend.TRITON) == []
    assert resize_batch([], [], KernelBackend.TORCH) == []


def test_verify_kernels_passes(device: torch.device) -> None:
    assert 0 <= verify_kernels(device) <= MAX_LEVEL_DIFFERENCE


def test_verify_kernels_detects_mismatch(
    device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    from darkroom_gpu.kernels import resize

    def shifted(images: list[torch.Tensor], specs: list[ResizeSpec]) -> list[torch.Tensor]:
        return [
            (result.int() + 2).clamp(max=255).to(torch.uint8)
            for result in resize_reference(images, specs)
        ]

    monkeypatch.setattr(resize, "resize_images", shifted)

    with pytest.raises(KernelMismatchError, match="differ from the reference by up to 2 levels"):
        verify_kernels(device)


# --- checks -----------------------------------------------------------------------------------

RGB: Final = torch.zeros(3, 4, 4, dtype=torch.uint8)
INVALID_BATCHES: Final = [
    pytest.param([RGB], [], "expected one per image", id="count"),
    pytest.param(
        [torch.zeros(2, 4, 4, dtype=torch.uint8)], [ResizeSpec(2, 2)], r"C in", id="2 channels"
    ),
    pytest.param([RGB.float()], [ResizeSpec(2, 2)], "dtype uint8", id="float"),
    pytest.param([RGB[0]], [ResizeSpec(2, 2)], r"shape \(C, H, W\)", id="2-d"),
    pytest.param([RGB], [ResizeSpec(0, 2)], "height and width >= 1", id="zero height"),
    pytest.param(
        [RGB], [ResizeSpec(2, 2, grayscale=True, tint=ORANGE)], "not both", id="gray and tint"
    ),
    pytest.param([RGB], [ResizeSpec(2, 2, tint=(0, 0, 256))], "tint", id="tint range"),
    pytest.param(
        [RGB],
        [ResizeSpec(2, 2, background=(0, 0, 0))],  # type: ignore[arg-type]
        "background",
        id="bg count",
    ),
    pytest.param(
        [torch.zeros(1, 4, 4, dtype=torch.uint8)],
        [ResizeSpec(2, 2, grayscale=True)],
        "one channel",
        id="gray colour work",
    ),
]


@pytest.mark.parametrize("backend", list(KernelBackend))
@pytest.mark.parametrize(("images", "specs", "message"), INVALID_BATCHES)
def test_invalid_batch_rejected(
    images: list[torch.Tensor], specs: list[ResizeSpec], message: str, backend: KernelBackend
) -> None:
    # Checked before any kernel runs, so no device or interpreter is needed.
    with pytest.raises(ImageShapeError, match=message):
        resize_batch(images, specs, backend)


# --- the switch -------------------------------------------------------------------------------


def test_resolve_backend_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(dispatch, "triton_importable", lambda: True)
    monkeypatch.setattr(dispatch, "interpreter_enabled", lambda: False)

    assert resolve_backend("torch", cuda) is KernelBackend.TORCH
    assert resolve_backend("auto", cuda) is KernelBackend.TRITON
    assert resolve_backend("auto", cpu) is KernelBackend.TORCH
    assert resolve_backend("triton", cuda) is KernelBackend.TRITON
    with pytest.raises(KernelUnavailableError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", cpu)

    monkeypatch.setattr(dispatch, "interpreter_enabled", lambda: True)
    assert resolve_backend("triton", cpu) is KernelBackend.TRITON
    assert resolve_backend("auto", cpu) is KernelBackend.TORCH


def test_resolve_backend_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "triton_importable", lambda: False)
    cuda = torch.device("cuda", 0)

    assert resolve_backend("auto", cuda) is KernelBackend.TORCH
    with pytest.raises(KernelUnavailableError, match="not installed"):
        resolve_backend("triton", cuda)


def test_resolve_backend_rejects_unknown_choice() -> None:
    with pytest.raises(ValueError, match="'cuda'"):
        resolve_backend("cuda", torch.device("cpu"))


def test_package_import_leaves_triton_kernels_unloaded() -> None:
    # Run in a fresh interpreter, because this one may have loaded the kernels already.
    code = "import sys, darkroom_gpu.kernels; print('darkroom_gpu.kernels.resize' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert output.stdout.strip() == "False"


COMPILE_CHECK: Final = textwrap.dedent(
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from darkroom_gpu.kernels import resize

    pointers = {"rows": "*i64", "count": "i32", "steps": "i32", "BLOCK": "constexpr"}
    signatures = {
        resize._horizontal_pass: {
            "sources": "*u8", "scratch": "*fp32", "decode": "*fp32", **pointers
        },
        resize._vertical_pass: {"scratch": "*fp32", "results": "*u8", **pointers},
    }
    for kernel, signature in signatures.items():
        names = list(kernel.arg_names)
        ordered = {name: signature[name] for name in names}
        source = ASTSource(fn=kernel, signature=ordered, constexprs={"BLOCK": 256})
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
        print(kernel.__name__, len(compiled.asm["cubin"]))
    """
)


@pytest.mark.skipif(not TRITON_INSTALLED, reason="triton is not installed")
def test_kernels_compile_for_cuda() -> None:
    # Compiling to a Hopper (sm_90) binary needs no GPU, and it catches what the interpreter
    # lets pass: type mismatches between branches, and operations the compiler lacks.
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    output = subprocess.run(
        [sys.executable, "-c", COMPILE_CHECK],
        capture_output=True,
        text=True,
        env=environment,
        cwd=Path(__file__).parent.parent,
        timeout=300,
    )
    if "No module named 'triton.backends.nvidia'" in output.stderr:
        pytest.skip("this triton build has no CUDA backend")
    assert output.returncode == 0, output.stderr
    compiled = dict(line.split() for line in output.stdout.splitlines())
    assert set(compiled) == {"_horizontal_pass", "_vertical_pass"}
    assert all(int(size) > 0 for size in compiled.values())
