"""A source that serves files from one folder on the local filesystem."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from darkroom_gpu.config.reader import ConfigReader
from darkroom_gpu.config.settings import SourceSettings
from darkroom_gpu.errors import NotFoundError, UnprocessableImageError, quote_value
from darkroom_gpu.sources.base import Source, SourceObject

__all__ = ("FilesystemOptions", "FilesystemSource")

# Errors from opening a client-chosen path that mean "no such file here" rather than a fault of
# the server. ENAMETOOLONG is a name component over NAME_MAX and ELOOP a symlink loop.
_MISSING_PATH_ERRNOS: Final = frozenset(
    (
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EACCES,
        errno.EPERM,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    )
)


@dataclass(frozen=True, slots=True)
class FilesystemOptions:
    """Options of a filesystem source.

    Attributes:
        root: the folder served, as an absolute path.
    """

    root: Path


class FilesystemSource(Source):
    """Serves regular files below `root`.

    Every path is resolved, symlinks included, and must stay inside the resolved root; any path
    that would leave it is treated exactly like a missing file, so a client learns nothing
    about what lies outside.
    """

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        if not isinstance(settings.options, FilesystemOptions):
            raise TypeError(f"expected FilesystemOptions, got {type(settings.options).__name__}")
        self.root = settings.options.root.resolve()

    @classmethod
    def read_options(cls, reader: ConfigReader) -> FilesystemOptions | None:
        """Read ``root``, relative to the configuration file's folder, which must exist."""
        root = reader.path("root", "a filesystem source needs a root folder")
        if root is None:
            return None
        if not root.is_dir():
            reader.invalid("root", f"{str(root)!r} is not a folder")
            return None
        return FilesystemOptions(root=root)

    async def fetch(self, path: str, *, max_bytes: int) -> SourceObject:
        """Read the file at `path` below the root in a worker thread."""
        return await asyncio.to_thread(self._read, path, max_bytes)

    def _read(self, path: str, max_bytes: int) -> SourceObject:
        target = self._resolve(path)
        try:
            # With O_NONBLOCK, opening a FIFO returns at once instead of waiting for a writer, so
            # the regular-file check below can reject it. Regular files open the same either way.
            descriptor = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno not in _MISSING_PATH_ERRNOS:
                raise
            raise NotFoundError(f"no image at {quote_value(path)}") from exc

        # The descriptor is checked before open() wraps it, because open() raises for a
        # directory without closing a descriptor it was given.
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            os.close(descriptor)
            raise NotFoundError(f"no image at {quote_value(path)}")
        if info.st_size > max_bytes:
            os.close(descriptor)
            raise UnprocessableImageError(
                f"source is {info.st_size} bytes, over this source's limit of {max_bytes}"
            )
        with open(descriptor, "rb") as file:
            data = file.read(max_bytes + 1)

        if len(data) > max_bytes:
            raise UnprocessableImageError(
                f"source is over this source's limit of {max_bytes} bytes"
            )
        identity = f"file:{target}:{info.st_size}:{info.st_mtime_ns}"
        modified = datetime.fromtimestamp(info.st_mtime, tz=UTC)
        return SourceObject(data=data, identity=identity, last_modified=modified)

    def _resolve(self, path: str) -> Path:
        # Only one spelling of each file is served, so caches never hold aliases of one image:
        # no empty, "." or ".." segments and no trailing slash.
        segments = path.split("/")
        if "\x00" in path or any(segment in ("", ".", "..") for segment in segments):
            raise NotFoundError(f"no image at {quote_value(path)}")
        try:
            target = (self.root / path).resolve()
        except (OSError, RuntimeError) as exc:
            raise NotFoundError(f"no image at {quote_value(path)}") from exc
        if not target.is_relative_to(self.root):
            raise NotFoundError(f"no image at {quote_value(path)}")
        return target
