"""The data plane's ruleset, built from registries without a kernel: each Service's chains and map elements as
kube-proxy's nftables mode writes them, and the transactions between two rulesets. The last tests hand the
transactions to a real kernel (in a network namespace of their own) and compare what it then holds with the
same ruleset written whole."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from clusterdns.registry import Config, Registry
from clusterdns.ruleset import (
    PICK_CHAINS,
    PICKS,
    Node,
    Ruleset,
    ServiceRules,
    hooks_stage,
    rules,
    script,
    services_stage,
    table_stage,
)

if TYPE_CHECKING:
    from conftest import Load, WriteZones

NODE = Node(node_ips=("192.0.2.1",), dns=("192.0.2.1", 53), local_networks=("10.244.0.0/16",))


def pod(name: str, ip: str, labels: str, ready: bool = True, ports: str = "[{name: http, containerPort: 80}]") -> str:
    status = "True" if ready else "False"
    return (
        "---\napiVersion: v1\nkind: Pod\n"
        f"metadata: {{name: {name}, labels: {{{labels}}}}}\n"
        f"spec: {{containers: [{{name: c, ports: {ports}}}]}}\n"
        f'status: {{podIP: {ip}, conditions: [{{type: Ready, status: "{status}"}}]}}\n'
    )


def service(name: str, spec: str, ip: str = "") -> str:
    """A Service document; `spec` holds the lines of its spec, unindented."""
    lines = ([f"clusterIP: {ip}"] if ip else []) + spec.splitlines()
    body = "".join(f"  {line}\n" for line in lines)
    return f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{body}"


def share(ruleset: Ruleset, name: str, namespace: str = "default") -> list[str]:
    """One Service's share of a ruleset as text: `chain NAME` blocks, then `MAP KEY : VALUE` elements and
    `set NAME ...` declarations, sorted."""
    rules_ = ruleset.services[(namespace, name)]
    out = []
    for chain, lines in sorted(rules_.chains.items()):
        out.append(f"chain {chain}")
        out.extend(f"  {line}" for line in lines)
    out.extend(sorted(f"{m} {item}" for m, items in rules_.elements.items() for item in items.values()))
    out.extend(sorted(rules_.sets.values()))
    return out


def build(write_zones: WriteZones, load: Load, text: str, config: Config | None = None) -> Registry:
    write_zones({"zone.yaml": text})
    return load(config=config)


def test_two_endpoints_random_choice(write_zones: WriteZones, load: Load) -> None:
    """A ClusterIP Service with two ready endpoints: the cluster IP's map element leads to the pick chain of
    two endpoints, which draws 0 or 1 at random per connection and DNATs to the endpoint the endpoints map
    holds for the cluster IP, port and draw, on the named targetPort as resolved for that Pod; both are
    endpoint IPs."""
    registry = build(
        write_zones,
        load,
        pod("a", "10.244.1.1", "app: web")
        + pod("b", "10.244.1.2", "app: web", ports="[{name: http, containerPort: 8080}]")
        + service("web", "selector: {app: web}\nports: [{name: http, port: 80, targetPort: http}]", "10.0.0.50"),
    )
    assert PICK_CHAINS["pick-2"] == (
        "meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2"
        " map @service-endpoints",
    )
    assert share(rules(registry, NODE), "web") == [
        "cluster-ips 10.0.0.50",
        "endpoint-ips 10.244.1.1",
        "endpoint-ips 10.244.1.2",
        "service-endpoints 10.0.0.50 . tcp . 80 . 0 : 10.244.1.1 . 80",
        "service-endpoints 10.0.0.50 . tcp . 80 . 1 : 10.244.1.2 . 8080",
        "service-ips 10.0.0.50 . tcp . 80 : goto pick-2",
    ]


def test_random_choice_is_uniform(write_zones: WriteZones, load: Load) -> None:
    """With N endpoints, the pick chain draws one of N numbers and each number leads to a different endpoint,
    so every endpoint gets 1/N of the connections."""
    pods = "".join(pod(f"p{i}", f"10.244.1.{i + 1}", "app: web") for i in range(4))
    registry = build(write_zones, load, pods + service("web", "selector: {app: web}\nports: [{name: http, port: 80}]"))
    rules_ = rules(registry, NODE).services[("default", "web")]
    (verdict,) = rules_.elements["service-ips"].values()
    chain = verdict.split("goto ")[1]
    assert "numgen random mod 4 map @service-endpoints" in PICK_CHAINS[chain][0]
    picked = {
        item.split(" . ")[3].split(" : ")[0]: item.split(" : ")[1]
        for item in rules_.elements["service-endpoints"].values()
    }
    assert sorted(picked) == ["0", "1", "2", "3"]
    assert sorted(picked.values()) == [f"10.244.1.{i} . 80" for i in range(1, 5)]


def test_random_choice_with_affinity_is_uniform(write_zones: WriteZones, load: Load) -> None:
    """With ClientIP affinity and N endpoints, a new client meets N rules of the Service's own chain, the
    i-th taking `1/(N-i)` of what reaches it, so every endpoint gets 1/N of the new clients."""
    pods = "".join(pod(f"p{i}", f"10.244.1.{i + 1}", "app: web") for i in range(4))
    spec = "selector: {app: web}\nsessionAffinity: ClientIP\nports: [{name: http, port: 80}]"
    registry = build(write_zones, load, pods + service("web", spec))
    chain = rules(registry, NODE).services[("default", "web")].chains["service-default/web/tcp/http"]
    new_clients = [line for line in chain if not line.startswith("ip saddr @")]
    draws = [int(line.split()[3]) if line.startswith("numgen") else 1 for line in new_clients]
    assert draws == [4, 3, 2, 1]
    left, shares = 1.0, []
    for n in draws:
        shares.append(left / n)
        left -= left / n
    assert shares == pytest.approx([0.25] * 4)


def test_more_endpoints_than_pick_chains(write_zones: WriteZones, load: Load) -> None:
    """A service port with more endpoints than there are pick chains has a chain of its own, with the same
    uniform draws, and nothing in the endpoints map."""
    n = PICKS + 1
    pods = "".join(pod(f"p{i}", f"10.244.1.{i + 1}", "app: web") for i in range(n))
    registry = build(write_zones, load, pods + service("web", "selector: {app: web}\nports: [{name: http, port: 80}]"))
    rules_ = rules(registry, NODE).services[("default", "web")]
    chain = rules_.chains["service-default/web/tcp/http"]
    assert [int(line.split()[3]) if line.startswith("numgen") else 1 for line in chain] == list(range(n, 0, -1))
    assert sorted(line.split(" to ")[1] for line in chain) == sorted(f"10.244.1.{i + 1}:80" for i in range(n))
    assert "service-endpoints" not in rules_.elements
    assert next(iter(rules_.elements["service-ips"].values())).endswith(": goto service-default/web/tcp/http")


def test_readiness_and_publish_not_ready(write_zones: WriteZones, load: Load) -> None:
    """Not-ready endpoints are left out, unless the Service publishes not-ready addresses; a Service without
    usable endpoints has no endpoints and no verdict, only reject elements for its address and node port."""
    registry = build(
        write_zones,
        load,
        pod("a", "10.244.1.1", "app: web", ready=False)
        + service("web", "selector: {app: web}\nports: [{name: http, port: 80}]", "10.0.0.50")
        + service(
            "web-all",
            "selector: {app: web}\npublishNotReadyAddresses: true\nports: [{name: http, port: 80}]",
            "10.0.0.51",
        )
        + service(
            "np",
            "type: NodePort\nselector: {app: none}\nports: [{port: 53, protocol: UDP, nodePort: 30053}]",
            "10.0.0.52",
        ),
    )
    ruleset = rules(registry, NODE)
    assert share(ruleset, "web") == [
        "cluster-ips 10.0.0.50",
        "no-endpoint-services 10.0.0.50 . tcp . 80 : goto reject-chain",
    ]
    assert "service-endpoints 10.0.0.51 . tcp . 80 . 0 : 10.244.1.1 . 80" in share(ruleset, "web-all")
    assert share(ruleset, "np") == [
        "cluster-ips 10.0.0.52",
        "no-endpoint-nodeports udp . 30053 : goto reject-chain",
        "no-endpoint-services 10.0.0.52 . udp . 53 : goto reject-chain",
    ]


def test_node_port_external_and_load_balancer_ips(write_zones: WriteZones, load: Load) -> None:
    """NodePort, external IPs and load-balancer ingress IPs go through a pick chain that masquerades first;
    each external address has the endpoints the cluster IP has, and the node port its own, by protocol and
    port. Hostnames in the ingress are not addresses and are skipped."""
    registry = build(
        write_zones,
        load,
        pod("a", "10.244.1.1", "app: web")
        + service(
            "lb",
            "type: LoadBalancer\nselector: {app: web}\nexternalIPs: [198.51.100.7]\n"
            "ports: [{name: http, port: 80, nodePort: 30080}]",
            "10.0.0.60",
        )
        + "status: {loadBalancer: {ingress: [{ip: 203.0.113.9}, {hostname: lb.example.com}]}}\n",
    )
    ruleset = rules(registry, NODE)
    got = share(ruleset, "lb")
    assert PICK_CHAINS["external-pick-1"] == ("jump mark-for-masquerade", "goto pick-1")
    assert PICK_CHAINS["nodeport-pick-1"] == (
        "jump mark-for-masquerade",
        "meta l4proto { tcp, udp, sctp } dnat ip to meta l4proto . th dport . numgen random mod 1"
        " map @nodeport-endpoints",
    )
    assert [line for line in got if " : " in line and not line.startswith("  ")] == [
        "nodeport-endpoints tcp . 30080 . 0 : 10.244.1.1 . 80",
        "service-endpoints 10.0.0.60 . tcp . 80 . 0 : 10.244.1.1 . 80",
        "service-endpoints 198.51.100.7 . tcp . 80 . 0 : 10.244.1.1 . 80",
        "service-endpoints 203.0.113.9 . tcp . 80 . 0 : 10.244.1.1 . 80",
        "service-ips 10.0.0.60 . tcp . 80 : goto pick-1",
        "service-ips 198.51.100.7 . tcp . 80 : goto external-pick-1",
        "service-ips 203.0.113.9 . tcp . 80 : goto external-pick-1",
        "service-nodeports tcp . 30080 : goto nodeport-pick-1",
    ]
    assert ruleset.addresses() >= {"10.0.0.60", "198.51.100.7", "203.0.113.9"}


def test_client_ip_affinity(write_zones: WriteZones, load: Load) -> None:
    """sessionAffinity ClientIP: one dynamic set per endpoint with the Service's timeout; a client found in a
    set goes to that endpoint (and its entry is refreshed) before any random choice, which adds it."""
    registry = build(
        write_zones,
        load,
        pod("a", "10.244.1.1", "app: web")
        + service(
            "web",
            "selector: {app: web}\nsessionAffinity: ClientIP\n"
            "sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\nports: [{port: 80, targetPort: 80}]",
            "10.0.0.50",
        ),
    )
    got = share(rules(registry, NODE), "web")
    aff = "affinity-default/web/tcp/80__10.244.1.1/80"
    assert got == [
        "chain service-default/web/tcp/80",
        f"  ip saddr @{aff} update @{aff} {{ ip saddr }} meta l4proto tcp dnat ip to 10.244.1.1:80",
        f"  update @{aff} {{ ip saddr }} meta l4proto tcp dnat ip to 10.244.1.1:80",
        "cluster-ips 10.0.0.50",
        "endpoint-ips 10.244.1.1",
        "service-ips 10.0.0.50 . tcp . 80 : goto service-default/web/tcp/80",
        f"set {aff} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}",
    ]


def test_dual_stack_chains_per_family(write_zones: WriteZones, load: Load) -> None:
    """A dual-stack Service has its elements in each family's maps; each family's cluster IP leads only to
    endpoints of its family, through the pick chain of that family."""
    registry = build(
        write_zones,
        load,
        """
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          ipFamilyPolicy: RequireDualStack
          clusterIPs: [10.0.0.50, "fd00::50"]
          ports: [{port: 80}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-v6, labels: {kubernetes.io/service-name: web}}
        addressType: IPv6
        endpoints: [{addresses: ["fd00:244::5"]}]
        ports: [{port: 8080}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-v4, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.1.5]}]
        ports: [{port: 8080}]
        """,
        Config(service_cidrs=("10.0.0.0/16", "fd00::/108")),
    )
    got = share(rules(registry, NODE), "web")
    assert "service-endpoints6 fd00::50 . tcp . 80 . 0 : fd00:244::5 . 8080" in got
    assert "service-ips6 fd00::50 . tcp . 80 : goto pick6-1" in got
    assert "service-ips 10.0.0.50 . tcp . 80 : goto pick-1" in got
    assert "service-endpoints 10.0.0.50 . tcp . 80 . 0 : 10.244.1.5 . 8080" in got
    assert "endpoint-ips6 fd00:244::5" in got
    (pick6,) = PICK_CHAINS["pick6-1"]
    assert "dnat ip6 to ip6 daddr . meta l4proto . th dport . numgen random mod 1 map @service-endpoints6" in pick6


def test_kube_dns_leads_to_clusterdns(write_zones: WriteZones, load: Load) -> None:
    """kube-dns's cluster IP, port 53 over UDP and TCP, is DNATed to clusterdns's own DNS address and port;
    its metrics port has no endpoint and is rejected."""
    registry = build(write_zones, load, "")
    node = Node(node_ips=(), dns=("192.0.2.1", 1053))
    got = share(rules(registry, node), "kube-dns", "kube-system")
    assert "service-endpoints 10.0.0.10 . udp . 53 . 0 : 192.0.2.1 . 1053" in got
    assert "service-endpoints 10.0.0.10 . tcp . 53 . 0 : 192.0.2.1 . 1053" in got
    assert "no-endpoint-services 10.0.0.10 . tcp . 9153 : goto reject-chain" in got


def test_unchanged_services_keep_their_rules(write_zones: WriteZones, load: Load) -> None:
    """Built again from an unchanged registry, every Service's rules are the same objects and the
    transaction is empty; the first transaction replaces the table whole."""
    registry = build(write_zones, load, service("web", "ports: [{port: 80}]", "10.0.0.50"))
    first = rules(registry, NODE)
    again = rules(registry, NODE, first)
    assert all(again.services[k] is first.services[k] for k in first.services)
    assert script(first, again) == ""
    whole = script(None, first).splitlines()
    assert whole[:3] == ["add table inet clusterdns", "delete table inet clusterdns", "table inet clusterdns {"]


def rules_of(chains: dict[str, tuple[str, ...]], elements: dict[tuple[str, str], str]) -> ServiceRules:
    by_collection: dict[str, dict[str, str]] = {}
    for (collection, key), value in elements.items():
        by_collection.setdefault(collection, {})[key] = f"{key} : {value}" if value else key
    return ServiceRules(chains, by_collection, {}, ())


def test_transaction_writes_only_differences() -> None:
    """Between two rulesets: new chains are written, changed ones flushed and written again, elements whose
    value changed or that are gone deleted, new ones added, and chains no longer used flushed, then deleted,
    after the elements that led to them."""
    old = Ruleset(
        NODE,
        {
            ("default", "a"): rules_of(
                {"service-a": ("dnat ip to 10.244.0.5:80",)},
                {("service-ips", "10.0.0.1 . tcp . 80"): "goto service-a", ("endpoint-ips", "10.244.0.5"): ""},
            ),
            ("default", "gone"): rules_of(
                {"service-gone": ("dnat ip to 10.244.0.9:80",)},
                {("service-ips", "10.0.0.3 . tcp . 80"): "goto service-gone"},
            ),
            ("default", "picked"): rules_of(
                {},
                {
                    ("service-ips", "10.0.0.4 . tcp . 80"): "goto pick-2",
                    ("service-endpoints", "10.0.0.4 . tcp . 80 . 0"): "10.244.0.7 . 80",
                    ("service-endpoints", "10.0.0.4 . tcp . 80 . 1"): "10.244.0.8 . 80",
                },
            ),
            ("default", "same"): rules_of({"service-same": ("accept",)}, {}),
        },
    )
    new = Ruleset(
        NODE,
        {
            ("default", "a"): rules_of(
                {"service-a": ("dnat ip to 10.244.0.6:80",), "external-a": ("goto service-a",)},
                {("service-ips", "10.0.0.1 . tcp . 80"): "goto service-a", ("endpoint-ips", "10.244.0.6"): ""},
            ),
            ("default", "picked"): rules_of(
                {},
                {
                    ("service-ips", "10.0.0.4 . tcp . 80"): "goto pick-1",
                    ("service-endpoints", "10.0.0.4 . tcp . 80 . 0"): "10.244.0.8 . 80",
                },
            ),
            ("default", "same"): old.services[("default", "same")],
            ("default", "b"): rules_of({}, {("no-endpoint-services", "10.0.0.2 . tcp . 80"): "goto reject-chain"}),
        },
    )
    assert script(old, new).splitlines() == [
        "flush chain inet clusterdns service-a",
        "table inet clusterdns {",
        "\tchain external-a {",
        "\t\tgoto service-a",
        "\t}",
        "\tchain service-a {",
        "\t\tdnat ip to 10.244.0.6:80",
        "\t}",
        "}",
        "delete element inet clusterdns endpoint-ips { 10.244.0.5 }",
        "delete element inet clusterdns service-endpoints { 10.0.0.4 . tcp . 80 . 0, 10.0.0.4 . tcp . 80 . 1 }",
        "delete element inet clusterdns service-ips { 10.0.0.4 . tcp . 80, 10.0.0.3 . tcp . 80 }",
        "add element inet clusterdns endpoint-ips { 10.244.0.6 }",
        "add element inet clusterdns no-endpoint-services { 10.0.0.2 . tcp . 80 : goto reject-chain }",
        "add element inet clusterdns service-endpoints { 10.0.0.4 . tcp . 80 . 0 : 10.244.0.8 . 80 }",
        "add element inet clusterdns service-ips { 10.0.0.4 . tcp . 80 : goto pick-1 }",
        "flush chain inet clusterdns service-gone",
        "delete chain inet clusterdns service-gone",
    ]


# --- the same transactions in a kernel ---


def nft(netns: str, text: str = "", *args: str) -> str:
    argv = ["ip", "netns", "exec", netns, "nft", *(args or ("-f", "-"))]
    done = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"nft {' '.join(args)}: {done.stderr}\n{text[:3000]}"
    return done.stdout


def table(netns: str) -> list[str]:
    """The table as the kernel holds it: every chain, rule, set and element, without handles, sorted."""
    items = json.loads(nft(netns, "", "-j", "list", "table", "inet", "clusterdns"))["nftables"]
    out = []
    for item in items:
        for kind, body in item.items():
            if kind == "metainfo":
                continue
            body = {k: v for k, v in body.items() if k != "handle"}
            if "elem" in body:
                body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body["elem"])
            out.append(json.dumps({kind: body}, sort_keys=True))
    return sorted(out)


@pytest.fixture
def kernel() -> Iterator[str]:
    """A network namespace of its own, to hold a table; removed afterwards."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root and must be able to make network namespaces")
        pytest.skip("nftables needs root")
    name = f"cdrs{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)


