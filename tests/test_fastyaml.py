"""The fast block-YAML reader gives exactly what PyYAML gives, or steps aside (Unsupported)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterdns import fastyaml
from clusterdns.documents import find_files
from clusterdns.manifests import parse_text

ROOT = Path(__file__).resolve().parent.parent

SAME = [
    "a: 1\nb: yes\nc: '010'\nd: 010\ne: 0x1F\nf: 1.5\ng: ~\nh:\ni: 2001-12-14\nj: on\nk: 1_000\n",
    "- a\n- b: 1\n  c: 2\n-\n  - x\n- - y\n  - z\n",
    "a:\n- 1\n- 2\nb: x # c\nc: \"q # r\"\nd: 'it''s'\n",
    "a:\n  b:\n    c: 1\n  d: 2\ne: 3\n",
    "-   name: a\n    port: 1\n-   name: b\n",
    "'a b': 1\n\"c\": 2\n",
    "a: 12:30\nb: .inf\nc: +1\nd: -.5\ne: 0b101\nf: 'yes'\ng: -1\n",
    "a: b#c\nd: e #f\n",
    "a:  \n  - 1\n",
    "a: {}\nb: []\nc: [ ]\n",
    "foo:bar: 1\nhttp://x: y\n",
    'a: ["sh", "-c", "x; y"]\nb: [1, b, \'c d\', yes]\nc: ["x, y", z]\nd: [a,]\n',
    "# only a comment\n",
    "",
    "---\n---\na: 1\n---\n",
    "# c\n---\na: 1\n---\nb: 2\n",
    "kind: Service\nmetadata:\n  name: web\n  labels:\n    app.kubernetes.io/name: web\nspec:\n  ports:\n"
    "  - port: 80\n    targetPort: http\n",
    # Lines read once, then met again elsewhere: as a compact item, at another indentation, in a sequence.
    "a:\n- name: a\n  port: 1\n- name: a\n  port: 1\nname: a\n",
    "a:\n  - name: a\n  -   name: a\n  - - name: a\n  - name: a\n    b: [1]\n",
    "- - a\n  - b\n- [1, 2]\n- [1, 2]\n- 'x'\n- \"y\"\n- x: [1]\n- ~\n-\n- - - c\n",
    "- 1\n- yes\n- '1'\n- a: 1\n  b: 2\n- a: 1\n",
    # Plain scalars known to be strings without trying a resolver, and their neighbours that are not.
    "a: svc-1\nb: Yes\nc: yes-no\nd: n\ne: N\nf: True1\ng: off\nh: Null\ni: a:b\nj: Xyz # c\nk: ON\nl: e1\n"
    "m: E5\nn: x1.5\no: évian\np: Ñ\nq: ~x\nr: Nope\ns: nullable\nt: F\nu: false\n",
    "a: 10.0.1.3\nb: 1.2\nc: 1.2.3\nd: 01.2.3\ne: 1..2\nf: 1.2.\ng: .1.2\nh: 1.2.3e5\ni: 1_0.2.3\nj: 1.2.3:4\n"
    "k: 1.2e+3\nl: 2001-12-14\nm: 10.0.0.256\nn: +1.2.3\no: 1.2.3.\np: 190:20:30.15\nq: 1.\nr: 0.0.0.0\n",
    # Keys read before (not only strings), with new values that are strings, and some that are not.
    "1: abc\n1.5: abc\nyes: abc\n'q': abc\n-x: abc\nname: abc\n---\n1: abd\n1.5: abd\nyes: abd\n'q': abd\n-x: abd\n"
    "name:   spaced  \nnamespace: a b\nb: yes\nc: 10.0.0.1\nd: Yes\ne: x #y\n",
]

UNSUPPORTED = [
    "a: |\n  x\n",  # block scalar
    "a: >\n  x\n",
    "a: &x 1\nb: *x\n",  # anchors
    "a: !!str 1\n",  # tags
    "a: b\n  c\n",  # a plain scalar over two lines
    "a: [1, [2]]\n",  # nested flow
    "a: {b: 1}\n",  # flow mapping
    'a: "x\\ny"\n',  # escapes
    "x\n",  # a scalar document
    "%YAML 1.1\n---\na: 1\n",  # directive
    "a: 1\n...\n",  # document end
    "a:\tb\n",  # tab
    "? a\n: b\n",  # complex key
    "<<: {a: 1}\n",
    "a: [:x]\n",  # flow items starting with an indicator
    "k : v\n",  # space before the colon
    "\ufeffkind: x\n",  # byte-order mark
    "a: b\x85c\n",  # YAML's other line breaks and characters it refuses
    "a: b\u2029\n",
    "a: \x07\n",
    "x" * 1100 + ": 1\n",  # a key longer than YAML's simple-key limit
    "a: x:\n",  # a plain scalar may not end with a colon
    "name: a\n---\nname: web: x\n",
    "name: a\n---\nname: web:\n",
    "name: a\n---\nname : web\n",
]


@pytest.mark.parametrize("text", SAME)
def test_same_as_pyyaml(text: str) -> None:
    """What the fast reader reads, it reads exactly as PyYAML's safe loader does."""
    assert fastyaml.load_all(text) == list(yaml.safe_load_all(text))


