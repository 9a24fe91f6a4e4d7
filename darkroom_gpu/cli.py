"""The command line: ``darkroom-gpu serve`` and ``python -m darkroom_gpu serve``."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from darkroom_gpu import __version__
from darkroom_gpu.config import LOG_FORMATS, ConfigError, LoggingSettings, load_settings
from darkroom_gpu.config.loader import MIN_SIGNING_KEY_LENGTH
from darkroom_gpu.errors import InvalidPathError
from darkroom_gpu.logs import configure_logging, set_log_format
from darkroom_gpu.manipulators.select import UnsupportedDeviceError
from darkroom_gpu.server import create_app
from darkroom_gpu.server.metrics_site import MetricsListenError, listen_url
from darkroom_gpu.server.router import decode_path
from darkroom_gpu.signing import SIGNATURE_PARAMETER, sign

__all__ = ("main",)

logger = logging.getLogger("darkroom_gpu")

EXIT_CONFIG_ERROR = 2
EXIT_LISTEN_ERROR = 3
# Read before the configuration is loaded, so that its errors are logged in that format too.
ENV_LOG_FORMAT = "DARKROOM_LOGGING__FORMAT"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(logging, args.log_level.upper()), _initial_log_format(args))
    # Decoders warn about damaged metadata in files they still read; those go to the log.
    logging.captureWarnings(True)
    if args.command == "serve":
        return _serve(args)
    if args.command == "sign":
        return _sign(args)
    parser.print_help()
    return EXIT_CONFIG_ERROR


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkroom-gpu", description="GPU-first real-time image proxy."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="minimum level of log lines written to stderr (default: info)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="format of log lines: text, or json for one JSON object per line "
        "(default: logging.format of the configuration, else text)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the image server")
    serve.add_argument(
        "--config",
        type=Path,
        help="YAML configuration file (default: $DARKROOM_CONFIG, else the bundled samples)",
    )
    serve.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port to listen on (default: 3000)")
    serve.add_argument(
        "--device",
        help="where images are processed: auto or cpu; cuda and cuda:N need a CUDA GPU "
        "(default: auto)",
    )

    sign = commands.add_parser(
        "sign",
        help="print a signed URL",
        description="Sign a request path with query, for sources that require signed URLs.",
    )
    sign.add_argument(
        "url", help="request path with query, as a client sends it: '/team/cat.jpg?w=300'"
    )
    key_source = sign.add_mutually_exclusive_group(required=True)
    key_source.add_argument("--key", help="the signing key")
    key_source.add_argument(
        "--source", help="sign with the first key of this source in the configuration"
    )
    sign.add_argument("--config", type=Path, help="YAML configuration file for --source")
    return parser


def _initial_log_format(args: argparse.Namespace) -> str:
    # The configuration file is not read yet, so its logging.format applies once it is loaded.
    if args.log_format is not None:
        return str(args.log_format)
    from_environment = os.environ.get(ENV_LOG_FORMAT, "").strip()
    return from_environment if from_environment in LOG_FORMATS else LoggingSettings().format


def _sign(args: argparse.Namespace) -> int:
    key = args.key
    # The server rejects shorter keys, so a URL signed with one could never be served. An
    # empty key is what --key "$KEY" passes when KEY is unset.
    if key is not None and len(key) < MIN_SIGNING_KEY_LENGTH:
        logger.error(
            "--key: expected a signing key of at least %d characters, got %d; check that the "
            "variable holding the key is set",
            MIN_SIGNING_KEY_LENGTH,
            len(key),
        )
        return EXIT_CONFIG_ERROR
    if key is None:
        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            for error in exc.errors:
                logger.error("configuration: %s", error)
            return EXIT_CONFIG_ERROR
        keys = {source.name: source.signing_keys for source in settings.sources}
        if not keys.get(args.source):
            logger.error("source %r does not exist or has no signing key", args.source)
            return EXIT_CONFIG_ERROR
        key = keys[args.source][0]

    url = urlsplit(args.url)
    try:
        path = decode_path(url.path or "/")
    except InvalidPathError as exc:
        logger.error("%s", exc.public_message)
        return EXIT_CONFIG_ERROR
    query = parse_qsl(url.query, keep_blank_values=True)
    query = [(name, value) for name, value in query if name != SIGNATURE_PARAMETER]
    query.append((SIGNATURE_PARAMETER, sign(key, path, query)))
    print(urlunsplit((url.scheme, url.netloc, url.path or "/", urlencode(query), "")))  # noqa: T201
    return 0


def _command_line_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    server: dict[str, Any] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    if server:
        overrides["server"] = server
    if args.device is not None:
        overrides["device"] = args.device
    if args.log_format is not None:
        overrides["logging"] = {"format": args.log_format}
    return overrides


def _serve(args: argparse.Namespace) -> int:
    overrides = _command_line_overrides(args)
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        for error in exc.errors:
            logger.error("configuration: %s", error)
        return EXIT_CONFIG_ERROR
    set_log_format(settings.logging.format)

    try:
        app = create_app(settings, reloader=(args.config, overrides))
    except UnsupportedDeviceError as exc:
        # The message names the setting: device, or batching.kernels.
        logger.error("configuration: %s", exc)
        return EXIT_CONFIG_ERROR

    for source in settings.sources:
        route = source.prefix if source.prefix is not None else ""
        hosts = f" hosts={','.join(source.hosts)}" if source.hosts else ""
        logger.info("source %s: %s at prefix %r%s", source.name, source.kind, route, hosts)
    address = listen_url(settings.server.host, settings.server.port)
    try:
        web.run_app(
            app,
            host=settings.server.host,
            port=settings.server.port,
            access_log=None,
            # Called once the socket is bound, so the line never claims a port it lacks.
            print=lambda _: logger.info("serving on %s", address),
            # A client that goes away cancels its handler, so abandoned work leaves the queue.
            handler_cancellation=True,
            # On SIGTERM or SIGINT the listening socket closes at once, and requests in flight
            # get this long to finish before they are cancelled.
            shutdown_timeout=settings.server.shutdown_timeout,
        )
    except MetricsListenError as exc:
        logger.error("cannot listen on %s: %s", exc.address, exc.reason)
        return EXIT_LISTEN_ERROR
    except OSError as exc:
        logger.error("cannot listen on %s: %s", address, exc.strerror or exc)
        return EXIT_LISTEN_ERROR
    return 0
