"""Allocation of cluster IPs, node ports, workload Pod names and pod IPs: explicit values, refusals,
persistence in the state directory, release, and agreement between processes."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from clusterdns.allocate import Claim, IPSpace, PortSpace, Refusal, Store, assign
from clusterdns.registry import Config, Registry
from clusterdns.zones import Zones

if TYPE_CHECKING:
    from conftest import Load, WriteZones

ROOT = Path(__file__).resolve().parents[1]
DUAL_STACK = Config(service_cidrs=("10.0.0.0/16", "fd00::/108"))


def problems(registry: Registry) -> list[str]:
    return [str(p) for p in registry.problems]


def service(name: str, spec: str = "", ports: str = "- port: 80") -> str:
    """A Service document (`---` first); `spec` and `ports` are YAML blocks."""
    return (
        f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n"
        + (textwrap.indent(spec, "  ") + "\n" if spec else "")
        + "  ports:\n"
        + textwrap.indent(ports, "  ")
        + "\n"
    )


DEPLOYMENT = """
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: {image}
"""


def deployment(replicas: int = 3, image: str = "nginx:1") -> str:
    return textwrap.dedent(DEPLOYMENT).format(replicas=replicas, image=image)


def allocations(registry: Registry) -> dict[str, str]:
    """Everything allocated, as `what -> value`: cluster IPs, node ports, Pod names and IPs."""
    out: dict[str, str] = {}
    for (ns, name), s in registry.services.items():
        out[f"svc {ns}/{name}"] = ",".join(s.cluster_ips)
        for p in s.ports:
            if p.node_port:
                out[f"nodePort {ns}/{name} {p.port}/{p.protocol}"] = str(p.node_port)
    for (ns, name), p in registry.pods.items():
        out[f"pod {ns}/{name}"] = ",".join(p.ips)
    return out


def cluster_ip(registry: Registry, name: str, namespace: str = "default") -> str:
    return registry.services[(namespace, name)].cluster_ip


# --- explicit values ----------------------------------------------------------------------------------

EXPLICIT_IPS = [
    pytest.param("clusterIP: 10.0.5.5", "10.0.5.5", None, id="honoured"),
    pytest.param("clusterIP: 10.0.0.200", "10.0.0.200", None, id="honoured in the static band"),
    pytest.param(
        "clusterIP: 192.168.1.1",
        None,
        "zones/a.yaml:7: Service default/late: spec.clusterIP: 192.168.1.1: provided IP is not in the valid "
        "range. The range of valid IPs is 10.0.0.0/16, fd00::/108",
        id="outside every CIDR",
    ),
    pytest.param(
        "clusterIP: 10.0.0.0",
        None,
        "zones/a.yaml:7: Service default/late: spec.clusterIP: 10.0.0.0: the network address of 10.0.0.0/16 "
        "can't be used",
        id="network address",
    ),
    pytest.param(
        "clusterIP: 10.0.255.255",
        None,
        "zones/a.yaml:7: Service default/late: spec.clusterIP: 10.0.255.255: the broadcast address of "
        "10.0.0.0/16 can't be used",
        id="broadcast address",
    ),
    pytest.param(
        "clusterIP: 10.0.3.3",
        None,
        "zones/a.yaml:7: Service default/late: spec.clusterIP: 10.0.3.3: provided IP is already allocated "
        "(to default/early IPv4)",
        id="taken by an earlier Service",
    ),
    pytest.param(
        "clusterIP: 10.0.0.1",
        None,
        "zones/a.yaml:7: Service default/late: spec.clusterIP: 10.0.0.1: provided IP is already allocated "
        "(to default/kubernetes IPv4)",
        id="taken by default/kubernetes",
    ),
    pytest.param(
        "clusterIPs: [10.0.9.9, 'fd00::3']",
        None,
        "zones/a.yaml:7: Service default/late: spec.clusterIPs[1]: fd00::3: provided IP is already allocated "
        "(to default/early IPv6)",
        id="second family taken",
    ),
    pytest.param("clusterIPs: [10.0.9.9, 'fd00::9']", "10.0.9.9,fd00::9", None, id="dual stack honoured"),
]


@pytest.mark.parametrize(("spec", "expected", "problem"), EXPLICIT_IPS)
def test_explicit_cluster_ip(
    write_zones: WriteZones, load: Load, spec: str, expected: str | None, problem: str | None
) -> None:
    """An explicit cluster IP is honoured when valid and free, else that Service alone is refused."""
    write_zones(
        {
            "0.yaml": service("early", "clusterIPs: [10.0.3.3, 'fd00::3']"),
            "a.yaml": service("late", spec) + service("other"),
        }
    )
    registry = load(config=DUAL_STACK)
    assert problems(registry) == ([problem] if problem else [])
    if expected is None:
        assert ("default", "late") not in registry.services
    else:
        assert ",".join(registry.services[("default", "late")].cluster_ips) == expected
    assert registry.services[("default", "early")].cluster_ips == ("10.0.3.3", "fd00::3")
    assert ("default", "other") in registry.services


def test_first_declared_wins_a_contested_ip(write_zones: WriteZones, load: Load) -> None:
    """Two Services asking for the same address: the first declared gets it, the second is refused."""
    write_zones(
        {
            "a.yaml": service("one", "clusterIP: 10.0.3.3"),
            "b.yaml": service("two", "clusterIP: 10.0.3.3"),
        }
    )
    registry = load()
    assert problems(registry) == [
        "zones/b.yaml:7: Service default/two: spec.clusterIP: 10.0.3.3: provided IP is already allocated "
        "(to default/one IPv4)"
    ]
    assert cluster_ip(registry, "one") == "10.0.3.3"
    assert ("default", "two") not in registry.services


def test_automatic_ips_avoid_the_static_band(write_zones: WriteZones, load: Load) -> None:
    """Automatic cluster IPs come from the service CIDR, above the band kept for explicit addresses."""
    write_zones({"a.yaml": "".join(service(f"svc-{i}") for i in range(50))})
    registry = load()
    assert problems(registry) == []
    ips = [ipaddress.ip_address(s.cluster_ip) for (ns, n), s in registry.services.items() if n.startswith("svc-")]
    assert len(set(ips)) == 50
    assert all(ipaddress.ip_address("10.0.1.1") <= ip <= ipaddress.ip_address("10.0.255.254") for ip in ips)


# --- node ports ---------------------------------------------------------------------------------------

NODE_PORTS = [
    pytest.param("- name: a\n  port: 80\n  nodePort: 30080", "30080", None, id="explicit honoured"),
    pytest.param("- name: a\n  port: 80\n  nodePort: 30000", "30000", None, id="lowest"),
    pytest.param("- name: a\n  port: 80\n  nodePort: 32767", "32767", None, id="highest"),
    pytest.param(
        "- name: a\n  port: 80\n  nodePort: 29999",
        None,
        "zones/a.yaml:11: Service default/late: spec.ports[0].nodePort: 29999: provided port is not in the valid "
        "range. The range of valid ports is 30000-32767",
        id="below the range",
    ),
    pytest.param(
        "- name: a\n  port: 80\n  nodePort: 32768",
        None,
        "zones/a.yaml:11: Service default/late: spec.ports[0].nodePort: 32768: provided port is not in the valid "
        "range. The range of valid ports is 30000-32767",
        id="above the range",
    ),
    pytest.param(
        "- name: a\n  port: 80\n- name: b\n  port: 81\n  nodePort: 31000",
        None,
        "zones/a.yaml:13: Service default/late: spec.ports[1].nodePort: 31000: provided port is already "
        "allocated (to default/early 80/TCP)",
        id="taken by an earlier Service",
    ),
]


@pytest.mark.parametrize(("ports", "expected", "problem"), NODE_PORTS)
def test_explicit_node_port(
    write_zones: WriteZones, load: Load, ports: str, expected: str | None, problem: str | None
) -> None:
    """An explicit nodePort is honoured in 30000-32767 when free, else that Service alone is refused."""
    write_zones(
        {
            "0.yaml": service("early", "type: NodePort", "- port: 80\n  nodePort: 31000"),
            "a.yaml": service("late", "type: NodePort", ports),
        }
    )
    registry = load()
    assert problems(registry) == ([problem] if problem else [])
    if expected is None:
        assert ("default", "late") not in registry.services
    else:
        assert registry.services[("default", "late")].ports[0].node_port == int(expected)
    assert registry.services[("default", "early")].ports[0].node_port == 31000


def test_node_ports_allocated(write_zones: WriteZones, load: Load) -> None:
    """NodePort and LoadBalancer ports get distinct node ports from 30000-32767; ClusterIP ports none."""
    ports = "- name: a\n  port: 80\n- name: b\n  port: 53\n  protocol: UDP"
    write_zones(
        {
            "a.yaml": service("np", "type: NodePort", ports)
            + service("lb", "type: LoadBalancer", ports)
            + service("cip", "", ports)
        }
    )
    registry = load()
    assert problems(registry) == []
    node_ports = [p.node_port for n in ("np", "lb") for p in registry.services[("default", n)].ports]
    assert len(set(node_ports)) == 4
    assert all(p is not None and 30000 <= p <= 32767 for p in node_ports)
    assert [p.node_port for p in registry.services[("default", "cip")].ports] == [None, None]


# --- persistence --------------------------------------------------------------------------------------

ZONES = {
    "a.yaml": service("web", "type: NodePort")
    + service("api", "ipFamilyPolicy: PreferDualStack")
    + deployment()
    + textwrap.dedent(
        """
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: single
        spec:
          containers:
          - name: c
        """
    )
}


def test_same_after_restart(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """A new store on the same state directory hands out exactly the same values."""
    write_zones(ZONES)
    first = allocations(load(state=tmp_path / "state", config=DUAL_STACK))
    second = allocations(load(state=tmp_path / "state", config=DUAL_STACK, now=3600.0))
    assert first == second
    assert len(first) == 9  # 4 Services (2 built in), 1 node port, 4 Pods
    assert (tmp_path / "state" / "allocations.sqlite3").exists()


def test_fresh_state_same_values(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """Separate fresh state directories (and an in-memory store) give the same object the same values."""
    write_zones(ZONES)
    one = allocations(load(state=tmp_path / "one", config=DUAL_STACK))
    two = allocations(load(state=tmp_path / "two", config=DUAL_STACK))
    memory = allocations(load(config=DUAL_STACK))
    assert one == two == memory


def test_values_kept_while_the_object_exists(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """An allocated address stays with its Service across restarts, even against a later explicit request."""
    write_zones({"b.yaml": service("one")})
    state = tmp_path / "state"
    taken = cluster_ip(load(state=state), "one")

    write_zones({"a.yaml": service("zero", f"clusterIP: {taken}")})
    registry = load(state=state)
    # (the exact wording of this refusal is checked by test_explicit_cluster_ip)
    assert [
        (p.line, p.subject, p.field, "already allocated (to default/one IPv4)" in p.message) for p in registry.problems
    ] == [(7, "Service default/zero", "spec.clusterIP", True)]
    assert cluster_ip(registry, "one") == taken

    fresh = load(state=tmp_path / "fresh")  # without history the explicit request wins
    assert problems(fresh) == []
    assert cluster_ip(fresh, "zero") == taken
    assert cluster_ip(fresh, "one") != taken


def test_released_when_the_object_disappears(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """When a Service disappears its cluster IP and node ports are released and can go to another."""
    state = tmp_path / "state"
    write_zones({"a.yaml": service("old", "type: NodePort")})
    before = load(state=state).services[("default", "old")]
    ip, node_port = before.cluster_ip, before.ports[0].node_port

    Path("zones/a.yaml").unlink()
    write_zones({"b.yaml": service("new", f"type: NodePort\nclusterIP: {ip}", f"- port: 80\n  nodePort: {node_port}")})
    registry = load(state=state)
    assert problems(registry) == []
    assert cluster_ip(registry, "new") == ip
    assert registry.services[("default", "new")].ports[0].node_port == node_port

    write_zones({"a.yaml": service("old", "type: NodePort")})  # back again: its old values are gone
    registry = load(state=state)
    assert problems(registry) == []
    assert cluster_ip(registry, "new") == ip
    assert cluster_ip(registry, "old") != ip
    assert registry.services[("default", "old")].ports[0].node_port != node_port


def test_workload_pods_across_changes(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """Deployment Pods survive restarts and scaling down; a new pod template gives new Pods."""
    state = tmp_path / "state"

    def pods(replicas: int, image: str = "nginx:1") -> dict[str, str]:
        write_zones({"a.yaml": deployment(replicas, image)})
        return {name: p.ip for (_, name), p in load(state=state).pods.items()}

    three = pods(3)
    assert len(three) == 3
    assert pods(3) == three
    two = pods(2)
    assert len(two) == 2
    assert two.items() <= three.items()
    assert pods(3).items() >= two.items()
    changed = pods(3, "nginx:2")
    assert len(changed) == 3
    assert not changed.keys() & three.keys()


def test_pod_ip_released(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """A Pod's allocated IP is released when the Pod goes, and a stated podIP may then take it."""
    state = tmp_path / "state"
    pod = "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n"
    write_zones({"a.yaml": pod.format(name="old")})
    ip = load(state=state).pods[("default", "old")].ip
    Path("zones/a.yaml").unlink()
    write_zones({"b.yaml": pod.format(name="new") + f"status:\n  podIP: {ip}\n"})
    registry = load(state=state)
    assert problems(registry) == []
    assert registry.pods[("default", "new")].ip == ip