def test_an_error_comes_where_it_always_came() -> None:
    """A line is read when first seen, but its error is raised only when the reader meets it: a document
    nested too deep is reported before a bad value in a later document."""
    deep = "".join(" " * i + "a:\n" for i in range(fastyaml.MAX_DEPTH + 5)) + " " * (fastyaml.MAX_DEPTH + 5) + "b: 1\n"
    with pytest.raises(fastyaml.TooDeep):
        fastyaml.load_all(deep + "---\nc: " + "9" * 5000 + "\n")
    with pytest.raises(ValueError, match="integer"):
        fastyaml.load_all("c: " + "9" * 5000 + "\n---\n" + deep)


def test_repeated_lines_read_alike_and_share_no_collection() -> None:
    """Lines are remembered across documents and files: a text read again (every line now known) still
    reads as PyYAML reads it, and a collection value on a repeated line is a new object each time."""
    for text in SAME:
        fastyaml.load_all(text)
    for text in SAME:
        assert fastyaml.load_all(text) == list(yaml.safe_load_all(text)), text
    first, second = fastyaml.load_all("a: []\nb: [1, 2]\nc: {}\nd:\n- x\n---\na: []\nb: [1, 2]\nc: {}\nd:\n- x\n")
    for key in "abcd":
        assert first[key] == second[key] and first[key] is not second[key], key
    first, second = fastyaml.load_all("- [1]\n- a: []\n---\n- [1]\n- a: []\n")
    assert first == second and first[0] is not second[0] and first[1]["a"] is not second[1]["a"]


@pytest.mark.parametrize("text", UNSUPPORTED)
def test_steps_aside(text: str) -> None:
    """YAML outside the block subset raises Unsupported, so the caller reads it with PyYAML."""
    with pytest.raises(fastyaml.Unsupported):
        fastyaml.load_all(text)


@pytest.mark.parametrize("text", ["k: v: w\n", "a: 'x'y\n", "a: - 1\n", "a:\n  b: 1\n c: 2\n"])
def test_errors_left_to_pyyaml(text: str) -> None:
    """Text PyYAML rejects is never accepted by the fast reader: it steps aside, PyYAML reports."""
    with pytest.raises(yaml.YAMLError):
        list(yaml.safe_load_all(text))
    with pytest.raises(fastyaml.Unsupported):
        fastyaml.load_all(text)


def test_shipped_zones_read_alike() -> None:
    """Every shipped manifest gives the same documents through either reader."""
    files = find_files(str(ROOT / "zones"))
    assert files
    for path in files:
        text = Path(path).read_text()
        try:
            fast = fastyaml.load_all(text)
        except fastyaml.Unsupported:
            continue
        assert fast == list(yaml.safe_load_all(text)), path


