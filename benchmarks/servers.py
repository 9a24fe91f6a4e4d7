"""Start the servers under test on 127.0.0.1, wait until they are ready, measure their processes.

darkroom-gpu runs from this environment's console script. thumbor runs from a virtual
environment of its own (``benchmarks/.venv-thumbor`` by default), created and filled from PyPI
on first use, because its pinned dependencies (an older Pillow among them) must not change
this project's environment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import aiohttp

from benchmarks.machine import ProcessTree
from benchmarks.workloads import QUALITY

__all__ = (
    "THUMBOR_VERSION",
    "ServerProcess",
    "ServerStartError",
    "ensure_thumbor",
    "free_port",
    "start_darkroom",
    "start_thumbor",
)

THUMBOR_VERSION: Final = "7.8.0"
READY_TIMEOUT_SECONDS: Final = 120.0
READY_POLL_SECONDS: Final = 0.2
STOP_TIMEOUT_SECONDS: Final = 10.0
INSTALL_TIMEOUT_SECONDS: Final = 600.0


class ServerStartError(RuntimeError):
    """A server under test could not be installed, started or made ready."""


@dataclass(slots=True)
class ServerProcess:
    """A running server: its process, base URL and log file.

    Attributes:
        name: label of the server in the report.
        base_url: ``http://127.0.0.1:<port>``.
        command: the command line it was started with.
        process: the started process, the leader of its own process group.
        log_path: where its standard output and error go.
    """

    name: str
    base_url: str
    command: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def tree(self) -> ProcessTree:
        """The server's processes."""
        return ProcessTree(self.process.pid)

    async def wait_ready(self, path: str) -> None:
        """Poll ``base_url + path`` until it returns 200.

        Raises:
            ServerStartError: If the process exits or `READY_TIMEOUT_SECONDS` pass first.
        """
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        client_timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerStartError(
                        f"{self.name} exited with status {self.process.returncode} before it "
                        f"was ready; log: {self.log_tail()}"
                    )
                try:
                    async with session.get(self.base_url + path) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(READY_POLL_SECONDS)
        raise ServerStartError(
            f"{self.name} was not ready within {READY_TIMEOUT_SECONDS:.0f} s; "
            f"log: {self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after a grace period."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT_SECONDS)
        # Forked workers of the group may outlive their parent for a moment.
        _signal_group(self.process.pid, signal.SIGKILL)
        self._log.close()

    def log_tail(self, characters: int = 2000) -> str:
        """Return the end of the server's log."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[-characters:].strip() or "(empty)"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
    return port


def darkroom_command() -> list[str]:
    """Return the command that runs darkroom-gpu from this environment.

    The console script is preferred. Where the package is on ``PYTHONPATH`` rather than
    installed (as on the GPU machine of ``gpu_check.sh``), ``python -m darkroom_gpu`` is used.
    """
    script = Path(sys.executable).with_name("darkroom-gpu")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "darkroom_gpu"]


def start_darkroom(name: str, photos: Path, device: str, work: Path) -> ServerProcess:
    """Start darkroom-gpu over `photos` on a free port, with the result cache turned off.

    Args:
        name: label of the server in the report.
        photos: folder served as the only source, at an empty prefix.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        work: folder for the configuration file and the log.
    """
    port = free_port()
    config = work / f"{name}.yaml"
    # With the cache on, every request after the first of each URL would be a cache hit.
    config.write_text(
        f"server:\n  host: 127.0.0.1\n  port: {port}\n"
        f"device: {device}\n"
        "cache:\n  max_bytes: 0\n"
        f"sources:\n  - name: bench\n    kind: filesystem\n    root: {photos}\n"
    )
    command = [*darkroom_command(), "--log-level", "warning", "serve", "--config", str(config)]
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("DARKROOM_")
    }
    return _spawn(name, command, port, work, environment)


def thumbor_config(photos: Path) -> str:
    """Return the thumbor configuration (Python syntax) for the benchmark.

    Originals are read from `photos` on every request and nothing is stored, as darkroom-gpu
    is configured. Progressive JPEG is off because darkroom-gpu writes baseline JPEG.
    """
    return (
        "LOADER = 'thumbor.loaders.file_loader'\n"
        f"FILE_LOADER_ROOT_PATH = {str(photos)!r}\n"
        "STORAGE = 'thumbor.storages.no_storage'\n"
        "RESULT_STORAGE = None\n"
        "ALLOW_UNSAFE_URL = True\n"
        "RESPECT_ORIENTATION = True\n"
        f"QUALITY = {QUALITY}\n"
        f"WEBP_QUALITY = {QUALITY}\n"
        "PROGRESSIVE_JPEG = False\n"
    )


def start_thumbor(
    name: str, thumbor: Path, photos: Path, processes: int, work: Path
) -> ServerProcess:
    """Start thumbor over `photos` on a free port.

    Args:
        name: label of the server in the report.
        thumbor: the ``thumbor`` executable of its virtual environment.
        photos: folder its file loader reads.
        processes: forked server processes (thumbor's ``--processes``).
        work: folder for the configuration file and the log.
    """
    port = free_port()
    config = work / f"{name}.conf"
    config.write_text(thumbor_config(photos))
    command = [
        str(thumbor),
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--conf",
        str(config),
        "--log-level",
        "warning",
        "--processes",
        str(processes),
    ]
    return _spawn(name, command, port, work, dict(os.environ))


def ensure_thumbor(venv: Path, python: str) -> tuple[Path, str]:
    """Create `venv` with thumbor installed from PyPI unless it is there already.

    Args:
        venv: folder of thumbor's virtual environment.
        python: the interpreter that creates it; thumbor 7.8 installed on Python 3.11 here.

    Returns:
        The ``thumbor`` executable and its version.

    Raises:
        ServerStartError: If the environment cannot be created or thumbor cannot be installed.
    """
    executable = venv / "bin" / "thumbor"
    if not executable.exists():
        print(f"installing thumbor {THUMBOR_VERSION} into {venv}", file=sys.stderr, flush=True)
        _run_step([python, "-m", "venv", "--clear", str(venv)])
        pip = str(venv / "bin" / "pip")
        pin = f"thumbor=={THUMBOR_VERSION}"
        _run_step([pip, "install", "--quiet", "--disable-pip-version-check", pin])
    probe = _run_step(
        [str(venv / "bin" / "python"), "-c", "import thumbor; print(thumbor.__version__)"]
    )
    return executable, probe.strip()


def _run_step(command: Sequence[str]) -> str:
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerStartError(f"{' '.join(command)} failed: {exc}") from exc
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip()[-2000:]
        raise ServerStartError(
            f"{' '.join(command)} exited with status {completed.returncode}: {output}"
        )
    return completed.stdout


def _spawn(
    name: str, command: list[str], port: int, work: Path, environment: dict[str, str]
) -> ServerProcess:
    environment["PYTHONUNBUFFERED"] = "1"
    log_path = work / f"{name}.log"
    log = log_path.open("wb")
    try:
        # A session of its own, so that stop() reaches forked workers through the group id.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    except OSError as exc:
        log.close()
        raise ServerStartError(f"cannot start {name} ({' '.join(command)}): {exc}") from exc
    return ServerProcess(
        name=name,
        base_url=f"http://127.0.0.1:{port}",
        command=command,
        process=process,
        log_path=log_path,
        _log=log,
    )


def _signal_group(group_id: int, signum: signal.Signals) -> None:
    try:
        os.killpg(group_id, signum)
    except ProcessLookupError:
        pass
