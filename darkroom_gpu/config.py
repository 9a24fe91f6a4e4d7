"""Configuration: a YAML file plus ``DARKROOM_*`` environment overrides, validated at start.

Every problem is collected and reported together, each naming its key (``server.port``,
``sources[1].root``), so an operator fixes a file in one pass.

Environment overrides use ``__`` to step into a mapping, and a source is addressed by its name:
``DARKROOM_SERVER__PORT=8080``, ``DARKROOM_DEVICE=cpu``,
``DARKROOM_LIMITS__MAX_SOURCE_BYTES=1048576``, ``DARKROOM_SOURCES__SAMPLES__CACHE_TTL=60``.
Values are read as YAML scalars, so ``8080`` is an integer and ``true`` a boolean.
``DARKROOM_CONFIG`` names the configuration file when ``--config`` is not given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from darkroom_gpu.errors import InvalidParameterError
from darkroom_gpu.options import parse_options

__all__ = (
    "ConfigError",
    "DEFAULT_SAMPLES_ROOT",
    "Limits",
    "RESERVED_PREFIXES",
    "ServerSettings",
    "Settings",
    "SourceSettings",
    "load_settings",
)

ENV_PREFIX: Final = "DARKROOM_"
ENV_CONFIG_FILE: Final = "DARKROOM_CONFIG"
ENV_SEPARATOR: Final = "__"
DEFAULT_SAMPLES_ROOT: Final = Path(__file__).parent / "samples"
DEVICE_PATTERN: Final = re.compile(r"auto|cpu|cuda(:\d+)?")
SOURCE_NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
SOURCE_KINDS: Final = ("filesystem",)

# Paths the server answers itself; a source prefix may not shadow them.
RESERVED_PREFIXES: Final = ("/ping", "/healthz", "/readyz", "/metrics", "/_")

ONE_YEAR_SECONDS: Final = 31_536_000


class ConfigError(Exception):
    """The configuration is invalid; `errors` lists every problem, each naming its key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where the HTTP server listens and how many worker threads process images."""

    host: str = "127.0.0.1"
    port: int = 3000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a request may make the server read and produce."""

    max_source_bytes: int = 50 * 1024 * 1024
    max_source_pixels: int = 50_000_000
    max_output_side: int = 8192


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """One registered image source and its per-source policy.

    Attributes:
        name: bounded label used in metrics and logs.
        kind: source kind; only ``filesystem`` so far.
        prefix: path prefix the source is routed by, ``""`` or ``/name`` without a trailing
            slash; ``None`` when the source is routed by `hosts` only.
        hosts: ``Host`` header names (lower case, no port) the source is routed by.
        root: folder served by a filesystem source, resolved to an absolute path.
        cache_ttl: seconds for ``Cache-Control: max-age``.
        defaults: URL parameters applied when a request omits them.
        allow_enlarge: whether results may be larger than the source.
        limits: the global limits with this source's overrides applied.
    """

    name: str
    kind: str
    prefix: str | None
    hosts: tuple[str, ...]
    root: Path
    cache_ttl: int = ONE_YEAR_SECONDS
    defaults: Mapping[str, str] = field(default_factory=dict)
    allow_enlarge: bool = True
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole validated configuration."""

    server: ServerSettings
    device: str
    limits: Limits
    sources: tuple[SourceSettings, ...]


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

    raw = _read_file(path) if path is not None else _builtin_config()
    base_dir = path.parent if path is not None else Path.cwd()
    errors: list[str] = []
    _apply_environment(raw, environ, errors)
    for key, value in (overrides or {}).items():
        _merge(raw, key, value)

    settings = _validate(raw, base_dir, errors)
    if errors or settings is None:
        raise ConfigError(errors)
    return settings


def _builtin_config() -> dict[str, Any]:
    return {
        "sources": [
            {
                "name": "samples",
                "prefix": "",
                "kind": "filesystem",
                "root": str(DEFAULT_SAMPLES_ROOT),
            }
        ]
    }


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
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from exc

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {_kind(raw)}"])
    return raw


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str], errors: list[str]) -> None:
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR)]
        try:
            value = yaml.safe_load(environ[name])
        except yaml.YAMLError:
            value = environ[name]

        if keys[0] == "sources":
            _apply_source_override(raw, name, keys[1:], value, errors)
        elif keys[0] in ("server", "device", "limits"):
            _merge(raw, keys[0], _nest(keys[1:], value))
        else:
            errors.append(f"{name}: unknown setting; expected SERVER, DEVICE, LIMITS or SOURCES")


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
    if isinstance(current, dict) and isinstance(value, dict):
        for inner_key, inner_value in value.items():
            _merge(current, inner_key, inner_value)
    else:
        target[key] = value


class _Reader:
    """Reads typed values out of one raw mapping, recording errors under a dotted key path."""

    def __init__(self, raw: Any, where: str, errors: list[str]) -> None:
        self.where = where
        self.errors = errors
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.error(where, f"expected a mapping, got {_kind(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.known: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{key}: {message}")

    def get(self, name: str) -> Any:
        self.known.add(name)
        return self.raw.get(name)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.error(self.key(name), f"expected an integer from {low} to {high}, got {value!r}")
            return default
        return value

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            self.error(self.key(name), f"expected a string, got {value!r}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(self.key(name), f"expected true or false, got {value!r}")
            return default
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(self.key(name), f"expected a mapping, got {_kind(value)}")
            return {}
        return value

    def reject_unknown(self) -> None:
        for name in sorted(set(self.raw) - self.known):
            self.error(self.key(str(name)), "unknown key")


def _validate(raw: dict[str, Any], base_dir: Path, errors: list[str]) -> Settings | None:
    top = _Reader(raw, "", errors)
    server = _validate_server(_Reader(top.get("server"), "server", errors))
    device = top.text("device", "auto") or "auto"
    if not DEVICE_PATTERN.fullmatch(device):
        top.error("device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
    limits = _validate_limits(_Reader(top.get("limits"), "limits", errors), Limits())

    raw_sources = top.get("sources")
    if raw_sources is None:
        raw_sources = _builtin_config()["sources"]
    if not isinstance(raw_sources, list) or not raw_sources:
        top.error("sources", f"expected a non-empty list of sources, got {raw_sources!r}")
        raw_sources = []
    top.reject_unknown()

    sources = []
    for index, raw_source in enumerate(raw_sources):
        reader = _Reader(raw_source, f"sources[{index}]", errors)
        source = _validate_source(reader, base_dir, limits, single=len(raw_sources) == 1)
        if source is not None:
            sources.append(source)
    _check_routes_unique(sources, errors)

    if errors:
        return None
    return Settings(server=server, device=device, limits=limits, sources=tuple(sources))


def _validate_server(reader: _Reader) -> ServerSettings:
    defaults = ServerSettings()
    host = reader.text("host", defaults.host) or defaults.host
    port = reader.integer("port", defaults.port, 1, 65535)
    workers = reader.integer("workers", defaults.workers, 1, 256)
    reader.reject_unknown()
    return ServerSettings(host=host, port=port, workers=workers)


def _validate_limits(reader: _Reader, base: Limits) -> Limits:
    limits = Limits(
        max_source_bytes=reader.integer("max_source_bytes", base.max_source_bytes, 1, 2**40),
        max_source_pixels=reader.integer("max_source_pixels", base.max_source_pixels, 1, 2**40),
        max_output_side=reader.integer("max_output_side", base.max_output_side, 1, 65535),
    )
    reader.reject_unknown()
    return limits


def _validate_source(
    reader: _Reader, base_dir: Path, global_limits: Limits, *, single: bool
) -> SourceSettings | None:
    name = reader.text("name")
    if name is None:
        reader.error(reader.key("name"), "missing; every source needs a name")
    elif not SOURCE_NAME_PATTERN.fullmatch(name):
        reader.error(
            reader.key("name"),
            f"expected 1 to 64 lower-case letters, digits, '-' or '_', got {name!r}",
        )

    prefix = _validate_prefix(reader)
    hosts = _validate_hosts(reader)
    if prefix is None and not hosts:
        if single:
            prefix = ""
        else:
            reader.error(reader.where, "needs a prefix or hosts to be routed by")

    kind = reader.text("kind")
    if kind not in SOURCE_KINDS:
        reader.error(reader.key("kind"), f"expected one of {', '.join(SOURCE_KINDS)}, got {kind!r}")
    root = _validate_root(reader, base_dir)

    cache_ttl = reader.integer("cache_ttl", ONE_YEAR_SECONDS, 0, 10 * ONE_YEAR_SECONDS)
    allow_enlarge = reader.boolean("allow_enlarge", True)
    limits = _validate_limits(
        _Reader(reader.get("limits"), reader.key("limits"), reader.errors), global_limits
    )
    defaults = _validate_defaults(reader, limits)
    for name_of_key in ("signing_key", "signing_keys"):
        if reader.get(name_of_key) is not None:
            reader.error(reader.key(name_of_key), "signed URLs are not supported by this version")
    reader.reject_unknown()

    if name is None or kind is None or root is None:
        return None
    return SourceSettings(
        name=name,
        kind=kind,
        prefix=prefix,
        hosts=hosts,
        root=root,
        cache_ttl=cache_ttl,
        defaults=defaults,
        allow_enlarge=allow_enlarge,
        limits=limits,
    )


def _validate_prefix(reader: _Reader) -> str | None:
    prefix = reader.text("prefix")
    if prefix is None:
        return None
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        reader.error(reader.key("prefix"), f"expected a path starting with '/', got {prefix!r}")
    elif any(
        prefix == reserved or prefix.startswith(reserved + "/") for reserved in RESERVED_PREFIXES
    ):
        reader.error(reader.key("prefix"), f"{prefix!r} is reserved for the server's own routes")
    elif prefix.startswith("/_"):
        reader.error(reader.key("prefix"), "prefixes starting with '/_' are reserved")
    return prefix


def _validate_hosts(reader: _Reader) -> tuple[str, ...]:
    value = reader.get("hosts")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(host, str) and host for host in value):
        reader.error(reader.key("hosts"), f"expected a list of host names, got {value!r}")
        return ()
    return tuple(host.lower() for host in value)


def _validate_root(reader: _Reader, base_dir: Path) -> Path | None:
    root = reader.text("root")
    if root is None:
        reader.error(reader.key("root"), "missing; a filesystem source needs a root folder")
        return None
    path = (base_dir / root).resolve()
    if not path.is_dir():
        reader.error(reader.key("root"), f"{str(path)!r} is not a folder")
        return None
    return path


def _validate_defaults(reader: _Reader, limits: Limits) -> dict[str, str]:
    raw = reader.mapping("defaults")
    defaults = {str(name): _scalar_text(value) for name, value in raw.items()}
    try:
        parse_options([], max_side=limits.max_output_side, defaults=defaults)
    except InvalidParameterError as exc:
        reader.error(reader.key("defaults"), exc.public_message)
    return defaults


def _check_routes_unique(sources: list[SourceSettings], errors: list[str]) -> None:
    seen_names: set[str] = set()
    seen_prefixes: dict[str, str] = {}
    seen_hosts: dict[str, str] = {}
    for source in sources:
        if source.name in seen_names:
            errors.append(f"sources: the name {source.name!r} is used twice")
        seen_names.add(source.name)
        if source.prefix is not None and source.prefix in seen_prefixes:
            errors.append(
                f"sources: {source.name!r} and {seen_prefixes[source.prefix]!r} "
                f"share the prefix {source.prefix!r}"
            )
        if source.prefix is not None:
            seen_prefixes[source.prefix] = source.name
        for host in source.hosts:
            if host in seen_hosts:
                errors.append(
                    f"sources: {source.name!r} and {seen_hosts[host]!r} share the host {host!r}"
                )
            seen_hosts[host] = source.name


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else type(value).__name__