ZONE_FILES = {
    "web": pod("w1", "10.244.1.1", "app: web")
    + pod("w2", "10.244.1.2", "app: web")
    + service("web", "selector: {app: web}\nports: [{name: http, port: 80}]", "10.0.0.50"),
    "sticky": service(
        "sticky", "selector: {app: web}\nsessionAffinity: ClientIP\nports: [{name: http, port: 81}]", "10.0.0.51"
    ),
    "np": service("np", "type: NodePort\nselector: {app: db}\nports: [{name: http, port: 82, nodePort: 30082}]"),
    "db": pod("d1", "10.244.2.1", "app: db", ports="[{name: http, containerPort: 5432}]"),
    "ext": service("ext", "selector: {app: web}\nexternalIPs: [198.51.100.7]\nports: [{name: http, port: 83}]"),
    "more-web": pod("w3", "10.244.1.3", "app: web") + pod("w4", "10.244.1.4", "app: web"),
    "many": "".join(pod(f"m{i}", f"10.244.3.{i + 1}", "app: many") for i in range(PICKS + 1))
    + service("many", "selector: {app: many}\nports: [{name: http, port: 84}]"),
}


def test_transactions_agree_with_a_whole_table(kernel: str, tmp_path: Path, load: Load) -> None:
    """Through 25 random changes of a zone (Services, Pods, affinity, node ports appearing and going), the
    table that the transactions leave in the kernel equals the same ruleset written whole."""
    rng = random.Random(7)
    zones = tmp_path / "zones"
    zones.mkdir()
    previous: Ruleset | None = None
    for step in range(25):
        for name, text in ZONE_FILES.items():
            path = zones / f"{name}.yaml"
            if rng.random() < 0.6:
                path.write_text(text)
            elif path.exists():
                path.unlink()
        current = rules(load(zones, state=tmp_path / "state"), NODE, previous)
        nft(kernel, script(previous, current))
        incremental = table(kernel)
        nft(kernel, script(None, current))
        assert table(kernel) == incremental, f"step {step}"
        previous = current


