"""The data plane as the kernel runs it: registry -> the nftables ruleset of `table inet clusterdns`.

Does no I/O: `rules` builds the whole desired ruleset from a registry, and `script` writes the one
`nft -f` transaction that turns the last applied ruleset into it (proxy.py runs it). The layout follows
kube-proxy's nftables mode (pkg/proxy/nftables), in one `inet` table instead of an `ip` and an `ip6` one:

- a verdict map from destination address, protocol and port to one chain per service port
  (`service-ips`, `service-ips6`; node ports in `service-nodeports`, `service-nodeports6`);
- the service chain sends a client to the endpoint it used within the ClientIP affinity timeout (one
  dynamic set per endpoint), else picks an endpoint at random per connection, and DNATs to the endpoint's
  address and target port;
- connections to a service port without usable endpoints are rejected in the filter hooks (TCP reset,
  ICMP port unreachable otherwise), and so is every other port of a cluster IP;
- connections are masqueraded where the endpoint's reply would otherwise bypass this machine: a client
  that is its own endpoint (hairpin), a client on a network this machine is on (`Node.local_networks`,
  where the endpoint would answer it directly), a client on this machine, and all node-port and
  external-IP traffic (kube-proxy's externalTrafficPolicy: Cluster). nftables can't compare a packet's
  source with the destination it is given, so hairpin is found as "the client is an endpoint of some
  Service" (the `endpoint-ips` set): one rule instead of one per endpoint, and in the networks clusterdns
  serves such clients are on a local network, masqueraded anyway.

Where this differs from kube-proxy, for load time (measured with 10,000 Services of 3 endpoints each,
tests/bench/bench_proxy.py): kube-proxy gives each endpoint a chain of its own and picks one with
`numgen random mod N vmap { 0 : goto ..., ... }`. Each such vmap is an anonymous map, which the kernel
names by scanning every set of the table: 10,000 of them took 148 s to load here. Without them, the 30,000
endpoint chains and the jumps to them still cost about 2 s more than the same endpoints written into
their service chain. So an endpoint is a rule of its service chain, and the random choice is made as
kube-proxy's iptables mode makes it: the i-th of N endpoints is taken when `numgen random mod (N - i)` is
0, the last one otherwise, which gives each endpoint 1/N of the connections.

A Service's share of the ruleset is a `ServiceRules`, reused from the previous ruleset when the registry
hands back an equal Service and equal endpoints (unchanged on reload), so a reload that changes one
Service costs one Service's rules, here and in the transaction.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from clusterdns.labels import is_ip
from clusterdns.model import Endpoint, Service, ServicePort
from clusterdns.registry import Registry

TABLE = "inet clusterdns"
MASQUERADE_MARK = "0x4000"  # kube-proxy's
KUBE_DNS = ("kube-system", "kube-dns")
REJECT = "goto reject-chain"

# The table's maps and sets, by name: their nft declarations.
COLLECTIONS: Mapping[str, str] = {
    "service-ips": "map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }",
    "service-ips6": "map service-ips6 { type ipv6_addr . inet_proto . inet_service : verdict; }",
    "service-nodeports": "map service-nodeports { type inet_proto . inet_service : verdict; }",
    "service-nodeports6": "map service-nodeports6 { type inet_proto . inet_service : verdict; }",
    "no-endpoint-services": "map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; }",
    "no-endpoint-services6": "map no-endpoint-services6 { type ipv6_addr . inet_proto . inet_service : verdict; }",
    "no-endpoint-nodeports": "map no-endpoint-nodeports { type inet_proto . inet_service : verdict; }",
    "cluster-ips": "set cluster-ips { type ipv4_addr; }",
    "cluster-ips6": "set cluster-ips6 { type ipv6_addr; }",
    "node-ips": "set node-ips { type ipv4_addr; }",
    "node-ips6": "set node-ips6 { type ipv6_addr; }",
    "endpoint-ips": "set endpoint-ips { type ipv4_addr; }",
    "endpoint-ips6": "set endpoint-ips6 { type ipv6_addr; }",
    "local-networks": "set local-networks { type ipv4_addr; flags interval; }",
    "local-networks6": "set local-networks6 { type ipv6_addr; flags interval; }",
}

# Sets whose elements several Services may hold.
SHARED = ("endpoint-ips", "endpoint-ips6")

# The chains every ruleset has; hooks at kube-proxy's priorities.
BASE_CHAINS: Mapping[str, tuple[str, ...]] = {
    "nat-prerouting": ("type nat hook prerouting priority dstnat; policy accept;", "jump services"),
    "nat-output": ("type nat hook output priority -100; policy accept;", "jump services"),
    "nat-postrouting": ("type nat hook postrouting priority srcnat; policy accept;", "jump masquerading"),
    "filter-input": (
        "type filter hook input priority -110; policy accept;",
        "ct state new jump service-endpoints-check",
        "ct state new jump cluster-ips-check",
    ),
    "filter-forward": (
        "type filter hook forward priority -110; policy accept;",
        "ct state new jump service-endpoints-check",
        "ct state new jump cluster-ips-check",
    ),
    "filter-output": (
        "type filter hook output priority -110; policy accept;",
        "ct state new jump service-endpoints-check",
    ),
    "filter-output-post-dnat": (  # after nat-output's DNAT, so that only ports without a service are left
        "type filter hook output priority -90; policy accept;",
        "ct state new jump cluster-ips-check",
    ),
    "services": (  # the masquerade check once here, for every service address: not a rule in each chain
        "ip daddr . meta l4proto . th dport @service-ips jump masquerade-check",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "ip6 daddr . meta l4proto . th dport @service-ips6 jump masquerade-check",
        "ip6 daddr . meta l4proto . th dport vmap @service-ips6",
        "ip daddr @node-ips meta l4proto . th dport vmap @service-nodeports",
        "ip6 daddr @node-ips6 meta l4proto . th dport vmap @service-nodeports6",
    ),
    "service-endpoints-check": (
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        "ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services6",
        "ip daddr @node-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        "ip6 daddr @node-ips6 meta l4proto . th dport vmap @no-endpoint-nodeports",
    ),
    "cluster-ips-check": ("ip daddr @cluster-ips goto reject-chain", "ip6 daddr @cluster-ips6 goto reject-chain"),
    "masquerade-check": (
        "ip saddr @endpoint-ips jump mark-for-masquerade",  # hairpin, and more: see the module's docstring
        "ip6 saddr @endpoint-ips6 jump mark-for-masquerade",
        "ip saddr @local-networks jump mark-for-masquerade",
        "ip6 saddr @local-networks6 jump mark-for-masquerade",
        "fib saddr type local jump mark-for-masquerade",
    ),
    "mark-for-masquerade": (f"meta mark set meta mark | {MASQUERADE_MARK}",),
    "masquerading": (
        f"meta mark & {MASQUERADE_MARK} == 0 return",
        f"meta mark set meta mark ^ {MASQUERADE_MARK}",
        "masquerade fully-random",
    ),
    "reject-chain": ("meta l4proto tcp reject with tcp reset", "reject"),
}


@dataclass(frozen=True, slots=True)
class Node:
    """What the ruleset needs of the machine it runs on."""

    node_ips: tuple[str, ...] = ()  # NodePorts are served on these addresses
    dns: tuple[str, int] | None = None  # kube-dns's cluster IP, port 53, leads here (clusterdns itself)
    local_networks: tuple[str, ...] = ()  # clients here would get an endpoint's reply directly


@dataclass(frozen=True, slots=True)
class ServiceRules:
    """One Service's share of the ruleset: its chains, map and set elements, affinity sets, addresses."""

    chains: Mapping[str, tuple[str, ...]]
    elements: Mapping[tuple[str, str], str]  # (map or set, key) -> verdict ("" in a set)
    sets: Mapping[str, str]  # affinity set name -> declaration
    addresses: tuple[str, ...]  # service addresses that must reach this machine
    made_from: tuple[object, ...] = ()  # the Service and endpoints these were built from


