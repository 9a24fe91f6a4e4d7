"""Tests for the circuit breaker, request coalescing, retries and network source options."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import Mapping
from ipaddress import ip_network
from pathlib import Path

import pytest

from darkroom_gpu.config import (
    CircuitBreakerSettings,
    ConfigError,
    ConfigReader,
    SourceSettings,
    load_settings,
)
from darkroom_gpu.errors import (
    ForbiddenError,
    NotFoundError,
    ServiceError,
    SourceFailedError,
    SourceTimeoutError,
    UnprocessableImageError,
)
from darkroom_gpu.server.router import SourceRouter
from darkroom_gpu.sources import FilesystemSource, Source, SourceObject
from darkroom_gpu.sources.filesystem import FilesystemOptions
from darkroom_gpu.sources.http import HttpOptions
from darkroom_gpu.sources.resilience import (
    CircuitBreaker,
    CircuitState,
    ResilientSource,
    Timeouts,
    TransientError,
    backoff_delay,
    retry_transient,
)
from darkroom_gpu.sources.s3 import S3Options

NO_ENVIRONMENT: Mapping[str, str] = {}
MAX_BYTES = 1024
OPEN_MESSAGE = "source fake is unavailable (circuit open)"


class FakeClock:
    """A monotonic clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSource(Source):
    """A source that raises the queued errors in turn, then returns ``data``.

    While `gate` is cleared, every fetch waits for it, so tests can hold calls in flight.
    """

    def __init__(self, failures: int = 5, reset_after: float = 10.0) -> None:
        settings = SourceSettings(
            name="fake",
            kind="tests.test_resilience:FakeSource",
            prefix="",
            hosts=(),
            options=None,
            circuit_breaker=CircuitBreakerSettings(failures=failures, reset_after=reset_after),
        )
        super().__init__(settings)
        self.errors: list[ServiceError] = []
        self.calls: list[str] = []
        self.finished = 0
        # Notified whenever `calls` or `finished` changes.
        self.changed = asyncio.Condition()
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed = False

    @classmethod
    def read_options(cls, reader: ConfigReader) -> object:
        return None

    async def fetch(self, path: str, *, max_bytes: int) -> SourceObject:
        async with self.changed:
            self.calls.append(path)
            self.changed.notify_all()
        try:
            await self.gate.wait()
            if self.errors:
                raise self.errors.pop(0)
            return SourceObject(data=f"data of {path}".encode(), identity=f"fake:{path}")
        finally:
            async with self.changed:
                self.finished += 1
                self.changed.notify_all()

    async def close(self) -> None:
        self.closed = True


def wrap(fake: FakeSource, clock: FakeClock | None = None) -> ResilientSource:
    return ResilientSource(fake, clock=clock or FakeClock())


async def fail_times(
    source: ResilientSource, fake: FakeSource, error: ServiceError, n: int
) -> None:
    """Make `n` fetches that each raise `error` from the fake source."""
    for _ in range(n):
        fake.errors.append(error)
        with pytest.raises(type(error)):
            await source.fetch("a.jpg", max_bytes=MAX_BYTES)


async def wait_for_calls(fake: FakeSource, count: int) -> None:
    """Let the event loop run until the fake source has seen `count` calls."""
    async with asyncio.timeout(2), fake.changed:
        await fake.changed.wait_for(lambda: len(fake.calls) >= count)


# --- circuit breaker -----------------------------------------------------------------------


async def test_breaker_opens_after_failures() -> None:
    fake = FakeSource(failures=3)
    source = wrap(fake)
    await fail_times(source, fake, SourceFailedError("down"), 3)

    with pytest.raises(SourceFailedError, match=r"circuit open") as excinfo:
        await source.fetch("a.jpg", max_bytes=MAX_BYTES)

    assert excinfo.value.public_message == OPEN_MESSAGE
    assert len(fake.calls) == 3


async def test_breaker_open_skips_every_path() -> None:
    fake = FakeSource(failures=2)
    source = wrap(fake)
    await fail_times(source, fake, SourceFailedError("down"), 2)

    with pytest.raises(SourceFailedError, match=r"circuit open"):
        await source.fetch("other.jpg", max_bytes=MAX_BYTES)

    assert "other.jpg" not in fake.calls


