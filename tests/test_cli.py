"""Tests for the ``darkroom-gpu`` command line, run as real subprocesses on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import torch
from PIL import Image

from darkroom_gpu.signing import sign
from tests.conftest import SAMPLES

CONSOLE_SCRIPT: Final = Path(sys.executable).with_name("darkroom-gpu")
READY_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 10.0
COMMAND_TIMEOUT_SECONDS: Final = 60.0
EXIT_CONFIG_ERROR: Final = 2
EXIT_LISTEN_ERROR: Final = 3
SIGNING_KEY: Final = "cli-signing-key-kept-out-of-logs"
S3_SECRET: Final = "cli-s3-secret-kept-out-of-logs"


def clean_environment() -> dict[str, str]:
    """Return the current environment without any ``DARKROOM_*`` variable."""
    return {name: value for name, value in os.environ.items() if not name.startswith("DARKROOM_")}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
    return port


def run_console_script(
    cwd: Path, *args: str, environ: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``darkroom-gpu ARGS`` to completion and capture its output.

    `environ` adds variables to the environment, which has no ``DARKROOM_*`` variable otherwise.
    """
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        env={**clean_environment(), **(environ or {})},
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


@contextlib.asynccontextmanager
async def start_server(
    cwd: Path,
    *args: str,
    serve_args: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[RunningServer]:
    """Run ``python -m darkroom_gpu ARGS serve SERVE_ARGS`` on a free port of 127.0.0.1.

    The process is stopped on leaving, unless the caller has stopped it already.
    """
    port = free_port()
    log_path = cwd / "server.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "darkroom_gpu",
            *args,
            "serve",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            *serve_args,
            cwd=cwd,
            env={**clean_environment(), **(environ or {})},
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


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """Start the server with no configuration from an empty folder, and stop it afterwards."""
    async with start_server(tmp_path) as running:
        yield running


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


def test_triton_kernels_on_cpu_exits_2(tmp_path: Path) -> None:
    environ = {"DARKROOM_BATCHING__KERNELS": "triton", "TRITON_INTERPRET": "1"}

    result = run_console_script(
        tmp_path, "serve", "--device", "cpu", "--port", str(free_port()), environ=environ
    )

    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "configuration: batching.kernels is triton, but device is cpu" in result.stderr
    assert "set batching.kernels to auto or torch, or use a CUDA device" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("key", ["", "fifteen-chars-k"])
def test_sign_short_key_exits_2(tmp_path: Path, key: str) -> None:
    result = run_console_script(tmp_path, "sign", "--key", key, "/team/cat.jpg?w=300")

    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert result.stdout == ""
    assert (
        f"--key: expected a signing key of at least 16 characters, got {len(key)}" in result.stderr
    )


def test_bad_port_option_exits_2(tmp_path: Path) -> None:
    result = run_console_script(tmp_path, "serve", "--port", "70000")

    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "server.port" in result.stderr


def test_help_exits_0(tmp_path: Path) -> None:
    result = run_console_script(tmp_path, "--help")

    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
    assert "--log-format {text,json}" in result.stdout


def test_serve_help_lists_options(tmp_path: Path) -> None:
    result = run_console_script(tmp_path, "serve", "--help")

    assert result.returncode == 0, result.stderr
    for option in ("--config", "--host", "--port", "--device"):
        assert option in result.stdout, option


def test_no_command_prints_help_exits_2(tmp_path: Path) -> None:
    result = run_console_script(tmp_path)

    assert result.returncode == EXIT_CONFIG_ERROR
    assert "usage: darkroom-gpu" in result.stdout


# --- the metrics port, JSON logs and secrets -----------------------------------------------


def write_secret_config(folder: Path, metrics_port: int) -> Path:
    """Write a configuration with a signed source, an S3 source and a metrics port."""
    path = folder / "darkroom.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            server:
              metrics_port: {metrics_port}
            sources:
              - name: team
                prefix: /team
                kind: filesystem
                root: {SAMPLES}
                signing_key: {SIGNING_KEY}
              - name: bucket
                prefix: /s3
                kind: s3
                bucket: photos
                endpoint_url: http://127.0.0.1:9/
                access_key_id: AKIDEXAMPLE
            """
        ),
        encoding="utf-8",
    )
    return path


def json_lines(output: str) -> list[dict[str, Any]]:
    """Parse every line of `output` as one JSON object, failing on any other line."""
    lines = []
    for line in output.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n{output}")
        assert isinstance(data, dict), line
        lines.append(data)
    return lines


async def test_serve_metrics_port_json_logs(tmp_path: Path) -> None:
    metrics_port = free_port()
    config = write_secret_config(tmp_path, metrics_port)
    signature = sign(SIGNING_KEY, "/team/jolla.jpg", [("w", "64")])
    environ = {"DARKROOM_SOURCES__BUCKET__SECRET_ACCESS_KEY": S3_SECRET}

    async with (
        start_server(
            tmp_path, "--log-format", "json", serve_args=("--config", str(config)), environ=environ
        ) as server,
        aiohttp.ClientSession() as session,
    ):
        await wait_until_ready(server, session)
        async with session.get(f"{server.base_url}/team/jolla.jpg?w=64&s={signature}") as image:
            image_status = image.status
        async with session.get(server.base_url + "/metrics") as moved:
            moved_status = moved.status
            moved_body = await moved.json()
        async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as metrics:
            metrics_status = metrics.status
            metrics_text = await metrics.text()

        server.process.terminate()
        return_code = await asyncio.wait_for(server.process.wait(), STOP_TIMEOUT_SECONDS)
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{metrics_port}/metrics")

    output = server.output()
    assert return_code == 0, output
    assert image_status == 200
    assert moved_status == 404
    assert (
        moved_body["error"]["message"] == "/metrics is served on the metrics port, not on this one"
    )
    assert metrics_status == 200
    assert 'source="team",status_class="2xx"} 1.0' in metrics_text

    records = json_lines(output)
    messages = [record["message"] for record in records]
    assert f"serving metrics on http://127.0.0.1:{metrics_port}/metrics" in messages
    assert f"stopped serving metrics on http://127.0.0.1:{metrics_port}/metrics" in messages
    access = [record for record in records if record["logger"] == "darkroom_gpu.access"]
    image_lines = [record for record in access if record["path"] == "/team/jolla.jpg"]
    assert [(line["status"], line["device"], line["source"]) for line in image_lines] == [
        (200, "cpu", "team")
    ]
    assert {"request_id", "method", "bytes", "duration_ms"} <= image_lines[0].keys()
    assert not [record for record in records if record["logger"] == "aiohttp.access"]
    for secret in (signature, SIGNING_KEY, S3_SECRET):
        assert secret not in output


def test_taken_metrics_port_exits_3(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_console_script(
            tmp_path,
            "serve",
            "--port",
            str(free_port()),
            environ={"DARKROOM_SERVER__METRICS_PORT": str(port)},
        )

    assert result.returncode == EXIT_LISTEN_ERROR, result.stderr
    assert f"cannot listen on http://127.0.0.1:{port}/metrics: " in result.stderr
    assert "Traceback" not in result.stderr


def test_config_errors_json_without_secrets(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        textwrap.dedent(
            f"""\
            server:
              port: 70000
            sources:
              - name: web
                kind: http
                base_url: https://editor:{S3_SECRET}@img.example.com/?q=1
            """
        ),
        encoding="utf-8",
    )
    environ = {"DARKROOM_LOGGING__FORMAT": "json"}

    result = run_console_script(tmp_path, "serve", "--config", "bad.yaml", environ=environ)

    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    records = json_lines(result.stderr)
    messages = {record["message"] for record in records}
    assert "configuration: server.port: expected an integer from 1 to 65535, got 70000" in messages
    assert any("sources[0].base_url: " in message for message in messages), messages
    assert {record["level"] for record in records} == {"ERROR"}
    assert S3_SECRET not in result.stderr


def test_yaml_error_keeps_secret_out(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        f'sources:\n  - name: team\n    signing_key: "{SIGNING_KEY}\n', encoding="utf-8"
    )

    result = run_console_script(tmp_path, "--log-format", "json", "serve", "--config", "bad.yaml")

    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    (record,) = json_lines(result.stderr)
    assert record["message"].startswith("configuration: bad.yaml: invalid YAML: ")
    assert "line 3, column 18" in record["message"]
    assert SIGNING_KEY not in result.stderr
