"""Image sources: where originals are fetched from."""

from darkroom_gpu.sources.base import Source, SourceObject
from darkroom_gpu.sources.filesystem import FilesystemSource

__all__ = ("FilesystemSource", "Source", "SourceObject")
