"""Tests for loading and validating the YAML configuration with ``DARKROOM_*`` overrides."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest

from darkroom_gpu.config import (
    DEFAULT_SAMPLES_ROOT,
    ConfigError,
    Limits,
    ServerSettings,
    SourceSettings,
    load_settings,
)
from darkroom_gpu.sources.filesystem import FilesystemOptions
from darkroom_gpu.sources.s3 import S3Options

NO_ENVIRONMENT: Mapping[str, str] = {}
SAMPLES_SOURCE = f"sources: [{{name: samples, kind: filesystem, root: {DEFAULT_SAMPLES_ROOT}}}]\n"


def root_of(source: SourceSettings) -> Path:
    """Return the root folder of a filesystem source."""
    assert isinstance(source.options, FilesystemOptions)
    return source.options.root


def write_config(folder: Path, text: str, name: str = "darkroom.yaml") -> Path:
    """Write dedented YAML `text` to `folder`/`name` and return the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_errors(
    path: Path | None,
    environ: Mapping[str, str] = NO_ENVIRONMENT,
    overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    """Load a configuration that must be invalid and return its list of errors."""
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ=environ, overrides=overrides)
    return excinfo.value.errors


def has_error(errors: list[str], key: str, fragment: str) -> bool:
    """Tell whether one of `errors` is reported under `key` and contains `fragment`."""
    return any(error.startswith(f"{key}: ") and fragment in error for error in errors)


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """An empty folder that filesystem sources can use as their root."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    return folder


@pytest.fixture
def one_source_config(tmp_path: Path, pictures: Path) -> Path:
    """A valid file with one source named ``team-a`` at prefix ``/a``."""
    return write_config(
        tmp_path,
        f"""\
        sources:
          - name: team-a
            prefix: /a
            kind: filesystem
            root: {pictures}
        """,
    )


# --- defaults and the documented file form ------------------------------------------------


def test_no_file_serves_bundled_samples() -> None:
    settings = load_settings(environ=NO_ENVIRONMENT)

    assert len(settings.sources) == 1
    source = settings.sources[0]
    assert source.name == "samples"
    assert source.kind == "filesystem"
    assert source.prefix == ""
    assert source.hosts == ()
    assert root_of(source) == DEFAULT_SAMPLES_ROOT.resolve()


def test_no_file_uses_documented_defaults() -> None:
    settings = load_settings(environ=NO_ENVIRONMENT)

    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 3000
    assert settings.device == "auto"
    assert settings.limits == Limits()


def test_empty_file_needs_sources(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")

    errors = config_errors(path)

    assert has_error(errors, "sources", "non-empty list"), errors


def test_design_example_filesystem_source(tmp_path: Path) -> None:
    (tmp_path / "samples").mkdir()
    path = write_config(
        tmp_path,
        """\
        server:
          host: 127.0.0.1
          port: 3000
        device: auto
        sources:
          - name: samples              # bounded label in metrics and logs
            prefix: /samples           # route by path prefix ...
            # hosts: [img.example.com] # ... or by Host header
            kind: filesystem           # filesystem | http | s3
            root: ./samples
            cache_ttl: 31536000        # seconds, for Cache-Control
            defaults: {q: 80}          # parameters applied when the request omits them
        limits:
          max_source_bytes: 52428800
          max_source_pixels: 50000000
          max_output_side: 8192
        """,
    )

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert settings.server == ServerSettings(
        host="127.0.0.1", port=3000, workers=settings.server.workers
    )
    assert settings.device == "auto"
    assert settings.limits == Limits(
        max_source_bytes=52_428_800, max_source_pixels=50_000_000, max_output_side=8192
    )
    source = settings.sources[0]
    assert source.name == "samples"
    assert source.prefix == "/samples"
    assert source.kind == "filesystem"
    assert root_of(source) == (tmp_path / "samples").resolve()
    assert source.cache_ttl == 31_536_000
    assert dict(source.defaults) == {"q": "80"}
    assert source.allow_enlarge is True
    assert source.limits == settings.limits


def test_relative_root_resolves_against_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "images").mkdir(parents=True)
    path = write_config(
        tmp_path / "conf",
        """\
        sources:
          - name: local
            kind: filesystem
            root: images
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert root_of(settings.sources[0]) == (tmp_path / "conf" / "images").resolve()