# --- reloads: one Zones, as `serve` keeps it -------------------------------------------------------------


def test_reloads_agree_with_fresh_loads(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """Reloading through one Zones (which reuses what did not change) gives what a fresh load of the same
    files and state gives, through a series of edits: values kept, freed, taken and refused."""
    state = tmp_path / "state"
    store = Store(str(state))
    zones = Zones("zones", DUAL_STACK, store)
    steps = [
        {"a.yaml": service("one", "type: NodePort") + service("two"), "b.yaml": service("three")},
        {"b.yaml": service("three") + service("four", "clusterIP: 10.0.7.7")},  # a.yaml unchanged
        {"c.yaml": service("five", "clusterIP: 10.0.7.7")},  # refused: four holds it
        {"b.yaml": service("three")},  # four goes: five gets its address on this reload
        {"a.yaml": service("one", "type: NodePort", "- port: 80\n  nodePort: 31111") + service("two")},
    ]
    try:
        for i, files in enumerate(steps):
            write_zones(files)
            for name in files:  # a new mtime even within the clock's resolution
                os.utime(Path("zones") / name, ns=(i * 10**9, (1000 + i) * 10**9))
            reloaded = zones.load(float(i))
            fresh = load(state=state, config=DUAL_STACK, now=float(i))
            assert allocations(reloaded) == allocations(fresh), f"step {i}"
            assert problems(reloaded) == problems(fresh), f"step {i}"
    finally:
        store.close()
    assert problems(reloaded) == []
    assert cluster_ip(reloaded, "five") == "10.0.7.7"
    assert reloaded.services[("default", "one")].ports[0].node_port == 31111


def pod_manifest(name: str, app: str, namespace: str = "default", ip: str = "") -> str:
    status = f"status:\n  podIP: {ip}\n" if ip else ""
    return (
        f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"  labels:\n    app: {app}\nspec:\n  containers:\n  - name: c\n    ports:\n    - name: http\n"
        f"      containerPort: 8080\n{status}"
    )


def selecting(name: str, app: str, namespace: str = "default", target: str = "http") -> str:
    return (
        f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n"
        f"  selector:\n    app: {app}\n  ports:\n  - port: 80\n    targetPort: {target}\n"
    )


def snapshot(registry: Registry) -> dict[str, object]:
    """Everything a reload could get wrong: allocations, endpoints, problems."""
    return {
        "allocations": allocations(registry),
        "endpoints": {
            f"{ns}/{n}": [(e.ip, e.ready, e.hostname, e.pod, [(p.name, p.port) for p in e.ports]) for e in eps]
            for (ns, n), eps in registry.endpoints.items()
        },
        "problems": problems(registry),
    }


def test_reloaded_pods_and_endpoints_agree_with_fresh_loads(
    write_zones: WriteZones, load: Load, tmp_path: Path
) -> None:
    """Reloads that reuse unchanged Pods, workload Pods and endpoints give what fresh loads give, as Pods
    come and go, change labels, scale and move between namespaces."""
    state = tmp_path / "state"
    store = Store(str(state))
    zones = Zones("zones", Config(), store)
    web = selecting("web", "web", target="8080") + deployment(2)
    steps = [
        {"a.yaml": web, "b.yaml": selecting("api", "api") + pod_manifest("api-1", "api"), "c.yaml": ""},
        {"c.yaml": pod_manifest("api-2", "api")},  # a Pod joins api; web untouched
        {"c.yaml": pod_manifest("api-2", "web")},  # it moves to web by its label
        {"a.yaml": selecting("web", "web", target="8080") + deployment(3)},  # web scales up
        {"c.yaml": pod_manifest("api-2", "api", "other") + selecting("api", "api", "other")},  # another namespace
        {"b.yaml": selecting("api", "api") + pod_manifest("api-1", "api", ip="10.244.9.9")},  # a stated IP
        {"a.yaml": selecting("web", "web", target="8080") + deployment(1, "nginx:2")},  # a new template: new Pods
        {"c.yaml": ""},
    ]
    try:
        for i, files in enumerate(steps):
            write_zones(files)
            for name in files:
                os.utime(Path("zones") / name, ns=(i * 10**9, (1000 + i) * 10**9))
            reloaded = zones.load(float(i))
            assert snapshot(reloaded) == snapshot(load(state=state, now=float(i))), f"step {i}"
            assert sum(len(e) for e in reloaded.endpoints.values()) > 0
    finally:
        store.close()
    assert [e.ip for e in reloaded.endpoints[("default", "api")]] == ["10.244.9.9"]
    assert len(reloaded.endpoints[("default", "web")]) == 1  # the new template's one Pod


def test_reload_reuses_unchanged_services(write_zones: WriteZones) -> None:
    """A reload after one file changed hands back the very same Service objects for the other files."""
    write_zones({"a.yaml": service("one") + service("two", "type: NodePort"), "b.yaml": service("three")})
    zones = Zones("zones", Config(), Store(None))
    before = zones.load(0.0)
    write_zones({"b.yaml": service("three", "clusterIP: 10.0.9.9")})
    os.utime("zones/b.yaml", ns=(10**9, 2 * 10**9))
    after = zones.load(1.0)
    assert after.services[("default", "one")] is before.services[("default", "one")]
    assert after.services[("default", "two")] is before.services[("default", "two")]
    assert cluster_ip(after, "three") == "10.0.9.9"


POOL = "service-ip"


def claims(space: IPSpace, owners: dict[str, str | None]) -> list[Claim]:
    return [(owner, space, wish) for owner, wish in owners.items()]


def test_small_changes_go_to_the_journal(tmp_path: Path) -> None:
    """A change of a few values writes journal rows, not the whole pool; another process reads the pool
    and its journal as one; a journal grown past an eighth of the pool is folded into the pool's row."""
    space = IPSpace("10.0.0.0/16", ["10.0.0.0/16"])
    owners: dict[str, str | None] = {f"default/svc-{i} IPv4": None for i in range(1000)}
    store = Store(str(tmp_path))
    first, _ = store.allocate({POOL: claims(space, owners)}, 0.0)
    row = store.db.execute("SELECT data FROM pools WHERE name = ?", (POOL,)).fetchone()[0]

    del owners["default/svc-0 IPv4"]
    owners["default/new IPv4"] = "10.0.0.77"
    second, _ = store.allocate({POOL: claims(space, owners)}, 1.0)
    assert store.db.execute("SELECT data FROM pools WHERE name = ?", (POOL,)).fetchone()[0] == row
    assert sorted(store.db.execute("SELECT owner, value FROM journal").fetchall()) == [
        ("default/new IPv4", "10.0.0.77"),
        ("default/svc-0 IPv4", None),
    ]
    other = Store(str(tmp_path))
    assert other._read(POOL).values == {o: v for o, v in second[POOL].items() if isinstance(v, str)}

    for i in range(200):  # 200 more changes: more than 1000 / 8
        owners[f"default/more-{i} IPv4"] = None
    store.allocate({POOL: claims(space, owners)}, 2.0)
    assert store.db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    assert len(json.loads(store.db.execute("SELECT data FROM pools").fetchone()[0])) == 1200
    assert {o: first[POOL][o] for o in owners if o in first[POOL]} == {
        o: v for o, v in other.allocate({POOL: claims(space, owners)}, 3.0)[0][POOL].items() if o in first[POOL]
    }


def test_a_store_sees_what_another_process_wrote(tmp_path: Path) -> None:
    """A store that remembers its pools reads them again once another connection has committed: a value
    the other gave (here an explicit one) is kept, not replaced by this store's stale memory."""
    space = IPSpace("10.0.0.0/16", ["10.0.0.0/16"])
    mine, theirs = Store(str(tmp_path)), Store(str(tmp_path))
    mine.allocate({POOL: claims(space, {"default/a IPv4": None})}, 0.0)
    theirs.allocate({POOL: claims(space, {"default/a IPv4": None, "default/b IPv4": "10.0.0.99"})}, 1.0)
    got, _ = mine.allocate({POOL: claims(space, {"default/a IPv4": None, "default/b IPv4": None})}, 2.0)
    assert got[POOL]["default/b IPv4"] == "10.0.0.99"


# --- two processes ------------------------------------------------------------------------------------

LOAD_AND_PRINT = """
import json, sys
from clusterdns.allocate import Store
from clusterdns.registry import Config
from clusterdns.zones import Zones

zones, state = sys.argv[1], sys.argv[2]
sys.stdin.readline()  # start together: the test releases every process at once
store = Store(state)
registry = Zones(zones, Config(service_cidrs=("10.0.0.0/16", "fd00::/108")), store).load(0.0)
print(json.dumps({
    "problems": [str(p) for p in registry.problems],
    "services": {f"{ns}/{n}": list(s.cluster_ips) for (ns, n), s in registry.services.items()},
    "nodePorts": {f"{ns}/{n}": [p.node_port for p in s.ports] for (ns, n), s in registry.services.items()},
    "pods": {f"{ns}/{n}": list(p.ips) for (ns, n), p in registry.pods.items()},
}, sort_keys=True))
"""


def test_processes_started_together_agree(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """Processes loading the same zones and state at the same moment agree on every allocation."""
    # Enough objects that the loads overlap, with explicit wishes that compete with automatic ones.
    docs = [service(f"svc-{i}", "type: NodePort" if i % 3 == 0 else "") for i in range(1000)]
    docs += [service("pinned", "clusterIP: 10.0.200.200")]
    write_zones({"a.yaml": "".join(docs) + deployment(20)})
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD_AND_PRINT, "zones", str(state)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    for p in processes:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=120) for p in processes]
    assert [(p.returncode, err) for p, (_, err) in zip(processes, results, strict=True)] == [(0, "")] * 4
    outputs = [json.loads(out) for out, _ in results]
    assert outputs[0]["problems"] == []
    assert all(output == outputs[0] for output in outputs[1:])
    assert len(outputs[0]["pods"]) == 20
    # and a later load on the same state still agrees
    again = load(state=state, config=DUAL_STACK)
    assert {f"{ns}/{n}": list(s.cluster_ips) for (ns, n), s in again.services.items()} == outputs[0]["services"]
    assert {f"{ns}/{n}": list(p.ips) for (ns, n), p in again.pods.items()} == outputs[0]["pods"]


