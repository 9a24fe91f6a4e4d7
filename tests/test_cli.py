"""Tests for the ``darkroom-gpu`` command line, run as real subprocesses on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import pytest
import torch
from PIL import Image

CONSOLE_SCRIPT: Final = Path(sys.executable).with_name("darkroom-gpu")
READY_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 10.0
COMMAND_TIMEOUT_SECONDS: Final = 60.0
EXIT_CONFIG_ERROR: Final = 2


def clean_environment() -> dict[str, str]:
    """Return the current environment without any ``DARKROOM_*`` variable."""
    return {name: value for name, value in os.environ.items() if not name.startswith("DARKROOM_")}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
    return port


def run_console_script(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``darkroom-gpu ARGS`` to completion and capture its output."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A ``python -m darkroom_gpu serve`` subprocess and where to reach it."""

    process: asyncio.subprocess.Process
    base_url: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


async def wait_until_ready(server: RunningServer, session: aiohttp.ClientSession) -> None:
    """Poll ``/readyz`` until it returns 200, failing with the server's output otherwise."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.returncode is not None:
            pytest.fail(
                f"server exited with {server.process.returncode} before it was ready:\n"
                + server.output()
            )
        try:
            async with session.get(server.base_url + "/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass  # not listening yet
        await asyncio.sleep(0.2)
    pytest.fail(f"/readyz was not 200 within {READY_TIMEOUT_SECONDS} s:\n" + server.output())


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """Start the server with no configuration from an empty folder, and stop it afterwards."""
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "darkroom_gpu",
            "serve",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            cwd=tmp_path,
            env=clean_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield RunningServer(process, f"http://127.0.0.1:{port}", log_path)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()


# --- serve ---------------------------------------------------------------------------------


async def test_serve_readyz_reports_cpu(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_until_ready(server, session)
        async with session.get(server.base_url + "/readyz") as response:
            body = await response.json()

    assert body == {"status": "ready", "device": "cpu"}


async def test_serve_crops_bundled_sample(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_until_ready(server, session)
        url = server.base_url + "/jolla.jpg?w=300&h=300&fit=crop"
        async with session.get(url) as response:
            status = response.status
            content_type = response.headers.get("Content-Type")
            data = await response.read()

    assert status == 200, data[:500]
    assert content_type == "image/jpeg"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.size == (300, 300)


async def test_serve_stops_on_sigterm(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_until_ready(server, session)

    server.process.terminate()
    return_code = await asyncio.wait_for(server.process.wait(), STOP_TIMEOUT_SECONDS)

    assert return_code == 0, server.output()


# --- configuration errors and help ---------------------------------------------------------


def test_bad_config_lists_every_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        textwrap.dedent(
            """\
            server:
              port: 70000
            device: tpu
            colour: blue
            sources:
              - name: photos
                kind: filesystem
                root: ./no-such-folder
            """
        ),
        encoding="utf-8",
    )

    result = run_console_script(tmp_path, "serve", "--config", "bad.yaml")

    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "server.port: expected an integer from 1 to 65535, got 70000" in result.stderr
    assert "device: expected auto, cpu, cuda or cuda:N, got 'tpu'" in result.stderr
    assert "colour: unknown key" in result.stderr
    assert "sources[0].root: " in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_console_script(tmp_path, "serve", "--config", "absent.yaml")

    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "absent.yaml: cannot be read" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA device")
def test_device_cuda_without_gpu_exits_2(tmp_path: Path) -> None:
    result = run_console_script(tmp_path, "serve", "--device", "cuda", "--port", str(free_port()))

    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "device 'cuda' is not supported" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_port_option_exits_2(tmp_path: Path) -> None:
    result = run_console_script(tmp_path, "serve", "--port", "70000")

    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "server.port" in result.stderr


def test_help_exits_0(tmp_path: Path) -> None:
    result = run_console_script(tmp_path, "--help")

    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout


def test_serve_help_lists_options(tmp_path: Path) -> None:
    result = run_console_script(tmp_path, "serve", "--help")

    assert result.returncode == 0, result.stderr
    for option in ("--config", "--host", "--port", "--device"):
        assert option in result.stdout, option


def test_no_command_prints_help_exits_2(tmp_path: Path) -> None:
    result = run_console_script(tmp_path)

    assert result.returncode == EXIT_CONFIG_ERROR
    assert "usage: darkroom-gpu" in result.stdout
