"""Log output on stderr: text lines, or one JSON object per line for log collectors.

Both formats show the same records. Fields passed with ``extra=``, such as those of the access
line, appear in JSON as keys of their own. The text format shows only the message, which for
the access line already lists them as ``name=value``.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Final

import orjson

from darkroom_gpu.config import LOG_FORMATS

__all__ = (
    "TEXT_FORMAT",
    "JsonFormatter",
    "configure_logging",
    "create_formatter",
    "set_log_format",
)

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
# The name of the stderr handler this module installs, so that it is found again later.
_HANDLER_NAME: Final = "darkroom_gpu.stderr"
# Attributes every LogRecord has, plus those Formatter.format adds; the rest came from extra=.
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))
) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON.

    The object has ``time`` (ISO 8601 in UTC, milliseconds), ``level``, ``logger`` and
    ``message``, then every field passed with ``extra=``, then ``exc_info`` with the formatted
    traceback when the record carries an exception, and ``stack_info`` when it carries a stack.
    Line breaks inside values are escaped, so a record never spans two lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object without a trailing newline."""
        fields: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in fields:
                fields[name] = value

        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc_info"] = record.exc_text
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        # default=str writes any value orjson cannot encode as its text rather than failing.
        return orjson.dumps(fields, default=str).decode()


def create_formatter(log_format: str) -> logging.Formatter:
    """Return the formatter for ``logging.format``: ``text`` or ``json``.

    Raises:
        ValueError: `log_format` is neither.
    """
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    if log_format == "json":
        return JsonFormatter()
    raise ValueError(f"log format: expected {' or '.join(LOG_FORMATS)}, got {log_format!r}")


def configure_logging(level: int, log_format: str) -> None:
    """Send log records of `level` and above to stderr in `log_format`.

    Does nothing when the root logger already has handlers, as under pytest, so that calling
    the command line in-process leaves the caller's logging alone.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(create_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)


def set_log_format(log_format: str) -> None:
    """Switch the stderr handler that `configure_logging` installed to `log_format`."""
    for handler in logging.getLogger().handlers:
        if handler.get_name() == _HANDLER_NAME:
            handler.setFormatter(create_formatter(log_format))
