"""Fuzz the server: mutated images through the codecs and the CPU manipulator, then the HTTP API.

Three fuzzers, each bounded in cases and in time, with fixed seeds so a run can be repeated:

- images: real photos (``darkroom_gpu/samples/*.jpg``, an EXIF test photo) and small PNG, GIF,
  WebP, TIFF and BMP files made with Pillow, mutated by byte flips, boundary values written
  over header fields, truncations, chunk duplications and chunk deletions. Each case goes
  through `codecs.sniff`, `codecs.probe`, `codecs.decode` (and `codecs.decode_animation` for
  animations), then `CpuManipulator.process` with one of several option sets. The only
  accepted errors are the typed client errors (415 unsupported, 422 unprocessable). Any other
  exception, or a case that runs longer than `CASE_TIMEOUT_SECONDS`, is a failure, and its
  input is saved for reproduction.
- api: schemathesis against ``docs/openapi.yaml``, sending generated requests to a server this
  script starts on 127.0.0.1 over a folder of sample, generated and damaged images. No
  response may be a 5xx and every response must match the description.
- properties: the hypothesis property tests of request planning
  (``tests/test_plan_properties.py``) under the ``fuzz`` profile, 5000 examples each.

Usage::

    python -m benchmarks.fuzz                  # 20000 image cases, 1000 per route, properties
    python -m benchmarks.fuzz --cases 2000 --skip-api --skip-properties
    python -m benchmarks.fuzz --api-examples 50 --skip-images --skip-properties

Inputs of failing image cases go to ``--crash-dir`` (default ``fuzz-crashes/``), one ``.bin``
per case with a ``.txt`` naming its seed file, mutations, options and traceback. A summary
goes to standard output and, with ``--out``, to a JSON file. The exit status is 1 when any
case failed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml
from PIL import Image

from darkroom_gpu import codecs
from darkroom_gpu.errors import UnprocessableImageError, UnsupportedMediaTypeError
from darkroom_gpu.manipulators import CpuManipulator, ImageJob
from darkroom_gpu.options import parse_options

__all__ = (
    "ApiReport",
    "ImageReport",
    "Seed",
    "fuzz_api",
    "fuzz_images",
    "mutate",
    "seed_corpus",
)

REPO: Final = Path(__file__).resolve().parent.parent
SAMPLES: Final = REPO / "darkroom_gpu" / "samples"
EXIF_PHOTO: Final = REPO / "tests" / "data" / "exif-orientation" / "Landscape_1.jpg"
OPENAPI: Final = REPO / "docs" / "openapi.yaml"
PROPERTY_TESTS: Final = REPO / "tests" / "test_plan_properties.py"

DEFAULT_CASES: Final = 20_000
DEFAULT_API_EXAMPLES: Final = 1000
DEFAULT_SEED: Final = 20_240_601
# A mutated header may declare a large image. This limit keeps one case's decode to a fraction
# of a second on one core (measured on the 2-core test machine), and still admits the photos.
MAX_PIXELS: Final = 20_000_000
# Direct full-size decodes (without shrink-on-load) only for images up to this size.
MAX_DIRECT_DECODE_PIXELS: Final = 2_000_000
CASE_TIMEOUT_SECONDS: Final = 20.0
# A decoder that never returns keeps its worker thread; past this many, the run stops.
MAX_HANGS: Final = 2
READY_TIMEOUT_SECONDS: Final = 60.0
# Output limits of the API fuzzer's server. Requests over them get the documented 400 or 422,
# and the rest stay small enough that hundreds of them finish in minutes on two cores.
FUZZ_MAX_OUTPUT_SIDE: Final = 2048
SERVE_COMMAND: Final = (sys.executable, "-m", "darkroom_gpu", "--log-level", "warning", "serve")

# Request options each case is processed with, chosen per case; together they reach every
# pipeline step and every output format.
OPTION_SETS: Final[tuple[dict[str, str], ...]] = (
    {"w": "64"},
    {"w": "48", "h": "48", "fit": "crop", "crop": "top,left"},
    {"w": "40", "h": "30", "fit": "pad", "bg": "ff000080", "format": "png"},
    {"w": "50", "rot": "33", "format": "webp"},
    {"h": "40", "blur": "2.5", "mono": "000000"},
    {"w": "32", "flip": "hv", "mono": "3366cc", "format": "gif"},
    {"w": "60", "h": "20", "fit": "scale", "q": "30"},
    {"rot": "90", "dpr": "2", "w": "20"},
)
# Values written over header fields: lengths, widths and counts at their edges.
BOUNDARY_VALUES: Final = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x00\x00",
    b"\xff\xff",
    b"\x7f\xff",
    b"\x80\x00",
    b"\x00\x01",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
)
_ACCEPTED_ERRORS: Final = {UnsupportedMediaTypeError: "415", UnprocessableImageError: "422"}


@dataclass(frozen=True, slots=True)
class Seed:
    """A valid image that mutations start from.

    Attributes:
        name: where it comes from, for reports and crash files.
        data: its bytes.
    """

    name: str
    data: bytes


@dataclass(slots=True)
class ImageReport:
    """Counts and failures of one image fuzzer run.

    Attributes:
        cases: cases run to the end.
        outcomes: cases per outcome: ``ok`` (an image came out), ``415``, ``422``, ``failure``.
        failures: one line per failing case, naming its crash file.
        seconds: wall time of the run.
        stopped_early: why the run ended before `cases`, if it did.
    """

    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: str | None = None


@dataclass(slots=True)
class ApiReport:
    """Counts and failures of one API fuzzer run.

    Attributes:
        operations: API operations tested.
        cases: requests schemathesis generated and sent.
        failures: failing checks, as schemathesis printed them.
        seconds: wall time of the run, server start included.
        exit_code: schemathesis' exit status; 0 when every check passed.
    """

    operations: int = 0
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    exit_code: int = 0


# --- the image fuzzer ----------------------------------------------------------------------


def seed_corpus() -> list[Seed]:
    """Return the seed images: the bundled photos, an EXIF photo, and small generated files."""
    seeds = [Seed(path.name, path.read_bytes()) for path in sorted(SAMPLES.glob("*.jpg"))]
    seeds.append(Seed(EXIF_PHOTO.name, EXIF_PHOTO.read_bytes()))
    gradient = np.linspace(0, 255, 48 * 32 * 3).reshape(32, 48, 3).astype(np.uint8)
    rgb = Image.fromarray(gradient, "RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((48, 32)))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    frames = [rgb.rotate(angle) for angle in (0, 90, 180)]

    def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **params)
        return buffer.getvalue()

    exif = Image.Exif()
    exif[codecs.EXIF_ORIENTATION_TAG] = 6
    generated = {
        "rgb.png": encode(rgb, "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "palette-trns.png": encode(palette, "PNG", transparency=3),
        "grey16.png": encode(Image.fromarray(gradient[..., 0].astype(np.uint16) * 257), "PNG"),
        "animated.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "lossy.webp": encode(rgb, "WEBP", quality=70),
        "lossless-alpha.webp": encode(rgba, "WEBP", lossless=True),
        "animated.webp": encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "rgb-lzw.tiff": encode(rgb, "TIFF", compression="tiff_lzw"),
        "pages.tiff": encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "palette.bmp": encode(palette, "BMP"),
        "rgb.bmp": encode(rgb, "BMP"),
        "oriented.jpg": encode(rgb, "JPEG", exif=exif.tobytes()),
        "progressive.jpg": encode(rgb, "JPEG", progressive=True),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
    }
    seeds.extend(Seed(name, data) for name, data in generated.items())
    return seeds


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Apply one to three random mutations to `data`.

    Half the mutations aim at the first kilobyte, where headers, chunk lengths and sizes are.

    Returns:
        The mutated bytes and a description of what was done.
    """
    buffer = bytearray(data)
    steps = []
    for _ in range(rng.randint(1, 3)):
        if not buffer:
            break
        kind = rng.choice(("flip", "boundary", "truncate", "duplicate", "delete"))
        limit = len(buffer) if rng.random() < 0.5 else min(len(buffer), 1024)
        position = rng.randrange(limit)
        if kind == "flip":
            count = rng.randint(1, 8)
            for _ in range(count):
                index = rng.randrange(limit)
                buffer[index] ^= 1 << rng.randrange(8)
            steps.append(f"flip {count} bits below {limit}")
        elif kind == "boundary":
            value = rng.choice(BOUNDARY_VALUES)
            buffer[position : position + len(value)] = value
            steps.append(f"write {value.hex()} at {position}")
        elif kind == "truncate":
            del buffer[position:]
            steps.append(f"truncate at {position}")
        elif kind == "duplicate":
            length = rng.randint(1, min(4096, len(buffer) - position))
            chunk = buffer[position : position + length]
            target = rng.randrange(len(buffer) + 1)
            buffer[target:target] = chunk
            steps.append(f"copy {length} bytes from {position} to {target}")
        else:
            length = rng.randint(1, min(256, len(buffer) - position))
            del buffer[position : position + length]
            steps.append(f"delete {length} bytes at {position}")
    return bytes(buffer), "; ".join(steps)


