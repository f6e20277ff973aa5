"""Kubernetes manifests (YAML or JSON documents) -> typed objects, with file:line errors.

Parsing is pure: `parse_text` takes a file's text and returns its objects and problems. `read_text` and
`read_file` are the functions here that touch the disk. Each document is validated on its own; a document in error
is left out with a Problem naming the file, the line, the object and the field path, and everything else
in the file still loads.

Documents are read by `fastyaml`, or by PyYAML's C loader where that declines; neither keeps line numbers,
so lines are found only when needed, by composing the file's node tree again and walking it along the
failing field path.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import ipaddress
import itertools
import json
import marshal
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from clusterdns import fastyaml
from clusterdns.labels import (
    OPERATORS,
    SAFE_ALPHABET,
    Requirement,
    Selector,
    dns1035_label_error,
    dns1123_label_error,
    dns1123_subdomain_error,
    label_key_error,
    label_value_error,
    port_name_error,
)
from clusterdns.model import (
    CLUSTER_IP,
    EXTERNAL_NAME,
    PROTOCOLS,
    SERVICE_TYPES,
    ConfigMap,
    Container,
    ContainerPort,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    EndpointsObject,
    EnvFrom,
    EnvVar,
    KeyRef,
    Namespace,
    Object,
    Pod,
    PodSpec,
    PodTemplate,
    Secret,
    Service,
    ServiceCIDR,
    ServicePort,
    Source,
    Workload,
)

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet")
# Kinds that are read for what clusterdns serves; any other kind is skipped with a note.
KINDS = (
    "Namespace",
    "Service",
    "Endpoints",
    "EndpointSlice",
    "Pod",
    *WORKLOAD_KINDS,
    "ConfigMap",
    "Secret",
    "ServiceCIDR",
)
CLUSTER_SCOPED = ("Namespace", "ServiceCIDR")
MAX_REPLICAS = 150_000  # Kubernetes' scalability thresholds: at most 150,000 Pods in a cluster

Path = tuple[str | int, ...]


class ManifestError(Exception):
    """A field of one object is wrong: raised while parsing, caught per object."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or, with `note`, merely worth saying) about the zones, with where and why."""

    path: str
    line: int
    subject: str  # "Service default/web", or "" for a file-level problem
    field: str  # "spec.ports[0].port", or ""
    message: str
    note: bool = False  # informational (a skipped kind), not an error

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        parts = [where, self.subject, self.field, self.message]
        return ": ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one manifest file gives: its objects in document order, and its problems."""

    path: str
    objects: tuple[Object, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[Problem, ...] = ()
    stamp: tuple[float, int] = (0.0, 0)  # (mtime, size) of the file when read


@dataclass(slots=True)
class _Doc:
    """One document with where it sits: its index among the file's documents and its line."""

    data: Any
    index: int
    line: int
    prefix: Path = ()  # ("items", i) for an item of a List
    owner: list[Any] = field(default_factory=list)  # lazily composed node trees, shared per file


def find_files(zones: str) -> list[str]:
    """Every manifest file under `zones`, recursively, sorted; hidden files and folders are skipped."""
    found: list[str] = []
    for root, dirs, files in os.walk(zones):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith(MANIFEST_SUFFIXES) and not name.startswith("."):
                found.append(os.path.join(root, name))
    return found


def read_file(path: str) -> FileResult:
    """Read and parse one manifest file; an unreadable file is a problem, not an exception."""
    return parse_file(path, *read_text(path))


def parse_file(path: str, text: str | Problem, stamp: tuple[float, int]) -> FileResult:
    """A whole file's result from what read_text gave for it."""
    if isinstance(text, Problem):
        return FileResult(path, problems=(text,))
    result = parse_text(text, path)
    return FileResult(path, result.objects, result.problems, result.notes, stamp)


def read_text(path: str) -> tuple[str | Problem, tuple[float, int]]:
    """A file's text and its (mtime, size) stamp; a Problem instead of the text when it can't be read."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return Problem(path, 0, "", "", f"cannot read file: {exc.strerror or exc}"), (0.0, 0)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # say where: a line, and the byte offset
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        reason = f"byte 0x{data[exc.start]:02x} at offset {exc.start} (column {column}): {exc.reason}"
        return Problem(path, line, "", "", f"not UTF-8: {reason}"), (0.0, 0)
    if "\r" in text:  # as open() in text mode reads it: universal newlines
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, (st.st_mtime, st.st_size)


# A large file is read in pieces, cut at document markers, so that two processes can share it (see
# zones.read_files). A piece is (lines before it, its text); its documents are plain data.
Piece = tuple[int, str]


def pieces(text: str, path: str, size: int) -> list[Piece]:
    """`text` cut at `---` markers into pieces of at least `size` characters (the last may be shorter;
    size 0: a piece per document). A JSON file, or a text no longer than `size`, is one piece."""
    if path.endswith(".json") or len(text) <= size:
        return [(0, text)]
    out: list[Piece] = []
    start = line = 0
    for marker, _ in _markers(text):
        if marker > start and marker - start >= size:
            piece = text[start:marker]
            out.append((line, piece))
            line += piece.count("\n")
            start = marker
    out.append((line, text[start:]))
    return out


def piece_documents(piece: str, path: str, whole: bool) -> list[Any] | None:
    """The raw documents of one piece (see raw_documents); None when it must be read as a whole file
    instead. A piece of a larger file is only cut safely when the fast reader takes it: only then is every
    `---` at the start of a line sure to be a document marker, and not inside a block scalar."""
    try:
        return raw_documents(piece, path) if whole else fastyaml.load_all(piece)
    except (fastyaml.Unsupported, yaml.YAMLError, ValueError):
        return None


def parse_piece(path: str, piece: Piece, raw: list[Any] | None = None) -> FileResult:
    """The objects and problems of one piece of a file (with its raw documents when known), lines
    counted from the start of the file."""
    offset, text = piece
    part = parse_text(text, path, raw, offset)
    if not offset:
        return part
    problems = tuple(_shift(p, offset) for p in part.problems)
    return FileResult(path, part.objects, problems, tuple(_shift(p, offset) for p in part.notes))


def join_pieces(path: str, parts: Iterable[FileResult], stamp: tuple[float, int]) -> FileResult:
    """One file's result from its pieces' results, in file order."""
    objects: list[Object] = []
    problems: list[Problem] = []
    notes: list[Problem] = []
    for part in parts:
        objects.extend(part.objects)
        problems.extend(part.problems)
        notes.extend(part.notes)
    return FileResult(path, tuple(objects), tuple(problems), tuple(notes), stamp)


def raw_documents(text: str, path: str) -> list[Any]:
    """The documents of a file's text as plain data (YAML, or JSON when `path` ends in .json): the
    costly half of parsing, which a helper process can do (see zones.read_files). Raises
    yaml.YAMLError or ValueError on syntax errors."""
    if path.endswith(".json"):
        return [_load_json(text)] if text.strip() else []
    try:
        return fastyaml.load_all(text)
    except fastyaml.Unsupported:
        return _load_yaml(text)
    except fastyaml.TooDeep:
        raise fastyaml.TooDeep(_too_deep_line(text)) from None


MAX_DEPTH = fastyaml.MAX_DEPTH
_LIBYAML: Any = getattr(yaml, "CParser", ())  # issubclass(x, ()) is False


def _load_yaml(text: str, loader: Any = None) -> list[Any]:
    """Every document, as `yaml.load_all` gives them, each node tree checked for depth (aliases
    followed) before it is constructed. libyaml composes without Python recursion, and refuses by itself
    more than 1,000 levels; PyYAML's own composer recurses, so without libyaml the events are counted
    first."""
    loader_class = loader or _Loader
    if not issubclass(loader_class, _LIBYAML):
        line = _too_deep_line(text, loader_class)
        if line:
            raise fastyaml.TooDeep(line)
    reader = loader_class(text)
    try:
        out = []
        while reader.check_node():
            node = reader.get_node()
            line = _too_deep_node(node)
            if line:
                raise fastyaml.TooDeep(line)
            try:
                out.append(reader.construct_document(node))
            except yaml.YAMLError:
                raise
            except Exception as exc:  # a constructor refused a value (`!!int nginx`): PyYAML gives no mark
                raise _refused_value(node, exc) from None
        return out
    finally:
        reader.dispose()


def _refused_value(root: Any, exc: Exception) -> _LocatedError:
    """The problem of a value a YAML constructor refused, at the first scalar that refuses alone."""
    constructor = yaml.constructor.SafeConstructor()
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                constructor.construct_object(node)
            except Exception as refused:
                mark = node.start_mark
                return _LocatedError(mark.line + 1, f"invalid YAML: {_refusal(refused)} (column {mark.column + 1})")
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
        else:
            stack.extend(n for pair in reversed(node.value) for n in reversed(pair))
    return _LocatedError(0, f"invalid YAML: {_refusal(exc)}")


def _refusal(exc: Exception) -> str:
    """Why a value was refused, in a manifest's terms."""
    limit = sys.get_int_max_str_digits()
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc) and limit:
        return f"an integer of more than {limit} digits"
    return str(exc)