async def test_breaker_counts_timeouts() -> None:
    fake = FakeSource(failures=2)
    source = wrap(fake)
    await fail_times(source, fake, SourceTimeoutError("slow"), 2)

    assert source.breaker.state is CircuitState.OPEN


@pytest.mark.parametrize(
    "error",
    [NotFoundError("missing"), ForbiddenError("denied"), UnprocessableImageError("big")],
    ids=["not-found", "forbidden", "too-large"],
)
async def test_breaker_ignores_object_errors(error: ServiceError) -> None:
    fake = FakeSource(failures=2)
    source = wrap(fake)
    await fail_times(source, fake, error, 4)

    assert source.breaker.state is CircuitState.CLOSED
    assert len(fake.calls) == 4


async def test_breaker_needs_consecutive_failures() -> None:
    fake = FakeSource(failures=3)
    source = wrap(fake)
    await fail_times(source, fake, SourceFailedError("down"), 2)
    await source.fetch("a.jpg", max_bytes=MAX_BYTES)
    await fail_times(source, fake, SourceFailedError("down"), 2)

    assert source.breaker.state is CircuitState.CLOSED


async def test_breaker_object_error_resets_count() -> None:
    fake = FakeSource(failures=3)
    source = wrap(fake)
    await fail_times(source, fake, SourceFailedError("down"), 2)
    await fail_times(source, fake, NotFoundError("missing"), 1)
    await fail_times(source, fake, SourceFailedError("down"), 2)

    assert source.breaker.state is CircuitState.CLOSED


async def test_breaker_half_open_after_reset() -> None:
    clock = FakeClock()
    fake = FakeSource(failures=1, reset_after=10)
    source = wrap(fake, clock)
    await fail_times(source, fake, SourceFailedError("down"), 1)

    clock.advance(9.9)
    before_reset = source.breaker.state
    clock.advance(0.2)
    after_reset = source.breaker.state

    assert before_reset is CircuitState.OPEN
    assert after_reset is CircuitState.HALF_OPEN


async def test_breaker_trial_success_closes() -> None:
    clock = FakeClock()
    fake = FakeSource(failures=1, reset_after=10)
    source = wrap(fake, clock)
    await fail_times(source, fake, SourceFailedError("down"), 1)
    clock.advance(10)

    fetched = await source.fetch("a.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == b"data of a.jpg"
    assert source.breaker.state is CircuitState.CLOSED


async def test_breaker_trial_not_found_closes() -> None:
    clock = FakeClock()
    fake = FakeSource(failures=1, reset_after=10)
    source = wrap(fake, clock)
    await fail_times(source, fake, SourceFailedError("down"), 1)
    clock.advance(10)

    await fail_times(source, fake, NotFoundError("missing"), 1)

    assert source.breaker.state is CircuitState.CLOSED


async def test_breaker_trial_failure_reopens() -> None:
    clock = FakeClock()
    fake = FakeSource(failures=3, reset_after=10)
    source = wrap(fake, clock)
    await fail_times(source, fake, SourceFailedError("down"), 3)
    clock.advance(10)

    await fail_times(source, fake, SourceFailedError("still down"), 1)

    reopened = source.breaker.state
    clock.advance(9.9)
    before_reset = source.breaker.state
    clock.advance(0.2)
    after_reset = source.breaker.state

    assert reopened is CircuitState.OPEN
    assert before_reset is CircuitState.OPEN
    assert after_reset is CircuitState.HALF_OPEN


async def test_breaker_one_trial_at_a_time() -> None:
    clock = FakeClock()
    fake = FakeSource(failures=1, reset_after=10)
    source = wrap(fake, clock)
    await fail_times(source, fake, SourceFailedError("down"), 1)
    clock.advance(10)
    fake.gate.clear()

    trial = asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES))
    await wait_for_calls(fake, 2)
    with pytest.raises(SourceFailedError, match=r"circuit open"):
        await source.fetch("b.jpg", max_bytes=MAX_BYTES)
    fake.gate.set()
    await trial

    assert fake.calls == ["a.jpg", "a.jpg"]
    assert source.breaker.state is CircuitState.CLOSED


