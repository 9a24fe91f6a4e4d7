"""The command line: ``darkroom-gpu serve`` and ``python -m darkroom_gpu serve``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from darkroom_gpu import __version__
from darkroom_gpu.config import ConfigError, load_settings
from darkroom_gpu.manipulators.select import UnsupportedDeviceError
from darkroom_gpu.server import create_app

__all__ = ("main",)

logger = logging.getLogger("darkroom_gpu")

EXIT_CONFIG_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        return _serve(args)
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
        "--device", help="where images are processed: auto, cpu, cuda or cuda:N (default: auto)"
    )
    return parser


def _serve(args: argparse.Namespace) -> int:
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

    try:
        settings = load_settings(args.config, overrides=overrides)
        app = create_app(settings, reloader=(args.config, overrides))
    except ConfigError as exc:
        for error in exc.errors:
            logger.error("configuration: %s", error)
        return EXIT_CONFIG_ERROR
    except UnsupportedDeviceError as exc:
        logger.error("configuration: device: %s", exc)
        return EXIT_CONFIG_ERROR

    for source in settings.sources:
        route = source.prefix if source.prefix is not None else ""
        hosts = f" hosts={','.join(source.hosts)}" if source.hosts else ""
        logger.info("source %s: %s at prefix %r%s", source.name, source.kind, route, hosts)
    logger.info("serving on http://%s:%d", settings.server.host, settings.server.port)
    web.run_app(
        app,
        host=settings.server.host,
        port=settings.server.port,
        access_log=None,
        print=None,
    )
    return 0
