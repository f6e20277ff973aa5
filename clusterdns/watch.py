"""Watch the zones directory and reload: watchdog (inotify) events -> debounce -> new snapshot -> swap.

The watchdog thread only notes that something changed; the reload runs on the event loop after the
directory has been quiet for `debounce` seconds, so an editor's burst of writes (temporary file, rename,
chmod) is one reload. Zones.load re-parses only files whose (mtime, size) changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from clusterdns.documents import MANIFEST_SUFFIXES

log = logging.getLogger("clusterdns.watch")

DEBOUNCE = 0.1  # seconds of quiet before a reload


def _relevant(path: str | bytes) -> bool:
    name = os.path.basename(os.fsdecode(path))
    return name.endswith(MANIFEST_SUFFIXES) and not name.startswith(".")


class _Handler(FileSystemEventHandler):
    def __init__(self, notify: Callable[[], None]) -> None:
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if event.is_directory or any(p and _relevant(p) for p in paths):
            self.notify()


class Watcher:
    """Calls `reload()` on the running event loop after changes under `directory` settle."""

    def __init__(self, directory: str, reload: Callable[[], Any], debounce: float = DEBOUNCE) -> None:
        self.directory = directory
        self.reload = reload
        self.debounce = debounce
        self.loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._observer: Any = None

    def start(self) -> None:
        observer = Observer()
        observer.schedule(_Handler(self._changed), self.directory, recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        log.info("watching %s for changes", self.directory)

    def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(2)

    def _changed(self) -> None:  # watchdog's thread
        self.loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:  # the event loop
        if self._timer:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.reload()
