"""The machine a benchmark runs on: its description, and the CPU time of processes on it.

On a shared machine another program's work steals cores from the target being measured. The
runner waits for the machine to be quiet before each cell and records what other processes
used during it, from ``/proc/stat`` (Linux only).
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import numpy as np
import PIL
import torch

__all__ = ("ProcessTree", "describe_machine", "machine_busy_seconds", "wait_for_quiet")

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
QUIET_SAMPLE_SECONDS: Final = 0.5


@dataclass(frozen=True, slots=True)
class ProcessTree:
    """A process and its descendants, read from ``/proc`` (Linux only).

    Attributes:
        root_pid: the process started by the benchmark; forked workers are found by parent id.
    """

    root_pid: int

    def pids(self) -> list[int]:
        """Return the root and every living descendant."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            stat = _read_stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)] = int(stat[1])
        found = [self.root_pid]
        for pid in found:
            found.extend(child for child, parent in parents.items() if parent == pid)
        return found

    def cpu_seconds(self) -> float:
        """Return the user plus system CPU time of the tree, reaped children included."""
        ticks = 0
        for pid in self.pids():
            stat = _read_stat(pid)
            if stat is not None:
                # utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 11 to 14 here.
                ticks += sum(int(value) for value in stat[11:15])
        return ticks / _CLOCK_TICKS

    def peak_rss_bytes(self) -> int:
        """Return the sum over the tree of each process's peak resident set size (VmHWM).

        Note:
            The peaks of different processes may come at different moments, so with forked
            workers the sum is an upper bound on the peak of the whole tree.
        """
        total = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        return total


def describe_machine() -> dict[str, object]:
    """Return the CPU, memory, GPU and package versions of this machine."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "aiohttp": aiohttp.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_busy_seconds() -> float:
    """Return the CPU time all processes have used since boot, summed over the cores.

    It is the first line of ``/proc/stat``: user, nice, system, irq, softirq and steal time
    (guest time is already inside user time).
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


async def wait_for_quiet(max_cores: float, max_wait_seconds: float) -> float:
    """Wait until processes outside this one's tree use at most `max_cores` CPU cores.

    The load is sampled over `QUIET_SAMPLE_SECONDS` at a time, for at most `max_wait_seconds`.

    Returns:
        The cores that other processes used in the last sample: at most `max_cores` when the
        machine became quiet, more when the wait ran out first.
    """
    own = ProcessTree(os.getpid())
    deadline = time.monotonic() + max_wait_seconds
    while True:
        machine_before = machine_busy_seconds()
        own_before = own.cpu_seconds()
        await asyncio.sleep(QUIET_SAMPLE_SECONDS)
        other = machine_busy_seconds() - machine_before - (own.cpu_seconds() - own_before)
        cores = max(other, 0.0) / QUIET_SAMPLE_SECONDS
        if cores <= max_cores or time.monotonic() >= deadline:
            return cores


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _read_stat(pid: int) -> list[str] | None:
    # Fields after the command name, which is in parentheses and may contain spaces:
    # [0] state, [1] parent pid, ..., [11] utime, [12] stime, [13] cutime, [14] cstime.
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()
