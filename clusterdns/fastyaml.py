"""A fast reader for the block-style YAML that Kubernetes manifests are written in; does no I/O.

PyYAML's C loader still builds every node and value in Python and reads about 1 MB/s, which makes a
10,000-Service zone directory take many seconds. Manifests use a small part of YAML: block mappings and
sequences, single-line plain and quoted scalars, comments. `load_all` reads exactly that part and raises
`Unsupported` on anything else (flow collections, block scalars, anchors, tags, multi-line scalars,
directives...), and the caller then reads the whole file with PyYAML. Scalars are resolved with
PyYAML's own implicit resolvers and constructors, so the values are the ones PyYAML gives (YAML 1.1:
`yes` is true, `0777` is octal). The tests compare both readers on every shipped and generated file.
"""

from __future__ import annotations

import operator
import re
import string
from collections.abc import Callable
from typing import Any

import yaml


class Unsupported(Exception):
    """The text uses YAML this reader does not handle; read it with PyYAML instead."""


# Collections nested deeper than this are refused, by this reader and by the callers of every other (PyYAML,
# json), before any of them recurses that deep: Python's recursion limit (1,000 frames) is otherwise met at
# about 300 levels of block YAML. Manifests nest about 15 levels; CRD schemas a few dozen.
MAX_DEPTH = 100


class TooDeep(ValueError):
    """Collections nested more than MAX_DEPTH deep; `line` is where the first too deep one starts (0: not
    known here, the caller finds it)."""

    def __init__(self, line: int = 0) -> None:
        super().__init__(f"collections nested more than {MAX_DEPTH} deep")
        self.line = line


_RESOLVERS = yaml.resolver.Resolver.yaml_implicit_resolvers
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_STR = "tag:yaml.org,2002:str"
# A plain scalar may not start with an indicator character (YAML 1.1 section 4.2.3 / 9.1.3).
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_MARKER = re.compile(r"^(---|\.\.\.)(?:[ \t]|$)")
_COLLECTIONS = (list, dict)  # a tuple: `list | dict` would build a union object at every use
# A plain scalar that starts with one of these letters is a string: no implicit resolver starts with it
# (those of bool and null start with one of yYnNtTfFoO). Most values in manifests (names, images) do.
_STRING_START = frozenset(string.ascii_letters) - frozenset(_RESOLVERS)
# Digits with two dots or more (IPv4 addresses) are strings too: a float has one dot at most, an int
# none, and a timestamp needs a dash.
_DOTTED = re.compile(r"[0-9]+(?:\.[0-9]+)+\.[0-9]+")


def _is_string(text: str) -> bool:
    """Whether the plain scalar `text` is a string, which _plain gives as it is, known without trying the
    resolvers: see _STRING_START and _DOTTED."""
    if text[0] not in _STRING_START and _DOTTED.fullmatch(text) is None:
        return False
    return not (": " in text or text[-1] == ":" or " #" in text or "\t" in text)


def _plain(text: str) -> Any:
    """A plain scalar's value, resolved as PyYAML's SafeLoader resolves it."""
    if _is_string(text):
        return text
    first = text[0]
    if first in _INDICATORS and not (first in "-?:" and len(text) > 1 and text[1] not in " \t"):
        raise Unsupported(text)
    if ": " in text or text.endswith(":") or " #" in text or "\t" in text:
        raise Unsupported(text)
    for tag, regexp in _RESOLVERS.get(first, ()):
        if regexp.match(text):
            if tag == _STR:
                break
            if tag in ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value", "tag:yaml.org,2002:yaml"):
                raise Unsupported(text)
            return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, text))
    return text


_MEMO: dict[str, Any] = {}


def _scalar(text: str) -> Any:
    """A single-line scalar, memoised: manifests repeat the same keys and values thousands of times,
    and sharing the (immutable) results also saves memory. Flow sequences are not memoised."""
    value = _MEMO.get(text, _MEMO)
    if value is _MEMO:
        value = _scalar_uncached(text)
        if not isinstance(value, _COLLECTIONS):
            if len(_MEMO) > 200_000:
                _MEMO.clear()
                _ENTRIES.clear()  # they hold keys from _MEMO
            _MEMO[text] = value
    return value