def _too_deep_node(root: Any) -> int:
    """The line of a collection nested more than MAX_DEPTH deep in a node tree, or 0. Iterative; a node
    reached through aliases is walked again only when reached deeper than before (a recursive alias thus
    counts as too deep, and an alias bomb costs at most MAX_DEPTH walks of each node)."""
    scalar, sequence = yaml.ScalarNode, yaml.SequenceNode
    deepest: dict[int, int] = {}
    stack = [] if root.__class__ is scalar else [(root, 1)]  # collections only: most nodes are scalars
    push = stack.append
    while stack:
        node, depth = stack.pop()
        if deepest.get(id(node), 0) >= depth:
            continue
        if depth > MAX_DEPTH:
            return int(node.start_mark.line) + 1
        deepest[id(node)] = depth
        depth += 1
        if node.__class__ is sequence:
            for child in node.value:
                if child.__class__ is not scalar:
                    push((child, depth))
        else:
            for key, value in node.value:
                if value.__class__ is not scalar:
                    push((value, depth))
                if key.__class__ is not scalar:
                    push((key, depth))
    return 0


def _too_deep_line(text: str, loader: Any = None) -> int:
    """The line of the first collection nested more than MAX_DEPTH deep in YAML text, from the parser's
    events (no recursion); 0 when there is none, or when the text has a syntax error before one."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader or _Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return event.start_mark.line + 1 if event.start_mark else 0
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.DocumentEndEvent):
                depth = 0
    except yaml.YAMLError:
        return 0
    return 0


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')  # an unterminated string takes the rest: linear
_JSON_DEPTH = {"[": 1, "{": 1, "]": -1, "}": -1}


def _load_json(text: str) -> Any:
    """json.loads, after checking without recursion that no array or object nests more than MAX_DEPTH
    deep (json's C scanner recurses once per level)."""
    if text.count("[") + text.count("{") > MAX_DEPTH:
        bare = _JSON_STRING.sub('""', text)  # strings hold no raw newline: lines stay where they were
        brackets = re.sub(r"[^\[\]{}]+", "", bare)
        if max(itertools.accumulate(map(_JSON_DEPTH.__getitem__, brackets)), default=0) > MAX_DEPTH:
            depth, line = 0, 1
            for m in re.finditer(r"[\[\]{}\n]", bare):
                c = m.group()
                if c == "\n":
                    line += 1
                else:
                    depth += _JSON_DEPTH[c]
                    if depth > MAX_DEPTH:
                        raise fastyaml.TooDeep(line)
    return json.loads(text)


def parse_text(text: str, path: str, raw: list[Any] | None = None, offset: int = 0) -> FileResult:
    """Parse one file's text into objects and problems; `raw` is its raw_documents when known; objects'
    lines are counted `offset` lines further (a piece of a file). Whatever the text holds, the answer is a
    result: a failure nobody foresaw is a problem of this file alone."""
    try:
        return _parse_text(text, path, raw, offset)
    except Exception as exc:
        reason = f"could not be read: {type(exc).__name__}: {exc} (a bug in clusterdns: please report it)"
        return FileResult(path, problems=(Problem(path, 0, "", "", reason),))


def _parse_text(text: str, path: str, raw: list[Any] | None, offset: int) -> FileResult:
    objects: list[Object] = []
    problems: list[Problem] = []
    notes: list[Problem] = []
    try:
        docs = list(_documents(text, path, raw))
    except (yaml.YAMLError, ValueError) as exc:
        chunks = pieces(text, path, 0)
        if len(chunks) < 2:
            line, reason = _syntax_error(exc, text, path)
            return FileResult(path, problems=(Problem(path, line, "", "", reason),))
        return join_pieces(path, [parse_piece(path, chunk) for chunk in chunks], (0.0, 0))
    for doc in docs:
        try:
            obj = parse_object(doc.data, Source(path, doc.line + offset))
        except ManifestError as exc:
            subject = _subject(doc.data)
            line = _locate(text, path, doc, exc.path)
            problems.append(Problem(path, line, subject, _format_path(exc.path), exc.message))
            continue
        if obj is None:
            kind = doc.data.get("kind")
            notes.append(Problem(path, doc.line, _subject(doc.data), "", f"kind {kind} is not used; skipped", True))
            continue
        objects.append(obj)
    return FileResult(path, tuple(objects), tuple(problems), tuple(notes))


def _shift(problem: Problem, offset: int) -> Problem:
    return Problem(
        problem.path,
        problem.line + offset if problem.line else 0,
        problem.subject,
        problem.field,
        problem.message,
        problem.note,
    )


# --- documents and lines ----------------------------------------------------------------------------

_MARKER_AFTER_LINE = re.compile(r"\n---(?:[ \t]|(?=\n)|\Z)")  # a literal start: searched 4x faster than ^--- with re.M


def _markers(text: str) -> list[tuple[int, int]]:
    """(start of its line, end) of each `---` document marker: `---` at the start of a line, then a space,
    a tab or the end of the line."""
    found = [(m.start() + 1, m.end()) for m in _MARKER_AFTER_LINE.finditer(text)]
    if text.startswith("---") and text[3:4] in ("", " ", "\t", "\n"):
        found.insert(0, (0, 4 if text[3:4] in (" ", "\t") else 3))
    return found


def _documents(text: str, path: str, raw: list[Any] | None = None) -> Iterator[_Doc]:
    """Yield each non-empty document (and each item of a List) with its line."""
    if raw is None:
        raw = raw_documents(text, path)
    starts = [1] if path.endswith(".json") else _document_lines(text, len(raw))
    owner: list[Any] = []
    for index, data in enumerate(raw):
        if data is None:
            continue
        line = starts[index] if index < len(starts) else 0
        if isinstance(data, dict) and _is_list(data):
            items = data.get("items")
            if items is None:
                continue
            if not isinstance(items, list):
                raise _LocatedError(line, f"items: must be a list, got {_type_name(items)}")
            for i, item in enumerate(items):
                if item is None:
                    continue
                doc = _Doc(item, index, 0, ("items", i), owner)
                doc.line = _locate_node(text, path, doc, ()) or line
                yield doc
        else:
            yield _Doc(data, index, line, (), owner)


class _LocatedError(ValueError):
    """A problem of the whole file (or of one document) found where the reader gives no mark."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def _is_list(data: Mapping[str, Any]) -> bool:
    kind = data.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and "items" in data


def _document_lines(text: str, count: int) -> list[int]:
    """The first content line of each of `count` documents, found from the `---` markers."""
    markers = _markers(text)
    ends = [begin for begin, _ in markers[1:]] + [len(text)]  # a document's content ends at the next marker
    bounds = [(end, stop) for (_, end), stop in zip(markers, ends, strict=False)]  # no markers: no bounds
    if len(bounds) + 1 == count:  # the first document has no marker
        bounds.insert(0, (0, markers[0][0] if markers else len(text)))
    elif len(bounds) != count:  # markers inside block scalars, or directives: ask the composer
        return [node.start_mark.line + 1 for node in yaml.compose_all(text, Loader=_Loader)]
    lines = []
    pos, line = 0, 1
    for start, stop in bounds:
        first = _FIRST_CONTENT.search(text, start, stop)  # not past its own document: empty ones stay cheap
        end = first.start() if first else start
        line += text.count("\n", pos, end)
        pos = end
        lines.append(line)
    return lines


_FIRST_CONTENT = re.compile(r"^[ \t]*[^#\s-]|^-(?!--(?:[ \t]|$))", re.MULTILINE)


def _locate(text: str, path: str, doc: _Doc, field_path: Path) -> int:
    """The line of `field_path` in `doc`, or of its deepest existing parent."""
    return _locate_node(text, path, doc, field_path) or doc.line


def _locate_node(text: str, path: str, doc: _Doc, field_path: Path) -> int:
    try:
        if not doc.owner:
            if path.endswith(".json"):
                doc.owner.append(yaml.compose(text, Loader=_Loader))
            else:
                doc.owner.extend(list(yaml.compose_all(text, Loader=_Loader)))  # all, or none on an error
        node: Any = doc.owner[doc.index]
    except (yaml.YAMLError, IndexError):
        return 0
    return _walk(node, (*doc.prefix, *field_path))


class FileLocator:
    """Finds the line of a field in an object declared at a Source, reading the file again: for problems
    found after parsing (an allocation refused, a duplicate), which know only where their object starts.

    One is used for one load. It reads each file once, cuts it at its document markers, and composes only
    the document that holds the object (once): a file of 100,000 Services, a third of them with a problem,
    is located in seconds, where composing the whole file for each problem, or even once, took minutes or
    gigabytes."""

    def __init__(self) -> None:
        self._path = ""
        self._text = ""
        self._starts: list[int] = []  # line (from 1) where each document's text starts
        self._offsets: list[int] = []  # and its character offset
        self._docs: dict[int, list[Any]] = {}  # document index -> candidate nodes (root, List items)

    def __call__(self, source: Source, field_path: Path) -> int:
        """The line of `field_path` in the object declared at `source`; 0 if unknown."""
        if source.path != self._path:
            self._path, self._text, self._starts, self._offsets, self._docs = source.path, "", [], [], {}
            try:
                with open(source.path, encoding="utf-8") as f:
                    self._text = f.read()
            except (OSError, UnicodeDecodeError):
                return 0
            self._cut()
        if not self._text:
            return 0
        index = max(0, bisect.bisect_right(self._starts, source.line) - 1)
        candidates = self._docs.get(index)
        if candidates is None:
            candidates = self._docs[index] = self._compose(index)
        best = None
        for node in candidates:
            line = node.start_mark.line + self._starts[index]
            if line <= source.line and (best is None or line >= best[0]):
                best = (line, node)
        if best is None:
            return 0
        return _walk(best[1], field_path) + self._starts[index] - 1

    def _cut(self) -> None:
        """Where each document starts: after each `---` marker (JSON files are one document)."""
        self._starts, self._offsets = [1], [0]
        if self._path.endswith(".json"):
            return
        line, pos = 1, 0
        for _start, end in _markers(self._text):
            line += self._text.count("\n", pos, end)
            pos = end
            self._starts.append(line)
            self._offsets.append(end)

    def _compose(self, index: int) -> list[Any]:
        """The document's root node, and the items of a List, with lines counted from the document."""
        start = self._offsets[index]
        end = self._offsets[index + 1] if index + 1 < len(self._offsets) else len(self._text)
        if index + 1 < len(self._offsets):
            end = self._text.rfind("\n", start, end) + 1 or end  # the next marker's line is not ours
        try:
            root = yaml.compose(self._text[start:end], Loader=_Loader)
        except yaml.YAMLError:
            return []
        if root is None:
            return []
        candidates = [root]
        if isinstance(root, yaml.MappingNode):
            for key, value in root.value:
                if key.value == "items" and isinstance(value, yaml.SequenceNode):
                    candidates.extend(value.value)
        return candidates


def _walk(node: Any, field_path: Path) -> int:
    """The line of the deepest node along `field_path` below `node`."""
    line: int = node.start_mark.line + 1
    for step in field_path:
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == step:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            child = node.value[step]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _syntax_error(exc: Exception, text: str, path: str) -> tuple[int, str]:
    """(line, reason) of a file that could not be read into documents."""
    syntax = "invalid JSON" if path.endswith(".json") else "invalid YAML"
    if isinstance(exc, json.JSONDecodeError):
        return exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, _LocatedError | fastyaml.TooDeep):
        return exc.line, str(exc)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow: no mark, a position
        line, column = _line_column(text, exc.position)
        what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        return line, f"invalid YAML: {exc.reason}: {what} (column {column})"
    limit = sys.get_int_max_str_digits()
    if not isinstance(exc, yaml.YAMLError) and "integer string conversion" in str(exc) and limit:
        long = re.search(rf"[0-9][0-9_]{{{limit},}}", text)  # json or fastyaml: int() refused a number here
        line, column = _line_column(text, long.start() if long else -1)
        return line, f"{syntax}: {_refusal(exc)} (column {column})"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return mark.line + 1, f"invalid YAML: {problem} (column {mark.column + 1})"
    return 0, f"{syntax}: {problem}"


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """(line, column), from 1, of a character offset; (0, 0) for a negative one."""
    if offset < 0:
        return 0, 0
    start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - start + 1


