"""PNG charts of a report: throughput and latency percentiles against concurrency, per workload.

The figures are built with matplotlib's object API rather than pyplot, so no backend or display
is chosen and no global figure state is kept.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.typing import LineStyleType
from PIL import Image

from benchmarks.load import DISTURBANCE_CORES, Cell

__all__ = ("write_charts",)

DPI: Final = 100
PALETTE_COLOURS: Final = 64
PANEL_INCHES: Final = (4.2, 3.2)
MAX_COLUMNS: Final = 3
# Colour-blind-safe colours (Okabe and Ito), one per target in order of appearance.
COLOURS: Final = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
# Cell field, legend label and line style of each latency percentile.
PERCENTILE_STYLES: Final[tuple[tuple[str, str, LineStyleType], ...]] = (
    ("p50_ms", "p50", "-"),
    ("p95_ms", "p95", "--"),
    ("p99_ms", "p99", ":"),
)


def write_charts(cells: Sequence[Cell], out: Path, name: str, title: str) -> list[Path]:
    """Draw ``<name>-throughput.png`` and ``<name>-latency.png`` into `out`.

    Args:
        cells: the measured cells.
        out: the folder to write into.
        name: prefix of the file names.
        title: the first line of each figure's title (machine and date, say).

    Returns:
        The paths written; none when `cells` is empty.
    """
    if not cells:
        return []
    out.mkdir(parents=True, exist_ok=True)
    targets = list(dict.fromkeys(cell.target for cell in cells))
    colours = {target: COLOURS[index % len(COLOURS)] for index, target in enumerate(targets)}
    workloads = sorted({cell.workload for cell in cells})

    throughput_path = out / f"{name}-throughput.png"
    figure, panels, legend_panel = _grid(len(workloads))
    figure.suptitle(f"{title}\nthroughput (successful requests per second, higher is better)")
    for panel, workload in zip(panels, workloads, strict=False):
        for target in targets:
            rows = _rows(cells, target, workload)
            if rows:
                panel.plot(
                    [row.concurrency for row in rows],
                    [row.requests_per_second for row in rows],
                    marker="o",
                    color=colours[target],
                )
                disturbed = [row for row in rows if row.disturbed]
                panel.plot(
                    [row.concurrency for row in disturbed],
                    [row.requests_per_second for row in disturbed],
                    linestyle="",
                    marker="o",
                    markerfacecolor="white",
                    color=colours[target],
                )
        _format_panel(panel, workload, "requests/s", cells)
        panel.set_ylim(bottom=0)
    handles = [Line2D([], [], color=colours[target], marker="o") for target in targets]
    labels = list(targets)
    if any(cell.disturbed for cell in cells):
        handles.append(
            Line2D([], [], color="black", linestyle="", marker="o", markerfacecolor="white")
        )
        labels.append(f"other processes used\nover {DISTURBANCE_CORES} cores")
    legend_panel.legend(handles, labels, loc="center", frameon=False, title="target")
    _save(figure, throughput_path)

    latency_path = out / f"{name}-latency.png"
    figure, panels, legend_panel = _grid(len(workloads))
    figure.suptitle(f"{title}\nlatency percentiles (ms, log scale, lower is better)")
    for panel, workload in zip(panels, workloads, strict=False):
        for target in targets:
            rows = _rows(cells, target, workload)
            for field, _, style in PERCENTILE_STYLES:
                points = [
                    (row.concurrency, getattr(row, field))
                    for row in rows
                    if math.isfinite(getattr(row, field)) and getattr(row, field) > 0
                ]
                if points:
                    panel.plot(
                        [concurrency for concurrency, _ in points],
                        [value for _, value in points],
                        linestyle=style,
                        marker="o" if style == "-" else None,
                        markersize=3,
                        color=colours[target],
                    )
            disturbed = [row for row in rows if row.disturbed and row.p50_ms > 0]
            panel.plot(
                [row.concurrency for row in disturbed],
                [row.p50_ms for row in disturbed],
                linestyle="",
                marker="o",
                markersize=5,
                markerfacecolor="white",
                color=colours[target],
            )
        _format_panel(panel, workload, "ms", cells)
        panel.set_yscale("log")
        # Plain numbers at 1, 2 and 5 times each power of ten read better than 10^n labels.
        panel.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        panel.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        panel.yaxis.set_minor_formatter(NullFormatter())
    handles = [Line2D([], [], color=colours[target]) for target in targets]
    handles += [Line2D([], [], color="black", linestyle=style) for _, _, style in PERCENTILE_STYLES]
    labels = targets + [label for _, label, _ in PERCENTILE_STYLES]
    if any(cell.disturbed for cell in cells):
        handles.append(
            Line2D([], [], color="black", linestyle="", marker="o", markerfacecolor="white")
        )
        labels.append(f"p50 while other processes\nused over {DISTURBANCE_CORES} cores")
    legend_panel.legend(handles, labels, loc="center", frameon=False, title="target / percentile")
    _save(figure, latency_path)
    return [throughput_path, latency_path]


def _grid(panel_count: int) -> tuple[Figure, list[Axes], Axes]:
    # One panel per workload plus one for the legend.
    columns = min(MAX_COLUMNS, panel_count + 1)
    rows = math.ceil((panel_count + 1) / columns)
    figure = Figure(figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    flat: list[Axes] = [axis for row in axes for axis in row]
    for unused in flat[panel_count + 1 :]:
        unused.set_axis_off()
    legend_panel = flat[panel_count]
    legend_panel.set_axis_off()
    return figure, flat[:panel_count], legend_panel


def _rows(cells: Sequence[Cell], target: str, workload: str) -> list[Cell]:
    rows = [cell for cell in cells if cell.target == target and cell.workload == workload]
    return sorted(rows, key=lambda cell: cell.concurrency)


def _format_panel(panel: Axes, workload: str, unit: str, cells: Sequence[Cell]) -> None:
    levels = sorted({cell.concurrency for cell in cells})
    panel.set_title(workload)
    panel.set_xscale("log", base=2)
    panel.set_xticks(levels, [str(level) for level in levels])
    panel.minorticks_off()
    panel.set_xlabel("concurrent clients")
    panel.set_ylabel(unit)
    panel.grid(visible=True, which="major", alpha=0.3)


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    # A palette of PALETTE_COLOURS keeps the lines and text sharp at about a quarter of the size
    # of the 32-bit PNG that matplotlib writes (211 KB against 52 KB for a latency chart).
    with Image.open(buffer) as rendered:
        palette_image = rendered.convert("RGB").quantize(colors=PALETTE_COLOURS)
    palette_image.save(path, optimize=True)
