"""PngSuite conformance: every valid file decodes to its reference pixels, every broken one fails.

The reference pixels are the upstream JSON values, packed by ``data/pngsuite/make_expected.py``.
Names starting with ``x`` are deliberately corrupt files. The server must reject them with 415
or 422, never 500 and never an image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pytest

from darkroom_gpu.codecs import decode
from tests.conftest import DATA, ClientFactory, open_image, source_settings

SUITE: Final = DATA / "pngsuite"
PNG_FOLDER: Final = SUITE / "png"
EXPECTED: Final[dict[str, npt.NDArray[np.unsignedinteger]]] = dict(np.load(SUITE / "expected.npz"))
VALID: Final = sorted(
    path.stem for path in PNG_FOLDER.glob("*.png") if not path.stem.startswith("x")
)
BROKEN: Final = sorted(path.stem for path in PNG_FOLDER.glob("x*.png"))
SIXTEEN_BIT: Final = [name for name in VALID if EXPECTED[name].dtype == np.uint16]
# Pairs of files with the same pixels, stored without and with Adam7 interlacing.
INTERLACE_PAIRS: Final = [
    (name, interlaced)
    for name in VALID
    if name[3] == "n" and (interlaced := f"{name[:3]}i{name[4:]}") in VALID
]
MAX_PIXELS: Final = 1_000_000

# Largest difference, in 8-bit levels, from the reference pixels. One level allows for the
# rounding of 16-bit samples, which the upstream 8-bit copies may do differently.
LEVEL_TOLERANCE: Final = 1
# 16-bit files must match round(v / 257) of the 16-bit reference exactly.
SIXTEEN_BIT_TOLERANCE: Final = 0
BROKEN_STATUSES: Final = (415, 422)


def decoded_rgba(name: str) -> npt.NDArray[np.int64]:
    """Decode a suite file and return its pixels as (H * W * 4,) RGBA, opaque when RGB."""
    pixels = decode((PNG_FOLDER / f"{name}.png").read_bytes(), max_pixels=MAX_PIXELS).pixels
    array = pixels.permute(1, 2, 0).numpy().astype(np.int64)
    if array.shape[2] == 3:
        array = np.dstack([array, np.full(array.shape[:2], 255)])
    return array.reshape(-1)


def reference_eight_bit(name: str) -> npt.NDArray[np.int64]:
    """Return the 8-bit reference: the ``_to8`` copy for 16-bit files where there is one."""
    if f"{name}_to8" in EXPECTED:
        return EXPECTED[f"{name}_to8"].astype(np.int64)
    values = EXPECTED[name].astype(np.int64)
    if EXPECTED[name].dtype == np.uint16:
        return np.round(values / 257).astype(np.int64)
    return values


def test_suite_is_complete() -> None:
    assert len(VALID) == 161
    assert len(BROKEN) == 14
    assert all(name in EXPECTED for name in VALID)


@pytest.mark.parametrize("name", VALID)
def test_valid_file_matches_reference(name: str) -> None:
    actual = decoded_rgba(name)
    expected = reference_eight_bit(name)

    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= LEVEL_TOLERANCE


@pytest.mark.parametrize("name", SIXTEEN_BIT)
def test_sixteen_bit_rounds_to_nearest(name: str) -> None:
    actual = decoded_rgba(name)
    expected = np.round(EXPECTED[name].astype(np.int64) / 257).astype(np.int64)

    assert np.abs(actual - expected).max() <= SIXTEEN_BIT_TOLERANCE


@pytest.mark.parametrize("name", BROKEN)
@pytest.mark.parametrize("query", ["w=16", "format=webp"])
async def test_broken_file_is_rejected(make_client: ClientFactory, name: str, query: str) -> None:
    client = await make_client(source_settings(PNG_FOLDER))

    response = await client.get(f"/{name}.png?{query}")
    body = await response.json()

    assert response.status in BROKEN_STATUSES
    assert body["error"]["status"] == response.status


@pytest.mark.parametrize(
    ("plain", "interlaced"),
    [
        pytest.param(plain, interlaced, id=plain[:3] + plain[4:])
        for plain, interlaced in INTERLACE_PAIRS
    ],
)
async def test_interlaced_gives_same_output(
    make_client: ClientFactory, plain: str, interlaced: str
) -> None:
    client = await make_client(source_settings(PNG_FOLDER))

    first = await client.get(f"/{plain}.png?w=20&format=png")
    second = await client.get(f"/{interlaced}.png?w=20&format=png")

    assert first.status == 200
    assert second.status == 200
    assert np.array_equal(
        np.asarray(open_image(await first.read())), np.asarray(open_image(await second.read()))
    )


def test_interlace_pairs_found() -> None:
    # basn/basi in 15 colour types and bit depths, and s01n/s01i to s40n/s40i in 18 sizes.
    assert len(INTERLACE_PAIRS) == 33


def test_license_copied() -> None:
    assert Path(SUITE / "LICENSE").read_text().startswith("PngSuite")