@dataclass(frozen=True, slots=True)
class Ruleset:
    """The whole desired table: the node's fixed part and every Service's share."""

    node: Node
    services: Mapping[tuple[str, str], ServiceRules] = field(default_factory=dict)

    def addresses(self) -> set[str]:
        """Every service address (cluster, external and load-balancer IPs) that must reach this machine."""
        return {a for rules in self.services.values() for a in rules.addresses}

    def node_elements(self) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for ip in self.node.node_ips:
            out[("node-ips6" if ":" in ip else "node-ips", ip)] = ""
        for net in self.node.local_networks:
            out[("local-networks6" if ":" in net else "local-networks", net)] = ""
        return out


def rules(registry: Registry, node: Node, previous: Ruleset | None = None) -> Ruleset:
    """The ruleset that makes every Service of `registry` connect, reusing `previous` where it can."""
    before = previous.services if previous is not None and previous.node == node else {}
    out: dict[tuple[str, str], ServiceRules] = {}
    for key, svc in registry.services.items():
        if not svc.has_cluster_ip:  # headless and ExternalName Services have nothing to forward
            continue
        endpoints = registry.endpoints.get(key, ())
        old = before.get(key)
        # derive_endpoints keeps a Service's endpoints tuple while they are equal: compared by identity
        if old is not None and _same_service(old.made_from[0], svc) and old.made_from[1] is endpoints:
            out[key] = old
        else:
            out[key] = service_rules(svc, endpoints, node)
    return Ruleset(node, out)