# --- full pools ----------------------------------------------------------------------------------------


def test_full_pod_network_refuses_the_pods_beyond_it(write_zones: WriteZones, load: Load) -> None:
    """Pods beyond a full pod network are each a problem saying how many need addresses and how many the
    network has; the others get distinct addresses from it."""
    write_zones({"a.yaml": deployment(replicas=20)})
    registry = load(config=Config(pod_cidrs=("10.244.0.0/28",)))
    message = "pod network 10.244.0.0/28 is full: 20 Pods need addresses, 14 available"
    assert len(registry.problems) == 6
    assert all(str(p).endswith(f": status.podIP: {message}") for p in registry.problems), problems(registry)
    ips = {p.ips[0] for p in registry.pods.values()}
    assert len(registry.pods) == len(ips) == 14


def test_full_service_network_refuses_the_services_beyond_it(write_zones: WriteZones, load: Load) -> None:
    """Services beyond a full service network (the lower band included) are each refused, in order."""
    write_zones({"a.yaml": "".join(service(f"svc-{i:02}") for i in range(20))})
    registry = load(config=Config(service_cidrs=("10.0.0.0/28",)))
    message = "service network 10.0.0.0/28 is full: 22 cluster IPs needed, 14 available"  # with the 2 built in
    assert problems(registry) == [
        f"zones/a.yaml:{6 + 8 * i}: Service default/svc-{i:02}: spec.clusterIP: {message}" for i in range(12, 20)
    ]
    assert len({s.cluster_ip for s in registry.services.values()}) == 14