def test_single_source_without_route_gets_empty_prefix(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: only
            kind: filesystem
            root: {pictures}
        """,
    )

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert settings.sources[0].prefix == ""


def test_prefix_trailing_slash_stripped(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: slash
            prefix: /slash/
            kind: filesystem
            root: {pictures}
        """,
    )

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert settings.sources[0].prefix == "/slash"


def test_hosts_lowercased(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: by-host
            hosts: [IMG.Example.com]
            kind: filesystem
            root: {pictures}
        """,
    )

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert settings.sources[0].hosts == ("img.example.com",)
    assert settings.sources[0].prefix is None


def test_source_limits_override_global_limits(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        limits:
          max_source_pixels: 1000
        sources:
          - name: small
            kind: filesystem
            root: {pictures}
            limits: {{max_source_bytes: 2048}}
        """,
    )

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    limits = settings.sources[0].limits
    assert limits.max_source_bytes == 2048
    assert limits.max_source_pixels == 1000
    assert limits.max_output_side == Limits().max_output_side


# --- environment and explicit overrides ----------------------------------------------------


def test_env_port_becomes_integer() -> None:
    settings = load_settings(environ={"DARKROOM_SERVER__PORT": "8080"})

    assert settings.server.port == 8080
    assert isinstance(settings.server.port, int)


def test_env_device() -> None:
    settings = load_settings(environ={"DARKROOM_DEVICE": "cpu"})

    assert settings.device == "cpu"


def test_env_batching_kernels() -> None:
    assert load_settings(environ=NO_ENVIRONMENT).batching.kernels == "auto"

    settings = load_settings(environ={"DARKROOM_BATCHING__KERNELS": "torch"})

    assert settings.batching.kernels == "torch"


def test_env_device_with_index() -> None:
    settings = load_settings(environ={"DARKROOM_DEVICE": "cuda:1"})

    assert settings.device == "cuda:1"


def test_env_max_source_bytes_reaches_sources() -> None:
    settings = load_settings(environ={"DARKROOM_LIMITS__MAX_SOURCE_BYTES": "1048576"})

    assert settings.limits.max_source_bytes == 1_048_576
    assert settings.sources[0].limits.max_source_bytes == 1_048_576


def test_env_source_cache_ttl_builtin_samples() -> None:
    settings = load_settings(environ={"DARKROOM_SOURCES__SAMPLES__CACHE_TTL": "60"})

    assert settings.sources[0].cache_ttl == 60


def test_env_source_name_with_dash(one_source_config: Path) -> None:
    environ = {"DARKROOM_SOURCES__TEAM_A__CACHE_TTL": "120"}

    settings = load_settings(one_source_config, environ=environ)

    assert settings.sources[0].cache_ttl == 120


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server: {host: 0.0.0.0, port: 3000}\n" + SAMPLES_SOURCE)

    settings = load_settings(path, environ={"DARKROOM_SERVER__PORT": "8080"})

    assert settings.server.port == 8080
    assert settings.server.host == "0.0.0.0"  # a value read back, not a bind


def test_env_config_names_file(one_source_config: Path) -> None:
    settings = load_settings(environ={"DARKROOM_CONFIG": str(one_source_config)})

    assert [source.name for source in settings.sources] == ["team-a"]


def test_explicit_path_wins_over_env_config(tmp_path: Path, one_source_config: Path) -> None:
    other = write_config(tmp_path / "other", "device: cpu\n" + SAMPLES_SOURCE)

    settings = load_settings(other, environ={"DARKROOM_CONFIG": str(one_source_config)})

    assert settings.device == "cpu"
    assert [source.name for source in settings.sources] == ["samples"]


def test_overrides_win_over_env_and_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server: {port: 3000}\ndevice: auto\n" + SAMPLES_SOURCE)
    environ = {"DARKROOM_SERVER__PORT": "8080", "DARKROOM_DEVICE": "auto"}

    settings = load_settings(
        path, environ=environ, overrides={"server": {"port": 9090}, "device": "cpu"}
    )

    assert settings.server.port == 9090
    assert settings.device == "cpu"