@dataclass(frozen=True, slots=True)
class _Case:
    number: int
    seed: Seed
    data: bytes
    mutations: str
    options: dict[str, str]


def _make_cases(seeds: Sequence[Seed], cases: int, seed: int) -> list[_Case]:
    rng = random.Random(seed)
    made = []
    for number in range(cases):
        origin = seeds[number % len(seeds)]
        data, mutations = mutate(origin.data, rng)
        options = OPTION_SETS[rng.randrange(len(OPTION_SETS))]
        made.append(_Case(number, origin, data, mutations, options))
    return made


def _check_codecs(data: bytes) -> None:
    """Run the codec entry points on their own, as the GPU path and ``/_meta`` use them."""
    codecs.sniff(data)
    info = codecs.probe(data)
    if info.size.width * info.size.height * info.frames <= MAX_DIRECT_DECODE_PIXELS:
        codecs.decode(data, max_pixels=MAX_DIRECT_DECODE_PIXELS)
        if info.frames > 1 and info.format in codecs.ANIMATED_SOURCE_FORMATS:
            codecs.decode_animation(data, max_pixels=MAX_DIRECT_DECODE_PIXELS)


async def _run_case(manipulator: CpuManipulator, case: _Case) -> str:
    try:
        await asyncio.to_thread(_check_codecs, case.data)
    except tuple(_ACCEPTED_ERRORS) as exc:
        # The manipulator must reach the same verdict; it runs below all the same.
        codec_outcome: str | None = _ACCEPTED_ERRORS[type(exc)]
    else:
        codec_outcome = None

    job = ImageJob(
        data=case.data,
        options=parse_options(case.options),
        negotiated_format=None,
        allow_enlarge=True,
        max_pixels=MAX_PIXELS,
    )
    try:
        await manipulator.process(job)
    except tuple(_ACCEPTED_ERRORS) as exc:
        return _ACCEPTED_ERRORS[type(exc)]
    return codec_outcome or "ok"