async def test_breaker_late_failure_keeps_wait() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(CircuitBreakerSettings(failures=1, reset_after=10), "fake", clock)
    first = breaker.acquire()
    second = breaker.acquire()
    breaker.record(failed=True, trial=first)
    clock.advance(8)

    breaker.record(failed=True, trial=second)
    clock.advance(2)

    assert breaker.state is CircuitState.HALF_OPEN


async def test_breaker_cancelled_trial_allows_next() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(CircuitBreakerSettings(failures=1, reset_after=10), "fake", clock)
    breaker.record(failed=True, trial=breaker.acquire())
    clock.advance(10)

    trial = breaker.acquire()
    breaker.record(failed=None, trial=trial)

    assert trial
    assert breaker.acquire()


# --- request coalescing --------------------------------------------------------------------


async def test_coalesce_concurrent_fetches() -> None:
    fake = FakeSource()
    source = wrap(fake)
    fake.gate.clear()

    tasks = [asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES)) for _ in range(10)]
    await wait_for_calls(fake, 1)
    fake.gate.set()
    results = await asyncio.gather(*tasks)

    assert fake.calls == ["a.jpg"]
    assert {result.data for result in results} == {b"data of a.jpg"}


async def test_coalesce_shares_error() -> None:
    fake = FakeSource()
    source = wrap(fake)
    fake.gate.clear()
    fake.errors.append(NotFoundError("missing"))

    tasks = [asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES)) for _ in range(5)]
    await wait_for_calls(fake, 1)
    fake.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert fake.calls == ["a.jpg"]
    assert all(isinstance(result, NotFoundError) for result in results)


async def test_coalesce_counts_one_failure() -> None:
    fake = FakeSource(failures=2)
    source = wrap(fake)
    fake.gate.clear()
    fake.errors.append(SourceFailedError("down"))

    tasks = [asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES)) for _ in range(5)]
    await wait_for_calls(fake, 1)
    fake.gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)

    assert source.breaker.state is CircuitState.CLOSED


async def test_coalesce_keys_on_path_and_limit() -> None:
    fake = FakeSource()
    source = wrap(fake)
    fake.gate.clear()

    tasks = [
        asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES)),
        asyncio.create_task(source.fetch("b.jpg", max_bytes=MAX_BYTES)),
        asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES + 1)),
    ]
    await wait_for_calls(fake, 3)
    fake.gate.set()
    await asyncio.gather(*tasks)

    assert sorted(fake.calls) == ["a.jpg", "a.jpg", "b.jpg"]


async def test_coalesce_cancelled_waiter_spares_others() -> None:
    fake = FakeSource()
    source = wrap(fake)
    fake.gate.clear()
    leaving = asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES))
    staying = asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES))
    await wait_for_calls(fake, 1)

    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    fake.gate.set()
    fetched = await staying

    assert fetched.data == b"data of a.jpg"
    assert fake.calls == ["a.jpg"]