def _scalar_uncached(text: str) -> Any:
    """A single-line scalar (already stripped of comments and surrounding space)."""
    first = text[0]
    if first == "'":
        if len(text) < 2 or not text.endswith("'"):
            raise Unsupported(text)
        inner = text[1:-1]
        if "'" in inner.replace("''", ""):
            raise Unsupported(text)
        return inner.replace("''", "'")
    if first == '"':
        if len(text) < 2 or not text.endswith('"') or "\\" in text:
            raise Unsupported(text)
        inner = text[1:-1]
        if '"' in inner:
            raise Unsupported(text)
        return inner
    if text in ("[]", "{}"):
        return [] if text == "[]" else {}
    if first == "[" and text.endswith("]"):
        return _flow_sequence(text[1:-1])
    return _plain(text)


def _flow_sequence(inner: str) -> list[Any]:
    """`a, "b", 'c'`: a one-line flow sequence of scalars (no nested collections)."""
    items: list[Any] = []
    start, quote = 0, ""
    for i, c in enumerate(inner):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"" and not inner[start:i].strip():
            quote = c
        elif c in "[]{}":
            raise Unsupported(inner)
        elif c == ",":
            items.append(inner[start:i].strip())
            start = i + 1
    if quote:
        raise Unsupported(inner)
    last = inner[start:].strip()
    if last:
        items.append(last)
    elif items:  # a trailing comma
        pass
    if any(not item or item[0] in "?:" for item in items):  # in flow context these start no plain scalar
        raise Unsupported(inner)
    return [_scalar(item) for item in items]


def _strip_comment(line: str) -> str:
    """The line without a trailing comment; quotes are honoured."""
    if "#" not in line:
        return line.rstrip()
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"" and (i == 0 or line[i - 1] in " :-[{,"):
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _split_key(content: str) -> tuple[str, str] | None:
    """(key, rest) when `content` is a mapping entry `key: rest` or `key:`, else None."""
    if content[0] in "'\"":
        end = content.find(content[0], 1)
        while end != -1 and content[0] == "'" and content[end + 1 : end + 2] == "'":
            end = content.find("'", end + 2)
        if end == -1:
            raise Unsupported(content)
        after = content[end + 1 :]
        if after == ":" or after.startswith(": "):
            return content[: end + 1], after[1:].strip()
        return None
    i = content.find(": ")
    if i == -1:
        return (content[:-1], "") if content.endswith(":") else None
    return content[:i], content[i + 2 :].strip()


_NESTED = object()  # an entry's value is on the lines below: `key:` alone
_LATER = object()  # what the reader reads itself, when it meets the line (see _record)
_START = object()  # a `---` line: a document starts


def _entry(content: str) -> tuple[Any, Any, str]:
    """(key, value, key text) of a mapping line `key: value`, the value _NESTED for `key:`."""
    if _is_item(content):
        raise Unsupported(content)
    split = _split_key(content)
    if split is None:
        raise Unsupported(content)
    key_text, rest = split
    if not key_text or key_text[-1] == " " or len(key_text) > 1024:  # `k : v`; YAML's simple-key limit
        raise Unsupported(content)
    key = _scalar(key_text)
    if isinstance(key, _COLLECTIONS):
        raise Unsupported(content)
    return key, _scalar(rest) if rest else _NESTED, key_text


# A line as the reader takes it: (indent, content, key, value, shape). For `key: value` and `key:`, the
# key and the value (_NESTED); for a sequence item `- x`, _LATER and what follows the dash (see _item).
# _LATER in place of a key or a value: the reader reads the content itself when it meets the line, because
# reading it fails (the error must come when and where it always has) or gives a collection (which must be
# a new one each time) or is seldom seen (a bare `-`, `- - x`).
# The shape is all the reader does with the line but take its scalar value, so that documents whose lines
# have the same shapes are read alike (see _BUILDERS): (indent, key text, whether the value is _NESTED) for
# `key: value` and `key:`; (indent, None, None) for `- value`; (indent, None, the inner line's shape) for a
# compact `- key: ...`; None for a line with _LATER in it, which only the reader reads.
Line = tuple[int, str, Any, Any, Any]


