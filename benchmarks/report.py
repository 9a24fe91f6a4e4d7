"""The benchmark report: the targets' verdicts, JSON and a Markdown summary.

Two comparisons are computed from the measured cells:

- throughput ratio: darkroom-gpu requests per second over thumbor's, per workload at the same
  concurrency, and their geometric mean over the workloads;
- HTTP overhead: in-process requests per second over the same manipulator's behind HTTP, minus
  one, which is the extra time per image that the server adds (0.08 means 8 % more).

Both are also computed from CPU time per image instead of throughput, which other processes
on a shared machine disturb far less.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, cast

from benchmarks.load import Cell

__all__ = (
    "DARKROOM_CPU",
    "DARKROOM_CUDA",
    "IN_PROCESS_CPU",
    "IN_PROCESS_CUDA",
    "OVERHEAD_TARGET",
    "SSIM_TOLERANCE",
    "THROUGHPUT_TARGET",
    "THUMBOR",
    "Comparison",
    "QualityComparison",
    "QualityRow",
    "Report",
    "Summary",
    "cpu_efficiency_ratios",
    "geometric_mean",
    "render_markdown",
    "summarize",
    "throughput_ratios",
    "write_report",
)

DARKROOM_CPU: Final = "darkroom-gpu cpu"
DARKROOM_CUDA: Final = "darkroom-gpu cuda"
THUMBOR: Final = "thumbor"
IN_PROCESS_CPU: Final = "in-process cpu"
IN_PROCESS_CUDA: Final = "in-process cuda"
# darkroom-gpu's CPU throughput over thumbor's, geometric mean over the workloads.
THROUGHPUT_TARGET: Final = 1.5
# The server's extra time per image over the in-process manipulator, as a fraction.
OVERHEAD_TARGET: Final = 0.10
# SSIM differences smaller than this count as equal quality. It is a chosen tolerance, not a
# measured noise level.
SSIM_TOLERANCE: Final = 0.005
# (server, in-process baseline) pairs whose HTTP overhead is reported.
OVERHEAD_PAIRS: Final = ((DARKROOM_CPU, IN_PROCESS_CPU), (DARKROOM_CUDA, IN_PROCESS_CUDA))


@dataclass(frozen=True, slots=True)
class QualityRow:
    """One target's output for one workload, compared with the Pillow reference.

    Attributes:
        target: the server or in-process manipulator.
        workload: key and name, such as ``W1 thumbnail``.
        ssim: mean SSIM against the reference, or ``None`` when the sizes differ.
        psnr_db: PSNR in decibels, or ``None`` when the sizes differ or the images are equal.
        result_width: width of the decoded result in pixels; result_height likewise.
        reference_width: width of the reference in pixels; reference_height likewise.
        result_format: the response's ``Content-Type``, or the format of an in-process result.
        result_bytes: size of the encoded result.
    """

    target: str
    workload: str
    ssim: float | None
    psnr_db: float | None
    result_width: int
    result_height: int
    reference_width: int
    reference_height: int
    result_format: str
    result_bytes: int


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two targets compared at one concurrency, per workload and over all workloads.

    Attributes:
        concurrency: closed-loop clients.
        per_workload: the ratio or overhead per workload.
        aggregate: the geometric mean of throughput ratios, or the maximum overhead.
        met: whether `aggregate` meets its target.
    """

    concurrency: int
    per_workload: dict[str, float]
    aggregate: float | None
    met: bool


@dataclass(frozen=True, slots=True)
class QualityComparison:
    """darkroom-gpu's SSIM against thumbor's for one workload.

    Attributes:
        workload: key and name.
        difference: darkroom-gpu's SSIM minus thumbor's.
        equal_or_better: whether the difference is above ``-SSIM_TOLERANCE``.
    """

    workload: str
    difference: float
    equal_or_better: bool


