"""Load the configuration: YAML file, then ``DARKROOM_*`` environment, then command-line options.

Every problem is collected and reported together, each naming its key (``server.port``,
``sources[1].root``), so an operator fixes a file in one pass.

Environment overrides use ``__`` to step into a mapping, and a source is addressed by its name:
``DARKROOM_SERVER__PORT=8080``, ``DARKROOM_DEVICE=cpu``,
``DARKROOM_LIMITS__MAX_SOURCE_BYTES=1048576``, ``DARKROOM_LOGGING__FORMAT=json``,
``DARKROOM_SOURCES__SAMPLES__CACHE_TTL=60``.
A value is taken verbatim by keys that expect a string, secrets included, and parsed as YAML by
the others, so ``8080`` is an integer, ``true`` a boolean and ``[a, b]`` a list. An empty value
removes the key, so its default applies.
``DARKROOM_CONFIG`` names the configuration file when ``--config`` is not given.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from darkroom_gpu.config.reader import (
    ConfigError,
    ConfigReader,
    EnvironmentValue,
    describe,
    typed_value,
)
from darkroom_gpu.config.settings import (
    DEFAULT_SAMPLES_ROOT,
    KERNEL_CHOICES,
    LOG_FORMATS,
    ONE_YEAR_SECONDS,
    BatchSettings,
    CacheSettings,
    CircuitBreakerSettings,
    Limits,
    LoggingSettings,
    ServerSettings,
    Settings,
    SharedStoreSettings,
    SourceSettings,
)
from darkroom_gpu.errors import InvalidParameterError
from darkroom_gpu.options import parse_options

__all__ = ("MIN_SIGNING_KEY_LENGTH", "RESERVED_PREFIXES", "load_settings")

ENV_PREFIX: Final = "DARKROOM_"
ENV_CONFIG_FILE: Final = "DARKROOM_CONFIG"
ENV_SEPARATOR: Final = "__"
DEVICE_PATTERN: Final = re.compile(r"auto|cpu|cuda(:\d+)?")
SOURCE_NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MIN_SIGNING_KEY_LENGTH: Final = 16
HOST_NAME_PATTERN: Final = re.compile(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]")
# A DNS name of letters, digits and inner hyphens per label (RFC 1123), checked without a lookup.
LISTEN_HOST_PATTERN: Final = re.compile(
    r"(?=.{1,253}\.?$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?",
    re.IGNORECASE,
)

# Paths the server serves itself, which a source prefix may not shadow.
RESERVED_PREFIXES: Final = ("/ping", "/healthz", "/readyz", "/metrics", "/_")


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read, override and validate the configuration.

    Args:
        path: YAML file; ``None`` falls back to ``DARKROOM_CONFIG``, then to a built-in
            configuration that serves the bundled sample folder.
        environ: environment to read ``DARKROOM_*`` overrides from; defaults to ``os.environ``.
        overrides: top-level keys set last, such as command-line options (``{"device": "cpu"}``
            or ``{"server": {"port": 8080}}``).

    Returns:
        The validated settings.

    Raises:
        ConfigError: with every problem found, when anything is invalid or unreadable.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_CONFIG_FILE):
        path = Path(environ[ENV_CONFIG_FILE])

    raw = _read_file(path) if path is not None else {"sources": _builtin_sources()}
    base_dir = path.parent if path is not None else Path.cwd()

    errors: list[str] = []
    _apply_environment(raw, environ, errors)
    for key, value in (overrides or {}).items():
        _merge(raw, key, value)

    settings = _validate(ConfigReader(raw, "", errors, base_dir))
    if errors or settings is None:
        raise ConfigError(errors)
    return settings


def _builtin_sources() -> list[dict[str, Any]]:
    return [
        {"name": "samples", "prefix": "", "kind": "filesystem", "root": str(DEFAULT_SAMPLES_ROOT)}
    ]


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: is not UTF-8 text"]) from exc

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {_describe_yaml_error(exc)}"]) from exc

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {describe(raw)}"])
    return raw


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    # PyYAML's own message quotes the lines around the problem, which may hold a secret, so
    # only the problem and its position are reported.
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return type(exc).__name__
    mark = exc.problem_mark
    message = f"{exc.problem or 'syntax error'} at line {mark.line + 1}, column {mark.column + 1}"
    if exc.context and exc.context_mark is not None:
        start = exc.context_mark
        message += f", {exc.context} at line {start.line + 1}, column {start.column + 1}"
    return message


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str], errors: list[str]) -> None:
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR)]
        # Parsed later by the getter that reads the key, so a string such as a secret with " #"
        # in it is never cut as a YAML comment.
        value = EnvironmentValue(environ[name]) if environ[name] else None

        if keys[0] == "sources":
            _apply_source_override(raw, name, keys[1:], value, errors)
        elif keys[0] in ("server", "device", "limits", "batching", "cache", "logging"):
            _merge(raw, keys[0], _nest(keys[1:], value))
        else:
            expected = "SERVER, DEVICE, LIMITS, BATCHING, CACHE, LOGGING or SOURCES"
            errors.append(f"{name}: unknown setting; expected {expected}")


def _apply_source_override(
    raw: dict[str, Any], name: str, keys: list[str], value: Any, errors: list[str]
) -> None:
    if len(keys) < 2:
        errors.append(f"{name}: expected DARKROOM_SOURCES__<source name>__<key>")
        return

    sources = raw.get("sources")
    wanted = keys[0].replace("-", "_")
    for source in sources if isinstance(sources, list) else []:
        if isinstance(source, dict) and str(source.get("name", "")).replace("-", "_") == wanted:
            _merge(source, keys[1], _nest(keys[2:], value))
            return
    errors.append(f"{name}: no source named {keys[0]!r} in the configuration")


def _nest(keys: list[str], value: Any) -> Any:
    for key in reversed(keys):
        value = {key: value}
    return value


def _merge(target: dict[str, Any], key: str, value: Any) -> None:
    current = target.get(key)
    if isinstance(current, dict):
        # A whole mapping set from the environment, such as DARKROOM_SERVER='{port: 8080}'.
        value = typed_value(value)
    if isinstance(current, dict) and isinstance(value, dict):
        for inner_key, inner_value in value.items():
            _merge(current, inner_key, inner_value)
    else:
        target[key] = value


def _validate(top: ConfigReader) -> Settings | None:
    server = _validate_server(top.child("server"))
    device = top.text("device", "auto") or "auto"
    if not DEVICE_PATTERN.fullmatch(device):
        top.invalid("device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
    limits = _validate_limits(top.child("limits"), Limits())
    batching = _validate_batching(top.child("batching"))
    cache = _validate_cache(top.child("cache"))
    log_settings = _validate_logging(top.child("logging"))

    raw_sources = top.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        top.invalid("sources", f"expected a non-empty list of sources, got {raw_sources!r}")
        raw_sources = []
    top.reject_unknown()

    sources = []
    for index, raw_source in enumerate(raw_sources):
        reader = ConfigReader(raw_source, f"sources[{index}]", top.errors, top.base_dir)
        source = _validate_source(reader, limits, single=len(raw_sources) == 1)
        if source is not None:
            sources.append(source)
    _check_routes_unique(raw_sources, top.errors)

    if top.errors:
        return None
    return Settings(
        server=server,
        device=device,
        limits=limits,
        sources=tuple(sources),
        batching=batching,
        cache=cache,
        logging=log_settings,
    )


def _validate_server(reader: ConfigReader) -> ServerSettings:
    defaults = ServerSettings()
    host = _validate_listen_host(reader, "host") or defaults.host
    port = reader.integer("port", defaults.port, 1, 65535)
    workers = reader.integer("workers", defaults.workers, 1, 256)
    watch_config = reader.boolean("watch_config", defaults.watch_config)
    max_concurrency = _optional_integer(reader, "max_concurrency", 1, 100_000)
    max_queue = _optional_integer(reader, "max_queue", 0, 1_000_000)
    shutdown_timeout = reader.number("shutdown_timeout", defaults.shutdown_timeout, 0, 3600)
    metrics_host, metrics_port = _validate_metrics_address(reader, port)
    reader.reject_unknown()
    return ServerSettings(
        host=host,
        port=port,
        workers=workers,
        watch_config=watch_config,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        shutdown_timeout=shutdown_timeout,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
    )


def _validate_listen_host(reader: ConfigReader, name: str) -> str | None:
    # Checked by syntax only: a DNS lookup at start would make validation depend on the network.
    host = reader.text(name) or None
    if host is None:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not LISTEN_HOST_PATTERN.fullmatch(host):
            reader.invalid(name, f"expected an IP address or a host name, got {host!r}")
            return None
    return host


def _validate_metrics_address(reader: ConfigReader, port: int) -> tuple[str | None, int | None]:
    metrics_host = _validate_listen_host(reader, "metrics_host")
    if reader.get("metrics_port") is None:
        if metrics_host is not None:
            reader.invalid(
                "metrics_host",
                "needs server.metrics_port, because without a metrics port /metrics is served "
                "on server.port",
            )
        return None, None

    errors_before = len(reader.errors)
    metrics_port = reader.integer("metrics_port", port, 1, 65535)
    if len(reader.errors) == errors_before and metrics_port == port:
        reader.invalid(
            "metrics_port", f"expected a port other than server.port ({port}), got {metrics_port}"
        )
    return metrics_host, metrics_port


def _optional_integer(reader: ConfigReader, name: str, low: int, high: int) -> int | None:
    # Absent stays None, so that the default follows `workers` (see ServerSettings).
    if reader.get(name) is None:
        return None
    return reader.integer(name, low, low, high)


def _validate_limits(reader: ConfigReader, base: Limits) -> Limits:
    limits = Limits(
        max_source_bytes=reader.integer("max_source_bytes", base.max_source_bytes, 1, 2**40),
        max_source_pixels=reader.integer("max_source_pixels", base.max_source_pixels, 1, 2**40),
        max_output_side=reader.integer("max_output_side", base.max_output_side, 1, 65535),
        max_output_pixels=reader.integer("max_output_pixels", base.max_output_pixels, 1, 2**40),
        max_request_seconds=reader.number(
            "max_request_seconds", base.max_request_seconds, 0.01, 3600
        ),
    )
    reader.reject_unknown()
    return limits


def _validate_batching(reader: ConfigReader) -> BatchSettings:
    base = BatchSettings()
    batching = BatchSettings(
        max_wait_ms=reader.number("max_wait_ms", base.max_wait_ms, 0, 1000),
        max_images=reader.integer("max_images", base.max_images, 1, 1024),
        max_megapixels=reader.number("max_megapixels", base.max_megapixels, 1, 100_000),
        max_queue=reader.integer("max_queue", base.max_queue, 1, 1_000_000),
        kernels=_validate_kernels(reader, base.kernels),
    )
    reader.reject_unknown()
    return batching


def _validate_kernels(reader: ConfigReader, default: str) -> str:
    # Read raw, so that a YAML boolean (kernels: yes) is reported with the allowed values too.
    kernels = reader.get("kernels")
    if kernels is None:
        return default
    if kernels not in KERNEL_CHOICES:
        expected = ", ".join(KERNEL_CHOICES[:-1]) + " or " + KERNEL_CHOICES[-1]
        reader.invalid("kernels", f"expected {expected}, got {kernels!r}")
        return default
    return str(kernels)


def _validate_cache(reader: ConfigReader) -> CacheSettings:
    max_bytes = reader.integer("max_bytes", CacheSettings().max_bytes, 0, 2**40)
    shared = None
    if reader.get("shared") is not None:
        shared = _validate_shared_store(reader.child("shared"))
    reader.reject_unknown()
    return CacheSettings(max_bytes=max_bytes, shared=shared)


def _validate_shared_store(reader: ConfigReader) -> SharedStoreSettings | None:
    base = SharedStoreSettings(bucket="")
    bucket = reader.required_text("bucket", "the shared result store needs a bucket")
    key_id = reader.text("access_key_id")
    secret = reader.secret("secret_access_key")
    # Presence is checked on the raw values, so a value of the wrong type is reported only once.
    if (reader.get("access_key_id") is None) != (reader.get("secret_access_key") is None):
        reader.invalid("access_key_id", "give both access_key_id and secret_access_key, or neither")
    store = SharedStoreSettings(
        bucket=bucket or "",
        region=reader.text("region", base.region) or base.region,
        endpoint_url=reader.text("endpoint_url"),
        prefix=reader.text("prefix", base.prefix) or "",
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=reader.secret("session_token"),
    )
    reader.reject_unknown()
    return store if bucket else None


def _validate_logging(reader: ConfigReader) -> LoggingSettings:
    default = LoggingSettings().format
    log_format = reader.text("format", default)
    if log_format not in LOG_FORMATS:
        reader.invalid("format", f"expected {' or '.join(LOG_FORMATS)}, got {log_format!r}")
        log_format = default
    reader.reject_unknown()
    return LoggingSettings(format=log_format or default)


def _validate_circuit_breaker(reader: ConfigReader) -> CircuitBreakerSettings:
    base = CircuitBreakerSettings()
    breaker = CircuitBreakerSettings(
        failures=reader.integer("failures", base.failures, 1, 1000),
        reset_after=reader.number("reset_after", base.reset_after, 0.1, 3600),
    )
    reader.reject_unknown()
    return breaker


def _validate_source(
    reader: ConfigReader, global_limits: Limits, *, single: bool
) -> SourceSettings | None:
    name = reader.required_text("name", "every source needs a name")
    if name is not None and not SOURCE_NAME_PATTERN.fullmatch(name):
        reader.invalid(
            "name", f"expected 1 to 64 lower-case letters, digits, '-' or '_', got {name!r}"
        )

    prefix = _validate_prefix(reader)
    hosts = _validate_hosts(reader)
    if prefix is None and not hosts:
        if single:
            prefix = ""
        else:
            reader.error(reader.where, "needs a prefix or hosts to be routed by")

    kind = reader.required_text("kind", "expected filesystem, http, s3 or module.path:Class")
    options = None
    if kind is None:
        reader.accept_all()
    else:
        options = _validate_kind_options(reader, kind)

    cache_ttl = reader.integer("cache_ttl", ONE_YEAR_SECONDS, 0, 10 * ONE_YEAR_SECONDS)
    allow_enlarge = reader.boolean("allow_enlarge", True)
    limits = _validate_limits(reader.child("limits"), global_limits)
    defaults = _validate_defaults(reader, limits)
    breaker = _validate_circuit_breaker(reader.child("circuit_breaker"))
    signing_keys = _validate_signing_keys(reader)
    reader.reject_unknown()

    if name is None or kind is None or options is None:
        return None
    return SourceSettings(
        name=name,
        kind=kind,
        prefix=prefix,
        hosts=hosts,
        options=options,
        cache_ttl=cache_ttl,
        defaults=defaults,
        allow_enlarge=allow_enlarge,
        limits=limits,
        circuit_breaker=breaker,
        signing_keys=signing_keys,
    )


def _validate_signing_keys(reader: ConfigReader) -> tuple[str, ...]:
    one = reader.get("signing_key")
    several = reader.value("signing_keys")
    if one is not None and several is not None:
        reader.invalid("signing_key", "give signing_key or signing_keys, not both")
        return ()

    name = "signing_key" if one is not None else "signing_keys"
    keys = [one] if one is not None else several
    if keys is None:
        return ()
    if not isinstance(keys, list) or not keys:
        reader.invalid(name, f"expected a non-empty list of keys, got {describe(keys)}")
        return ()
    for key in keys:
        if not isinstance(key, str):
            reader.invalid(name, f"expected each key to be a string, got {describe(key)}; quote it")
            return ()
        # HMAC keys shorter than this are guessable offline from a single signed URL.
        if len(key) < MIN_SIGNING_KEY_LENGTH:
            reader.invalid(name, f"expected keys of at least {MIN_SIGNING_KEY_LENGTH} characters")
            return ()
    return tuple(str(key) for key in keys)


def _validate_kind_options(reader: ConfigReader, kind: str) -> object | None:
    # Imported here because source kinds import this package for ConfigReader.
    from darkroom_gpu.sources.kinds import UnknownSourceKindError, resolve_source_kind

    try:
        source_class = resolve_source_kind(kind)
    except UnknownSourceKindError as exc:
        reader.invalid("kind", str(exc))
        # Without the kind, its keys cannot be told apart from typos, so only the kind is reported.
        reader.accept_all()
        return None

    errors_before = len(reader.errors)
    options = source_class.read_options(reader)
    return options if len(reader.errors) == errors_before else None


def _validate_prefix(reader: ConfigReader) -> str | None:
    prefix = reader.text("prefix")
    if prefix is None:
        return None
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        reader.invalid("prefix", f"expected a path starting with '/', got {prefix!r}")
    elif prefix.startswith("/_") or any(
        prefix == reserved or prefix.startswith(reserved + "/") for reserved in RESERVED_PREFIXES
    ):
        reader.invalid("prefix", f"{prefix!r} is reserved for the server's own routes")
    return prefix


def _validate_hosts(reader: ConfigReader) -> tuple[str, ...]:
    value = reader.value("hosts")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(host, str) for host in value):
        reader.invalid("hosts", f"expected a list of host names, got {value!r}")
        return ()

    hosts = tuple(host.lower() for host in value)
    for host in hosts:
        if not HOST_NAME_PATTERN.fullmatch(host):
            reader.invalid("hosts", f"expected a host name without port or scheme, got {host!r}")
    return hosts


def _validate_defaults(reader: ConfigReader, limits: Limits) -> dict[str, str]:
    raw = reader.mapping("defaults")
    defaults = {str(name): _scalar_text(value) for name, value in raw.items()}
    # Each default on its own first, so every bad one is reported, then all together for the
    # errors that only a combination has (format with fm, a w x dpr over the maximum side).
    for name, value in defaults.items():
        try:
            parse_options([], max_side=limits.max_output_side, defaults={name: value})
        except InvalidParameterError as exc:
            reader.invalid("defaults", exc.public_message)
    if len(defaults) > 1:
        try:
            parse_options([], max_side=limits.max_output_side, defaults=defaults)
        except InvalidParameterError as exc:
            if not any(exc.public_message in error for error in reader.errors):
                reader.invalid("defaults", exc.public_message)
    return defaults


def _check_routes_unique(raw_sources: list[Any], errors: list[str]) -> None:
    # Checked on the raw entries, so a clash is reported even when a source has other errors.
    seen: dict[tuple[str, str], int] = {}
    for index, source in enumerate(raw_sources):
        if not isinstance(source, dict):
            continue
        keys = [("name", str(source["name"]))] if "name" in source else []
        # Sources routed by host may share a prefix with each other and with the rest.
        if isinstance(source.get("prefix"), str) and not source.get("hosts"):
            keys.append(("prefix", source["prefix"].rstrip("/")))
        hosts = typed_value(source.get("hosts"))
        if isinstance(hosts, list):
            keys.extend(("host", str(host).lower()) for host in hosts)
        for key in keys:
            if key in seen:
                errors.append(
                    f"sources[{index}].{key[0]}: {key[1]!r} is already used by sources[{seen[key]}]"
                )
            else:
                seen[key] = index


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