def _save_crash(crash_dir: Path, case: _Case, problem: str) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(case.data).hexdigest()[:12]
    stem = crash_dir / f"{case.number:06d}-{case.seed.name}-{digest}"
    stem.with_suffix(".bin").write_bytes(case.data)
    query = "&".join(f"{name}={value}" for name, value in case.options.items())
    stem.with_suffix(".txt").write_text(
        f"seed file: {case.seed.name}\nmutations: {case.mutations}\noptions: {query}\n\n{problem}",
        encoding="utf-8",
    )
    return stem.with_suffix(".bin")


async def fuzz_images(
    cases: int,
    *,
    seed: int = DEFAULT_SEED,
    crash_dir: Path,
    max_seconds: float = 3600.0,
    workers: int = 2,
    progress: Callable[[ImageReport], None] | None = None,
) -> ImageReport:
    """Run `cases` mutated images through the codecs and the CPU manipulator.

    Args:
        cases: number of cases; case *n* mutates seed image *n* modulo the corpus size.
        seed: seed of the random mutations; the same seed gives the same cases.
        crash_dir: where the inputs of failing cases are saved.
        max_seconds: no case starts after this much wall time.
        workers: cases processed at once (and the manipulator's worker threads).
        progress: called with the report after every 500 cases.

    Returns:
        The counts per outcome and the failures.
    """
    report = ImageReport()
    started = time.monotonic()
    manipulator = CpuManipulator(workers=workers)
    hangs = 0
    pending = iter(_make_cases(seed_corpus(), cases, seed))

    async def worker() -> None:
        nonlocal hangs
        for case in pending:
            if report.stopped_early is not None:
                return
            if time.monotonic() - started > max_seconds:
                report.stopped_early = f"time limit of {max_seconds:g} s reached"
                return
            try:
                outcome = await asyncio.wait_for(_run_case(manipulator, case), CASE_TIMEOUT_SECONDS)
            except TimeoutError:
                hangs += 1
                outcome = "failure"
                path = _save_crash(crash_dir, case, f"no result within {CASE_TIMEOUT_SECONDS} s")
                report.failures.append(f"case {case.number}: timed out; input {path}")
                if hangs >= MAX_HANGS:
                    report.stopped_early = f"{hangs} cases never finished"
            except Exception as exc:  # noqa: BLE001 - any other error is what the fuzzer finds
                outcome = "failure"
                path = _save_crash(crash_dir, case, traceback.format_exc())
                report.failures.append(
                    f"case {case.number}: {type(exc).__name__}: {exc}; input {path}"
                )
            report.cases += 1
            report.outcomes[outcome] += 1
            if progress is not None and report.cases % 500 == 0:
                progress(report)

    try:
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        # A hung decoder would block shutdown(wait=True), so wait only when nothing hung.
        if hangs == 0:
            await manipulator.close()
    report.seconds = time.monotonic() - started
    return report