def _same_service(a: object, b: Service) -> bool:
    return a is b or a == b


def service_rules(svc: Service, endpoints: Sequence[Endpoint], node: Node) -> ServiceRules:
    """The chains and elements of one Service: per service port and IP family, as kube-proxy writes them."""
    chains: dict[str, tuple[str, ...]] = {}
    elements: dict[tuple[str, str], str] = {}
    sets: dict[str, str] = {}
    addresses: list[str] = []
    ingress = [a for a in svc.load_balancer_ingress if is_ip(a)]
    for cluster_ip in svc.cluster_ips:
        v6 = ":" in cluster_ip
        family = [a for a in (cluster_ip, *svc.external_ips, *ingress) if (":" in a) == v6]
        addresses.extend(family)
        elements[("cluster-ips6" if v6 else "cluster-ips", cluster_ip)] = ""
        for port in svc.ports:
            targets = _targets(svc, port, endpoints, node, v6)
            proto = port.protocol.lower()
            suffix = f"{'6' if v6 else ''}-{svc.namespace}/{svc.name}/{proto}/{port.name or port.port}"
            ips_map = "service-ips6" if v6 else "service-ips"
            if not targets:
                for address in family:
                    elements[("no-endpoint-services6" if v6 else "no-endpoint-services", _key(address, port))] = REJECT
                if port.node_port:
                    elements[("no-endpoint-nodeports", f"{proto} . {port.node_port}")] = REJECT
                continue
            service_chain = f"service{suffix}"
            chains[service_chain] = _service_chain(port, targets, svc, v6, sets, suffix)
            for ip, _ in targets:
                elements[("endpoint-ips6" if v6 else "endpoint-ips", ip)] = ""
            elements[(ips_map, _key(cluster_ip, port))] = f"goto {service_chain}"
            external = family[1:]
            if external or port.node_port:
                external_chain = f"external{suffix}"
                chains[external_chain] = ("jump mark-for-masquerade", f"goto {service_chain}")
                for address in external:
                    elements[(ips_map, _key(address, port))] = f"goto {external_chain}"
                if port.node_port:
                    nodeports = "service-nodeports6" if v6 else "service-nodeports"
                    elements[(nodeports, f"{proto} . {port.node_port}")] = f"goto {external_chain}"
    return ServiceRules(chains, elements, sets, tuple(dict.fromkeys(addresses)), (svc, endpoints))


def _targets(
    svc: Service, port: ServicePort, endpoints: Sequence[Endpoint], node: Node, v6: bool
) -> list[tuple[str, int]]:
    """The (address, port) pairs a service port forwards to: usable endpoints of its family whose port of
    the same name and protocol is known (named targetPorts were resolved per endpoint by the registry)."""
    if svc.key == KUBE_DNS and port.port == 53 and port.protocol in ("UDP", "TCP") and node.dns is not None:
        return [node.dns] if (":" in node.dns[0]) == v6 else []  # clusterdns is the cluster's DNS
    out: set[tuple[str, int]] = set()
    for ep in endpoints:
        if (":" in ep.ip) != v6 or not (ep.ready or svc.publish_not_ready_addresses):
            continue
        for p in ep.ports:
            if p.name == port.name and p.protocol == port.protocol:
                out.add((ep.ip, p.port))
    family = socket.AF_INET6 if v6 else socket.AF_INET
    return sorted(out, key=lambda t: (socket.inet_pton(family, t[0]), t[1]))


def _service_chain(
    port: ServicePort, targets: list[tuple[str, int]], svc: Service, v6: bool, sets: dict[str, str], suffix: str
) -> tuple[str, ...]:
    """A service chain: ClientIP affinity (with its sets, one per endpoint), then the random choice of an
    endpoint. (The masquerade check is made once, in `services`, before the verdict map.)"""
    family, addr_type = ("ip6", "ipv6_addr") if v6 else ("ip", "ipv4_addr")
    proto = port.protocol.lower()
    lines: list[str] = []
    dnat = [f"meta l4proto {proto} dnat {family} to {f'[{ip}]' if v6 else ip}:{target}" for ip, target in targets]
    if svc.session_affinity == "ClientIP":
        timeout = svc.session_affinity_timeout
        for i, (ip, target) in enumerate(targets):
            name = f"affinity{suffix}__{ip.replace(':', '.')}/{target}"
            sets[name] = f"set {name} {{ type {addr_type}; flags dynamic,timeout; timeout {timeout}s; }}"
            update = f"update @{name} {{ {family} saddr }}"
            lines.append(f"{family} saddr @{name} {update} {dnat[i]}")
            dnat[i] = f"{update} {dnat[i]}"
    n = len(dnat)
    lines.extend(f"numgen random mod {n - i} == 0 {rule}" for i, rule in enumerate(dnat[:-1]))
    lines.append(dnat[-1])
    return tuple(lines)