def _bench_generator() -> object:
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "tests" / "bench" / "bench_load.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_load", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shape", ["pods", "deployments"])
def test_generated_cluster_reads_alike(tmp_path: Path, shape: str) -> None:
    """The benchmark's generated manifests read the same through the fast reader and PyYAML."""
    bench = _bench_generator()
    bench.generate(str(tmp_path), 200, 600, shape)  # type: ignore[attr-defined]
    for path in sorted(tmp_path.iterdir()):
        text = path.read_text()
        assert fastyaml.load_all(text) == list(yaml.safe_load_all(text)), path


def test_fallback_gives_the_same_objects(tmp_path: Path) -> None:
    """A file the fast reader steps aside from still loads, through PyYAML, to the same objects."""
    plain = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n"
    flowing = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n"
    with pytest.raises(fastyaml.Unsupported):
        fastyaml.load_all(flowing)
    a = parse_text(plain, str(tmp_path / "a.yaml"))
    b = parse_text(flowing, str(tmp_path / "a.yaml"))
    assert [o for o in a.objects] == [o for o in b.objects]


# Random manifests: documents of a few shapes (structures), each written many times with other scalar
# values, as generated clusters are. A shape's later documents are built by its builder, not read.
_KEYS = ["name", "namespace", "port", "1", "'q k'", "yes", "a.b/c", "-x", "0.0", "-0.0"]
_VALUES = [
    "svc-{n}", "10.0.{n}.7", "{n}", "yes", "'quoted {n}'", '"dq {n}"', "~", "1.5", "0777", "x{n} #c",
    "", "[{n}, b]", "[]", "{{}}", "2001-12-14", "n", "'it''s'", "x{n}   ",
]  # fmt: skip