@dataclass(frozen=True, slots=True)
class Summary:
    """The comparisons behind the targets.

    Attributes:
        throughput_vs_thumbor: darkroom-gpu CPU over thumbor, one entry per concurrency.
        cpu_efficiency_vs_thumbor: the same for images per CPU-second of the server processes.
        ssim_vs_thumbor: one entry per workload that both were scored on.
        http_overhead: per HTTP server, one entry per concurrency: extra time per image.
        http_cpu_overhead: the same for the server's CPU time per image; the load generator's
            CPU time is not part of it.
    """

    throughput_vs_thumbor: list[Comparison]
    cpu_efficiency_vs_thumbor: list[Comparison]
    ssim_vs_thumbor: list[QualityComparison]
    http_overhead: dict[str, list[Comparison]]
    http_cpu_overhead: dict[str, list[Comparison]]


@dataclass(slots=True)
class Report:
    """Everything one run measured.

    Attributes:
        header: the run's description: name, date, command, machine and settings.
        cells: the measured cells, in the order they ran.
        quality: each target's first result per workload against its reference.
        commands: the command line of each server, by target.
        notes: facts a reader of the results needs, such as a skipped GPU target.
        failures: targets or requests that failed; the run exits 1 when there are any.
    """

    header: dict[str, object]
    cells: list[Cell] = field(default_factory=list)
    quality: list[QualityRow] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """Return the report as JSON-ready data, with the summary and no NaN or infinity."""
        data: dict[str, object] = {
            **self.header,
            "commands": self.commands,
            "notes": self.notes,
            "failures": self.failures,
            "summary": asdict(summarize(self.cells, self.quality)),
            "cells": [asdict(cell) for cell in self.cells],
            "quality": [asdict(row) for row in self.quality],
        }
        return cast("dict[str, object]", _finite(data))


def geometric_mean(values: Iterable[float]) -> float | None:
    """Return the geometric mean of positive `values`, or ``None`` if there are none."""
    logs = [math.log(value) for value in values if value > 0]
    return math.exp(sum(logs) / len(logs)) if logs else None


def throughput_ratios(
    cells: Sequence[Cell], numerator: str, denominator: str
) -> dict[int, dict[str, float]]:
    """Return numerator over denominator throughput by concurrency, then by workload."""
    return _ratios(cells, numerator, denominator, lambda cell: cell.requests_per_second)


def cpu_efficiency_ratios(
    cells: Sequence[Cell], numerator: str, denominator: str
) -> dict[int, dict[str, float]]:
    """Return numerator over denominator images per CPU-second, by concurrency and workload.

    This is the throughput ratio the two would reach when each has the same cores to itself and
    keeps them busy, and it is far less sensitive than throughput to other processes on the
    machine. It is an estimate: it leaves out how well each spreads its work over the cores.
    """
    return _ratios(cells, numerator, denominator, _images_per_cpu_second)


def summarize(cells: Sequence[Cell], quality: Sequence[QualityRow]) -> Summary:
    """Compute the comparisons behind the targets and whether each was met."""
    ssim = {(row.target, row.workload): row.ssim for row in quality}
    ssim_versus_thumbor = []
    for (target, workload), value in ssim.items():
        other = ssim.get((THUMBOR, workload))
        if target == DARKROOM_CPU and value is not None and other is not None:
            ssim_versus_thumbor.append(
                QualityComparison(
                    workload=workload,
                    difference=round(value - other, 4),
                    equal_or_better=value >= other - SSIM_TOLERANCE,
                )
            )

    overhead: dict[str, list[Comparison]] = {}
    cpu_overhead: dict[str, list[Comparison]] = {}
    for server, baseline in OVERHEAD_PAIRS:
        for destination, ratios in (
            (overhead, throughput_ratios(cells, baseline, server)),
            (cpu_overhead, cpu_efficiency_ratios(cells, baseline, server)),
        ):
            comparisons = _overheads(ratios)
            if comparisons:
                destination[server] = comparisons
    return Summary(
        throughput_vs_thumbor=_speedups(throughput_ratios(cells, DARKROOM_CPU, THUMBOR)),
        cpu_efficiency_vs_thumbor=_speedups(cpu_efficiency_ratios(cells, DARKROOM_CPU, THUMBOR)),
        ssim_vs_thumbor=ssim_versus_thumbor,
        http_overhead=overhead,
        http_cpu_overhead=cpu_overhead,
    )