def _record(indent: int, content: str) -> Line:
    """The Line of `content` at `indent`."""
    if _is_item(content):
        item = _item(indent, content)
        return (indent, content, _LATER, item, _item_shape(indent, item))
    # `key: value` with a key read before and a value that is a string, such as `name: web-7`: what
    # _entry gives, found with fewer steps. A line of each object's own name or address is always new.
    i = content.find(": ")
    if 0 < i <= 1024 and content[0] not in "'\"" and content[i - 1] != " ":
        key_text = content[:i]
        key = _MEMO.get(key_text, _MEMO)
        value = content[i + 2 :].strip()
        if key is not _MEMO and value and _is_string(value):
            shape = (indent, key_text, False)
            if len(_ENTRIES) > 10_000:
                _ENTRIES.clear()
            _ENTRIES[" " * indent + key_text + ": "] = (indent, key, shape)
            return (indent, content, key, value, shape)
    try:
        key, value, key_text = _entry(content)
    except Exception:  # not an entry, or an error: the reader raises it when it meets the line
        return (indent, content, _LATER, _LATER, None)
    if isinstance(value, _COLLECTIONS):
        return (indent, content, _LATER, _LATER, None)
    return (indent, content, key, value, (indent, key_text, value is _NESTED))


def _item_shape(indent: int, item: Any) -> Any:
    """The shape of a sequence item's Line at `indent`, given what follows its dash (see Line)."""
    if item is _LATER:
        return None
    if type(item) is not tuple:
        return (indent, None, None)
    return None if item[4] is None else (indent, None, item[4])


def _item(indent: int, content: str) -> Any:
    """What follows the dash of the sequence item `content`: the Line of a compact mapping (`- name: a`),
    read as if it started on its own line, or the scalar's value; _LATER as _record says."""
    item = content[2:]
    pad = len(item) - len(item.lstrip(" "))
    item = item[pad:]
    if _is_item(item):
        return _LATER
    try:
        if _split_key(item) is not None:
            return _record(indent + 2 + pad, item)
        value = _scalar(item)
    except Exception:
        return _LATER
    return _LATER if isinstance(value, _COLLECTIONS) else value


def _is_item(content: str) -> bool:
    """Whether `content` is a block sequence's item: `- x`, or `-` with its value below."""
    return content == "-" or content.startswith("- ")


class _Reader:
    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines  # comments and blank lines removed
        self.i = 0
        self.depth = 0  # collections open: each is a few frames of recursion

    def block(self, indent: int) -> Any:
        if _is_item(self.lines[self.i][1]):
            return self.sequence(indent)
        return self.mapping(indent)

    def nested(self, indent: int, allow_sequence: bool) -> Any:
        """The value after `key:` or `-` with nothing else on the line."""
        if self.i >= len(self.lines):
            return None
        next_indent, content, _, _, _ = self.lines[self.i]
        if next_indent > indent:
            return self.block(next_indent)
        if allow_sequence and next_indent == indent and _is_item(content):
            return self.sequence(indent)
        return None

    def mapping(self, indent: int) -> dict[Any, Any]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TooDeep
        out: dict[Any, Any] = {}
        lines = self.lines
        count = len(lines)
        i = self.i
        while i < count:
            line_indent, content, key, value, _ = lines[i]
            if line_indent != indent:
                if line_indent < indent:
                    break
                raise Unsupported(content)
            if key is _LATER:
                key, value, _ = _entry(content)
            i += 1
            if value is _NESTED:
                self.i = i
                value = self.nested(indent, allow_sequence=True)
                i = self.i
            out[key] = value
        self.i = i
        self.depth -= 1
        return out

    def sequence(self, indent: int) -> list[Any]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TooDeep
        out: list[Any] = []
        lines = self.lines
        while self.i < len(lines):
            line_indent, content, _, item, _ = lines[self.i]
            if line_indent < indent:
                break
            if line_indent > indent:
                raise Unsupported(content)
            if content == "-":
                self.i += 1
                out.append(self.nested(indent, allow_sequence=False))
                continue
            if not content.startswith("- "):
                break
            if item is _LATER:
                item = content[2:]
                pad = len(item) - len(item.lstrip(" "))
                item = item[pad:]
                if _is_item(item) or _split_key(item) is not None:
                    item = _record(indent + 2 + pad, item)
                else:
                    item = _scalar(item)
                    self.i += 1
                    out.append(item)
                    continue
            if type(item) is tuple:  # a compact nested collection: read it as if it started on its own line
                lines[self.i] = item
                out.append(self.block(item[0]))
            else:
                self.i += 1
                out.append(item)
        self.depth -= 1
        return out


