"""Reload the configuration without downtime: on SIGHUP, and on file changes when watching.

New and changed sources go live at once, and removed ones return 404. An invalid file is
rejected with its errors logged, and the running configuration stays. Settings that only take
effect at start (listening addresses, device, workers, batching, cache, logging) are kept as
they were, with a warning naming each one that changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from darkroom_gpu.config import ConfigError, Settings, load_settings
from darkroom_gpu.server.runtime import RuntimeHolder

__all__ = ("ConfigReloader", "reload_context")

logger = logging.getLogger(__name__)

WATCH_INTERVAL_SECONDS: Final = 1.0
_RESTART_ONLY: Final = ("server", "device", "batching", "cache", "logging")


class ConfigReloader:
    """Loads the configuration again and swaps it into a `RuntimeHolder`.

    Args:
        holder: the runtime holder of the application.
        path: the configuration file; ``None`` reloads the built-in configuration and the
            environment.
        overrides: the command-line overrides, applied again on every reload.
        environ: the environment to read overrides from; defaults to ``os.environ``.
    """

    def __init__(
        self,
        holder: RuntimeHolder,
        path: Path | None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.holder = holder
        self.path = path
        self.overrides = overrides
        self.environ = environ
        self._lock = asyncio.Lock()

    async def reload(self) -> bool:
        """Load and apply the configuration; return whether it was applied."""
        async with self._lock:
            try:
                settings = await asyncio.to_thread(
                    load_settings, self.path, self.environ, self.overrides
                )
            except ConfigError as exc:
                for error in exc.errors:
                    logger.error("reload rejected, configuration kept: %s", error)
                return False

            current = self.holder.current.settings
            applied = self._keep_restart_only(current, settings)
            runtime = self.holder.replace(applied)
            names = ", ".join(source.name for source in applied.sources)
            logger.info("configuration %d loaded; sources: %s", runtime.generation, names)
            return True

    async def watch(self) -> None:
        """Reload whenever the file's modification time or size changes; runs until cancelled."""
        if self.path is None:
            return
        last = _stamp(self.path)
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            stamp = _stamp(self.path)
            if stamp != last:
                last = stamp
                await self.reload()

    @staticmethod
    def _keep_restart_only(current: Settings, new: Settings) -> Settings:
        for name in _RESTART_ONLY:
            if getattr(current, name) != getattr(new, name):
                logger.warning("reload: %s changed; it takes effect only after a restart", name)
        kept = {name: getattr(current, name) for name in _RESTART_ONLY}
        return replace(new, **kept)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


async def reload_context(
    app: web.Application, reloader: ConfigReloader, *, watch: bool
) -> AsyncIterator[None]:
    """Install the SIGHUP handler (and the file watcher) for the application's lifetime."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        logger.info("SIGHUP received: reloading the configuration")
        task = loop.create_task(reloader.reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    watcher = loop.create_task(reloader.watch()) if watch else None
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