def test_a_load_in_stages_agrees_with_a_whole_table(kernel: str, tmp_path: Path, load: Load) -> None:
    """A first load written in stages (the table, three shares of the Services read by nft processes at
    once, the hooks) leaves the table the one whole transaction leaves; no stage but the last one hooks a
    chain, so no packet meets the table before it is complete."""
    zones = tmp_path / "zones"
    zones.mkdir()
    for name, text in ZONE_FILES.items():
        (zones / f"{name}.yaml").write_text(text)
    registry = load(zones, state=tmp_path / "state")
    keys = list(registry.services)
    shares = [rules(registry, NODE, keys=keys[i::3]) for i in range(3)]
    assert sorted(k for s in shares for k in s.services) == sorted(rules(registry, NODE).services)
    stages = [table_stage(NODE), *(services_stage(s.services.values()) for s in shares)]
    assert not any("hook" in text for text in stages)
    nft(kernel, stages[0])
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda text: nft(kernel, text), stages[1:]))
    assert all("hook" not in json.dumps(item) for item in table(kernel))
    nft(kernel, hooks_stage())
    staged = table(kernel)
    nft(kernel, script(None, rules(registry, NODE)))
    assert staged == table(kernel)
    assert sum('"hook"' in item for item in staged) == 7  # every hooked chain is there