_LINES: dict[str, Any] = {}


# `key: value` lines read before by _record's first step, by the text before the value: "  name: " ->
# (indent, key, shape). A line that starts so and whose value is a string (which has no comment) is read
# from them in fewer steps: each object's name and address is a new line.
_ENTRIES: dict[str, tuple[int, Any, Any]] = {}


def _line(raw: str) -> Any:
    """The Line of `raw`; None for a blank or comment line, _START for a document marker. Memoised:
    manifests repeat whole lines, indentation included."""
    i = raw.find(": ")
    entry = _ENTRIES.get(raw[: i + 2]) if i > 0 else None
    if entry is not None:
        value = raw[i + 2 :].strip(" ")
        if value and _is_string(value) and raw.isprintable():
            indent, key, shape = entry
            line: Any = (indent, raw[indent:].rstrip(" "), key, value, shape)
            if len(_LINES) > 100_000:
                _LINES.clear()
            _LINES[raw] = line
            return line
    if raw and (raw[0] == "-" or raw[0] == ".") and _MARKER.match(raw):
        if raw.startswith("..."):
            raise Unsupported("document end marker")
        if _strip_comment(raw[3:]).strip():
            raise Unsupported("content after a document marker")
        line = _START
    elif not raw.isprintable():  # control characters, a byte-order mark, YAML's other line breaks...
        raise Unsupported("a character that is not printable")
    else:
        stripped = raw.lstrip(" ")
        line = None
        if stripped and stripped[0] != "#":
            content = _strip_comment(stripped) if "#" in stripped else stripped.rstrip(" ")
            if content:
                line = _record(len(raw) - len(stripped), content)
    if len(_LINES) > 100_000:
        _LINES.clear()
    _LINES[raw] = line
    return line


def forget() -> None:
    """Drop the remembered lines, scalars and document shapes: they help while files are read, and are only
    memory after."""
    _MEMO.clear()
    _ENTRIES.clear()
    _LINES.clear()
    _SEEN.clear()
    _BUILDERS.clear()


def load_all(text: str) -> list[Any]:
    """Every document in `text`, as `list(yaml.safe_load_all(text))` would give them."""
    if "\t" in text or "\r" in text or text.startswith("%") or "\n%" in text:
        raise Unsupported("tabs, carriage returns or directives")
    docs: list[list[Line]] = []
    current: list[Line] = []
    explicit = False
    known = _LINES
    for raw in text.split("\n"):
        line = known.get(raw, _LINES)
        if line is _LINES:
            line = _line(raw)
        if line is None:
            continue
        if line is _START:
            if current or explicit:
                docs.append(current)
            current, explicit = [], True
        else:
            current.append(line)
    if current or explicit:
        docs.append(current)
    out: list[Any] = []
    builders = _BUILDERS
    for lines in docs:
        shape = tuple(map(_SHAPE, lines))
        build = builders.get(shape)
        out.append(_read(lines, shape) if build is None else build(lines))
    return out


