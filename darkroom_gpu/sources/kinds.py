"""Map a source ``kind`` from the configuration to the class that implements it."""

from __future__ import annotations

import importlib
from typing import Final

from darkroom_gpu.sources.base import Source

__all__ = ("BUILTIN_KINDS", "UnknownSourceKindError", "resolve_source_kind")

BUILTIN_KINDS: Final = {
    "filesystem": "darkroom_gpu.sources.filesystem:FilesystemSource",
    "http": "darkroom_gpu.sources.http:HttpSource",
    "s3": "darkroom_gpu.sources.s3:S3Source",
}


class UnknownSourceKindError(Exception):
    """The kind names neither a built-in source nor an importable `Source` subclass."""


def resolve_source_kind(kind: str) -> type[Source]:
    """Return the class for `kind`: a built-in name or an import path ``package.module:Class``.

    Raises:
        UnknownSourceKindError: with a message saying what was expected.
    """
    target = BUILTIN_KINDS.get(kind, kind)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        builtins = ", ".join(BUILTIN_KINDS)
        raise UnknownSourceKindError(
            f"expected one of {builtins} or an import path module.path:Class, got {kind!r}"
        )

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownSourceKindError(f"cannot import module {module_name!r}: {exc}") from exc

    source_class = getattr(module, class_name, None)
    if not (isinstance(source_class, type) and issubclass(source_class, Source)):
        raise UnknownSourceKindError(f"{target!r} is not a subclass of darkroom_gpu.sources.Source")
    return source_class
