"""Every shell command in the documentation is run by a test or ``.ci/run``, or has a reason.

Commands are read from fenced blocks marked ``sh``, ``bash``, ``shell`` or ``console``, and from
unmarked blocks whose first line starts like a command. Lines joined with ``\\`` count as one
command, ``&&`` separates commands, and a trailing ``# comment`` is dropped. `COVERAGE` maps
each command to the tests that run it, to ``.ci/run``, or to the reason nothing here runs it.
A command added to the documentation without an entry fails `test_every_command_is_covered`.

The tests below run the commands that need no GPU, container engine, cluster or package index,
as written, with two substitutions: ``.venv/bin/`` becomes the folder of the running Python,
and a server's port comes from ``DARKROOM_SERVER__PORT`` (or replaces 3000 in a URL), because
tests listen only on ports they pick.
"""

from __future__ import annotations

import ast
import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from PIL import Image

from darkroom_gpu.signing import sign
from tests.test_cli import (
    STOP_TIMEOUT_SECONDS,
    RunningServer,
    clean_environment,
    free_port,
    wait_until_ready,
)

ROOT: Final = Path(__file__).parent.parent
DOCUMENTS: Final = (
    ROOT / "README.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
)
CI_SCRIPT: Final = ROOT / ".ci" / "run"
THIS_FILE: Final = "tests/test_docs_commands.py"
SHELL_INFO: Final = frozenset({"sh", "bash", "shell", "console"})
FENCE: Final = re.compile(r"^```([\w-]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
# The first line of an unmarked block that holds commands: optional VAR=value assignments, then
# a program this project's documentation runs.
COMMAND_START: Final = re.compile(
    r"(\w+=\S+ )*(\.venv/bin/|python3? |bash |curl |docker |kubectl |helm |darkroom-gpu |"
    r"echo |printf |pip )"
)
TRAILING_COMMENT: Final = re.compile(r"\s+#\s.*$")
BIN: Final = f"{Path(sys.executable).parent}/"
SIGNING_KEY: Final = "0123456789abcdef0123"


@dataclass(frozen=True, slots=True)
class Coverage:
    """What runs one documented command.

    Attributes:
        tests: ``path::test_name`` of the tests that run it.
        ci: whether ``.ci/run`` runs it as written.
        not_run: why neither runs it, and what runs instead, when something does.
    """

    tests: tuple[str, ...] = ()
    ci: bool = False
    not_run: str = ""


NEEDS_COMPOSE_STACK: Final = (
    "needs Docker with the NVIDIA Container Toolkit and a GPU; the stack's files are checked "
    "by tests/test_deploy.py"
)
COVERAGE: Final[dict[str, Coverage]] = {
    # README.md
    "python3 -m venv .venv": Coverage(ci=True),
    ".venv/bin/pip install -e .": Coverage(
        not_run="installs from the package index; .ci/run installs the same package with its "
        "test extra"
    ),
    ".venv/bin/darkroom-gpu serve": Coverage(tests=(f"{THIS_FILE}::test_readme_quick_start",)),
    "curl -o out.jpg 'http://127.0.0.1:3000/jolla.jpg?w=300&h=300&fit=crop'": Coverage(
        tests=(f"{THIS_FILE}::test_readme_quick_start",)
    ),
    ".venv/bin/pip install -e '.[test]'": Coverage(ci=True),
    ".venv/bin/python -m pytest": Coverage(ci=True),
    # benchmarks/README.md
    "OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry-run": Coverage(
        tests=(f"{THIS_FILE}::test_gpu_check_dry_run",)
    ),
    "echo /.whl/ >> .git/info/exclude": Coverage(
        not_run="changes the checkout's git metadata, to prepare wheels for an offline machine"
    ),
    "python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation "
    "cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform "
    "manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "
    "kornia==0.9.0 kornia_rs==0.2.0 orjson==3.13.0 aiobotocore==3.10.0 botocore==1.43.117 "
    "aioitertools==0.13.0 jmespath==1.1.0 pytest-asyncio==1.5.0 pytest-aiohttp==1.1.1": Coverage(
        not_run="downloads from the package index"
    ),
    # docs/benchmarks.md
    ".venv/bin/pip install -e '.[bench]'": Coverage(
        not_run="installs from the package index; the test extra that .ci/run installs includes "
        "the bench extra's packages"
    ),
    ".venv/bin/python -m benchmarks.run": Coverage(
        not_run="the full benchmark takes tens of minutes and installs thumbor from the package "
        "index; tests/test_benchmarks.py runs the same runner in a tiny mode"
    ),
    'python -m benchmarks.run --targets darkroom,inprocess --out "$OUT" --name http --gpu '
    "--device cuda:0 --quick": Coverage(not_run="needs a CUDA GPU"),
    # docs/operations.md
    "docker compose -f docker-compose.gpu.yml up --build": Coverage(not_run=NEEDS_COMPOSE_STACK),
    "curl -o folder.jpg 'http://127.0.0.1:3000/samples/jolla.jpg?w=300'": Coverage(
        not_run=NEEDS_COMPOSE_STACK
    ),
    "curl -o bucket.jpg 'http://127.0.0.1:3000/s3/jolla.jpg?w=300'": Coverage(
        not_run=NEEDS_COMPOSE_STACK
    ),
    "darkroom-gpu --log-level warning serve": Coverage(tests=(f"{THIS_FILE}::test_log_options",)),
    "darkroom-gpu --log-format json serve": Coverage(tests=(f"{THIS_FILE}::test_log_options",)),
    # docs/security.md
    "darkroom-gpu sign --key \"$KEY\" '/team/cat.jpg?w=300&fit=crop'": Coverage(
        tests=(f"{THIS_FILE}::test_sign_commands",)
    ),
    "darkroom-gpu sign --config darkroom.yaml --source team '/team/cat.jpg?w=300'": Coverage(
        tests=(f"{THIS_FILE}::test_sign_commands",)
    ),
    "printf '%s' '/team/cat.jpg?fit=crop&w=300' | openssl dgst -sha256 -hmac \"$KEY\" -binary "
    "| basenc --base64url | tr -d '='": Coverage(tests=(f"{THIS_FILE}::test_shell_signature",)),
    ".venv/bin/python -m benchmarks.fuzz": Coverage(
        not_run="takes about 3 minutes; tests/test_fuzz.py runs a short part of every fuzzer"
    ),
    ".venv/bin/python -m benchmarks.fuzz --cases 100000 --api-examples 3000 --seed 7": Coverage(
        not_run="takes about 10 minutes; tests/test_fuzz.py runs a short part of every fuzzer"
    ),
    # docs/soak.md
    ".venv/bin/python -m benchmarks.soak --requests 50000 --concurrency 32 --burst-requests 10000 "
    "--burst-factor 5 --idle-seconds 30 --max-seconds 900 --out /tmp/soak": Coverage(
        not_run="runs for up to 15 minutes; tests/test_soak.py runs a shorter soak with -m soak"
    ),
}


def fenced_blocks(path: Path) -> Iterator[tuple[int, str, str]]:
    """Yield the line number, info string and text of each fenced block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    for match in FENCE.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2)


def commands_of(block: str) -> list[str]:
    """Split a block of shell into commands, joining continued lines."""
    joined = re.sub(r"\\\n\s*", "", block)
    commands: list[str] = []
    for line in joined.splitlines():
        line = TRAILING_COMMENT.sub("", line).strip()
        commands.extend(part.strip() for part in line.split(" && ") if part.strip())
    return commands


def documented_commands() -> dict[str, list[str]]:
    """Map every documented shell command to the places (``file:line``) it appears."""
    found: dict[str, list[str]] = {}
    for path in DOCUMENTS:
        for line, info, block in fenced_blocks(path):
            first = block.lstrip().split("\n", 1)[0]
            if info in SHELL_INFO or (not info and COMMAND_START.match(first)):
                for command in commands_of(block):
                    found.setdefault(command, []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def local_command(command: str) -> str:
    """Point ``.venv/bin/`` at the running Python's folder."""
    return command.replace(".venv/bin/", BIN)


def shell_environment(**variables: str) -> dict[str, str]:
    """Return an environment without ``DARKROOM_*`` whose PATH starts with the Python's folder."""
    environ = clean_environment()
    environ["PATH"] = BIN + os.pathsep + environ.get("PATH", "")
    environ.update(variables)
    return environ


def run_shell(
    command: str, cwd: Path, *, timeout: float = 60.0, **variables: str
) -> subprocess.CompletedProcess[str]:
    """Run one documented command with bash; `timeout` is in seconds."""
    return subprocess.run(
        ["bash", "-c", local_command(command)],
        cwd=cwd,
        env=shell_environment(**variables),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def start_shell_server(command: str, cwd: Path, log_path: Path) -> RunningServer:
    """Start a documented ``serve`` command on a free port of 127.0.0.1."""
    port = free_port()
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            "exec " + local_command(command),
            cwd=cwd,
            env=shell_environment(DARKROOM_SERVER__PORT=str(port)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return RunningServer(process, f"http://127.0.0.1:{port}", log_path)


async def stop(server: RunningServer) -> int:
    if server.process.returncode is None:
        server.process.terminate()
    try:
        return await asyncio.wait_for(server.process.wait(), STOP_TIMEOUT_SECONDS)
    except TimeoutError:
        server.process.kill()
        await server.process.wait()
        raise


# --- the inventory -------------------------------------------------------------------------


def test_every_command_is_covered() -> None:
    documented = documented_commands()

    missing = {command: places for command, places in documented.items() if command not in COVERAGE}

    assert missing == {}, "add these commands to COVERAGE, with a test or a reason"


def test_no_stale_coverage_entries() -> None:
    documented = documented_commands()

    assert sorted(set(COVERAGE) - set(documented)) == []


def test_coverage_entries_are_complete() -> None:
    for command, coverage in COVERAGE.items():
        runs = bool(coverage.tests) or coverage.ci
        assert runs != bool(coverage.not_run), command


def test_coverage_tests_exist() -> None:
    for command, coverage in COVERAGE.items():
        for reference in coverage.tests:
            path, name = reference.split("::")
            assert name in defined_tests(ROOT / path), f"{command}: no test {reference}"


def test_ci_commands_are_in_ci_script() -> None:
    ci_commands = commands_of(CI_SCRIPT.read_text(encoding="utf-8"))

    for command, coverage in COVERAGE.items():
        if coverage.ci:
            assert command in ci_commands, command


def test_unmarked_command_blocks_are_found() -> None:
    found = documented_commands()

    assert "OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry-run" in found
    assert "docker compose -f docker-compose.gpu.yml up --build" in found
    assert not any(command.startswith("GET /") for command in found)


# --- commands run as documented ------------------------------------------------------------


async def test_readme_quick_start(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    server = await start_shell_server(".venv/bin/darkroom-gpu serve", ROOT, tmp_path / "log")
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(server, session)
        curl = "curl -o out.jpg 'http://127.0.0.1:3000/jolla.jpg?w=300&h=300&fit=crop'"
        port = server.base_url.rsplit(":", 1)[1]
        result = await asyncio.to_thread(run_shell, curl.replace(":3000/", f":{port}/"), tmp_path)
    finally:
        return_code = await stop(server)

    assert result.returncode == 0, result.stderr
    assert return_code == 0, server.output()
    with Image.open(io.BytesIO((tmp_path / "out.jpg").read_bytes())) as image:
        assert image.format == "JPEG"
        assert image.size == (300, 300)


async def test_log_options(tmp_path: Path) -> None:
    outputs: dict[str, list[str]] = {}
    for command in (
        "darkroom-gpu --log-level warning serve",
        "darkroom-gpu --log-format json serve",
    ):
        server = await start_shell_server(command, tmp_path, tmp_path / f"{len(outputs)}.log")
        try:
            async with aiohttp.ClientSession() as session:
                await wait_until_ready(server, session)
                async with session.get(server.base_url + "/missing.jpg") as response:
                    status = response.status
        finally:
            return_code = await stop(server)
        assert status == 404
        assert return_code == 0, server.output()
        outputs[command] = server.output().splitlines()

    warning_lines = outputs["darkroom-gpu --log-level warning serve"]
    assert warning_lines, "the 404 is logged at WARNING"
    assert all(" INFO " not in line for line in warning_lines), warning_lines
    assert any(" WARNING darkroom_gpu.access " in line for line in warning_lines)
    records = [json.loads(line) for line in outputs["darkroom-gpu --log-format json serve"]]
    messages = [record["message"] for record in records]
    assert "ready: cpu manipulator warmed up" in messages
    assert any(record.get("status") == 404 for record in records)


# The script's nested pytest and benchmark take about 40 s on 2 cores.
@pytest.mark.timeout(240)
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu-dry"
    command = "OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry-run"

    # Hidden GPUs keep the nested CUDA tests skipped, so the run stays short on a GPU host too.
    result = run_shell(
        command.replace("/tmp/gpu-dry", str(out)),
        ROOT,
        PYTHON=sys.executable,
        CUDA_VISIBLE_DEVICES="",
        timeout=200.0,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for name in ("versions.txt", "pytest-cuda.log", "bench.log", "bench.md"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert report["dry_run"] is True
    assert report["device"] == "cpu"
    assert [workload["key"] for workload in report["workloads"]] == ["W1", "W2", "W3", "W4", "W5"]
    assert report["rows"]


def test_cuda_tests_need_no_test_extras() -> None:
    # The device script carries only what the server needs, so the files it runs with -m cuda
    # must not need the S3 server or the deployment schemas, even to be collected.
    blocked = ("moto", "boto3", "kubernetes_validate", "check_jsonschema")
    # The pattern the script greps for: a line that applies the cuda mark.
    cuda_mark = re.compile(r"^\s*@?pytest\.mark\.cuda\b", re.MULTILINE)
    files = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if cuda_mark.search(path.read_text(encoding="utf-8"))
    )
    program = (
        "import sys, pytest\n"
        f"sys.modules.update(dict.fromkeys({blocked!r}))\n"
        "sys.exit(pytest.main(['-q', '--collect-only', '-m', 'cuda', *sys.argv[1:]]))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", program, *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert "tests/test_gpu_equivalence.py" in files
    assert THIS_FILE not in files
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "errors during collection" not in result.stdout, result.stdout[-4000:]


def test_sign_commands(tmp_path: Path, image_root: Path) -> None:
    (tmp_path / "darkroom.yaml").write_text(
        textwrap.dedent(
            f"""\
            sources:
              - name: team
                prefix: /team
                kind: filesystem
                root: {image_root}
                signing_key: {SIGNING_KEY}
            """
        ),
        encoding="utf-8",
    )

    with_key = run_shell(
        "darkroom-gpu sign --key \"$KEY\" '/team/cat.jpg?w=300&fit=crop'", tmp_path, KEY=SIGNING_KEY
    )
    with_source = run_shell(
        "darkroom-gpu sign --config darkroom.yaml --source team '/team/cat.jpg?w=300'", tmp_path
    )

    assert with_key.returncode == 0, with_key.stderr
    assert with_source.returncode == 0, with_source.stderr
    signature = sign(SIGNING_KEY, "/team/cat.jpg", [("w", "300"), ("fit", "crop")])
    assert with_key.stdout == f"/team/cat.jpg?w=300&fit=crop&s={signature}\n"
    signature = sign(SIGNING_KEY, "/team/cat.jpg", [("w", "300")])
    assert with_source.stdout == f"/team/cat.jpg?w=300&s={signature}\n"


def test_shell_signature(tmp_path: Path) -> None:
    for program in ("openssl", "basenc"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")
    command = (
        "printf '%s' '/team/cat.jpg?fit=crop&w=300' | openssl dgst -sha256 -hmac \"$KEY\" -binary "
        "| basenc --base64url | tr -d '='"
    )

    result = run_shell(command, tmp_path, KEY=SIGNING_KEY)

    assert result.returncode == 0, result.stderr
    expected = sign(SIGNING_KEY, "/team/cat.jpg", [("w", "300"), ("fit", "crop")])
    assert result.stdout.strip() == expected
