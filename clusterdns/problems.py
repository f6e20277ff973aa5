"""What can be wrong with manifests: an error in one object's field while parsing (ManifestError), a
problem reported with file, line, object and field (Problem), and what one file gives (FileResult). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterdns.model import Object

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


def format_path(path: Path) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out


def type_name(value: Any) -> str:
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