def test_full_node_port_range_refuses_the_services_beyond_it(write_zones: WriteZones, load: Load) -> None:
    """NodePort Services beyond the 2,768 node ports of 30000-32767 are refused, the others get ports."""
    ports = "\n".join(f"- name: p{i}\n  port: {1000 + i}" for i in range(100))
    write_zones({"a.yaml": "".join(service(f"np-{i:02}", "type: NodePort", ports) for i in range(30))})
    started = time.perf_counter()
    registry = load()
    assert time.perf_counter() - started < 20
    refused = sorted({p.subject for p in registry.problems})
    assert refused == [f"Service default/np-{i:02}" for i in range(27, 30)]
    assert (
        registry.problems[0].message == "node port range 30000-32767 is full: 3,000 node ports needed, 2,768 available"
    )


def test_deployment_larger_than_the_pod_network_loads_in_seconds(write_zones: WriteZones, load: Load) -> None:
    """A Deployment of 65,536 replicas in a /16 pod network: 65,534 Pods run and the 2 beyond are refused,
    in seconds (probing the whole full range again for each claim never finished)."""
    write_zones({"a.yaml": deployment(replicas=65_536)})
    started = time.perf_counter()
    registry = load()
    assert time.perf_counter() - started < 30
    assert len(registry.pods) == 65_534
    assert [p.message for p in registry.problems] == [
        "pod network 10.244.0.0/16 is full: 65,536 Pods need addresses, 65,534 available"
    ] * 2


