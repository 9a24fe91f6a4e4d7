"""The short, fixed-seed part of the fuzzers; ``python -m benchmarks.fuzz`` runs the long one.

Together these take about 20 s on a 2-core machine: 2000 mutated images through the codecs
and the CPU manipulator, and a schemathesis run against a server started on 127.0.0.1.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Final

from benchmarks.fuzz import DEFAULT_SEED, fuzz_api, fuzz_images, mutate, seed_corpus
from darkroom_gpu import codecs

IMAGE_CASES: Final = 2000
API_EXAMPLES: Final = 20
# Hard bounds, far above the usual run times, so a regression that slows fuzzing fails here
# instead of stalling the suite.
IMAGE_SECONDS: Final = 90.0
API_SECONDS: Final = 120.0


def test_seed_corpus_is_valid() -> None:
    seeds = seed_corpus()
    formats = {codecs.sniff(seed.data) for seed in seeds}

    assert len(seeds) >= 19
    assert all(codecs.probe(seed.data).size.width > 0 for seed in seeds)
    assert formats >= {
        codecs.ImageFormat.JPEG,
        codecs.ImageFormat.PNG,
        codecs.ImageFormat.GIF,
        codecs.ImageFormat.WEBP,
        codecs.ImageFormat.TIFF,
        codecs.ImageFormat.BMP,
    }


def test_mutate_repeats_with_seed() -> None:
    data = seed_corpus()[0].data

    first = [mutate(data, random.Random(7)) for _ in range(3)]
    second = [mutate(data, random.Random(7)) for _ in range(3)]

    assert first == second
    assert all(mutated != data for mutated, _ in first)


async def test_mutated_images_only_client_errors(tmp_path: Path) -> None:
    report = await fuzz_images(
        IMAGE_CASES, seed=DEFAULT_SEED, crash_dir=tmp_path, max_seconds=IMAGE_SECONDS
    )

    assert report.failures == []
    assert report.stopped_early is None
    assert report.cases == IMAGE_CASES
    # Each outcome occurs, so the mutations neither all break nor all spare the files.
    assert report.outcomes["ok"] > 0
    assert report.outcomes["415"] > 0
    assert report.outcomes["422"] > 0


def test_api_fuzz_no_server_error(tmp_path: Path) -> None:
    report = fuzz_api(API_EXAMPLES, seed=DEFAULT_SEED, work=tmp_path, max_seconds=API_SECONDS)

    assert report.failures == [], (tmp_path / "schemathesis.log").read_text()
    assert report.exit_code == 0
    assert report.operations == 5
    assert report.cases > 100
