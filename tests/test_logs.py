"""Tests for the log formats, the access line's fields, and what the logs never contain."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.geometry import Size
from darkroom_gpu.logs import (
    TEXT_FORMAT,
    JsonFormatter,
    configure_logging,
    create_formatter,
    set_log_format,
)
from darkroom_gpu.manipulators import ImageJob, ImageResult
from darkroom_gpu.options import OutputFormat
from darkroom_gpu.server import create_app
from darkroom_gpu.signing import sign
from tests.conftest import Client, ClientFactory, make_settings, source_settings
from tests.stubs import GatedManipulator

ACCESS_LOGGER: Final = "darkroom_gpu.access"
ACCESS_FIELDS: Final = {
    "request_id",
    "method",
    "path",
    "status",
    "bytes",
    "duration_ms",
    "source",
    "device",
}
SIGNING_KEY: Final = "signing-key-that-never-reaches-a-log"
TEXT_LINE: Final = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) (\S+) (.*)")


def make_record(message: str, *args: object, **extra: Any) -> logging.LogRecord:
    """Build a record of the logger ``tests.logs`` at INFO, as logging itself does."""
    return logging.getLogger("tests.logs").makeRecord(
        "tests.logs", logging.INFO, __file__, 1, message, args, None, extra=extra
    )


def as_json(record: logging.LogRecord) -> dict[str, Any]:
    """Format `record` with `JsonFormatter`, check it is one line, and parse it."""
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert isinstance(data, dict)
    return data


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == ACCESS_LOGGER]


def every_line(caplog: pytest.LogCaptureFixture) -> str:
    """Render every captured record of the server in both formats, tracebacks included.

    aiohttp's test server writes an access log of its own, with the query, to ``aiohttp.access``.
    ``darkroom-gpu serve`` turns that log off, which tests/test_cli.py checks end to end.
    """
    formatters = (create_formatter("text"), create_formatter("json"))
    records = [record for record in caplog.records if record.name != "aiohttp.access"]
    return "\n".join(formatter.format(record) for record in records for formatter in formatters)


class DeviceManipulator(GatedManipulator):
    """A gated manipulator that claims to be ``cuda:7`` and reports `result_device` per image."""

    device = "cuda:7"

    def __init__(self, result_device: str | None) -> None:
        super().__init__(open_gate=True)
        self.result_device = result_device

    async def process(self, job: ImageJob) -> ImageResult:
        result = await super().process(job)
        return ImageResult(
            data=result.data,
            output_format=OutputFormat.JPEG,
            size=Size(8, 8),
            device=self.result_device,
        )


# --- the formatters ------------------------------------------------------------------------


def test_json_line_has_base_fields() -> None:
    record = make_record("loaded %d sources", 3)

    data = as_json(record)

    assert list(data) == ["time", "level", "logger", "message"]
    assert data["level"] == "INFO"
    assert data["logger"] == "tests.logs"
    assert data["message"] == "loaded 3 sources"
    assert datetime.fromisoformat(data["time"]).tzinfo == UTC
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", data["time"])


def test_json_line_adds_extra_fields() -> None:
    record = make_record("done", request_id="abc", status=200, source=None)

    data = as_json(record)

    assert data["request_id"] == "abc"
    assert data["status"] == 200
    assert data["source"] is None
    for attribute in ("args", "msg", "levelno", "pathname", "msecs", "exc_info", "thread"):
        assert attribute not in data


def test_json_line_keeps_base_fields_over_extra() -> None:
    record = make_record("real message")
    record.level = "forged"

    data = as_json(record)

    assert data["level"] == "INFO"


def test_json_line_escapes_line_breaks() -> None:
    record = make_record("first line\nsecond line\r\nthird")

    data = as_json(record)

    assert data["message"] == "first line\nsecond line\r\nthird"


def test_json_line_writes_unencodable_values_as_text() -> None:
    record = make_record("read", where=Path("/srv/images"), ratio=Decimal("1.50"))

    data = as_json(record)

    assert data["where"] == "/srv/images"
    assert data["ratio"] == "1.50"


def test_json_line_carries_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("tests.logs").makeRecord(
            "tests.logs", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )

    data = as_json(record)

    assert data["message"] == "failed"
    assert data["exc_info"].startswith("Traceback (most recent call last):")
    assert data["exc_info"].endswith("ValueError: boom")


def test_json_line_carries_stack() -> None:
    record = make_record("where am I")
    record.stack_info = "Stack (most recent call last):\n  File x"

    data = as_json(record)

    assert data["stack_info"] == "Stack (most recent call last):\n  File x"


def test_text_line_format() -> None:
    line = create_formatter("text").format(make_record("loaded %d sources", 3, status=200))

    match = TEXT_LINE.fullmatch(line)
    assert match is not None, line
    assert match.groups() == ("INFO", "tests.logs", "loaded 3 sources")


def test_unknown_log_format_rejected() -> None:
    with pytest.raises(ValueError, match="expected text or json, got 'xml'"):
        create_formatter("xml")


def test_configure_logging_installs_one_handler(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    level = root.level
    monkeypatch.setattr(root, "handlers", [])
    try:
        configure_logging(logging.WARNING, "json")
        configure_logging(logging.DEBUG, "text")
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert root.level == logging.WARNING

        logging.getLogger("tests.logs").warning("disk %s is full", "/srv")
        logging.getLogger("tests.logs").info("below the level")
        set_log_format("text")
        logging.getLogger("tests.logs").warning("as text")
        text_formatter = root.handlers[0].formatter
        assert type(text_formatter) is logging.Formatter
        assert text_formatter._fmt == TEXT_FORMAT
    finally:
        root.setLevel(level)

    first, second = capsys.readouterr().err.splitlines()
    assert json.loads(first)["message"] == "disk /srv is full"
    assert first.startswith('{"time":')
    assert second.endswith(" WARNING tests.logs as text")


def test_configure_logging_keeps_existing_handlers() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    assert before, "pytest's capture handlers are installed on the root logger"

    configure_logging(logging.DEBUG, "json")

    assert root.handlers == before


# --- the access line -----------------------------------------------------------------------


async def test_access_line_fields_in_json(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    response = await client.get("/jolla.jpg?w=64", headers={"X-Request-ID": "req-1"})
    body = await response.read()

    (record,) = access_records(caplog)
    data = as_json(record)

    assert response.status == 200
    assert ACCESS_FIELDS <= data.keys()
    assert "error" not in data
    assert data["request_id"] == "req-1"
    assert data["method"] == "GET"
    assert data["path"] == "/jolla.jpg"
    assert data["status"] == 200
    assert data["bytes"] == len(body)
    assert isinstance(data["duration_ms"], float)
    assert data["source"] == "test"
    assert data["device"] == "cpu"
    assert data["message"].endswith(" source=test device=cpu")


async def test_access_line_error_field(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    await client.get("/jolla.jpg?w=abc")

    (record,) = access_records(caplog)
    data = as_json(record)

    assert data["level"] == "WARNING"
    assert data["status"] == 400
    assert data["error"] == "w: expected an integer from 0 to 8192, got 'abc'"
    assert data["device"] is None
    assert "device=- error=" in data["message"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("/healthz", None, id="own route"),
        pytest.param("/missing.jpg?w=10", None, id="not found"),
        pytest.param("/jolla.jpg", None, id="passthrough"),
        pytest.param("/jolla.jpg?w=32", "/jolla.jpg?w=32", id="memory cache hit"),
    ],
)
async def test_access_device_dash_without_processing(
    client: Client, caplog: pytest.LogCaptureFixture, first: str, second: str | None
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    await client.get(first)
    if second is not None:
        caplog.clear()
        await client.get(second)

    (record,) = access_records(caplog)

    assert " device=- " in record.getMessage() + " "
    assert as_json(record)["device"] is None


@pytest.mark.parametrize(
    ("result_device", "logged"),
    [
        pytest.param(None, "cuda:7", id="manipulator device"),
        pytest.param("cpu", "cpu", id="handed to the CPU"),
    ],
)
async def test_access_device_from_result(
    aiohttp_client: AiohttpClient,
    image_root: Path,
    caplog: pytest.LogCaptureFixture,
    result_device: str | None,
    logged: str,
) -> None:
    app = create_app(make_settings(source_settings(image_root)), DeviceManipulator(result_device))
    client = await aiohttp_client(app)
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    response = await client.get("/jolla.jpg?w=16")

    (record,) = access_records(caplog)
    assert response.status == 200
    assert as_json(record)["device"] == logged


async def test_access_device_of_joined_transform(
    aiohttp_client: AiohttpClient, image_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manipulator = DeviceManipulator("cuda:7")
    manipulator.gate.clear()
    client = await aiohttp_client(
        create_app(make_settings(source_settings(image_root)), manipulator)
    )
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    first = asyncio.ensure_future(client.get("/jolla.jpg?w=16"))
    second = asyncio.ensure_future(client.get("/jolla.jpg?w=16"))
    for _ in range(200):
        if manipulator.started:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    manipulator.gate.set()
    responses = await asyncio.gather(first, second)

    assert [response.status for response in responses] == [200, 200]
    assert manipulator.started == 1
    devices = [as_json(record)["device"] for record in access_records(caplog)]
    assert devices == ["cuda:7", "cuda:7"]


# --- what is never logged ------------------------------------------------------------------


async def test_signed_request_logs_no_signature(
    make_client: ClientFactory, image_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(
        source_settings(image_root, prefix="/team", signing_keys=(SIGNING_KEY,))
    )
    signature = sign(SIGNING_KEY, "/team/jolla.jpg", [("w", "40")])
    wrong = sign("another-key-of-enough-length", "/team/jolla.jpg", [("w", "40")])
    caplog.set_level(logging.DEBUG)

    accepted = await client.get(f"/team/jolla.jpg?w=40&s={signature}")
    rejected = await client.get(f"/team/jolla.jpg?w=40&s={wrong}")
    meta = await client.get(f"/_meta/team/jolla.jpg?w=40&s={signature}")

    assert [accepted.status, rejected.status, meta.status] == [200, 403, 200]
    paths = [as_json(record)["path"] for record in access_records(caplog)]
    assert paths == ["/team/jolla.jpg", "/team/jolla.jpg", "/_meta/team/jolla.jpg"]
    logged = every_line(caplog)
    assert signature not in logged
    assert wrong not in logged
    assert SIGNING_KEY not in logged
    assert re.search(r"[?&]s=", logged) is None


async def test_unhandled_error_traceback_in_json_only(
    aiohttp_client: AiohttpClient, image_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenManipulator(GatedManipulator):
        async def process(self, job: ImageJob) -> ImageResult:
            raise RuntimeError("internal detail for the log only")

    client = await aiohttp_client(
        create_app(make_settings(source_settings(image_root)), BrokenManipulator())
    )

    response = await client.get("/jolla.jpg?w=10")
    body = await response.text()

    assert response.status == 500
    assert "internal detail" not in body
    assert "Traceback" not in body
    (error,) = [record for record in caplog.records if record.exc_info]
    data = as_json(error)
    assert data["logger"] == "darkroom_gpu.server.middleware"
    assert response.headers["X-Request-ID"] in data["message"]
    assert "RuntimeError: internal detail for the log only" in data["exc_info"]
    (access,) = access_records(caplog)
    assert as_json(access)["error"] == "internal error"