def _structure(rng: random.Random, depth: int = 0) -> Any:
    """A random mapping, sequence or scalar (None), as nested as manifests are."""
    kind = rng.random() if depth < 4 else 1.0
    if kind < 0.45:
        return {rng.choice(_KEYS): _structure(rng, depth + 1) for _ in range(rng.randint(1, 4))}
    if kind < 0.65:
        return [_structure(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return None


def _write(node: Any, indent: int, style: tuple[int, int, bool], rng: random.Random, out: list[str]) -> None:
    """`node` in block YAML at `indent`, with random scalar values; `style` is (the mapping's indentation
    step, a sequence's indentation under its key, whether an item's mapping starts on the dash line)."""
    step, under, compact = style
    pad = " " * indent
    if isinstance(node, dict):
        for key, value in node.items():
            if value is None:
                out.append(f"{pad}{key}: {rng.choice(_VALUES).format(n=rng.randrange(300))}".rstrip())
            else:
                out.append(f"{pad}{key}:")
                _write(value, indent + (under if isinstance(value, list) else step), style, rng, out)
        return
    for item in node:
        if item is None:
            out.append(f"{pad}- {rng.choice(_VALUES).format(n=rng.randrange(300)) or 'v'}")
        elif isinstance(item, dict) and compact:
            lines: list[str] = []
            _write(item, indent + 2, style, rng, lines)
            out.append(f"{pad}- {lines[0].lstrip()}")
            out.extend(lines[1:])
        else:
            out.append(f"{pad}-")
            _write(item, indent + 2, style, rng, out)


def _random_manifest(seed: int) -> str:
    """Many documents of a few shapes: the same structure in other indentation styles, and new values."""
    rng = random.Random(seed)
    structures = [{"kind": None, "metadata": {"name": None, "labels": None}, "spec": _structure(rng)}]
    structures += [_structure(rng) for _ in range(3)]
    styles = [(2, 0, True), (2, 2, True), (4, 2, False), (3, 0, True)]
    shapes = [(rng.choice(structures), rng.choice(styles)) for _ in range(5)]
    out = []
    for _ in range(rng.randint(20, 60)):
        structure, style = rng.choice(shapes)
        if structure is None:
            structure = {"a": None}
        out.append("---")
        _write(structure, 0, style, rng, out)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("seed", range(40))
def test_documents_of_a_shape_seen_before_read_alike(seed: int) -> None:
    """A document of a shape seen before (built, not read) is what PyYAML gives, and what the reader
    gives when the document is read alone; every one of its dicts and lists is its own."""
    text = _random_manifest(seed)
    documents = ["---\n" + piece for piece in text.split("---\n")[1:]]
    fastyaml.forget()
    try:
        alone = [fastyaml.load_all(document) for document in documents]
    except fastyaml.Unsupported:
        pytest.skip("outside the subset")
    expected = list(yaml.safe_load_all(text))
    assert [document for [document] in alone] == expected
    for _ in range(2):  # with every shape new, then with every shape known
        fastyaml.forget()
        first = fastyaml.load_all(text)
        assert first == expected
        assert fastyaml.load_all(text) == expected
    seen: set[int] = set()
    for document in first + fastyaml.load_all(text):
        collections = _collections(document)
        assert not seen & collections
        seen |= collections


def _collections(value: Any) -> set[int]:
    """The ids of the dicts and lists in `value`, itself included."""
    if isinstance(value, dict):
        return {id(value)}.union(*(_collections(v) for v in value.values()))
    if isinstance(value, list):
        return {id(value)}.union(*(_collections(v) for v in value))
    return set()


@pytest.mark.parametrize(
    "line",
    ["  name: b #c", "  name: 'b'", "  name: yes", "  name:   b  ", "  name: a: b", "  name: b:", "  name: #c",
     "  name: b\x07", "  name: [b]", "  name: 10.0.0.1", "  name: 1.5", "  name: b#c", "  name: ", "  name:"],
)  # fmt: skip
def test_a_known_key_with_a_new_value_reads_as_a_new_line(line: str) -> None:
    """A line whose key was read before at its indentation (`  name: `) is read as if nothing were known."""
    fastyaml.forget()
    try:
        fresh = fastyaml._line(line)
    except fastyaml.Unsupported:
        fresh = "Unsupported"
    fastyaml.load_all("a:\n  name: a-1\n  name: a-2\n")  # the second is read by _record's first step
    assert fastyaml._ENTRIES
    try:
        assert fastyaml._line(line) == fresh
    except fastyaml.Unsupported:
        assert fresh == "Unsupported"


def test_errors_in_a_shape_seen_before_come_as_before() -> None:
    """Documents of a shape seen before that the reader refuses are refused as before: a bad value, and
    the same lines in another order of indentation."""
    good = "a:\n  b: x{}\n  c:\n  - d: 1\n"
    base = "".join("---\n" + good.format(n) for n in range(3))
    assert len(fastyaml.load_all(base)) == 3
    for bad in ["---\na:\n  b: [1, [2]]\n  c:\n  - d: 1\n", "---\na:\n  b: x\n   c:\n  - d: 1\n", "---\na:\n  b: x:\n"]:
        with pytest.raises(fastyaml.Unsupported):
            fastyaml.load_all(base + bad)
    deep = "".join(" " * i + "a:\n" for i in range(fastyaml.MAX_DEPTH + 5)) + " " * (fastyaml.MAX_DEPTH + 5) + "b: 1\n"
    with pytest.raises(fastyaml.TooDeep):
        fastyaml.load_all("---\n" + deep + "---\n" + deep)


def test_a_shape_nested_as_deep_as_allowed_is_built_alike() -> None:
    """Documents nested MAX_DEPTH deep, of one shape, read as PyYAML reads them once their builder is made."""
    fastyaml.forget()
    for step, line in [(1, "a:"), (2, "- a:")]:
        deep = "".join(" " * (step * i) + line + "\n" for i in range(fastyaml.MAX_DEPTH // step - 1))
        text = "".join(f"---\n{deep}{' ' * (step * (fastyaml.MAX_DEPTH // step - 1))}b: x{n}\n" for n in range(12))
        assert fastyaml.load_all(text) == list(yaml.safe_load_all(text))
    assert len(fastyaml._BUILDERS) == 2