def _format_path(path: Path) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out


def _subject(data: Any) -> str:
    """`Service default/web` for errors, from whatever of kind and metadata is readable."""
    if not isinstance(data, dict):
        return ""
    kind = data.get("kind") if isinstance(data.get("kind"), str) else "object"
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        return str(kind)
    if kind in CLUSTER_SCOPED:
        return f"{kind} {name}"
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    return f"{kind} {ns if isinstance(ns, str) and ns else 'default'}/{name}"


# --- typed field access -----------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _map(d: Mapping[str, Any], key: str, path: Path, required: bool = False) -> dict[str, Any]:
    value = d.get(key)
    if value is None:
        if required:
            raise ManifestError((*path, key), "required field is missing")
        return {}
    if not isinstance(value, dict):
        raise ManifestError((*path, key), f"must be a mapping, got {_type_name(value)}")
    return value


def _list(d: Mapping[str, Any], key: str, path: Path, required: bool = False) -> list[Any]:
    value = d.get(key)
    if value is None:
        if required:
            raise ManifestError((*path, key), "required field is missing")
        return []
    if not isinstance(value, list):
        raise ManifestError((*path, key), f"must be a list, got {_type_name(value)}")
    return value


def _items(d: Mapping[str, Any], key: str, path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each element of the list `key`, which must be a mapping, with its path."""
    for i, item in enumerate(_list(d, key, path)):
        p = (*path, key, i)
        if not isinstance(item, dict):
            raise ManifestError(p, f"must be a mapping, got {_type_name(item)}")
        yield p, item


def _str(d: Mapping[str, Any], key: str, path: Path, required: bool = False, default: str = "") -> str:
    value = d.get(key)
    if value is None or (required and value == ""):
        if required:
            raise ManifestError((*path, key), "required field is missing")
        return default
    if not isinstance(value, str):
        raise ManifestError((*path, key), f"must be a string, got {_type_name(value)}")
    return value


def _int(d: Mapping[str, Any], key: str, path: Path) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError((*path, key), f"must be an integer, got {_type_name(value)}")
    return value


def _bool(d: Mapping[str, Any], key: str, path: Path, default: bool) -> bool:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ManifestError((*path, key), f"must be true or false, got {_type_name(value)}")
    return value


def _str_map(d: Mapping[str, Any], key: str, path: Path) -> dict[str, str]:
    m = _map(d, key, path)
    for k, v in m.items():
        if not isinstance(v, str):
            raise ManifestError((*path, key, str(k)), f"must be a string, got {_type_name(v)}")
    return m


def _labels(d: Mapping[str, Any], key: str, path: Path) -> dict[str, str]:
    labels = _str_map(d, key, path)
    for k, v in labels.items():
        problem = label_key_error(str(k)) or label_value_error(v)
        if problem:
            raise ManifestError((*path, key, str(k)), problem)
    return labels


def _check(path: Path, problem: str | None) -> None:
    if problem:
        raise ManifestError(path, problem)


def _port_number(d: Mapping[str, Any], key: str, path: Path, required: bool = True) -> int:
    value = _int(d, key, path)
    if value is None:
        if required:
            raise ManifestError((*path, key), "required field is missing")
        return 0
    if not 1 <= value <= 65535:
        raise ManifestError((*path, key), f"must be 1-65535, got {value}")
    return value


def _protocol(d: Mapping[str, Any], path: Path) -> str:
    protocol = _str(d, "protocol", path, default="TCP")
    if protocol not in PROTOCOLS:
        raise ManifestError((*path, "protocol"), f"must be one of TCP, UDP, SCTP, got {protocol!r}")
    return protocol


def _ip(value: Any, path: Path) -> str:
    """A valid IP address, in its canonical text form."""
    if not isinstance(value, str):
        raise ManifestError(path, f"must be an IP address, got {_type_name(value)}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ManifestError(path, f"must be a valid IP address, got {value!r}") from None


# --- objects ----------------------------------------------------------------------------------------


def parse_object(data: Any, source: Source | None = None) -> Object | None:
    """Validate one document (declared at `source`) into a typed object; None for a kind clusterdns does
    not use.

    Raises ManifestError naming the field path (relative to the document) and the reason.
    """
    if not isinstance(data, dict):
        raise ManifestError((), f"a manifest must be a mapping, got {_type_name(data)}")
    kind = _str(data, "kind", (), required=True)
    if kind not in KINDS:
        return None
    meta = _map(data, "metadata", (), required=True)
    name = _str(meta, "name", ("metadata",), required=True)
    if kind in CLUSTER_SCOPED:
        namespace = ""
    else:
        namespace = _str(meta, "namespace", ("metadata",)) or "default"
        _check(("metadata", "namespace"), dns1123_label_error(namespace))
    obj: Object = _PARSERS[kind](data, meta, namespace, name, source)
    return obj


def _parse_namespace(
    data: dict[str, Any], meta: dict[str, Any], _ns: str, name: str, source: Source | None
) -> Namespace:
    _check(("metadata", "name"), dns1123_label_error(name))
    return Namespace(name, _labels(meta, "labels", ("metadata",)), source=source)


def _parse_service_cidr(
    data: dict[str, Any], meta: dict[str, Any], _ns: str, name: str, source: Source | None
) -> ServiceCIDR:
    spec = _map(data, "spec", (), required=True)
    cidrs = []
    for i, value in enumerate(_list(spec, "cidrs", ("spec",), required=True)):
        cidrs.append(parse_cidr(value, ("spec", "cidrs", i)))
    if not cidrs or len(cidrs) > 2:
        raise ManifestError(("spec", "cidrs"), f"must hold one or two CIDRs, got {len(cidrs)}")
    return ServiceCIDR(name, tuple(cidrs), source=source)


def parse_cidr(value: Any, path: Path) -> str:
    """A CIDR such as 10.0.0.0/16 with no host bits set, in canonical form."""
    if not isinstance(value, str):
        raise ManifestError(path, f"must be a CIDR, got {_type_name(value)}")
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ManifestError(path, f"must be a CIDR such as 10.0.0.0/16, got {value!r} ({exc})") from None


def _parse_service(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> Service:
    _check(("metadata", "name"), dns1035_label_error(name))
    spec = _map(data, "spec", (), required=True)
    sp: Path = ("spec",)
    type_ = _str(spec, "type", sp, default=CLUSTER_IP)
    if type_ not in SERVICE_TYPES:
        raise ManifestError(("spec", "type"), f"must be one of {', '.join(SERVICE_TYPES)}, got {type_!r}")
    external_name = ""
    if type_ == EXTERNAL_NAME:
        external_name = _str(spec, "externalName", sp, required=True)
        _check(("spec", "externalName"), dns1123_subdomain_error(external_name.removesuffix(".")))
    headless, cluster_ips = _cluster_ips(spec, type_)
    families, policy = _ip_families(spec, cluster_ips)
    ports = _service_ports(spec, type_, required=not headless and type_ != EXTERNAL_NAME)
    selector = _labels(spec, "selector", sp) or None
    external_ips = tuple(_ip(v, ("spec", "externalIPs", i)) for i, v in enumerate(_list(spec, "externalIPs", sp)))
    ingress: list[str] = []
    status = _map(data, "status", ())
    for p, item in _items(_map(status, "loadBalancer", ("status",)), "ingress", ("status", "loadBalancer")):
        if item.get("ip") is not None:
            ingress.append(_ip(item["ip"], (*p, "ip")))
        elif hostname := _str(item, "hostname", p):
            ingress.append(hostname)
    affinity = _str(spec, "sessionAffinity", sp, default="None")
    if affinity not in ("None", "ClientIP"):
        raise ManifestError(("spec", "sessionAffinity"), f"must be None or ClientIP, got {affinity!r}")
    timeout = 10800  # the API server's default
    if affinity == "ClientIP":
        cp: Path = ("spec", "sessionAffinityConfig", "clientIP")
        given = _int(_map(_map(spec, "sessionAffinityConfig", sp), "clientIP", cp[:2]), "timeoutSeconds", cp)
        if given is not None:
            _check((*cp, "timeoutSeconds"), None if 0 < given <= 86400 else f"must be 1-86400, got {given}")
            timeout = given
    return Service(
        namespace=namespace,
        name=name,
        type=type_,
        ports=ports,
        selector=selector if type_ != EXTERNAL_NAME else None,
        headless=headless,
        cluster_ips=cluster_ips,
        ip_families=families,
        ip_family_policy=policy,
        external_name=external_name,
        external_ips=external_ips,
        load_balancer_ingress=tuple(ingress),
        publish_not_ready_addresses=_bool(spec, "publishNotReadyAddresses", sp, False),
        session_affinity=affinity,
        session_affinity_timeout=timeout,
        labels=_labels(meta, "labels", ("metadata",)),
        annotations=_str_map(meta, "annotations", ("metadata",)),
        source=source,
    )


def _cluster_ips(spec: dict[str, Any], type_: str) -> tuple[bool, tuple[str, ...]]:
    """(headless, requested cluster IPs) from clusterIP and clusterIPs, which must agree."""
    sp: Path = ("spec",)
    single = _str(spec, "clusterIP", sp)
    many = _list(spec, "clusterIPs", sp)
    for i, v in enumerate(many):
        if not isinstance(v, str):
            raise ManifestError(("spec", "clusterIPs", i), f"must be a string, got {_type_name(v)}")
    if single and many and many[0] != single:
        raise ManifestError(("spec", "clusterIPs", 0), f"must equal spec.clusterIP ({single!r}), got {many[0]!r}")
    requested = list(many) or ([single] if single else [])
    if type_ == EXTERNAL_NAME:
        if requested and requested != ["None"]:
            raise ManifestError(("spec", "clusterIP"), "must not be set for type ExternalName")
        return False, ()
    if "None" in requested:
        if requested != ["None"]:
            raise ManifestError(("spec", "clusterIPs"), "'None' must be the only value")
        if type_ != CLUSTER_IP:
            raise ManifestError(("spec", "clusterIP"), f"may not be 'None' for type {type_}")
        return True, ()
    if len(requested) > 2:
        raise ManifestError(("spec", "clusterIPs"), f"must hold at most two addresses, got {len(requested)}")
    key = ("clusterIPs", 0) if many else ("clusterIP",)
    ips = []
    for i, v in enumerate(requested):
        ips.append(_ip(v, ("spec", "clusterIPs", i) if many else ("spec", *key)))
    if len(ips) == 2 and ipaddress.ip_address(ips[0]).version == ipaddress.ip_address(ips[1]).version:
        raise ManifestError(("spec", "clusterIPs", 1), "a dual-stack service needs one IPv4 and one IPv6 address")
    return False, tuple(ips)


def _ip_families(spec: dict[str, Any], cluster_ips: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    sp: Path = ("spec",)
    families = []
    for i, v in enumerate(_list(spec, "ipFamilies", sp)):
        if v not in ("IPv4", "IPv6"):
            raise ManifestError(("spec", "ipFamilies", i), f"must be IPv4 or IPv6, got {_type_name(v)}")
        if v in families:
            raise ManifestError(("spec", "ipFamilies", i), f"duplicate family {v}")
        families.append(v)
    policy = _str(spec, "ipFamilyPolicy", sp)
    if policy and policy not in ("SingleStack", "PreferDualStack", "RequireDualStack"):
        raise ManifestError(
            ("spec", "ipFamilyPolicy"),
            f"must be SingleStack, PreferDualStack or RequireDualStack, got {policy!r}",
        )
    if not policy:
        policy = "RequireDualStack" if len(families) == 2 or len(cluster_ips) == 2 else "SingleStack"
    if policy == "SingleStack" and (len(families) > 1 or len(cluster_ips) > 1):
        raise ManifestError(("spec", "ipFamilyPolicy"), "SingleStack allows one IP family, got two")
    for i, ip in enumerate(cluster_ips):
        fam = "IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6"
        if i < len(families) and families[i] != fam:
            raise ManifestError(
                ("spec", "ipFamilies", i), f"must match clusterIPs[{i}] ({ip} is {fam}), got {families[i]}"
            )
    return tuple(families), policy


def _service_ports(spec: dict[str, Any], type_: str, required: bool) -> tuple[ServicePort, ...]:
    ports: list[ServicePort] = []
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    items = list(_items(spec, "ports", ("spec",)))
    if required and not items:
        raise ManifestError(("spec", "ports"), "required field is missing (a Service needs at least one port)")
    for p, item in items:
        name = _str(item, "name", p)
        if name:
            _check((*p, "name"), dns1123_label_error(name))
            if name in seen_names:
                raise ManifestError((*p, "name"), f"duplicate port name {name!r}")
            seen_names.add(name)
        elif len(items) > 1:
            raise ManifestError((*p, "name"), "required when a Service has more than one port")
        port = _port_number(item, "port", p)
        protocol = _protocol(item, p)
        if (port, protocol) in seen_ports:
            raise ManifestError((*p, "port"), f"duplicate port {port}/{protocol}")
        seen_ports.add((port, protocol))
        target: int | str = port
        raw_target = item.get("targetPort")
        if isinstance(raw_target, str) and raw_target.isascii() and raw_target.isdigit() and len(raw_target) < 10:
            raw_target = int(raw_target)
        if isinstance(raw_target, str):
            _check((*p, "targetPort"), port_name_error(raw_target))
            target = raw_target
        elif raw_target is not None:
            target = _port_number(item, "targetPort", p) if not isinstance(raw_target, int) else raw_target
            if isinstance(raw_target, bool) or not 1 <= target <= 65535:
                raise ManifestError((*p, "targetPort"), f"must be 1-65535 or a port name, got {raw_target!r}")
        node_port = _int(item, "nodePort", p)
        if node_port is not None and node_port != 0:
            if type_ not in ("NodePort", "LoadBalancer"):
                raise ManifestError((*p, "nodePort"), f"may not be used when type is {type_}")
        else:
            node_port = None
        ports.append(ServicePort(name, port, protocol, target, node_port))
    return tuple(ports)


def _parse_pod(data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None) -> Pod:
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    spec = _pod_spec(_map(data, "spec", (), required=True), ("spec",))
    status = _map(data, "status", ())
    st: Path = ("status",)
    ips: list[str] = []
    for i, item in enumerate(_list(status, "podIPs", st)):
        p: Path = ("status", "podIPs", i)
        if not isinstance(item, dict):
            raise ManifestError(p, f"must be a mapping, got {_type_name(item)}")
        ips.append(_ip(item.get("ip"), (*p, "ip")))
    if status.get("podIP") is not None:
        ip = _ip(status["podIP"], ("status", "podIP"))
        if ips and ips[0] != ip:
            raise ManifestError(("status", "podIPs", 0), f"must equal status.podIP ({ip}), got {ips[0]}")
        ips = ips or [ip]
    phase = _str(status, "phase", st, default="Running")
    ready = phase == "Running"
    for p, cond in _items(status, "conditions", st):
        if _str(cond, "type", p) == "Ready":
            ready = _str(cond, "status", p) == "True"
    host_ip = _ip(status["hostIP"], ("status", "hostIP")) if status.get("hostIP") is not None else ""
    return Pod(
        namespace=namespace,
        name=name,
        spec=spec,
        labels=_labels(meta, "labels", ("metadata",)),
        annotations=_str_map(meta, "annotations", ("metadata",)),
        ips=tuple(ips),
        host_ip=host_ip,
        ready=ready,
        phase=phase,
        uid=_str(meta, "uid", ("metadata",)),
        source=source,
    )


_SPECS: dict[bytes | str, PodSpec] = {}


def _pod_spec(spec: dict[str, Any], path: Path) -> PodSpec:
    """A Pod spec. Pods often repeat one spec (replicas written out one by one, exports), so equal specs
    (by their data, marshalled, or its repr when marshal can't take it) are parsed once and share one
    immutable PodSpec; errors are not kept."""
    try:
        key: bytes | str = marshal.dumps(spec, 2)  # version 2: no back-references, so equal data, equal bytes
    except ValueError:  # a YAML timestamp, say
        key = repr(spec)
    found = _SPECS.get(key)
    if found is None:
        found = _parse_pod_spec(spec, path)
        if len(_SPECS) >= 20_000:
            _SPECS.clear()
        _SPECS[key] = found
    return found


def _parse_pod_spec(spec: dict[str, Any], path: Path) -> PodSpec:
    containers = _containers(spec, "containers", path, required=True)
    init = _containers(spec, "initContainers", path, required=False)
    ports: set[str] = set()
    for c_index, c in enumerate(containers):
        for p_index, port in enumerate(c.ports):
            if port.name and port.name in ports:
                raise ManifestError(
                    (*path, "containers", c_index, "ports", p_index, "name"),
                    f"duplicate port name {port.name!r}",
                )
            ports.add(port.name)
    hostname = _str(spec, "hostname", path)
    subdomain = _str(spec, "subdomain", path)
    if hostname:
        _check((*path, "hostname"), dns1123_label_error(hostname))
    if subdomain:
        _check((*path, "subdomain"), dns1123_label_error(subdomain))
    return PodSpec(
        containers=containers,
        init_containers=init,
        hostname=hostname,
        subdomain=subdomain,
        enable_service_links=_bool(spec, "enableServiceLinks", path, True),
        host_network=_bool(spec, "hostNetwork", path, False),
        node_name=_str(spec, "nodeName", path),
        service_account_name=_str(spec, "serviceAccountName", path) or _str(spec, "serviceAccount", path) or "default",
    )


def _containers(spec: dict[str, Any], key: str, path: Path, required: bool) -> tuple[Container, ...]:
    if key not in spec and not required:
        return ()
    out: list[Container] = []
    names: set[str] = set()
    items = list(_items(spec, key, path))
    if required and not items:
        raise ManifestError((*path, key), "required field is missing (a Pod needs at least one container)")
    for p, item in items:
        name = _str(item, "name", p, required=True)
        _check((*p, "name"), dns1123_label_error(name))
        if name in names:
            raise ManifestError((*p, "name"), f"duplicate container name {name!r}")
        names.add(name)
        ports = []
        if "ports" in item:
            for pp, port in _items(item, "ports", p):
                port_name = _str(port, "name", pp)
                if port_name:
                    _check((*pp, "name"), port_name_error(port_name))
                ports.append(ContainerPort(port_name, _port_number(port, "containerPort", pp), _protocol(port, pp)))
        out.append(
            Container(
                name,
                _str(item, "image", p),
                tuple(ports),
                tuple(_env_var(ep, e) for ep, e in _items(item, "env", p)) if "env" in item else (),
                tuple(_env_from(ep, e) for ep, e in _items(item, "envFrom", p)) if "envFrom" in item else (),
                _resources(item, p) if "resources" in item else _NO_RESOURCES,
            )
        )
    return tuple(out)


_NO_RESOURCES: Mapping[str, Mapping[str, str]] = {"limits": {}, "requests": {}}


def _resources(item: dict[str, Any], path: Path) -> dict[str, dict[str, str]]:
    resources = _map(item, "resources", path)
    return {
        k: {str(rk): str(rv) for rk, rv in _map(resources, k, (*path, "resources")).items()}
        for k in ("limits", "requests")
    }


def _env_var(path: Path, item: dict[str, Any]) -> EnvVar:
    name = _str(item, "name", path, required=True)
    if "=" in name:
        raise ManifestError((*path, "name"), f"must not contain '=', got {name!r}")
    value = _str(item, "value", path)
    source = _map(item, "valueFrom", path)
    if not source:
        return EnvVar(name, value)
    if value:
        raise ManifestError((*path, "valueFrom"), "may not be set when value is not empty")
    vp = (*path, "valueFrom")
    if "fieldRef" in source:
        ref = _map(source, "fieldRef", vp)
        return EnvVar(name, field_path=_str(ref, "fieldPath", (*vp, "fieldRef"), required=True))
    if "resourceFieldRef" in source:
        ref = _map(source, "resourceFieldRef", vp)
        rp = (*vp, "resourceFieldRef")
        divisor = ref.get("divisor")
        return EnvVar(
            name,
            resource=_str(ref, "resource", rp, required=True),
            divisor="" if divisor is None else str(divisor),
            value=_str(ref, "containerName", rp),
        )
    for key in ("configMapKeyRef", "secretKeyRef"):
        if key in source:
            ref = _map(source, key, vp)
            rp = (*vp, key)
            key_ref = KeyRef(
                _str(ref, "name", rp, required=True),
                _str(ref, "key", rp, required=True),
                _bool(ref, "optional", rp, False),
            )
            if key == "configMapKeyRef":
                return EnvVar(name, config_map_key=key_ref)
            return EnvVar(name, secret_key=key_ref)
    raise ManifestError(vp, "must set one of fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef")


def _env_from(path: Path, item: dict[str, Any]) -> EnvFrom:
    prefix = _str(item, "prefix", path)
    for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
        if key in item:
            ref = _map(item, key, path)
            rp = (*path, key)
            return EnvFrom(kind, _str(ref, "name", rp, required=True), prefix, _bool(ref, "optional", rp, False))
    raise ManifestError(path, "must set configMapRef or secretRef")


def parse_selector(value: Any, path: Path) -> Selector:
    """A workload's `spec.selector` (matchLabels and matchExpressions)."""
    if not isinstance(value, dict):
        raise ManifestError(path, f"must be a mapping, got {_type_name(value)}")
    match_labels = _labels(value, "matchLabels", path)
    expressions: list[Requirement] = []
    for p, item in _items(value, "matchExpressions", path):
        key = _str(item, "key", p, required=True)
        _check((*p, "key"), label_key_error(key))
        op = _str(item, "operator", p, required=True)
        if op not in OPERATORS:
            raise ManifestError((*p, "operator"), f"must be one of {', '.join(OPERATORS)}, got {op!r}")
        values = _list(item, "values", p)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise ManifestError((*p, "values", i), f"must be a string, got {_type_name(v)}")
            _check((*p, "values", i), label_value_error(v))
        if op in ("In", "NotIn") and not values:
            raise ManifestError((*p, "values"), f"must be non-empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and values:
            raise ManifestError((*p, "values"), f"must be empty for operator {op}")
        expressions.append(Requirement(key, op, frozenset(values)))
    return Selector(match_labels, tuple(expressions))


def _parse_workload(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> Workload:
    kind = data["kind"]
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    spec = _map(data, "spec", (), required=True)
    sp: Path = ("spec",)
    replicas = _int(spec, "replicas", sp)
    if replicas is None:
        replicas = 1
    if replicas < 0:
        raise ManifestError(("spec", "replicas"), f"must be 0 or more, got {replicas}")
    if replicas > MAX_REPLICAS:  # each replica becomes a Pod: a bound on memory and time
        raise ManifestError(
            ("spec", "replicas"),
            f"must be at most {MAX_REPLICAS:,} (the most Pods Kubernetes supports in a cluster), got {replicas:,}",
        )
    template = _map(spec, "template", sp, required=True)
    tp: Path = ("spec", "template")
    tmeta = _map(template, "metadata", tp)
    labels = _labels(tmeta, "labels", (*tp, "metadata"))
    if "selector" not in spec or spec["selector"] is None:
        raise ManifestError(("spec", "selector"), "required field is missing")
    selector = parse_selector(spec["selector"], ("spec", "selector"))
    if selector.empty:
        raise ManifestError(("spec", "selector"), "must not be empty")
    if not selector.matches(labels):
        raise ManifestError(("spec", "template", "metadata", "labels"), f"do not match spec.selector ({selector})")
    pod_spec = _pod_spec(_map(template, "spec", tp, required=True), (*tp, "spec"))
    service_name = ""
    if kind == "StatefulSet":
        service_name = _str(spec, "serviceName", sp)
        if service_name:
            _check(("spec", "serviceName"), dns1035_label_error(service_name))
    annotations = _str_map(tmeta, "annotations", (*tp, "metadata"))
    return Workload(
        kind=kind,
        namespace=namespace,
        name=name,
        replicas=replicas,
        selector=selector,
        template=PodTemplate(labels, annotations, pod_spec),
        service_name=service_name,
        template_hash=template_hash(template) if kind == "Deployment" else "",
        labels=_labels(meta, "labels", ("metadata",)),
        source=source,
    )


def safe_encode(text: str) -> str:
    """rand.SafeEncodeString: map each character into an alphabet without vowels or look-alikes."""
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in text)


def template_hash(template: Mapping[str, Any]) -> str:
    """A pod-template-hash: a 32-bit hash of the pod template, safe-encoded as the Deployment
    controller encodes its FNV-32a hash (the bytes hashed differ from Go's object dump, so the values
    differ from a real cluster's; what matters is that they are stable and change with the template)."""
    digest = zlib.crc32(json.dumps(template, sort_keys=True, default=str).encode())
    return safe_encode(str(digest))


def _endpoint_ports(item: dict[str, Any], path: Path) -> tuple[EndpointPort, ...]:
    ports = []
    for p, port in _items(item, "ports", path):
        name = _str(port, "name", p)
        ports.append(EndpointPort(name, _port_number(port, "port", p), _protocol(port, p)))
    return tuple(ports)


def _parse_endpoints(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> EndpointsObject:
    _check(("metadata", "name"), dns1035_label_error(name))
    endpoints: list[Endpoint] = []
    for sp, subset in _items(data, "subsets", ()):
        ports = _endpoint_ports(subset, sp)
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for ap, address in _items(subset, key, sp):
                hostname = _str(address, "hostname", ap)
                if hostname:
                    _check((*ap, "hostname"), dns1123_label_error(hostname))
                target = _map(address, "targetRef", ap)
                endpoints.append(
                    Endpoint(
                        ip=_ip(address.get("ip"), (*ap, "ip")),
                        ports=ports,
                        ready=ready,
                        hostname=hostname,
                        node_name=_str(address, "nodeName", ap),
                        pod=_str(target, "name", (*ap, "targetRef")),
                    )
                )
    return EndpointsObject(namespace, name, tuple(endpoints), source=source)


def _parse_endpoint_slice(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> EndpointSlice:
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    labels = _labels(meta, "labels", ("metadata",))
    service_name = labels.get("kubernetes.io/service-name", "")
    if not service_name:
        raise ManifestError(("metadata", "labels"), "needs the label kubernetes.io/service-name")
    address_type = _str(data, "addressType", (), required=True)
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        raise ManifestError(("addressType",), f"must be IPv4, IPv6 or FQDN, got {address_type!r}")
    ports = _endpoint_ports(data, ())
    endpoints: list[Endpoint] = []
    for ep, item in _items(data, "endpoints", ()):
        conditions = _map(item, "conditions", ep)
        ready = _bool(conditions, "ready", (*ep, "conditions"), True)
        hostname = _str(item, "hostname", ep)
        if hostname:
            _check((*ep, "hostname"), dns1123_label_error(hostname))
        target = _map(item, "targetRef", ep)
        addresses = _list(item, "addresses", ep, required=True)
        if not addresses:
            raise ManifestError((*ep, "addresses"), "must hold at least one address")
        for i, address in enumerate(addresses):
            if address_type == "FQDN":
                continue
            ip = _ip(address, (*ep, "addresses", i))
            if (":" in ip) != (address_type == "IPv6"):
                raise ManifestError((*ep, "addresses", i), f"must be an {address_type} address, got {ip}")
            endpoints.append(
                Endpoint(
                    ip,
                    ports,
                    ready,
                    hostname,
                    _str(item, "nodeName", ep),
                    _str(target, "name", (*ep, "targetRef")),
                )
            )
    managed_by = labels.get("endpointslice.kubernetes.io/managed-by", "")
    return EndpointSlice(
        namespace, name, service_name, address_type, tuple(endpoints), managed_by=managed_by, source=source
    )


def _parse_config_map(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> ConfigMap:
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    return ConfigMap(namespace, name, _str_map(data, "data", ()), source=source)


def _parse_secret(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> Secret:
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    values: dict[str, str] = {}
    for key, encoded in _str_map(data, "data", ()).items():
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            raise ManifestError(("data", key), "must be base64-encoded") from None
    values.update(_str_map(data, "stringData", ()))
    return Secret(namespace, name, values, _str(data, "type", (), default="Opaque"), source=source)


_PARSERS: dict[str, Any] = {
    "Namespace": _parse_namespace,
    "Service": _parse_service,
    "Endpoints": _parse_endpoints,
    "EndpointSlice": _parse_endpoint_slice,
    "Pod": _parse_pod,
    "Deployment": _parse_workload,
    "ReplicaSet": _parse_workload,
    "StatefulSet": _parse_workload,
    "ConfigMap": _parse_config_map,
    "Secret": _parse_secret,
    "ServiceCIDR": _parse_service_cidr,
}