def test_replicas_bounded(write_zones: WriteZones, load: Load) -> None:
    """More replicas than a cluster can hold Pods is a problem of the workload, found before any Pod is made."""
    write_zones({"a.yaml": deployment(replicas=1_000_000_000)})
    assert problems(load()) == [
        "zones/a.yaml:7: Deployment default/web: spec.replicas: must be at most 150,000 (the most Pods Kubernetes "
        "supports in a cluster), got 1,000,000,000"
    ]


def test_assign_is_linear_beyond_a_full_space() -> None:
    """10,000 claims on a space of 100 values: 100 values and 9,900 refusals, without probing the range again."""
    space = PortSpace(30000, 30099)
    claims: list[Claim] = [(f"svc-{i}", space, None) for i in range(10_000)]
    started = time.perf_counter()
    result = assign(claims, {}, "node-port")
    assert time.perf_counter() - started < 2
    values = [v for v in result.values() if isinstance(v, str)]
    assert sorted(values) == [str(p) for p in range(30000, 30100)]
    refusals = {v.message for v in result.values() if isinstance(v, Refusal)}
    assert refusals == {"node port range 30000-30099 is full: 10,000 node ports needed, 100 available"}


def test_owners_pool_first_load_as_general_rule() -> None:
    """A first load of first-seen times gives each owner itself once, as with something held or another claim."""
    from clusterdns.allocate import OWNERS

    claims: list[Claim] = [("Service/a/x", OWNERS, None), ("Namespace//a", OWNERS, None), ("Service/a/x", OWNERS, None)]
    want = {"Service/a/x": "Service/a/x", "Namespace//a": "Namespace//a"}
    assert assign(claims[:2], {}) == want
    assert list(assign(claims, {})) == list(want)  # an owner twice: once, in its first place
    assert assign(claims, {}) == assign(claims, {"Service/b/y": "Service/b/y"}) == want
    space = IPSpace("10.0.0.0/24", ["10.0.0.0/24"])
    mixed = assign([*claims[:2], ("default/web IPv4", space, "10.0.0.9")], {})
    assert mixed == {**want, "default/web IPv4": "10.0.0.9"}


def test_pool_json_is_json_dumps() -> None:
    """A pool's row is written as json.dumps writes it, whatever the strings and stamps hold."""
    from clusterdns.allocate import _pool_json

    values = {"default/web IPv4": "10.0.0.1", 'a"b\\c': "é€😀\n", "": "", "x": "x"}
    for common in (1700000000, 1700000000.5):
        for stamps in ({}, {"x": 5}, {"": 2.25, 'a"b\\c': 12345678901234}):
            data = {owner: [value, stamps.get(owner, common)] for owner, value in values.items()}
            assert _pool_json(values, stamps, common) == json.dumps(data, separators=(",", ":"))
    assert _pool_json({}, {}, 1) == "{}"