# Manifest files hold thousands of documents of the same few shapes (every Service of a generated cluster
# has the same lines but for its name and address). A document of a shape seen before is built by that
# shape's builder, a function made from what the reader gave the last time (see _builder), in a single
# step instead of the reader's walk. Shapes with a line only the reader reads (None) have no builder; a
# shape gets one when it has been read _READS_BEFORE_BUILDING times, as making one takes the time of
# reading a few documents: documents of shapes seldom seen, as in most small files, cost only the look-up.
_SHAPE = operator.itemgetter(4)
_READS_BEFORE_BUILDING = 8
_SEEN: dict[tuple[Any, ...], int] = {}  # shapes read, and how many times
_BUILDERS: dict[tuple[Any, ...], Callable[[list[Line]], Any]] = {}


def _read(lines: list[Line], shape: tuple[Any, ...]) -> Any:
    """The document of `lines` (of the given shape) as the reader reads it; the shape's builder is made
    when it has been read often enough."""
    if not lines:
        return None
    reads = _SEEN.get(shape, 0)
    # Before the reader changes `lines` (compact items):
    slotted = _slotted(lines) if reads == _READS_BEFORE_BUILDING else None
    reader = _Reader(lines)
    first_indent, first, key, _, _ = lines[0]
    if key is _LATER and _split_key(first) is None and not _is_item(first):
        raise Unsupported("a document that is a single scalar")
    value = reader.block(first_indent)
    if reader.i != len(lines):
        raise Unsupported(lines[reader.i][1])
    if slotted is not None:
        if len(_BUILDERS) >= 1_000:
            _BUILDERS.clear()
        _BUILDERS[shape] = _builder(slotted)
    elif None not in shape:
        if len(_SEEN) >= 10_000:
            _SEEN.clear()
        _SEEN[shape] = reads + 1
    return value


class _Slot:
    """Where a builder takes a scalar value from: `source` is a Python expression of the document's Lines,
    `l`."""

    def __init__(self, source: str) -> None:
        self.source = source


def _slotted(lines: list[Line]) -> list[Line]:
    """A copy of a document's Lines (none with _LATER in it) with each scalar value replaced by its _Slot."""
    out = []
    for i, (indent, content, key, value, shape) in enumerate(lines):
        if type(value) is tuple:  # a compact item: its value is in the Line after the dash
            inner_indent, inner_content, inner_key, inner_value, inner_shape = value
            value = (inner_indent, inner_content, inner_key, _slot(inner_value, f"l[{i}][3][3]"), inner_shape)
        else:
            value = _slot(value, f"l[{i}][3]")
        out.append((indent, content, key, value, shape))
    return out


def _slot(value: Any, source: str) -> Any:
    """The _Slot of a scalar value found at `source`; _NESTED stays, for the reader to read what is below."""
    return value if value is _NESTED else _Slot(source)


def _builder(slotted: list[Line]) -> Callable[[list[Line]], Any]:
    """The builder of the documents shaped as `slotted`: a function of a document's Lines that gives what
    the reader gives, new dicts and lists with the keys the reader gave and the document's scalar values.
    Made by reading `slotted` with the reader itself (the values in the result are _Slots), then written as
    one Python expression, `{k0: l[3][3], k1: [l[5][3][3]], ...}`, evaluated once: with it, turning the
    Lines of a 200 KB piece of Services into documents takes a third of the instructions the reader's walk
    took (callgrind). The keys are passed as names, never written into the source."""
    template = _Reader(slotted).block(slotted[0][0])
    keys: dict[str, Any] = {}
    source = _source(template, keys)
    build: Callable[[list[Line]], Any] = eval(f"lambda l: {source}", {"__builtins__": {}, **keys})
    return build


def _source(template: Any, keys: dict[str, Any]) -> str:
    """The Python expression that builds `template` (see _builder), with its keys added to `keys`."""
    if type(template) is _Slot:
        return template.source
    if type(template) is list:
        return "[" + ", ".join(_source(item, keys) for item in template) + "]"
    if type(template) is dict:
        entries = []
        for key, value in template.items():
            name = f"k{len(keys)}"
            keys[name] = key
            entries.append(f"{name}: {_source(value, keys)}")
        return "{" + ", ".join(entries) + "}"
    assert template is None, template  # `key:` or `-` with nothing below
    return "None"
