"""The zones directory as last read: manifest files parsed once, re-parsed only when they change.

`Zones.load` re-reads only files whose (mtime, size) changed since the last load and builds a new
Registry. This and `manifests.read_file` are where manifests are read from disk.
"""

from __future__ import annotations

import hashlib
import os

from clusterdns.allocate import Store
from clusterdns.manifests import FileResult, find_files, locate_in_file, read_file
from clusterdns.registry import Config, Registry, build


class ZonesError(Exception):
    """The zones directory or the state directory can't be used at all."""


def default_state_dir(zones: str) -> str:
    """Where allocations live when --state is not given: per zones directory, under XDG_STATE_HOME."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    digest = hashlib.sha256(os.path.abspath(zones).encode()).hexdigest()[:12]
    return os.path.join(base, "clusterdns", digest)


def open_store(state: str | None, zones: str) -> Store:
    path = state or default_state_dir(zones)
    try:
        return Store(path)
    except OSError as exc:
        raise ZonesError(f"state directory {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # sqlite3.Error: a file that is not a database, a locked volume
        raise ZonesError(f"state directory {path}: {exc}") from None


class Zones:
    def __init__(self, directory: str, config: Config, store: Store) -> None:
        self.directory = directory
        self.config = config
        self.store = store
        self.files: dict[str, FileResult] = {}

    def scan(self) -> list[FileResult]:
        """Every manifest file's parse result, re-reading only files that changed."""
        if not os.path.isdir(self.directory):
            raise ZonesError(f"zones directory {self.directory}: not found (give one with --zones DIR)")
        fresh: dict[str, FileResult] = {}
        for path in find_files(self.directory):
            old = self.files.get(path)
            try:
                st = os.stat(path)
            except OSError:
                continue  # removed while we looked
            if old is not None and old.stamp == (st.st_mtime, st.st_size):
                fresh[path] = old
            else:
                fresh[path] = read_file(path)
        self.files = fresh
        return list(fresh.values())

    def load(self, now: float) -> Registry:
        return build(self.scan(), self.config, self.store, now, locate=locate_in_file)
