"""Shared fixtures: zones directories written as real files in a temporary directory, and loading them.

Tests that use `write_zones` run with the temporary directory as the working directory and the zones
in `./zones`, so problems read exactly as a user sees them: `zones/web.yaml:14: Service default/web: ...`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from clusterdns.allocate import Store
from clusterdns.registry import Config, Registry
from clusterdns.zones import Zones

WriteZones = Callable[..., Path]
Load = Callable[..., Registry]


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write each `relative path -> text` under `root`; the text is dedented, its first newline dropped."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).removeprefix("\n"), encoding="utf-8")


@pytest.fixture
def write_zones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteZones:
    """`write_zones({"a.yaml": text, ...}, under="zones")` writes the files and returns the relative
    directory; the working directory is `tmp_path` for the rest of the test."""
    monkeypatch.chdir(tmp_path)

    def write(files: Mapping[str, str], under: str = "zones") -> Path:
        root = Path(under)
        root.mkdir(parents=True, exist_ok=True)
        write_files(root, files)
        return root

    return write


@pytest.fixture
def load() -> Load:
    """`load(zones, state=None, config=None, now=0.0)`: the Registry of a zones directory, allocating in
    an in-memory store (state None) or in the SQLite store of a state directory."""

    def run(
        zones: Path | str = "zones", state: Path | str | None = None, config: Config | None = None, now: float = 0.0
    ) -> Registry:
        store = Store(None if state is None else str(state))
        try:
            return Zones(str(zones), config or Config(), store).load(now)
        finally:
            store.close()

    return run