async def test_coalesce_fetch_cancelled_without_waiters() -> None:
    fake = FakeSource()
    source = wrap(fake)
    fake.gate.clear()
    waiter = asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES))
    await wait_for_calls(fake, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # One more turn of the loop lets the cancelled shared fetch end and be dropped.
    await asyncio.sleep(0.01)
    ended_while_gate_closed = fake.finished

    fake.gate.set()
    fetched = await source.fetch("a.jpg", max_bytes=MAX_BYTES)

    assert ended_while_gate_closed == 1
    assert fetched.data == b"data of a.jpg"
    assert fake.calls == ["a.jpg", "a.jpg"]


async def test_coalesce_sequential_fetches_call_again() -> None:
    fake = FakeSource()
    source = wrap(fake)

    await source.fetch("a.jpg", max_bytes=MAX_BYTES)
    await source.fetch("a.jpg", max_bytes=MAX_BYTES)

    assert fake.calls == ["a.jpg", "a.jpg"]


async def test_close_cancels_inflight_fetches() -> None:
    fake = FakeSource()
    source = wrap(fake)
    fake.gate.clear()
    waiter = asyncio.create_task(source.fetch("a.jpg", max_bytes=MAX_BYTES))
    await wait_for_calls(fake, 1)

    await source.close()

    assert fake.closed
    with pytest.raises(asyncio.CancelledError):
        await waiter


def test_router_wraps_every_source(tmp_path: Path) -> None:
    settings = SourceSettings(
        name="files", kind="filesystem", prefix="", hosts=(), options=FilesystemOptions(tmp_path)
    )
    route = SourceRouter((settings,)).resolve(None, "/a.jpg")

    assert isinstance(route.source, ResilientSource)
    assert isinstance(route.source.inner, FilesystemSource)


# --- retries -------------------------------------------------------------------------------


class FlakyAttempt:
    """An attempt that fails transiently `failures` times, then returns ``"ok"``."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError(SourceFailedError("upstream status 503"), "upstream status 503")
        return "ok"


def far_deadline() -> float:
    return asyncio.get_running_loop().time() + 60


async def test_retry_until_success() -> None:
    attempt = FlakyAttempt(failures=2)

    result = await retry_transient(attempt, source="fake", retries=2, deadline=far_deadline())

    assert result == "ok"
    assert attempt.calls == 3


async def test_retry_gives_up_with_error() -> None:
    attempt = FlakyAttempt(failures=5)

    with pytest.raises(SourceFailedError, match=r"upstream status 503"):
        await retry_transient(attempt, source="fake", retries=2, deadline=far_deadline())

    assert attempt.calls == 3


async def test_retry_zero_retries_tries_once() -> None:
    attempt = FlakyAttempt(failures=1)

    with pytest.raises(SourceFailedError):
        await retry_transient(attempt, source="fake", retries=0, deadline=far_deadline())

    assert attempt.calls == 1


async def test_retry_stops_at_deadline() -> None:
    attempt = FlakyAttempt(failures=5)
    deadline = asyncio.get_running_loop().time() + 0.01

    with pytest.raises(SourceFailedError):
        await retry_transient(attempt, source="fake", retries=5, deadline=deadline)

    assert attempt.calls == 1


async def test_retry_passes_final_errors_through() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise NotFoundError("missing")

    with pytest.raises(NotFoundError):
        await retry_transient(attempt, source="fake", retries=3, deadline=far_deadline())

    assert calls == 1


async def test_retry_logs_each_retry(caplog: pytest.LogCaptureFixture) -> None:
    attempt = FlakyAttempt(failures=2)

    with caplog.at_level(logging.WARNING, logger="darkroom_gpu.sources.resilience"):
        await retry_transient(attempt, source="fake", retries=2, deadline=far_deadline())

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "source fake: attempt 1 of 3 failed (upstream status 503)" in messages[0]
    assert "attempt 2 of 3" in messages[1]


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 0.05, 0.1), (2, 0.1, 0.2), (3, 0.2, 0.4)])
def test_backoff_delay_doubles(attempt: int, low: float, high: float) -> None:
    delays = [backoff_delay(attempt) for _ in range(50)]

    assert min(delays) >= low
    assert max(delays) <= high


# --- configuration of http and s3 sources --------------------------------------------------


def write_config(folder: Path, text: str) -> Path:
    path = folder / "darkroom.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ=NO_ENVIRONMENT)
    return excinfo.value.errors


def has_error(errors: list[str], key: str, fragment: str) -> bool:
    return any(error.startswith(f"{key}: ") and fragment in error for error in errors)


def test_http_options_defaults(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: web
            kind: http
            base_url: http://127.0.0.1:9000/images
        """,
    )
    options = load_settings(path, environ=NO_ENVIRONMENT).sources[0].options

    assert options == HttpOptions(base_url="http://127.0.0.1:9000/images/")
    assert isinstance(options, HttpOptions)
    assert options.timeouts == Timeouts(connect=2.0, read=5.0, total=10.0)
    assert options.max_redirects == 3
    assert options.retries == 2
    assert options.allowed_networks == ()