def _ratios(
    cells: Sequence[Cell], numerator: str, denominator: str, value: Callable[[Cell], float]
) -> dict[int, dict[str, float]]:
    # Only cells that both targets measured, with a positive value, are compared.
    values = {(cell.target, cell.workload, cell.concurrency): value(cell) for cell in cells}
    ratios: dict[int, dict[str, float]] = {}
    for cell in cells:
        if cell.target != numerator:
            continue
        other = values.get((denominator, cell.workload, cell.concurrency), 0.0)
        if other > 0 and value(cell) > 0:
            ratios.setdefault(cell.concurrency, {})[cell.workload] = round(value(cell) / other, 3)
    return ratios


def _images_per_cpu_second(cell: Cell) -> float:
    milliseconds = cell.server_cpu_ms_per_request
    return 1000 / milliseconds if milliseconds > 0 else 0.0


def _speedups(ratios: dict[int, dict[str, float]]) -> list[Comparison]:
    comparisons = []
    for concurrency, per_workload in sorted(ratios.items()):
        mean = geometric_mean(per_workload.values())
        comparisons.append(
            Comparison(
                concurrency=concurrency,
                per_workload=per_workload,
                aggregate=round(mean, 3) if mean is not None else None,
                met=mean is not None and mean >= THROUGHPUT_TARGET,
            )
        )
    return comparisons


def _overheads(ratios: dict[int, dict[str, float]]) -> list[Comparison]:
    # A baseline-over-server ratio r means the server takes r - 1 more time (or CPU) per image.
    comparisons = []
    for concurrency, per_workload in sorted(ratios.items()):
        extra = {workload: round(ratio - 1, 3) for workload, ratio in per_workload.items()}
        worst = max(extra.values())
        comparisons.append(
            Comparison(
                concurrency=concurrency,
                per_workload=extra,
                aggregate=worst,
                met=worst < OVERHEAD_TARGET,
            )
        )
    return comparisons


def render_markdown(report: Report, charts: Sequence[Path] = ()) -> str:
    """Render the report as Markdown: the run, the cells, the quality and the targets."""
    lines = [f"# darkroom-gpu HTTP benchmark: {report.header.get('name', '')}", ""]
    for key in ("date", "command", "machine", "settings"):
        if key in report.header:
            lines.append(f"- {key}: `{json.dumps(report.header[key], sort_keys=True)}`")
    lines += [f"- command of {name}: `{command}`" for name, command in report.commands.items()]
    lines += [f"- note: {note}" for note in report.notes]
    lines += [f"- FAILURE: {failure}" for failure in report.failures]
    lines += ["", "## Throughput and latency", ""]
    lines += _cell_table(report.cells)
    lines += ["", "## Output quality against the Pillow reference", ""]
    lines += _quality_table(report.quality)
    lines += ["", "## Targets", ""]
    lines += _target_lines(summarize(report.cells, report.quality))
    if charts:
        lines += ["", "## Charts", ""]
        lines += [f"![{chart.stem}]({chart.name})" for chart in charts]
    return "\n".join(lines) + "\n"


