"""Tests for the HTTP benchmark runner, in a tiny mode against real servers on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the charts need the bench extra")

from benchmarks import run
from benchmarks.quality import psnr, render_reference, ssim
from benchmarks.workloads import REFERENCES, WORKLOADS

CELL_FIELDS = {
    "target",
    "workload",
    "concurrency",
    "requests",
    "errors",
    "requests_per_second",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "server_cpu_seconds",
    "peak_rss_mib",
}
TINY_ARGUMENTS = ["--workloads", "W1", "--concurrency", "1,2", "--duration", "0.3"]
TINY_ARGUMENTS += ["--max-requests", "4", "--name", "tiny", "--quiet-wait", "0"]


def test_runner_writes_json_markdown_and_charts(tmp_path: Path) -> None:
    exit_code = run.main(
        [*TINY_ARGUMENTS, "--targets", "darkroom,inprocess", "--out", str(tmp_path)]
    )

    assert exit_code == 0
    report = json.loads((tmp_path / "tiny.json").read_text())
    assert report["failures"] == []
    assert {cell["target"] for cell in report["cells"]} == {"darkroom-gpu cpu", "in-process cpu"}
    assert {cell["concurrency"] for cell in report["cells"]} == {1, 2}
    for cell in report["cells"]:
        assert CELL_FIELDS <= cell.keys()
        assert cell["workload"] == "W1 thumbnail"
        assert cell["requests"] > 0
        assert cell["errors"] == 0
        assert cell["server_cpu_seconds"] > 0
    for row in report["quality"]:
        assert (row["result_width"], row["result_height"]) == (300, 225)
        assert row["ssim"] > 0.8
    overhead = report["summary"]["http_overhead"]["darkroom-gpu cpu"]
    assert [entry["concurrency"] for entry in overhead] == [1, 2]
    assert report["summary"]["throughput_vs_thumbor"] == []

    markdown = (tmp_path / "tiny.md").read_text()
    assert "| W1 thumbnail | 1 | darkroom-gpu cpu |" in markdown
    assert "HTTP overhead of darkroom-gpu cpu" in markdown
    for chart in ("tiny-throughput.png", "tiny-latency.png"):
        assert (tmp_path / chart).read_bytes().startswith(b"\x89PNG")
        assert f"]({chart})" in markdown


def test_runner_compares_thumbor(tmp_path: Path) -> None:
    thumbor = run.DEFAULT_THUMBOR_VENV / "bin" / "thumbor"
    if not thumbor.exists():
        pytest.skip(f"thumbor is not installed at {thumbor}; a full benchmark run installs it")

    exit_code = run.main(
        [*TINY_ARGUMENTS, "--targets", "darkroom,thumbor", "--out", str(tmp_path), "--no-charts"]
    )

    assert exit_code == 0
    report = json.loads((tmp_path / "tiny.json").read_text())
    assert {cell["target"] for cell in report["cells"]} == {"darkroom-gpu cpu", "thumbor"}
    assert [entry["concurrency"] for entry in report["summary"]["throughput_vs_thumbor"]] == [1, 2]
    assert report["summary"]["ssim_vs_thumbor"][0]["workload"] == "W1 thumbnail"
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    ("key", "width", "height"),
    [("W1", 300, 225), ("W2", 800, 800), ("W3", 1200, 800), ("W4", 1200, 800), ("W5", 800, 600)],
)
def test_reference_size_follows_url_api(key: str, width: int, height: int) -> None:
    workload = next(workload for workload in WORKLOADS if workload.key == key)

    reference = render_reference(workload.path, REFERENCES[key])

    assert reference.shape == (height, width, 3)


def test_ssim_and_psnr_of_equal_and_noisy_images() -> None:
    generator = np.random.default_rng(7)
    image = generator.integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    noise = generator.integers(-20, 21, size=image.shape)
    noisy = np.clip(image.astype(np.int64) + noise, 0, 255).astype(np.uint8)

    assert ssim(image, image) == pytest.approx(1.0)
    assert psnr(image, image) == float("inf")
    assert 0 < ssim(image, noisy) < 0.99
    assert 20 < psnr(image, noisy) < 30