def test_http_options_all_keys(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: web
            kind: http
            base_url: https://img.example.com/a/
            timeouts: {connect: 0.5, read: 1, total: 3}
            max_redirects: 0
            retries: 4
            circuit_breaker: {failures: 2, reset_after: 0.5}
            allowed_networks: [127.0.0.0/8, 10.1.2.3, "fd00::/8"]
        """,
    )
    source = load_settings(path, environ=NO_ENVIRONMENT).sources[0]

    assert source.options == HttpOptions(
        base_url="https://img.example.com/a/",
        timeouts=Timeouts(connect=0.5, read=1.0, total=3.0),
        max_redirects=0,
        retries=4,
        allowed_networks=(
            ip_network("127.0.0.0/8"),
            ip_network("10.1.2.3/32"),
            ip_network("fd00::/8"),
        ),
    )
    assert source.circuit_breaker == CircuitBreakerSettings(failures=2, reset_after=0.5)


def test_http_options_errors_reported_together(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: web
            prefix: /web
            kind: http
            base_url: ftp://127.0.0.1/images/
            timeouts: {connect: 0, total: -1, idle: 3}
            max_redirects: many
            retries: 99
            allowed_networks: [127.0.0.1/8, localhost]
          - name: other
            prefix: /other
            kind: http
            base_url: http://127.0.0.1/images/?token=1
            timeouts: 5
            allowed_networks: 127.0.0.0/8
        """,
    )
    errors = config_errors(path)

    assert has_error(errors, "sources[0].base_url", "expected an http or https URL")
    assert has_error(errors, "sources[0].timeouts.connect", "expected a number")
    assert has_error(errors, "sources[0].timeouts.total", "expected a number")
    assert has_error(errors, "sources[0].timeouts.idle", "unknown key")
    assert has_error(errors, "sources[0].max_redirects", "expected an integer")
    assert has_error(errors, "sources[0].retries", "expected an integer from 0 to 10")
    assert has_error(errors, "sources[0].allowed_networks", "127.0.0.1/8 has host bits set")
    assert has_error(errors, "sources[0].allowed_networks", "got 'localhost'")
    assert has_error(errors, "sources[1].base_url", "without query")
    assert has_error(errors, "sources[1].timeouts", "expected a mapping")
    assert has_error(errors, "sources[1].allowed_networks", "expected a list of networks")


def test_http_base_url_required(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: web
            kind: http
        """,
    )

    assert has_error(config_errors(path), "sources[0].base_url", "missing")


def test_s3_options_defaults(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: bucket
            kind: s3
            bucket: photos
        """,
    )
    options = load_settings(path, environ=NO_ENVIRONMENT).sources[0].options

    assert options == S3Options(bucket="photos")
    assert isinstance(options, S3Options)
    assert options.region == "us-east-1"
    assert options.endpoint_url is None
    assert options.access_key_id is None


def test_s3_options_all_keys(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: bucket
            kind: s3
            bucket: photos
            region: eu-west-1
            endpoint_url: http://127.0.0.1:9001
            access_key_id: AKIDEXAMPLE
            secret_access_key: not-a-real-secret
            session_token: token
            timeouts: {total: 4}
            retries: 1
        """,
    )
    options = load_settings(path, environ=NO_ENVIRONMENT).sources[0].options

    assert options == S3Options(
        bucket="photos",
        region="eu-west-1",
        endpoint_url="http://127.0.0.1:9001",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="not-a-real-secret",
        session_token="token",
        timeouts=Timeouts(total=4.0),
        retries=1,
    )


def test_s3_options_repr_hides_secrets() -> None:
    options = S3Options(
        bucket="photos", access_key_id="AKIDEXAMPLE", secret_access_key="hidden-secret"
    )

    assert "hidden-secret" not in repr(options)


def test_s3_options_errors_reported_together(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: one
            prefix: /one
            kind: s3
            endpoint_url: s3://store
            access_key_id: AKIDEXAMPLE
            timeouts: {read: fast}
          - name: two
            prefix: /two
            kind: s3
            bucket: "a/b"
            secret_access_key: not-a-real-secret
          - name: three
            prefix: /three
            kind: s3
            bucket: photos
            session_token: token
        """,
    )
    errors = config_errors(path)

    assert has_error(errors, "sources[0].bucket", "missing")
    assert has_error(errors, "sources[0].endpoint_url", "expected an http or https URL")
    assert has_error(errors, "sources[0].secret_access_key", "missing")
    assert has_error(errors, "sources[0].timeouts.read", "expected a number")
    assert has_error(errors, "sources[1].bucket", "without '/'")
    assert has_error(errors, "sources[1].access_key_id", "missing")
    assert has_error(errors, "sources[2].session_token", "needs access_key_id")


def test_unknown_kind_lists_builtins(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: web
            kind: ftp
        """,
    )

    assert has_error(config_errors(path), "sources[0].kind", "filesystem, http, s3")