def write_report(report: Report, out: Path, name: str, charts: Sequence[Path] = ()) -> list[Path]:
    """Write ``<name>.json`` and ``<name>.md`` into `out` and return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    markdown_path = out / f"{name}.md"
    markdown_path.write_text(render_markdown(report, charts))
    return [json_path, markdown_path]


def _cell_table(cells: Sequence[Cell]) -> list[str]:
    # "other cores": CPU cores that processes outside the measurement used during the cell.
    lines = [
        "| workload | clients | target | req/s | p50 ms | p95 ms | p99 ms | errors "
        "| server CPU ms/req | peak RSS MiB | other cores |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ordered = sorted(cells, key=lambda cell: (cell.workload, cell.concurrency))
    for cell in ordered:
        lines.append(
            f"| {cell.workload} | {cell.concurrency} | {cell.target} "
            f"| {cell.requests_per_second:.1f} | {cell.p50_ms:.0f} | {cell.p95_ms:.0f} "
            f"| {cell.p99_ms:.0f} | {cell.errors} | {cell.server_cpu_ms_per_request:.0f} "
            f"| {cell.peak_rss_mib:.0f} | {cell.other_cores:.2f} |"
        )
    return lines


def _quality_table(rows: Sequence[QualityRow]) -> list[str]:
    lines = [
        "| workload | target | SSIM | PSNR dB | result | reference | format | bytes |",
        "| --- | --- | ---: | ---: | --- | --- | --- | ---: |",
    ]
    for row in sorted(rows, key=lambda row: row.workload):
        ssim = f"{row.ssim:.4f}" if row.ssim is not None else "size differs"
        psnr = f"{row.psnr_db:.2f}" if row.psnr_db is not None else "-"
        lines.append(
            f"| {row.workload} | {row.target} | {ssim} | {psnr} "
            f"| {row.result_width}x{row.result_height} "
            f"| {row.reference_width}x{row.reference_height} | {row.result_format} "
            f"| {row.result_bytes} |"
        )
    return lines


def _target_lines(summary: Summary) -> list[str]:
    lines: list[str] = []
    speedups = (
        (summary.throughput_vs_thumbor, "Throughput"),
        (summary.cpu_efficiency_vs_thumbor, "Images per CPU-second of the server processes"),
    )
    for comparisons, measure in speedups:
        if comparisons:
            lines += _comparison_table(
                f"{measure} of {DARKROOM_CPU} over {THUMBOR}'s (target: geometric mean at least "
                f"{THROUGHPUT_TARGET}):",
                "geometric mean",
                comparisons,
                "{:.2f}",
            )
    if summary.ssim_vs_thumbor:
        differences = ", ".join(
            f"{_key(entry.workload)} {entry.difference:+.4f}"
            f" ({'equal or better' if entry.equal_or_better else 'worse'})"
            for entry in summary.ssim_vs_thumbor
        )
        lines += [
            f"SSIM of {DARKROOM_CPU} minus {THUMBOR}'s (equal within {SSIM_TOLERANCE}): "
            f"{differences}",
            "",
        ]
    overheads = (
        (summary.http_overhead, "time per image (in-process throughput over the server's)"),
        (summary.http_cpu_overhead, "server CPU time per image over the in-process CPU time"),
    )
    for per_server, measure in overheads:
        for server, comparisons in per_server.items():
            lines += _comparison_table(
                f"HTTP overhead of {server}, extra {measure} (target: under "
                f"{OVERHEAD_TARGET:.0%} for every workload):",
                "max",
                comparisons,
                "{:+.1%}",
            )
    return lines or ["No target could be evaluated: a compared target was not measured."]


def _comparison_table(
    title: str, aggregate: str, comparisons: Sequence[Comparison], number_format: str
) -> list[str]:
    lines = [
        title,
        "",
        f"| clients | per workload | {aggregate} | met |",
        "| ---: | --- | ---: | --- |",
    ]
    for comparison in comparisons:
        value = "-" if comparison.aggregate is None else number_format.format(comparison.aggregate)
        lines.append(
            f"| {comparison.concurrency} | {_per_workload(comparison, number_format)} "
            f"| {value} | {'yes' if comparison.met else 'no'} |"
        )
    return [*lines, ""]


def _per_workload(comparison: Comparison, number_format: str) -> str:
    return ", ".join(
        f"{_key(workload)} {number_format.format(value)}"
        for workload, value in comparison.per_workload.items()
    )


def _key(workload: str) -> str:
    # "W1 thumbnail" -> "W1"
    return workload.split()[0]


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
