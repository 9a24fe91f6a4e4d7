"""Configuration reloads without downtime, and source kinds loaded by import path."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.config import ConfigError, load_settings
from darkroom_gpu.server import create_app
from tests.conftest import Client, open_image
from tests.test_cache import CountingManipulator


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def two_sources(root: Path) -> str:
    return f"""\
    server: {{workers: 2}}
    device: cpu
    sources:
      - name: team-a
        prefix: /a
        kind: filesystem
        root: {root}
      - name: team-b
        prefix: /b
        kind: filesystem
        root: {root}
    """


def one_source(root: Path, *, cache_ttl: int = 31536000) -> str:
    return f"""\
    server: {{workers: 2}}
    device: cpu
    sources:
      - name: team-a
        prefix: /a
        kind: filesystem
        root: {root}
        cache_ttl: {cache_ttl}
      - name: team-c
        prefix: /c
        kind: filesystem
        root: {root}
    """


async def reloaded_client(
    aiohttp_client: AiohttpClient, config: Path, manipulator: CountingManipulator | None = None
) -> Client:
    app = create_app(load_settings(config, environ={}), manipulator, reloader=(config, {}))
    return await aiohttp_client(app)


async def wait_for_status(client: Client, url: str, status: int) -> int:
    """Poll `url` until it answers `status`, for at most five seconds."""
    response_status = 0
    for _ in range(100):
        response_status = (await client.get(url)).status
        if response_status == status:
            break
        await asyncio.sleep(0.05)
    return response_status


async def test_sighup_applies_new_sources(
    aiohttp_client: AiohttpClient, tmp_path: Path, image_root: Path
) -> None:
    config = write_config(tmp_path / "darkroom.yaml", two_sources(image_root))
    client = await reloaded_client(aiohttp_client, config)
    assert (await client.get("/b/DSCN0010.jpg?w=10")).status == 200

    write_config(config, one_source(image_root, cache_ttl=60))
    os.kill(os.getpid(), signal.SIGHUP)

    assert await wait_for_status(client, "/c/DSCN0010.jpg?w=10", 200) == 200
    assert (await client.get("/b/DSCN0010.jpg?w=10")).status == 404
    changed = await client.get("/a/DSCN0010.jpg?w=10")
    assert changed.headers["Cache-Control"] == "public, max-age=60"


async def test_invalid_reload_keeps_configuration(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    image_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = write_config(tmp_path / "darkroom.yaml", two_sources(image_root))
    client = await reloaded_client(aiohttp_client, config)

    write_config(config, "sources: [{name: broken, kind: filesystem, root: ./missing}]\n")
    os.kill(os.getpid(), signal.SIGHUP)
    for _ in range(100):
        if any("reload rejected" in record.getMessage() for record in caplog.records):
            break
        await asyncio.sleep(0.05)

    assert any("sources[0].root" in record.getMessage() for record in caplog.records)
    assert (await client.get("/b/DSCN0010.jpg?w=10")).status == 200


async def test_in_flight_request_finishes_on_old_config(
    aiohttp_client: AiohttpClient, tmp_path: Path, image_root: Path
) -> None:
    manipulator = CountingManipulator()
    config = write_config(tmp_path / "darkroom.yaml", two_sources(image_root))
    client = await reloaded_client(aiohttp_client, config, manipulator)

    manipulator.release.clear()
    in_flight = asyncio.ensure_future(client.get("/b/DSCN0010.jpg?w=12"))
    for _ in range(200):
        if manipulator.jobs:
            break
        await asyncio.sleep(0.01)
    write_config(config, one_source(image_root))
    os.kill(os.getpid(), signal.SIGHUP)
    # Passthrough needs no manipulator, which is held until the release below.
    assert await wait_for_status(client, "/b/DSCN0010.jpg", 404) == 404

    manipulator.release.set()
    response = await in_flight
    assert response.status == 200
    assert open_image(await response.read()).width == 12


async def test_watch_reloads_changed_file(
    aiohttp_client: AiohttpClient, tmp_path: Path, image_root: Path
) -> None:
    text = two_sources(image_root).replace(
        "server: {workers: 2}", "server: {workers: 2, watch_config: true}"
    )
    config = write_config(tmp_path / "darkroom.yaml", text)
    client = await reloaded_client(aiohttp_client, config)

    write_config(
        config,
        one_source(image_root).replace(
            "server: {workers: 2}", "server: {workers: 2, watch_config: true}"
        ),
    )
    assert await wait_for_status(client, "/c/DSCN0010.jpg?w=10", 200) == 200


async def test_restart_only_settings_are_kept(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    image_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = write_config(tmp_path / "darkroom.yaml", two_sources(image_root))
    client = await reloaded_client(aiohttp_client, config)

    write_config(config, two_sources(image_root).replace("workers: 2", "workers: 3"))
    os.kill(os.getpid(), signal.SIGHUP)
    for _ in range(100):
        if any("restart" in record.getMessage() for record in caplog.records):
            break
        await asyncio.sleep(0.05)

    assert any("server changed" in record.getMessage() for record in caplog.records)
    assert (await client.get("/a/DSCN0010.jpg?w=10")).status == 200


def swatch_config(tmp_path: Path, extra: str = "") -> Path:
    return write_config(
        tmp_path / "darkroom.yaml",
        f"""\
        device: cpu
        sources:
          - name: swatches
            prefix: /swatches
            kind: tests.example_source:SwatchSource
            width: 40
            height: 20{extra}
        """,
    )


async def test_kind_by_import_path_serves(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    settings = load_settings(swatch_config(tmp_path), environ={})
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/swatches/ff0000.png?w=20&format=png")
    image = open_image(await response.read()).convert("RGB")
    assert response.status == 200
    assert image.size == (20, 10)
    assert image.getpixel((5, 5)) == (255, 0, 0)


async def test_kind_by_import_path_not_found(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    settings = load_settings(swatch_config(tmp_path), environ={})
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/swatches/nothing.png")).status == 404


def test_kind_options_validated_with_keys(tmp_path: Path) -> None:
    config = (
        swatch_config(tmp_path, "\n            depth: 3")
        .read_text()
        .replace("width: 40", "width: 0")
    )
    write_config(tmp_path / "darkroom.yaml", config)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(tmp_path / "darkroom.yaml", environ={})
    errors = excinfo.value.errors
    assert any(error.startswith("sources[0].width: ") for error in errors), errors
    assert any(error.startswith("sources[0].depth: unknown key") for error in errors), errors


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        pytest.param("no_such_module:Thing", "cannot import", id="missing module"),
        pytest.param("tests.example_source:Missing", "not a subclass", id="missing class"),
        pytest.param("tests.example_source:SwatchOptions", "not a subclass", id="not a source"),
        pytest.param("gcs", "expected one of", id="unknown name"),
    ],
)
def test_bad_kind_is_reported(tmp_path: Path, kind: str, fragment: str) -> None:
    text = swatch_config(tmp_path).read_text().replace("tests.example_source:SwatchSource", kind)
    write_config(tmp_path / "darkroom.yaml", text)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(tmp_path / "darkroom.yaml", environ={})
    assert any(
        error.startswith("sources[0].kind: ") and fragment in error
        for error in excinfo.value.errors
    ), excinfo.value.errors
