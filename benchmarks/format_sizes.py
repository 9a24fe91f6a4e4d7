"""Measure how large photos become when converted from JPEG to WebP and AVIF.

The default qualities in ``darkroom_gpu/codecs/encode.py`` are chosen so that a typical photo
converted to WebP or AVIF is not larger than its JPEG source. This script produces the numbers
behind that choice. It takes two 512x512 crops of each bundled sample and saves them as JPEG at
qualities 75, 80 and 90. For each it prints the JPEG size and the sizes after decoding and
re-encoding as WebP and AVIF at several qualities, and at the end the range of savings at the
default qualities.

    python -m benchmarks.format_sizes
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

from PIL import Image

from darkroom_gpu.codecs import default_quality
from darkroom_gpu.options import OutputFormat

SAMPLES: Final = Path(__file__).parent.parent / "darkroom_gpu" / "samples"
SOURCE_QUALITIES: Final = (75, 80, 90)
WEBP_QUALITIES: Final = (70, 75, 80)
AVIF_QUALITIES: Final = (45, 50, 55, 60)
CROP: Final = 512


def encoded_size(image: Image.Image, pillow_format: str, quality: int) -> int:
    """Return the size in bytes of `image` saved in `pillow_format` at `quality`."""
    buffer = io.BytesIO()
    image.save(buffer, pillow_format, quality=quality)
    return len(buffer.getvalue())


def main() -> None:
    """Print one line per crop and source quality, then the savings at the defaults."""
    webp_default = default_quality(OutputFormat.WEBP, compress=False)
    avif_default = default_quality(OutputFormat.AVIF, compress=False)
    webp_savings: list[float] = []
    avif_savings: list[float] = []
    header = "photo, crop centre, JPEG quality, JPEG bytes"
    print(f"{header} | WebP at {WEBP_QUALITIES} | AVIF at {AVIF_QUALITIES}")
    for path in sorted(SAMPLES.glob("*.jpg")):
        photo = Image.open(path).convert("RGB")
        width, height = photo.size
        for centre_x, centre_y in (
            (width // 2, height // 2),
            (width // 4 + 128, height // 4 + 128),
        ):
            half = CROP // 2
            crop = photo.crop((centre_x - half, centre_y - half, centre_x + half, centre_y + half))
            for source_quality in SOURCE_QUALITIES:
                buffer = io.BytesIO()
                crop.save(buffer, "JPEG", quality=source_quality)
                source = len(buffer.getvalue())
                decoded = Image.open(buffer).convert("RGB")
                webp = {q: encoded_size(decoded, "WEBP", q) for q in WEBP_QUALITIES}
                avif = {q: encoded_size(decoded, "AVIF", q) for q in AVIF_QUALITIES}
                webp_savings.append(1 - encoded_size(decoded, "WEBP", webp_default) / source)
                avif_savings.append(1 - encoded_size(decoded, "AVIF", avif_default) / source)
                print(
                    f"{path.name}, ({centre_x}, {centre_y}), {source_quality}, {source} | "
                    f"{list(webp.values())} | {list(avif.values())}"
                )
    print(f"WebP at {webp_default}: {min(webp_savings):.0%} to {max(webp_savings):.0%} smaller")
    print(f"AVIF at {avif_default}: {min(avif_savings):.0%} to {max(avif_savings):.0%} smaller")


if __name__ == "__main__":
    main()
