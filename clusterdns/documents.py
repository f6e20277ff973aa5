"""Manifest files -> documents, with lines: finding the files, reading them (the only disk access of
parsing, with FileLocator's), cutting them into pieces at document markers, reading YAML (fastyaml, else
PyYAML) and JSON with a bound on nesting, each document's line, and the lines of fields and syntax errors.

Documents are read without line numbers; lines are found only when needed, by composing the document's
node tree again and walking it along the failing field path.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from clusterdns import fastyaml
from clusterdns.model import (
    Source,
)
from clusterdns.problems import Path, Problem, type_name

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
CLUSTER_SCOPED = ("Namespace", "ServiceCIDR")  # kinds without a namespace


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
    while (marker := _marker_from(text, start + max(size, 1))) != -1:
        piece = text[start:marker]
        out.append((line, piece))
        line += piece.count("\n")
        start = marker
    out.append((line, text[start:]))
    return out


def _marker_from(text: str, at: int) -> int:
    """The start of the first line at or after `at` that is a `---` document marker; -1 if none. Only the
    few markers where pieces are cut are looked for, not all of them (a 100,000-document file: 0.2 s)."""
    found = _MARKER_AFTER_LINE.search(text, at - 1)
    return -1 if found is None else found.start() + 1


def piece_documents(piece: str, path: str, whole: bool) -> list[Any] | None:
    """The raw documents of one piece (see raw_documents); None when it must be read as a whole file
    instead. A piece of a larger file is only cut safely when the fast reader takes it: only then is every
    `---` at the start of a line sure to be a document marker, and not inside a block scalar."""
    try:
        return raw_documents(piece, path) if whole else fastyaml.load_all(piece)
    except (fastyaml.Unsupported, yaml.YAMLError, ValueError):
        return None


def raw_documents(text: str, path: str) -> list[Any]:
    """The documents of a file's text as plain data (YAML, or JSON when `path` ends in .json): the
    costly half of parsing, which a helper process can do (see zones.read_files). Raises
    yaml.YAMLError or ValueError on syntax errors."""
    if path.endswith(".json"):
        return [_load_json(text)] if text.strip() else []
    try:
        return fastyaml.load_all(text)
    except fastyaml.Unsupported:
        return load_yaml(text)
    except fastyaml.TooDeep:
        raise fastyaml.TooDeep(_too_deep_line(text)) from None


MAX_DEPTH = fastyaml.MAX_DEPTH


_LIBYAML: Any = getattr(yaml, "CParser", ())  # issubclass(x, ()) is False


def load_yaml(text: str, loader: Any = None) -> list[Any]:
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


_MARKER_AFTER_LINE = re.compile(r"\n---(?:[ \t]|(?=\n)|\Z)")  # a literal start: searched 4x faster than ^--- with re.M


def _markers(text: str) -> list[tuple[int, int]]:
    """(start of its line, end) of each `---` document marker: `---` at the start of a line, then a space,
    a tab or the end of the line."""
    found = [(m.start() + 1, m.end()) for m in _MARKER_AFTER_LINE.finditer(text)]
    if text.startswith("---") and text[3:4] in ("", " ", "\t", "\n"):
        found.insert(0, (0, 4 if text[3:4] in (" ", "\t") else 3))
    return found


def documents(text: str, path: str, raw: list[Any] | None = None) -> Iterator[_Doc]:
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
                raise _LocatedError(line, f"items: must be a list, got {type_name(items)}")
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


def locate(text: str, path: str, doc: _Doc, field_path: Path) -> int:
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
        self._docs: dict[int, list[Any]] = {}  # the last document's index -> candidate nodes (root, List items)

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
        if not self._path.endswith(".json"):
            found = _block_line(self._text, self._line_offset(index, source.line), source.line, field_path)
            if found:
                return found
        candidates = self._docs.get(index)
        if candidates is None:  # only the last document is kept: problems come object by object
            candidates = self._compose(index)
            self._docs = {index: candidates}
        best = None
        for node in candidates:
            line = node.start_mark.line + self._starts[index]
            if line <= source.line and (best is None or line >= best[0]):
                best = (line, node)
        if best is None:
            return 0
        return _walk(best[1], field_path) + self._starts[index] - 1

    def _line_offset(self, index: int, line: int) -> int:
        """The character offset of `line`, which is in document `index`."""
        pos = self._offsets[index]
        for _ in range(line - self._starts[index]):
            pos = self._text.find("\n", pos) + 1
            if pos == 0:
                return len(self._text)
        return pos

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


_PLAIN_KEY = re.compile(r"([A-Za-z0-9_][^:#\s]*):(?:[ \t]+(.*))?$")


def _block_line(text: str, pos: int, line: int, field_path: Path) -> int:
    """What `_walk` finds for `field_path` in the object whose mapping starts at column 0 of `line` (at offset
    `pos`), read line by line: the line of the last key, or of the last sequence item. Only for plain block
    YAML, which most manifests are: 0 at anything else on the way (flow collections, quoted or complex
    keys, anchors, aliases, tags, block scalars, a List item, a path that isn't there), for the composer
    to read. Composing the document costs a hundred times as much."""
    lines = _content_lines(text, pos, line)
    cur = next(lines, None)
    if cur is None or cur[1] != 0 or not field_path or _PLAIN_KEY.match(cur[2]) is None:
        return 0
    col = 0
    last = len(field_path) - 1
    for depth, step in enumerate(field_path):
        if isinstance(step, str):  # a key of the mapping at `col`
            while True:
                if cur is None or cur[1] < col:
                    return 0
                if cur[1] == col and not cur[2].startswith("-"):  # deeper: the previous value; "-": its items
                    m = _PLAIN_KEY.match(cur[2])
                    if m is None:
                        return 0
                    if m.group(1) == step:
                        break
                cur = next(lines, None)
            if depth == last:
                return cur[0]
            value = m.group(2)
            if value and not value.startswith("#"):
                return 0  # a scalar or a flow collection on the key's line
            below = next(lines, None)
            if below is None or below[1] < col or (below[1] == col and not below[2].startswith("- ")):
                return 0  # an empty value
            cur, col = below, below[1]
        else:  # an item of the block sequence at `col`
            if not isinstance(step, int):
                return 0
            count = -1
            while True:
                if cur is None or cur[1] < col:
                    return 0
                if cur[1] == col:
                    if not (cur[2].startswith("- ") or cur[2] == "-"):
                        return 0
                    count += 1
                    if count == step:
                        break
                cur = next(lines, None)
            rest = cur[2][1:].lstrip(" ")
            if not rest or rest.startswith("#"):
                below = next(lines, None)
                if below is None or below[1] <= col:
                    return 0
                cur, col = below, below[1]
            elif rest[0] in "&*!|>{[\"'-?":
                return 0
            else:
                col = cur[1] + len(cur[2]) - len(rest)  # the item's mapping starts after the "- "
                cur = (cur[0], col, rest)
            if depth == last:
                return cur[0]
    return 0


def _content_lines(text: str, pos: int, line: int) -> Iterator[tuple[int, int, str]]:
    """(line, indentation, text after it) of each line from `pos` that holds more than a comment, up to
    the end of the document."""
    end = len(text)
    while pos < end:
        stop = text.find("\n", pos)
        if stop < 0:
            stop = end
        raw = text[pos:stop].rstrip("\r")
        body = raw.lstrip(" ")
        if body.startswith(("---", "...")) and len(body) == len(raw) and body[3:4] in ("", " ", "\t"):
            return
        if body and not body.startswith("#"):
            yield line, len(raw) - len(body), body
        pos, line = stop + 1, line + 1


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


def syntax_error(exc: Exception, text: str, path: str) -> tuple[int, str]:
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


def subject(data: Any) -> str:
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
