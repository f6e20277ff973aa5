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
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from clusterdns.registry import Config, Registry
from clusterdns.ruleset import Node, Ruleset, ServiceRules, rules, script

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
    """One Service's share of a ruleset as text: `chain NAME` blocks, then `MAP KEY : VERDICT` elements and
    `set NAME ...` declarations, sorted."""
    rules_ = ruleset.services[(namespace, name)]
    out = []
    for chain, lines in sorted(rules_.chains.items()):
        out.append(f"chain {chain}")
        out.extend(f"  {line}" for line in lines)
    out.extend(sorted(f"{m} {k}{' : ' + v if v else ''}" for (m, k), v in rules_.elements.items()))
    out.extend(sorted(rules_.sets.values()))
    return out


def build(write_zones: WriteZones, load: Load, text: str, config: Config | None = None) -> Registry:
    write_zones({"zone.yaml": text})
    return load(config=config)


def test_two_endpoints_random_choice(write_zones: WriteZones, load: Load) -> None:
    """A ClusterIP Service with two ready endpoints: the cluster IP's map element leads to the service chain,
    which takes the first endpoint for half of the connections and the second for
    the rest, each DNATed to the named targetPort as resolved for that Pod; both are endpoint IPs."""
    registry = build(
        write_zones,
        load,
        pod("a", "10.244.1.1", "app: web")
        + pod("b", "10.244.1.2", "app: web", ports="[{name: http, containerPort: 8080}]")
        + service("web", "selector: {app: web}\nports: [{name: http, port: 80, targetPort: http}]", "10.0.0.50"),
    )
    assert share(rules(registry, NODE), "web") == [
        "chain service-default/web/tcp/http",
        "  numgen random mod 2 == 0 meta l4proto tcp dnat ip to 10.244.1.1:80",
        "  meta l4proto tcp dnat ip to 10.244.1.2:8080",
        "cluster-ips 10.0.0.50",
        "endpoint-ips 10.244.1.1",
        "endpoint-ips 10.244.1.2",
        "service-ips 10.0.0.50 . tcp . 80 : goto service-default/web/tcp/http",
    ]


def test_random_choice_is_uniform(write_zones: WriteZones, load: Load) -> None:
    """With N endpoints the i-th rule takes `1/(N-i)` of what reaches it, so every endpoint gets 1/N."""
    pods = "".join(pod(f"p{i}", f"10.244.1.{i + 1}", "app: web") for i in range(4))
    registry = build(write_zones, load, pods + service("web", "selector: {app: web}\nports: [{name: http, port: 80}]"))
    chain = rules(registry, NODE).services[("default", "web")].chains["service-default/web/tcp/http"]
    draws = [int(line.split()[3]) if line.startswith("numgen") else 1 for line in chain]
    assert draws == [4, 3, 2, 1]
    left, shares = 1.0, []
    for n in draws:
        shares.append(left / n)
        left -= left / n
    assert shares == pytest.approx([0.25] * 4)


def test_readiness_and_publish_not_ready(write_zones: WriteZones, load: Load) -> None:
    """Not-ready endpoints are left out, unless the Service publishes not-ready addresses; a Service without
    usable endpoints has no chain, only reject elements for its address and node port."""
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
    assert "service-ips 10.0.0.51 . tcp . 80 : goto service-default/web-all/tcp/http" in share(ruleset, "web-all")
    assert share(ruleset, "np") == [
        "cluster-ips 10.0.0.52",
        "no-endpoint-nodeports udp . 30053 : goto reject-chain",
        "no-endpoint-services 10.0.0.52 . udp . 53 : goto reject-chain",
    ]


def test_node_port_external_and_load_balancer_ips(write_zones: WriteZones, load: Load) -> None:
    """NodePort, external IPs and load-balancer ingress IPs go through an external chain, which masquerades
    then continues at the service chain; hostnames in the ingress are not addresses and are skipped."""
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
    external = got.index("chain external-default/lb/tcp/http")
    assert got[external + 1 : external + 3] == ["  jump mark-for-masquerade", "  goto service-default/lb/tcp/http"]
    assert [line for line in got if " : goto" in line and not line.startswith("  ")] == [
        "service-ips 10.0.0.60 . tcp . 80 : goto service-default/lb/tcp/http",
        "service-ips 198.51.100.7 . tcp . 80 : goto external-default/lb/tcp/http",
        "service-ips 203.0.113.9 . tcp . 80 : goto external-default/lb/tcp/http",
        "service-nodeports tcp . 30080 : goto external-default/lb/tcp/http",
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
    """A dual-stack Service has a chain per family; each family's cluster IP leads only to endpoints of
    its family, and IPv6 endpoints are DNATed with `ip6` and brackets."""
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
    assert "  meta l4proto tcp dnat ip6 to [fd00:244::5]:8080" in got
    assert "service-ips6 fd00::50 . tcp . 80 : goto service6-default/web/tcp/80" in got
    assert "service-ips 10.0.0.50 . tcp . 80 : goto service-default/web/tcp/80" in got
    assert "chain service-default/web/tcp/80" in got
    assert "  meta l4proto tcp dnat ip to 10.244.1.5:8080" in got
    assert "endpoint-ips6 fd00:244::5" in got


def test_kube_dns_leads_to_clusterdns(write_zones: WriteZones, load: Load) -> None:
    """kube-dns's cluster IP, port 53 over UDP and TCP, is DNATed to clusterdns's own DNS address and port;
    its metrics port has no endpoint and is rejected."""
    registry = build(write_zones, load, "")
    node = Node(node_ips=(), dns=("192.0.2.1", 1053))
    got = share(rules(registry, node), "kube-dns", "kube-system")
    assert "  meta l4proto udp dnat ip to 192.0.2.1:1053" in got
    assert "  meta l4proto tcp dnat ip to 192.0.2.1:1053" in got
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
    return ServiceRules(chains, elements, {}, ())


def test_transaction_writes_only_differences() -> None:
    """Between two rulesets: new chains are written, changed ones flushed and written again, elements whose
    verdict changed or that are gone deleted, new ones added, and chains no longer used flushed, then deleted,
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
        "delete element inet clusterdns service-ips { 10.0.0.3 . tcp . 80 }",
        "add element inet clusterdns endpoint-ips { 10.244.0.6 }",
        "add element inet clusterdns no-endpoint-services { 10.0.0.2 . tcp . 80 : goto reject-chain }",
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