def test_overrides_merge_into_server_mapping(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server: {host: 0.0.0.0, port: 3000}\n" + SAMPLES_SOURCE)

    settings = load_settings(path, environ=NO_ENVIRONMENT, overrides={"server": {"port": 9090}})

    assert settings.server.host == "0.0.0.0"  # a value read back, not a bind


def test_env_without_darkroom_prefix_ignored() -> None:
    settings = load_settings(environ={"HOME": "/nowhere", "PORT": "1"})

    assert settings.server.port == 3000


# --- errors --------------------------------------------------------------------------------


@pytest.fixture
def many_errors_config(tmp_path: Path, pictures: Path) -> Path:
    """A file with one problem of each kind the loader checks; see MANY_ERRORS."""
    return write_config(
        tmp_path,
        f"""\
        server:
          port: 70000
          colour: blue
        device: tpu
        sources:
          - name: missing-root
            prefix: /m
            kind: filesystem
            root: ./no-such-folder
          - name: strict
            prefix: /s
            kind: filesystem
            root: {pictures}
            defaults: {{q: 0}}
          - name: metrics
            prefix: /metrics
            kind: filesystem
            root: {pictures}
          - name: unrouted
            kind: filesystem
            root: {pictures}
          - name: twin
            prefix: /twin
            kind: filesystem
            root: {pictures}
          - name: twin
            prefix: /twin
            kind: filesystem
            root: {pictures}
        """,
    )


MANY_ERRORS = [
    pytest.param("server.port", "70000", id="bad port"),
    pytest.param("server.colour", "unknown key", id="unknown key"),
    pytest.param("device", "'tpu'", id="bad device"),
    pytest.param("sources[0].root", "no-such-folder", id="missing root"),
    pytest.param("sources[1].defaults", "q", id="bad default names q"),
    pytest.param("sources[2].prefix", "reserved", id="reserved prefix"),
    pytest.param("sources[3]", "prefix or hosts", id="source without route"),
    pytest.param("sources[5].name", "'twin' is already used by sources[4]", id="duplicate name"),
    pytest.param("sources[5].prefix", "'/twin' is already used", id="duplicate prefix"),
]


@pytest.mark.parametrize(("key", "fragment"), MANY_ERRORS)
def test_errors_reported_together(many_errors_config: Path, key: str, fragment: str) -> None:
    errors = config_errors(many_errors_config)

    assert has_error(errors, key, fragment), errors


def test_errors_count_one_per_problem(many_errors_config: Path) -> None:
    errors = config_errors(many_errors_config)

    assert len(errors) == len(MANY_ERRORS), errors


def test_error_message_lists_every_error(many_errors_config: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(many_errors_config, environ=NO_ENVIRONMENT)

    message = str(excinfo.value)
    assert all(error in message for error in excinfo.value.errors), message


def test_bad_default_message_names_parameter(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: strict
            kind: filesystem
            root: {pictures}
            defaults: {{q: 0}}
        """,
    )

    errors = config_errors(path)

    assert errors[0].startswith("sources[0].defaults: q: "), errors


SINGLE_ERRORS = [
    pytest.param("server: {port: 0}", "server.port", "from 1 to 65535", id="port zero"),
    pytest.param("server: {port: '80'}", "server.port", "'80'", id="port as string"),
    pytest.param("server: {port: true}", "server.port", "True", id="port as boolean"),
    pytest.param("server: {workers: 0}", "server.workers", "from 1 to 256", id="workers zero"),
    pytest.param("server: [1]", "server", "expected a mapping", id="server is a list"),
    pytest.param("device: cuda:x", "device", "'cuda:x'", id="device bad index"),
    pytest.param("device: 3", "device", "expected a string", id="device number"),
    pytest.param(
        "batching: {kernels: cuda}", "batching.kernels", "auto, triton or torch", id="kernels"
    ),
    pytest.param(
        "batching: {kernels: yes}",
        "batching.kernels",
        "expected auto, triton or torch, got True",
        id="kernels boolean",
    ),
    pytest.param(
        "server: {host: not an address}",
        "server.host",
        "expected an IP address or a host name, got 'not an address'",
        id="host with spaces",
    ),
    pytest.param(
        "server: {host: 'http://example.com'}", "server.host", "host name", id="host with scheme"
    ),
    pytest.param("server: {host: '[::1]'}", "server.host", "host name", id="host in brackets"),
    pytest.param(
        "server: {metrics_port: 9464, metrics_host: not an address}",
        "server.metrics_host",
        "expected an IP address or a host name, got 'not an address'",
        id="metrics host with spaces",
    ),
    pytest.param("limits: {max_output_side: 0}", "limits.max_output_side", "0", id="side 0"),
    pytest.param("limits: {max_frames: 1}", "limits.max_frames", "unknown key", id="limits key"),
    pytest.param("sources: []", "sources", "non-empty list", id="sources empty"),
    pytest.param("sources: {a: 1}", "sources", "non-empty list", id="sources mapping"),
    pytest.param("colour: blue", "colour", "unknown key", id="unknown top-level key"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), SINGLE_ERRORS)
def test_invalid_top_level_value(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write_config(tmp_path, text + "\n")

    errors = config_errors(path)

    assert has_error(errors, key, fragment), errors


SOURCE_ERRORS = [
    pytest.param("name: Bad Name", "sources[0].name", "lower-case", id="name with capitals"),
    pytest.param("name: null", "sources[0].name", "missing", id="name missing"),
    pytest.param("kind: ftp", "sources[0].kind", "'ftp'", id="kind unknown"),
    pytest.param("kind: null", "sources[0].kind", "missing", id="kind missing"),
    pytest.param("root: null", "sources[0].root", "missing", id="root missing"),
    pytest.param("prefix: img", "sources[0].prefix", "starting with '/'", id="prefix relative"),
    pytest.param("prefix: /_meta", "sources[0].prefix", "reserved", id="prefix underscore"),
    pytest.param("prefix: /ping/x", "sources[0].prefix", "reserved", id="prefix below ping"),
    pytest.param("hosts: img.example.com", "sources[0].hosts", "list", id="hosts string"),
    pytest.param("hosts: ['']", "sources[0].hosts", "host name", id="hosts empty name"),
    pytest.param("cache_ttl: -1", "sources[0].cache_ttl", "-1", id="ttl negative"),
    pytest.param("allow_enlarge: 'no'", "sources[0].allow_enlarge", "true or false", id="enlarge"),
    pytest.param("defaults: [q]", "sources[0].defaults", "mapping", id="defaults list"),
    pytest.param("defaults: {w: abc}", "sources[0].defaults", "w: ", id="defaults bad w"),
    pytest.param(
        "limits: {max_source_bytes: 0}", "sources[0].limits.max_source_bytes", "0", id="limit 0"
    ),
    pytest.param(
        "signing_key: short", "sources[0].signing_key", "at least 16", id="signing key short"
    ),
    pytest.param(
        "signing_keys: []", "sources[0].signing_keys", "non-empty", id="signing keys empty"
    ),
    pytest.param(
        "signing_keys: [bbbbbbbbbbbbbbbb]\n    signing_key: aaaaaaaaaaaaaaaa",
        "sources[0].signing_key",
        "not both",
        id="signing key twice",
    ),
    pytest.param("base_url: http://x/", "sources[0].base_url", "unknown key", id="unknown key"),
]


@pytest.mark.parametrize(("line", "key", "fragment"), SOURCE_ERRORS)
def test_invalid_source_value(
    tmp_path: Path, pictures: Path, line: str, key: str, fragment: str
) -> None:
    fields = {"name": "one", "prefix": "/one", "kind": "filesystem", "root": str(pictures)}
    replaced = line.split(":", 1)[0]
    body = [f"    {name}: {value}" for name, value in fields.items() if name != replaced]
    path = write_config(tmp_path, "sources:\n  - " + line + "\n" + "\n".join(body) + "\n")

    errors = config_errors(path)

    assert has_error(errors, key, fragment), errors


def test_duplicate_hosts_rejected(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: one
            hosts: [img.example.com]
            kind: filesystem
            root: {pictures}
          - name: two
            hosts: [IMG.example.com]
            kind: filesystem
            root: {pictures}
        """,
    )

    errors = config_errors(path)

    assert has_error(errors, "sources[1].host", "'img.example.com' is already used"), errors


def test_root_is_file_rejected(tmp_path: Path) -> None:
    (tmp_path / "file.jpg").write_bytes(b"\xff\xd8\xff")
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: one
            kind: filesystem
            root: file.jpg
        """,
    )

    errors = config_errors(path)

    assert has_error(errors, "sources[0].root", "is not a folder"), errors


def test_missing_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot be read"):
        load_settings(path, environ=NO_ENVIRONMENT)


def test_folder_as_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path, environ=NO_ENVIRONMENT)


def test_env_config_missing_file_rejected(tmp_path: Path) -> None:
    environ = {"DARKROOM_CONFIG": str(tmp_path / "absent.yaml")}

    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot be read"):
        load_settings(environ=environ)


def test_non_utf8_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("device: caf\u00e9\n".encode("latin-1"))

    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_settings(path, environ=NO_ENVIRONMENT)


def test_invalid_yaml_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server: [1, 2\n")

    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(path, environ=NO_ENVIRONMENT)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        pytest.param("- a\n- b\n", "a list", id="list"),
        pytest.param("just text\n", "str", id="scalar"),
    ],
)
def test_top_level_not_mapping_rejected(tmp_path: Path, text: str, kind: str) -> None:
    path = write_config(tmp_path, text)

    with pytest.raises(ConfigError, match=f"expected a mapping at the top level, got {kind}"):
        load_settings(path, environ=NO_ENVIRONMENT)


def test_env_unknown_setting_rejected() -> None:
    errors = config_errors(None, environ={"DARKROOM_FOO": "1"})

    assert has_error(errors, "DARKROOM_FOO", "unknown setting"), errors


def test_env_missing_source_rejected(one_source_config: Path) -> None:
    environ = {"DARKROOM_SOURCES__NOPE__CACHE_TTL": "60"}

    errors = config_errors(one_source_config, environ=environ)

    assert has_error(errors, "DARKROOM_SOURCES__NOPE__CACHE_TTL", "no source named 'nope'"), errors


def test_env_source_without_key_rejected() -> None:
    errors = config_errors(None, environ={"DARKROOM_SOURCES__SAMPLES": "x"})

    assert has_error(errors, "DARKROOM_SOURCES__SAMPLES", "<source name>__<key>"), errors


def test_env_bad_port_named_by_key() -> None:
    errors = config_errors(None, environ={"DARKROOM_SERVER__PORT": "abc"})

    assert has_error(errors, "server.port", "'abc'"), errors


def test_env_errors_join_file_errors(tmp_path: Path) -> None:
    path = write_config(tmp_path, "device: tpu\n")

    errors = config_errors(path, environ={"DARKROOM_FOO": "1"})

    assert has_error(errors, "DARKROOM_FOO", "unknown setting"), errors
    assert has_error(errors, "device", "'tpu'"), errors


def test_override_bad_device_rejected() -> None:
    errors = config_errors(None, overrides={"device": "gpu"})

    assert has_error(errors, "device", "'gpu'"), errors


def test_duplicate_reported_beside_other_errors(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: twin
            prefix: /a
            kind: filesystem
            root: ./no-such-folder
          - name: twin
            prefix: /b
            kind: filesystem
            root: {pictures}
        """,
    )
    errors = config_errors(path)
    assert has_error(errors, "sources[0].root", "is not a folder"), errors
    assert has_error(errors, "sources[1].name", "already used"), errors


def test_host_with_port_is_rejected(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: a
            hosts: ["img.example.com:3000"]
            kind: filesystem
            root: {pictures}
        """,
    )
    assert has_error(config_errors(path), "sources[0].hosts", "without port"), config_errors(path)


def test_env_override_reaches_builtin_source(tmp_path: Path) -> None:
    environ = {"DARKROOM_SOURCES__SAMPLES__CACHE_TTL": "60"}
    settings = load_settings(None, environ=environ)
    assert settings.sources[0].cache_ttl == 60


def test_every_bad_default_is_reported(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: a
            kind: filesystem
            root: {pictures}
            defaults: {{rot: nan, format: bmp, w: abc}}
        """,
    )
    errors = config_errors(path)
    for name in ("rot", "format", "w"):
        assert has_error(errors, "sources[0].defaults", f"{name}: "), errors


def test_unknown_kind_reports_only_kind(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: a
            kind: ftp
            root: {pictures}
        """,
    )
    errors = config_errors(path)
    assert len(errors) == 1, errors
    assert has_error(errors, "sources[0].kind", "'ftp'"), errors


def test_documented_example_is_valid(tmp_path: Path) -> None:
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    example = doc.split("## Example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "catalogue").mkdir()
    path = write_config(tmp_path, example)

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert [source.kind for source in settings.sources] == ["filesystem", "http", "s3"]
    assert settings.sources[1].signing_keys[1] == "old-key-being-rotated-out"


# --- the metrics port and the log format ---------------------------------------------------


def test_metrics_port_unset_by_default() -> None:
    settings = load_settings(environ=NO_ENVIRONMENT)

    assert settings.server.metrics_port is None
    assert settings.server.metrics_host is None
    assert settings.logging.format == "text"


def test_metrics_port_and_host_read(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "server: {port: 3000, metrics_port: 9464, metrics_host: 10.0.0.5}\n"
    )
    path.write_text(path.read_text() + SAMPLES_SOURCE)

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert settings.server.metrics_port == 9464
    assert settings.server.metrics_host == "10.0.0.5"


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "::1", "127.0.0.1", "localhost", "metrics.internal", "img-1.example."]
)
def test_listen_hosts_accepted(tmp_path: Path, host: str) -> None:
    server = f"server: {{host: '{host}', metrics_port: 9464, metrics_host: '{host}'}}\n"
    path = write_config(tmp_path, server + SAMPLES_SOURCE)

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert settings.server.host == host
    assert settings.server.metrics_host == host


def test_env_metrics_port_and_log_format() -> None:
    environ = {"DARKROOM_SERVER__METRICS_PORT": "9464", "DARKROOM_LOGGING__FORMAT": "json"}

    settings = load_settings(environ=environ)

    assert settings.server.metrics_port == 9464
    assert settings.logging.format == "json"


def test_log_format_override_wins_over_env() -> None:
    settings = load_settings(
        environ={"DARKROOM_LOGGING__FORMAT": "json"}, overrides={"logging": {"format": "text"}}
    )

    assert settings.logging.format == "text"


def test_metrics_port_equal_to_port_rejected() -> None:
    errors = config_errors(None, overrides={"server": {"port": 8080, "metrics_port": 8080}})

    assert has_error(errors, "server.metrics_port", "other than server.port (8080)"), errors


def test_metrics_port_clash_after_port_override() -> None:
    environ = {"DARKROOM_SERVER__METRICS_PORT": "8080"}

    errors = config_errors(None, environ=environ, overrides={"server": {"port": 8080}})

    assert has_error(errors, "server.metrics_port", "got 8080"), errors


METRICS_AND_LOGGING_ERRORS = [
    pytest.param("server: {metrics_port: 0}", "server.metrics_port", "from 1 to 65535", id="0"),
    pytest.param(
        "server: {metrics_port: 70000}", "server.metrics_port", "from 1 to 65535", id="70000"
    ),
    pytest.param("server: {metrics_port: '9464'}", "server.metrics_port", "'9464'", id="string"),
    pytest.param(
        "server: {metrics_host: 127.0.0.1}",
        "server.metrics_host",
        "needs server.metrics_port",
        id="host without port",
    ),
    pytest.param("logging: {format: xml}", "logging.format", "text or json", id="format xml"),
    pytest.param("logging: {format: JSON}", "logging.format", "'JSON'", id="format capitals"),
    pytest.param("logging: {format: 1}", "logging.format", "expected a string", id="number"),
    pytest.param("logging: {level: info}", "logging.level", "unknown key", id="unknown key"),
    pytest.param("logging: json", "logging", "expected a mapping", id="not a mapping"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), METRICS_AND_LOGGING_ERRORS)
def test_invalid_metrics_or_logging_value(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = write_config(tmp_path, text + "\n" + SAMPLES_SOURCE)

    errors = config_errors(path)

    assert has_error(errors, key, fragment), errors
    assert len(errors) == 1, errors


def test_env_bad_log_format_named_by_key() -> None:
    errors = config_errors(None, environ={"DARKROOM_LOGGING__FORMAT": "yaml"})

    assert has_error(errors, "logging.format", "'yaml'"), errors


def test_documented_example_moves_metrics(tmp_path: Path) -> None:
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    example = doc.split("## Example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "catalogue").mkdir()

    settings = load_settings(write_config(tmp_path, example), environ=NO_ENVIRONMENT)

    assert settings.server.metrics_port == 9464
    assert settings.logging.format == "json"


# --- secrets stay out of errors and reprs --------------------------------------------------

SECRET: str = "s3cr3t-value-that-must-not-leak"


def test_yaml_error_does_not_quote_line(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: bucket
            kind: s3
            bucket: photos
            access_key_id: AKIDEXAMPLE
            secret_access_key: "{SECRET}
        """,
    )

    errors = config_errors(path)

    assert len(errors) == 1, errors
    assert "invalid YAML: " in errors[0]
    assert "line 7, column 1" in errors[0], errors
    assert "scanning a quoted scalar at line 6" in errors[0], errors
    assert SECRET not in errors[0]


def test_secret_of_wrong_type_not_quoted(tmp_path: Path) -> None:
    # YAML reads these unquoted secrets in the file as an integer, a list and a date.
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: bucket
            kind: s3
            bucket: photos
            access_key_id: AKIDEXAMPLE
            secret_access_key: 31415926535897932
            session_token: [27182818284590452]
        cache:
          shared:
            bucket: results
            access_key_id: AKIDEXAMPLE
            secret_access_key: 16180339887498948
            session_token: 2024-01-01
        """,
    )

    errors = config_errors(path)

    assert has_error(errors, "sources[0].secret_access_key", "expected a string, got int")
    assert has_error(errors, "sources[0].session_token", "expected a string, got a list")
    assert has_error(errors, "cache.shared.secret_access_key", "expected a string, got int")
    assert has_error(errors, "cache.shared.session_token", "expected a string, got date")
    for value in ("31415926535897932", "27182818284590452", "16180339887498948", "2024"):
        assert value not in "\n".join(errors)
    # The key is present, so no second line may call it missing.
    assert not any("missing" in error or "give both" in error for error in errors)
    assert len(errors) == 4


ENV_SECRETS: Final = [
    pytest.param("abcdefghijklmnopq #tail", id="comment"),
    pytest.param("12345678901234567890", id="digits"),
    pytest.param("0x1F0x1F0x1F0x1F", id="hexadecimal"),
    pytest.param("Yes", id="boolean"),
    pytest.param("2024-01-01", id="date"),
    pytest.param("a: b", id="mapping"),
    pytest.param("[k]", id="list"),
    pytest.param("'quoted'", id="quotes"),
]


@pytest.mark.parametrize("secret", ENV_SECRETS)
def test_environment_s3_secret_verbatim(tmp_path: Path, secret: str) -> None:
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: bucket
            kind: s3
            bucket: photos
        cache:
          shared: {bucket: results}
        """,
    )
    environ = {
        "DARKROOM_SOURCES__BUCKET__ACCESS_KEY_ID": secret,
        "DARKROOM_SOURCES__BUCKET__SECRET_ACCESS_KEY": secret,
        "DARKROOM_SOURCES__BUCKET__SESSION_TOKEN": secret,
        "DARKROOM_CACHE__SHARED__ACCESS_KEY_ID": secret,
        "DARKROOM_CACHE__SHARED__SECRET_ACCESS_KEY": secret,
        "DARKROOM_CACHE__SHARED__SESSION_TOKEN": secret,
    }

    settings = load_settings(path, environ=environ)

    options = settings.sources[0].options
    assert isinstance(options, S3Options)
    assert options.access_key_id == secret
    assert options.secret_access_key == secret
    assert options.session_token == secret
    shared = settings.cache.shared
    assert shared is not None
    assert shared.access_key_id == secret
    assert shared.secret_access_key == secret
    assert shared.session_token == secret
    assert type(options.secret_access_key) is str