def _key(address: str, port: ServicePort) -> str:
    return f"{address} . {port.protocol.lower()} . {port.port}"


# --- the transaction ---


def script(old: Ruleset | None, new: Ruleset) -> str:
    """The `nft -f` text that turns the table as `old` left it into `new`, as one transaction.

    Without `old` (at start, or when the machine's part changed) the table is replaced whole: created if
    missing, deleted and written anew, in the same transaction. Otherwise only what differs is written:
    new and changed chains, element changes, and chains and sets no longer used. Empty when nothing differs.
    """
    if old is None or old.node != new.node:
        return _whole(new)
    chains_old: dict[str, tuple[str, ...]] = {}
    chains_new: dict[str, tuple[str, ...]] = {}
    elements_old: dict[tuple[str, str], str] = {}
    elements_new: dict[tuple[str, str], str] = {}
    sets_old: dict[str, str] = {}
    sets_new: dict[str, str] = {}
    olds, news = old.services, new.services
    changed_keys = [k for k, v in news.items() if olds.get(k) is not v]
    changed_keys += olds.keys() - news.keys()
    for key in changed_keys:
        before, after = olds.get(key), news.get(key)
        for rules_, chains, elements, sets in (
            (before, chains_old, elements_old, sets_old),
            (after, chains_new, elements_new, sets_new),
        ):
            if rules_ is not None:
                chains.update(rules_.chains)
                elements.update(rules_.elements)
                sets.update(rules_.sets)
    out: list[str] = []
    changed = [c for c in chains_new if c in chains_old and chains_old[c] != chains_new[c]]
    added = [c for c in chains_new if c not in chains_old]
    out.extend(f"flush chain {TABLE} {c}" for c in changed)
    new_sets = [s for s in sets_new if s not in sets_old]
    if changed or added or new_sets:
        out.append(f"table {TABLE} {{")
        out.extend(f"\t{sets_new[s]}" for s in new_sets)
        for c in [*added, *changed]:
            out.extend(_chain(c, chains_new[c]))
        out.append("}")
    gone = [k for k, v in elements_old.items() if elements_new.get(k) != v]
    if any(k[0] in SHARED for k in gone):  # an endpoint IP goes only when no Service has it any more
        still = {k for r in new.services.values() for k in r.elements if k[0] in SHARED}
        gone = [k for k in gone if k not in still]
    came = {k: v for k, v in elements_new.items() if elements_old.get(k) != v}
    out.extend(_elements("delete", gone, {}))
    out.extend(_elements("add", came, came))
    removed = [c for c in chains_old if c not in chains_new]
    out.extend(f"flush chain {TABLE} {c}" for c in removed)  # first, so that none still jumps to another
    out.extend(f"delete chain {TABLE} {c}" for c in removed)
    out.extend(f"delete set {TABLE} {s}" for s in sets_old if s not in sets_new)
    return "\n".join(out) + "\n" if out else ""


def _whole(new: Ruleset) -> str:
    out = [f"add table {TABLE}", f"delete table {TABLE}", f"table {TABLE} {{"]
    out.extend(f"\t{decl}" for decl in COLLECTIONS.values())
    chains: dict[str, tuple[str, ...]] = dict(BASE_CHAINS)
    elements = new.node_elements()
    for rules_ in new.services.values():
        out.extend(f"\t{decl}" for decl in rules_.sets.values())
        chains.update(rules_.chains)
        elements.update(rules_.elements)
    for name, lines in chains.items():
        out.extend(_chain(name, lines))
    out.append("}")
    out.extend(_elements("add", elements, elements))
    return "\n".join(out) + "\n"


def _chain(name: str, lines: Iterable[str]) -> list[str]:
    return [f"\tchain {name} {{", *(f"\t\t{line}" for line in lines), "\t}"]


def _elements(verb: str, keys: Iterable[tuple[str, str]], values: Mapping[tuple[str, str], str]) -> list[str]:
    """One `add element` / `delete element` statement per map or set."""
    by_collection: dict[str, list[str]] = {}
    for collection, key in keys:
        value = values.get((collection, key), "")
        by_collection.setdefault(collection, []).append(f"{key} : {value}" if value else key)
    return [f"{verb} element {TABLE} {c} {{ {', '.join(items)} }}" for c, items in sorted(by_collection.items())]
