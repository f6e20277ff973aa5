"""Reading a large zones directory with two processes: the same objects, problems and lines as reading
each file on its own, whatever the files hold (pieces cut at document markers, block scalars that send a
file back to PyYAML, syntax errors, JSON, Lists, unreadable files)."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import pytest

from clusterdns import zones
from clusterdns.documents import pieces
from clusterdns.manifests import read_file
from clusterdns.model import Pod
from clusterdns.problems import FileResult


def service(i: int) -> str:
    return f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\nspec:\n  ports:\n  - port: {80 + i}\n"


def pod(i: int, status: str = "") -> str:
    return (
        f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{i}\n  labels:\n    app: a{i % 3}\n"
        f"spec:\n  containers:\n  - name: c\n    image: nginx:{i % 4}\n{status}"
    )


JSON_SPEC = '{"ports": [{"port": 80}]}'

FILES = {
    # many documents: cut into several pieces
    "many.yaml": "".join(service(i) + pod(i) for i in range(120)),
    # a block scalar in the last document: the fast reader declines it, the file is read whole
    "scalar.yaml": "".join(service(200 + i) for i in range(60))
    + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: text\ndata:\n  a.txt: |\n    line one\n    line two\n",
    # bad documents, including a YAML syntax error: problems with their lines, the rest loads
    "bad.yaml": "".join(service(300 + i) for i in range(40))
    + "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: Bad_Name\nspec:\n  ports:\n  - port: 80\n"
    + "".join(service(400 + i) for i in range(40))
    + "---\nkind: Service\nmetadata: {name: [unclosed\n"
    + "".join(service(500 + i) for i in range(40)),
    "list.json": '{"apiVersion": "v1", "kind": "List", "items": ['
    + ", ".join(f'{{"kind": "Service", "metadata": {{"name": "j{i}"}}, "spec": {JSON_SPEC}}}' for i in range(50))
    + "]}",
    "unreadable.yaml": "",
    # an error in the first document, and text the fast reader declines in a later piece: the whole file
    # goes to PyYAML, which finds no lines at all, so every problem has its document's line
    "declined.yaml": "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: Bad_Name\nspec:\n  ports:\n  - port: 80\n"
    + "".join(service(600 + i) for i in range(40))
    + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: [:x]\n",
    # a document nested 400 deep in a later piece: the helper refuses it, the file is read whole here
    "deep.yaml": "".join(service(700 + i) for i in range(40))
    + "---\nkind: ConfigMap\ndata:\n"
    + "".join(" " * (2 * i + 2) + f"k{i}:\n" for i in range(400))
    + "".join(service(800 + i) for i in range(40)),
}


@pytest.fixture
def directory(tmp_path: Path) -> list[tuple[int, str]]:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "unreadable.yaml").write_bytes(b"kind: Service\nmetadata:\n  name: \xff\n")
    paths = sorted(str(p) for p in tmp_path.iterdir())
    return [(os.path.getsize(p), p) for p in paths]


def test_pieces_cut_at_document_markers() -> None:
    """A long text is cut only where a document starts; the pieces put back together are the text, and
    each knows how many lines come before it."""
    text = FILES["many.yaml"]
    cut = pieces(text, "many.yaml", 2000)
    assert len(cut) > 5
    assert "".join(piece for _, piece in cut) == text
    for lines_before, piece in cut:
        assert piece.startswith("---\n")
        assert text.count("\n", 0, text.index(piece)) == lines_before
    assert pieces(text, "many.json", 2000) == [(0, text)]
    assert pieces(text, "many.yaml", len(text)) == [(0, text)]


def test_two_processes_read_what_one_reads(directory: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The parallel read (forced on for a small directory, with small pieces) gives exactly the results
    of reading each file alone: objects with their lines, problems, notes and stamps."""
    assert threading.active_count() == 1, "the parallel read forks only from a single-threaded process"
    monkeypatch.setattr(zones, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(zones, "PIECE_BYTES", 1500)
    parallel = zones.read_files(directory)
    alone = [read_file(path) for _, path in directory]
    assert parallel == alone
    by_name = {os.path.basename(r.path): r for r in parallel}
    assert len(by_name["many.yaml"].objects) == 240
    assert [str(p).split(": ", 1)[1] for p in by_name["bad.yaml"].problems][:1] == [
        "Service default/Bad_Name: metadata.name: must be a DNS-1035 label (lower-case letters, digits and '-', "
        "starting with a letter and ending with a letter or digit), got 'Bad_Name'"
    ]
    assert len(by_name["bad.yaml"].problems) == 2
    assert len(by_name["bad.yaml"].objects) == 120
    assert len(by_name["scalar.yaml"].objects) == 61
    assert len(by_name["list.json"].objects) == 50
    assert by_name["unreadable.yaml"].problems[0].message.startswith("not UTF-8: byte 0xff")
    assert [p.message for p in by_name["deep.yaml"].problems] == ["collections nested more than 100 deep"]
    assert len(by_name["deep.yaml"].objects) == 80


def test_a_piece_read_by_the_helper_comes_back_whole(directory: list[tuple[int, str]]) -> None:
    """What the helper process hands back (each object rebuilt by its class from its fields) equals what
    was read, for every kind, problem and note in the files; and every object is rebuilt, not left empty."""
    for _, path in directory:
        result = read_file(path)
        back = pickle.loads(zones._dumps(result))
        assert back == result
        assert [type(o) for o in back.objects] == [type(o) for o in result.objects]
    many = next(path for _, path in directory if path.endswith("many.yaml"))
    pod = next(o for o in read_file(many).objects if isinstance(o, Pod))
    again = pickle.loads(zones._dumps(FileResult("x", (pod,))))
    assert again.objects[0].spec.containers[0].image == pod.spec.containers[0].image != ""