# --- the API fuzzer ------------------------------------------------------------------------


def fuzz_images_folder(folder: Path) -> list[str]:
    """Fill `folder` with the images the API fuzzer's server serves; return their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for seed in seed_corpus():
        # The big photos are left out: fuzzing the parameters needs many fast requests.
        if len(seed.data) < 200_000:
            (folder / seed.name).write_bytes(seed.data)
            names.append(seed.name)
    rng = random.Random(DEFAULT_SEED)
    for index, seed in enumerate(seed_corpus()[-6:]):
        damaged, _ = mutate(seed.data, rng)
        name = f"damaged-{index}-{seed.name}"
        (folder / name).write_bytes(damaged)
        names.append(name)
    (folder / "not-an-image.jpg").write_bytes(b"<!doctype html><p>not an image</p>")
    names.append("not-an-image.jpg")
    names.append("missing.jpg")
    return names


def _fuzz_schema(names: Sequence[str], target: Path) -> None:
    """Write the published description with the image path limited to `names`.

    Generated paths would otherwise almost all be 404, and the parameters would never meet
    an image.
    """
    schema = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    for parameter in schema["paths"]["/{path}"]["get"]["parameters"]:
        if parameter["name"] == "path":
            parameter["schema"] = {"type": "string", "enum": list(names)}
            parameter.pop("example", None)
    target.write_text(yaml.safe_dump(schema), encoding="utf-8")


def _write_server_config(work: Path, images: Path, port: int) -> Path:
    config = work / "darkroom.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            server:
              host: 127.0.0.1
              port: {port}
              workers: 2
            device: cpu
            limits:
              max_output_side: {FUZZ_MAX_OUTPUT_SIDE}
              max_output_pixels: {FUZZ_MAX_OUTPUT_SIDE**2 // 4}
            sources:
              - name: fuzz
                kind: filesystem
                root: {images}
            """
        ),
        encoding="utf-8",
    )
    return config


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(base_url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {READY_TIMEOUT_SECONDS} s")


def fuzz_api(
    examples: int,
    *,
    seed: int = DEFAULT_SEED,
    work: Path,
    max_seconds: float = 1800.0,
) -> ApiReport:
    """Run schemathesis against ``docs/openapi.yaml`` and a server started here on 127.0.0.1.

    Args:
        examples: largest number of generated requests per API operation.
        seed: schemathesis' random seed.
        work: folder for the images, the configuration, the logs and the reports.
        max_seconds: the schemathesis run is stopped after this long (its own ``--max-time``
            would instead keep fuzzing until the time is spent).

    Returns:
        Operations and requests tested, and the failures schemathesis reported.
    """
    started = time.monotonic()
    images = work / "images"
    schema = work / "openapi.yaml"
    _fuzz_schema(fuzz_images_folder(images), schema)
    port = _free_port()
    config = _write_server_config(work, images, port)
    base_url = f"http://127.0.0.1:{port}"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("DARKROOM")
    }
    server_log = work / "server.log"
    with server_log.open("wb") as log_file:
        server = subprocess.Popen(
            [*SERVE_COMMAND, "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    try:
        _wait_ready(base_url, server, server_log)
        report = _run_schemathesis(schema, base_url, examples, seed, work, max_seconds)
        if server.poll() is not None:
            report.failures.append(f"the server exited with {server.returncode} during the run")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    server_errors = [
        line for line in server_log.read_text(errors="replace").splitlines() if "Traceback" in line
    ]
    if server_errors:
        report.failures.append(f"the server logged {len(server_errors)} tracebacks; see the log")
    report.seconds = time.monotonic() - started
    return report


def _run_schemathesis(
    schema: Path, base_url: str, examples: int, seed: int, work: Path, max_seconds: float
) -> ApiReport:
    executable = Path(sys.executable).with_name("st")
    reports = work / "schemathesis"
    command = [
        str(executable),
        "run",
        str(schema),
        "--url",
        base_url,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_headers_conformance,response_schema_conformance",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        "2",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "too_slow",
        "--report",
        "ndjson",
        "--report-dir",
        str(reports),
        "--no-color",
    ]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=max_seconds,
            check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired:
        report = ApiReport(exit_code=-1)
        _read_ndjson(reports, report)
        report.failures.append(f"schemathesis did not finish within {max_seconds:g} s")
        return report
    (work / "schemathesis.log").write_text(completed.stdout + completed.stderr, encoding="utf-8")
    report = ApiReport(exit_code=completed.returncode)
    _read_ndjson(reports, report)
    if completed.returncode != 0:
        report.failures.append(_failure_summary(completed.stdout + completed.stderr))
    return report


def _read_ndjson(reports: Path, report: ApiReport) -> None:
    operations: set[str] = set()
    for path in reports.glob("*.ndjson"):
        for line in path.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            scenario = event.get("ScenarioFinished")
            if scenario is None:
                continue
            recorder = scenario.get("recorder") or {}
            cases = recorder.get("cases") or {}
            if cases:
                operations.add(recorder.get("label") or "")
            report.cases += len(cases)
    report.operations = len(operations)


def _failure_summary(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return "schemathesis reported failures:\n" + "\n".join(lines[-60:])


# --- property tests ------------------------------------------------------------------------


def run_property_tests(seed: int, max_seconds: float) -> dict[str, Any]:
    """Run the planning property tests under the ``fuzz`` hypothesis profile.

    Returns:
        The pytest exit code, the duration and the last line of pytest's output.
    """
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        str(PROPERTY_TESTS),
        "--hypothesis-profile",
        "fuzz",
        f"--hypothesis-seed={seed}",
        f"--timeout={max(1, int(max_seconds))}",
    ]
    try:
        completed = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=max_seconds, check=False
        )
    except subprocess.TimeoutExpired:
        return {"exit_code": -1, "seconds": round(max_seconds, 1), "result": "timed out"}
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode != 0:
        print(completed.stdout[-4000:], file=sys.stderr)
    return {
        "exit_code": completed.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "result": lines[-1] if lines else "",
    }


# --- command line --------------------------------------------------------------------------


def _print_image_progress(report: ImageReport) -> None:
    print(f"  {report.cases} cases: {dict(report.outcomes)}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzzers and print their summary; return 1 when any case failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__)
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES, help="image cases to run")
    parser.add_argument(
        "--api-examples",
        type=int,
        default=DEFAULT_API_EXAMPLES,
        help="most generated requests per API operation",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed of both")
    parser.add_argument(
        "--max-seconds", type=float, default=3600.0, help="time limit of each fuzzer, seconds"
    )
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--out", type=Path, help="write the summary as JSON to this file")
    parser.add_argument("--skip-images", action="store_true", help="skip the image fuzzer")
    parser.add_argument("--skip-api", action="store_true", help="skip the API fuzzer")
    parser.add_argument("--skip-properties", action="store_true", help="skip the property tests")
    args = parser.parse_args(argv)
    # Pillow warns about damaged metadata it reads past; a warning alone is no failure.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\..*")

    summary: dict[str, Any] = {"seed": args.seed}
    failed = False
    if not args.skip_images:
        print(f"image fuzzer: {args.cases} cases, seed {args.seed}", file=sys.stderr)
        images = asyncio.run(
            fuzz_images(
                args.cases,
                seed=args.seed,
                crash_dir=args.crash_dir,
                max_seconds=args.max_seconds,
                progress=_print_image_progress,
            )
        )
        summary["images"] = {
            "cases": images.cases,
            "outcomes": dict(images.outcomes),
            "failures": images.failures,
            "seconds": round(images.seconds, 1),
            "stopped_early": images.stopped_early,
        }
        failed |= bool(images.failures)
    if not args.skip_api:
        print(f"API fuzzer: up to {args.api_examples} requests per operation", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix="darkroom-fuzz-"))
        api = fuzz_api(args.api_examples, seed=args.seed, work=work, max_seconds=args.max_seconds)
        summary["api"] = {
            "operations": api.operations,
            "cases": api.cases,
            "failures": api.failures,
            "seconds": round(api.seconds, 1),
            "exit_code": api.exit_code,
        }
        failed |= bool(api.failures)
        if api.failures:
            print(f"API fuzzer files kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    if not args.skip_properties:
        print("property tests under the fuzz profile", file=sys.stderr)
        properties = run_property_tests(args.seed, args.max_seconds)
        summary["properties"] = properties
        failed |= properties["exit_code"] != 0

    text = json.dumps(summary, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
