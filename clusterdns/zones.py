"""The zones directory as last read: manifest files parsed once, re-parsed only when they change.

`Zones.load` re-reads only files whose (mtime, size) changed since the last load and builds a new
Registry. This and `manifests.read_file` are where manifests are read from disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import io
import multiprocessing
import multiprocessing.process
import multiprocessing.queues
import operator
import os
import pickle
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from clusterdns import fastyaml, model
from clusterdns.allocate import Store
from clusterdns.documents import FileLocator, Piece, find_files, piece_documents, pieces, read_text
from clusterdns.manifests import join_pieces, parse_file, parse_piece, read_file
from clusterdns.problems import FileResult, Problem
from clusterdns.registry import Config, Memo, Registry, build


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


PARALLEL_BYTES = 2_000_000  # below this, a second process costs more than it saves
PIECE_BYTES = 200_000  # large files are shared out in pieces of about this size
# What the helper hands back for a piece whose file must be read as a whole (a pickle is never empty); for a
# piece it could not pickle, None: read it here.
WHOLE = b""


def read_files(files: list[tuple[int, str]]) -> list[FileResult]:
    """Parse (size, path) files; results in the order given.

    A large first load uses two cores. Files are cut into pieces at document markers, and this process
    and a forked helper both take the next piece from one shared counter and read it into objects. The
    helper hands each piece's objects back pickled (see `_Pickler`: unpickling them costs a fifth of
    reading them); this one unpickles them whenever any are waiting, and reads a piece itself otherwise.
    A piece that is not plain block YAML, or has an error, makes its file be read here as a whole, the
    usual way.

    Forking is only done while this process has a single thread (before the server starts its
    watcher), where it is safe.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    paths = [path for _, path in files]
    if cores < 2 or not files or sum(size for size, _ in files) < PARALLEL_BYTES or threading.active_count() > 1:
        return [read_file(path) for path in paths]
    texts = [read_text(path) for path in paths]
    units: list[tuple[int, Piece, bool]] = []  # (file, piece, whole file)
    for index, (text, _) in enumerate(texts):
        if isinstance(text, str):
            cut = pieces(text, paths[index], PIECE_BYTES)
            units.extend((index, piece, len(cut) == 1) for piece in cut)

    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("i", 0)  # the next unit to take, for both processes
    done: multiprocessing.queues.Queue[tuple[int, bytes | None]] = ctx.Queue()

    def take() -> int:
        with counter.get_lock():
            index = int(counter.value)
            counter.value += 1
        return index

    def read(unit: int) -> FileResult | None:
        """The piece's objects and problems; None when its file must be read as a whole."""
        index, piece, whole = units[unit]
        raw = piece_documents(piece[1], paths[index], whole)
        return None if raw is None else parse_piece(paths[index], piece, raw)

    def helper() -> None:
        while (unit := take()) < len(units):
            result = read(unit)
            try:
                payload = WHOLE if result is None else _dumps(result)
            except Exception:  # something that does not pickle: read the piece there
                payload = None
            done.put((unit, payload))
        done.close()
        done.join_thread()

    process = ctx.Process(target=helper, daemon=True)
    process.start()
    parts: list[list[tuple[int, FileResult | None]]] = [[] for _ in paths]  # (offset, result) per file
    left = [0] * len(paths)
    for index, _, _ in units:
        left[index] += 1
    results: list[FileResult | None] = [None] * len(paths)
    try:
        for _ in range(len(units)):
            unit = take() if done.empty() else len(units)
            if unit < len(units):  # nothing to unpickle: read a piece here
                result = read(unit)
            else:
                got = _get(done, process)
                if got is None:  # the helper died: read what is missing here
                    break
                unit, payload = got
                if payload is None:
                    result = read(unit)
                else:
                    result = None if payload == WHOLE else pickle.loads(payload)
            index, piece, _ = units[unit]
            parts[index].append((piece[0], result))
            left[index] -= 1
            if not left[index]:
                results[index] = _assemble(paths[index], parts[index], *texts[index])
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
    # Unreadable files, and files the helper died before finishing, as a whole.
    return [result or parse_file(path, *text) for result, path, text in zip(results, paths, texts, strict=True)]


