"""Typed reading of raw configuration mappings, recording every error under its dotted key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ("ConfigError", "ConfigReader", "EnvironmentValue", "typed_value")


class ConfigError(Exception):
    """The configuration is invalid; `errors` lists every problem, each naming its key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(errors))
        self.errors = errors


class EnvironmentValue(str):
    """The text of a ``DARKROOM_*`` environment variable, kept exactly as it was set.

    String getters return it verbatim, so a secret that contains `` #``, looks like a number
    (``0x1F``, 20 digits), a boolean (``Yes``), a date or a mapping (``a: b``) is not altered.
    Getters of numbers, booleans, lists and mappings parse it as YAML instead (`typed_value`).
    """

    __slots__ = ()

    def parse(self) -> Any:
        """Parse the text as YAML, or return it as a plain string when it is not valid YAML."""
        try:
            return yaml.safe_load(str(self))
        except yaml.YAMLError:
            return str(self)


def typed_value(value: Any) -> Any:
    """Return `value`, with an `EnvironmentValue` parsed as YAML (``8080``, ``[a, b]``)."""
    return value.parse() if isinstance(value, EnvironmentValue) else value


class ConfigReader:
    """Reads typed values out of one raw mapping and records errors instead of raising.

    Each getter returns the default after recording an error, so validation goes on and every
    problem in a file is reported in one pass. Source kinds use a reader to validate their own
    keys, and `reject_unknown` then reports every key that no getter read.

    Args:
        raw: the mapping parsed from YAML (anything else is recorded as an error).
        where: the dotted key path of `raw`, such as ``sources[1]``; ``""`` at the top level.
        errors: the shared list that errors are appended to.
        base_dir: the folder relative paths are resolved against.
    """

    def __init__(self, raw: Any, where: str, errors: list[str], base_dir: Path) -> None:
        self.where = where
        self.errors = errors
        self.base_dir = base_dir
        raw = typed_value(raw)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.error(where, f"expected a mapping, got {describe(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.known: set[str] = set()

    def key(self, name: str) -> str:
        """Return the dotted path of `name` inside this mapping."""
        return f"{self.where}.{name}" if self.where else name

    def error(self, key: str, message: str) -> None:
        """Record an error under a full key path."""
        self.errors.append(f"{key}: {message}")

    def invalid(self, name: str, message: str) -> None:
        """Record an error for the key `name` of this mapping."""
        self.error(self.key(name), message)

    def child(self, name: str) -> ConfigReader:
        """Return a reader for the nested mapping at `name` (empty when absent)."""
        return ConfigReader(self.get(name), self.key(name), self.errors, self.base_dir)

    def get(self, name: str) -> Any:
        """Return the raw value at `name` (``None`` when absent) and mark the key as known."""
        self.known.add(name)
        return self.raw.get(name)

    def value(self, name: str) -> Any:
        """Return the value at `name` like `get`, with an environment value parsed as YAML."""
        return typed_value(self.get(name))

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        """Read an integer within [`low`, `high`]."""
        value = self.value(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.invalid(name, f"expected an integer from {low} to {high}, got {value!r}")
            return default
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        """Read an integer or decimal number within [`low`, `high`]."""
        value = self.value(name)
        if value is None:
            return default
        valid = isinstance(value, int | float) and not isinstance(value, bool)
        if not valid or not low <= value <= high:
            self.invalid(name, f"expected a number from {low:g} to {high:g}, got {value!r}")
            return default
        return float(value)

    def text(self, name: str, default: str | None = None) -> str | None:
        """Read a string."""
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            self.invalid(name, f"expected a string, got {value!r}")
            return default
        # str() drops the EnvironmentValue type, so settings hold plain strings.
        return str(value)

    def secret(self, name: str) -> str | None:
        """Read a string, such as a password, whose value no error message may show."""
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.invalid(name, f"expected a string, got {describe(value)}; quote it in YAML")
            return None
        return str(value)

    def required_text(self, name: str, what: str) -> str | None:
        """Read a string that must be present; `what` describes its purpose in the error message."""
        value = self.get(name)
        if value is None:
            self.invalid(name, f"missing; {what}")
            return None
        return self.text(name)

    def boolean(self, name: str, default: bool) -> bool:
        """Read ``true`` or ``false``."""
        value = self.value(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.invalid(name, f"expected true or false, got {value!r}")
            return default
        return value

    def path(self, name: str, what: str) -> Path | None:
        """Read a required path, resolved against `base_dir`."""
        value = self.required_text(name, what)
        return None if value is None else (self.base_dir / value).resolve()

    def mapping(self, name: str) -> dict[str, Any]:
        """Read a mapping (empty when absent)."""
        value = self.value(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.invalid(name, f"expected a mapping, got {describe(value)}")
            return {}
        return value

    def accept_all(self) -> None:
        """Mark every key as known, when their meaning cannot be checked (an unknown kind)."""
        self.known.update(str(name) for name in self.raw)

    def reject_unknown(self) -> None:
        """Record an error for every key of this mapping that no getter has read."""
        for name in sorted(set(self.raw) - self.known, key=str):
            self.invalid(str(name), "unknown key")


def describe(value: Any) -> str:
    """Name the YAML type of `value` for error messages."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