@pytest.mark.parametrize("secret", [*ENV_SECRETS, pytest.param("a" * 16, id="plain")])
def test_environment_signing_key_verbatim(one_source_config: Path, secret: str) -> None:
    # Keys shorter than 16 characters are padded, because the length check is not under test.
    key = secret.ljust(16, "_")
    environ = {"DARKROOM_SOURCES__TEAM_A__SIGNING_KEY": key}

    settings = load_settings(one_source_config, environ=environ)

    assert settings.sources[0].signing_keys == (key,)
    assert type(settings.sources[0].signing_keys[0]) is str


def test_environment_signing_keys_list(one_source_config: Path) -> None:
    environ = {"DARKROOM_SOURCES__TEAM_A__SIGNING_KEYS": "[aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb]"}

    settings = load_settings(one_source_config, environ=environ)

    assert settings.sources[0].signing_keys == ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb")


def test_environment_short_signing_key_reported(one_source_config: Path) -> None:
    environ = {"DARKROOM_SOURCES__TEAM_A__SIGNING_KEY": "a: b"}

    errors = config_errors(one_source_config, environ=environ)

    assert errors == ["sources[0].signing_key: expected keys of at least 16 characters"]


def test_signing_key_of_wrong_type_reported(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        sources:
          - name: team-a
            kind: filesystem
            root: {pictures}
            signing_key: 12345678901234567890
        """,
    )

    errors = config_errors(path)

    assert errors == ["sources[0].signing_key: expected each key to be a string, got int; quote it"]


def test_environment_text_keys_verbatim(one_source_config: Path) -> None:
    environ = {
        "DARKROOM_LOGGING__FORMAT": "json",
        "DARKROOM_SOURCES__TEAM_A__DEFAULTS__BG": "ff0000",
        "DARKROOM_SOURCES__TEAM_A__DEFAULTS__Q": "070",
    }

    settings = load_settings(one_source_config, environ=environ)

    assert settings.logging.format == "json"
    assert settings.sources[0].defaults["bg"] == "ff0000"
    assert settings.sources[0].defaults["q"] == "070"


def test_environment_numbers_and_booleans_parsed(one_source_config: Path) -> None:
    environ = {
        "DARKROOM_SERVER__PORT": "8080",
        "DARKROOM_SERVER__WATCH_CONFIG": "true",
        "DARKROOM_SERVER__SHUTDOWN_TIMEOUT": "2.5",
        "DARKROOM_SOURCES__TEAM_A__HOSTS": "[img.example.com]",
    }

    settings = load_settings(one_source_config, environ=environ)

    assert settings.server.port == 8080
    assert settings.server.watch_config is True
    assert settings.server.shutdown_timeout == 2.5
    assert settings.sources[0].hosts == ("img.example.com",)


def test_environment_mapping_merged(one_source_config: Path) -> None:
    environ = {"DARKROOM_SERVER": "{port: 8080}"}

    settings = load_settings(one_source_config, environ=environ)

    assert settings.server.port == 8080


def test_environment_empty_value_removes_key(one_source_config: Path) -> None:
    environ = {"DARKROOM_SERVER__PORT": "", "DARKROOM_SERVER__HOST": ""}

    settings = load_settings(one_source_config, environ=environ)

    assert settings.server.port == ServerSettings().port
    assert settings.server.host == ServerSettings().host


@pytest.mark.parametrize(
    ("base_url", "shown"),
    [
        (f"https://editor:{SECRET}@img.example.com/?token=1", "'https://***@img.example.com/?"),
        (f"ftp://editor:{SECRET}@img.example.com/", "'ftp://***@img.example.com/'"),
        (f"https://editor:{SECRET}@img.example.com:99999/", "'https://***@img.example.com:99999/'"),
    ],
    ids=["query", "scheme", "port"],
)
def test_base_url_error_hides_credentials(tmp_path: Path, base_url: str, shown: str) -> None:
    path = write_config(tmp_path, f"sources: [{{name: web, kind: http, base_url: '{base_url}'}}]\n")

    errors = config_errors(path)

    assert has_error(errors, "sources[0].base_url", shown), errors
    assert SECRET not in "\n".join(errors)


def test_settings_repr_hides_secrets(tmp_path: Path, pictures: Path) -> None:
    path = write_config(
        tmp_path,
        f"""\
        cache:
          shared:
            bucket: results
            access_key_id: AKIDEXAMPLE
            secret_access_key: shared-{SECRET}
            session_token: token-{SECRET}
        sources:
          - name: team
            prefix: /team
            kind: filesystem
            root: {pictures}
            signing_key: signing-{SECRET}
          - name: bucket
            prefix: /s3
            kind: s3
            bucket: photos
            access_key_id: AKIDEXAMPLE
            secret_access_key: bucket-{SECRET}
        """,
    )

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert settings.sources[0].signing_keys == (f"signing-{SECRET}",)
    assert SECRET not in repr(settings)
    assert "AKIDEXAMPLE" in repr(settings)