def _rebuilt_by_fields(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    """A copyreg reducer that has unpickling call `cls(*fields)`."""
    names = [f.name for f in dataclasses.fields(cls)]
    get = operator.attrgetter(*names)
    if len(names) == 1:
        return lambda obj: (cls, (get(obj),))
    return lambda obj: (cls, get(obj))


class _Pickler(pickle.Pickler):
    """Pickles a piece's result so that each object is rebuilt by its own __init__ (model.fast_init's, in
    C-called Python) from a tuple of its fields. Slotted dataclasses otherwise pickle through their
    __getstate__/__setstate__, which set field by field in Python: unpickling 100,000 Services cost
    1.6 s that way, as much as reading them, and 0.5 s this way."""

    dispatch_table = {
        cls: _rebuilt_by_fields(cls)
        for cls in [*vars(model).values(), Problem, FileResult]
        if isinstance(cls, type) and dataclasses.is_dataclass(cls)
    }


def _dumps(result: FileResult) -> bytes:
    out = io.BytesIO()
    _Pickler(out, pickle.HIGHEST_PROTOCOL).dump(result)
    return out.getvalue()


def _assemble(
    path: str, parts: list[tuple[int, FileResult | None]], text: str | Problem, stamp: tuple[float, int]
) -> FileResult:
    """A file's result from its pieces' results; parsed as a whole when a piece could not be read alone."""
    done = [part for _, part in sorted(parts, key=lambda p: p[0]) if part is not None]
    if len(done) < len(parts):
        return parse_file(path, text, stamp)
    return join_pieces(path, done, stamp)


def _get(
    done: multiprocessing.queues.Queue[tuple[int, bytes | None]], process: multiprocessing.process.BaseProcess
) -> tuple[int, bytes | None] | None:
    """The helper's next piece, or None once it has died with nothing more to give."""
    while True:
        try:
            return done.get(timeout=1)
        except queue.Empty:
            if not process.is_alive() and done.empty():
                return None


class Zones:
    def __init__(self, directory: str, config: Config, store: Store) -> None:
        self.directory = directory
        self.config = config
        self.store = store
        self.files: dict[str, FileResult] = {}
        self.good: dict[str, FileResult] = {}  # each file's last parse without problems
        self.memo = Memo()  # what the last build can hand the next

    def scan(self) -> list[FileResult]:
        """Every manifest file's parse result, re-reading only files that changed."""
        if not os.path.isdir(self.directory):
            raise ZonesError(f"zones directory {self.directory}: not found (give one with --zones DIR)")
        fresh: dict[str, FileResult | None] = {}
        stale: list[tuple[int, str]] = []
        for path in find_files(self.directory):
            old = self.files.get(path)
            try:
                st = os.stat(path)
            except OSError:
                continue  # removed while we looked
            if old is not None and old.stamp == (st.st_mtime, st.st_size):
                fresh[path] = old
            else:
                fresh[path] = None
                stale.append((st.st_size, path))
        for result in read_files(stale):
            fresh[result.path] = self._keep_good(result)
        fastyaml.forget()  # what it remembered while reading is only memory now (1-4 MB at 100,000 Services)
        self.files = {path: r for path, r in fresh.items() if r is not None}
        self.good = {path: r for path, r in self.good.items() if path in self.files}
        return list(self.files.values())

    def _keep_good(self, result: FileResult) -> FileResult:
        """A file that turned bad keeps serving its last good version's objects until it is fixed."""
        if not result.problems:
            self.good[result.path] = result
            return result
        good = self.good.get(result.path)
        if good is None:  # never was good: serve what did load
            return result
        note = Problem(result.path, 0, "", "", "serving its last good version until the problems are fixed", True)
        return FileResult(result.path, good.objects, result.problems, (*result.notes, note), result.stamp)

    def changed(self) -> bool:
        """Whether any manifest file was added, removed or changed since the last scan."""
        try:
            paths = find_files(self.directory)
        except OSError:
            return True
        if set(paths) != set(self.files):
            return True
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                return True
            if self.files[path].stamp != (st.st_mtime, st.st_size):
                return True
        return False

    def load(self, now: float) -> Registry:
        with paused_gc():
            return build(self.scan(), self.config, self.store, now, locate=FileLocator(), memo=self.memo)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: a load allocates millions of objects and makes no reference
    cycles, so the collector would only walk them again and again (a quarter of the time of a
    10,000-Service load). On the way out everything is moved to the oldest generation (freeze, then
    unfreeze), or the first collection after it would walk all of it as young objects (0.2 s for
    60,000 objects). Nests."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()
