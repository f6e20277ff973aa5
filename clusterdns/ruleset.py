"""The data plane as the kernel runs it: registry -> the nftables ruleset of `table inet clusterdns`.

Does no I/O: `rules` builds the whole desired ruleset from a registry, and `script` writes the one
`nft -f` transaction that turns the last applied ruleset into it (proxy.py runs it); a first load can be
written in stages instead (`table_stage`, `services_stage`, `hooks_stage`), which nft reads side by side.
The layout follows kube-proxy's nftables mode (pkg/proxy/nftables), in one `inet` table instead of an `ip`
and an `ip6` one:

- a verdict map from destination address, protocol and port to what picks the endpoint
  (`service-ips`, `service-ips6`; node ports in `service-nodeports`, `service-nodeports6`);
- an endpoint is picked at random per connection and the connection DNATed to its address and target port;
  with ClientIP affinity, a client goes back to the endpoint it used within the timeout (one dynamic set
  per endpoint);
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
tests/bench/bench_proxy.py): kube-proxy gives each service port a chain, and each endpoint a chain of its
own picked with `numgen random mod N vmap { 0 : goto ..., ... }`. Each such vmap is an anonymous map,
which the kernel names by scanning every set of the table: 10,000 of them took 148 s to load here; with
endpoints as DNAT rules of their service chain instead, 10,000 chains and 30,000 rules still took 1.6 s,
for the kernel and nft spend about 35 us on each rule or chain, and nft reads every rule of the table
again before each change (90 ms for any change). Map elements cost a fraction of that. So a service port
of N endpoints is N elements of `service-endpoints` (`address . protocol . port . i : endpoint . port`,
for i below N) and a verdict `goto pick-N`; the chain `pick-N` DNATs through that map with
`numgen random mod N` as the last part of the key, which gives each endpoint 1/N of the connections.
There is one pick chain per N up to PICKS, written with the table (see PICKS). A service port with
ClientIP affinity, or more endpoints than that, has a chain of its own, where the i-th of N endpoints is
taken when `numgen random mod (N - i)` is 0, the last one otherwise (kube-proxy's iptables mode).

A Service's share of the ruleset is a `ServiceRules`, reused from the previous ruleset when the registry
hands back an equal Service and equal endpoints (unchanged on reload), so a reload that changes one
Service costs one Service's elements, here and in the transaction.
"""

from __future__ import annotations

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
    "service-endpoints": (
        "map service-endpoints { typeof ip daddr . meta l4proto . th dport . numgen random mod 1"
        " : ip daddr . th dport; }"
    ),
    "service-endpoints6": (
        "map service-endpoints6 { typeof ip6 daddr . meta l4proto . th dport . numgen random mod 1"
        " : ip6 daddr . th dport; }"
    ),
    "nodeport-endpoints": (
        "map nodeport-endpoints { typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }"
    ),
    "nodeport-endpoints6": (
        "map nodeport-endpoints6 { typeof meta l4proto . th dport . numgen random mod 1 : ip6 daddr . th dport; }"
    ),
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

# Endpoint choice: a service port of N endpoints (N up to PICKS) is sent to the pick chain of N, which draws a
# number below N at random per connection and DNATs to the endpoint the endpoints map holds for the
# connection's destination (address, protocol and port; for node ports protocol and port) and that number.
# The chains are written with the table, for every N: nft 1.0.6 can't add a rule that looks up one of
# these maps once the map is in the kernel ("conflicting protocols specified"), only in the transaction
# that declares the map. A service port with more endpoints, or with ClientIP affinity, has a chain of its own.
PICKS = 32
PICK_KINDS = ("", "external-", "nodeport-")  # to a cluster IP; to an external address, to a node port


def _pick_chains() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for f, ip in (("", "ip"), ("6", "ip6")):
        for n in range(1, PICKS + 1):
            dnat = f"meta l4proto {{ tcp, udp, sctp }} dnat {ip} to"
            draw = f"numgen random mod {n}"
            out[f"pick{f}-{n}"] = (f"{dnat} {ip} daddr . meta l4proto . th dport . {draw} map @service-endpoints{f}",)
            out[f"external-pick{f}-{n}"] = ("jump mark-for-masquerade", f"goto pick{f}-{n}")
            out[f"nodeport-pick{f}-{n}"] = (
                "jump mark-for-masquerade",
                f"{dnat} meta l4proto . th dport . {draw} map @nodeport-endpoints{f}",
            )
    return out


PICK_CHAINS = _pick_chains()


@dataclass(frozen=True, slots=True)
class Node:
    """What the ruleset needs of the machine it runs on."""

    node_ips: tuple[str, ...] = ()  # NodePorts are served on these addresses
    dns: tuple[str, int] | None = None  # kube-dns's cluster IP, port 53, leads here (clusterdns itself)
    local_networks: tuple[str, ...] = ()  # clients here would get an endpoint's reply directly


@dataclass(frozen=True, slots=True)
class ServiceRules:
    """One Service's share of the ruleset: its chains, map and set elements, affinity sets, addresses."""

    chains: Mapping[str, tuple[str, ...]]  # its own chains (ClientIP affinity, or more than PICKS endpoints)
    elements: Mapping[str, Mapping[str, str]]  # map or set -> key -> element as written: "key : value", "key"
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

    def node_elements(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for ip in self.node.node_ips:
            out.setdefault("node-ips6" if ":" in ip else "node-ips", {})[ip] = ip
        for net in self.node.local_networks:
            out.setdefault("local-networks6" if ":" in net else "local-networks", {})[net] = net
        return out


def rules(
    registry: Registry, node: Node, previous: Ruleset | None = None, keys: Iterable[tuple[str, str]] | None = None
) -> Ruleset:
    """The ruleset that makes every Service of `registry` connect (or those of `keys`: a share of the
    Services, for a load in stages), reusing `previous` where it can."""
    before = previous.services if previous is not None and previous.node == node else {}
    out: dict[tuple[str, str], ServiceRules] = {}
    for key in registry.services if keys is None else keys:
        svc = registry.services[key]
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


@dataclass(frozen=True, slots=True)
class _Family:
    """The names service_rules writes for one IP family: its maps and sets, and its pick chains' verdicts."""

    f: str  # "" or "6", as in the names
    service_ips: str
    cluster_ips: str
    no_endpoints: str
    endpoint_ips: str
    endpoints: str
    nodeport_endpoints: str
    nodeports: str
    picks: tuple[tuple[str, ...], ...]  # [n]: the verdicts to the pick chains of n, by PICK_KINDS


_FAMILIES = {
    f: _Family(
        f,
        f"service-ips{f}",
        f"cluster-ips{f}",
        f"no-endpoint-services{f}",
        f"endpoint-ips{f}",
        f"service-endpoints{f}",
        f"nodeport-endpoints{f}",
        f"service-nodeports{f}",
        tuple(tuple(f"goto {kind}pick{f}-{n}" for kind in PICK_KINDS) for n in range(PICKS + 1)),
    )
    for f in ("", "6")
}


def service_rules(svc: Service, endpoints: Sequence[Endpoint], node: Node) -> ServiceRules:
    """The map elements (and where needed chains) of one Service: per service port and IP family."""
    chains: dict[str, tuple[str, ...]] = {}
    elements: dict[str, dict[str, str]] = {}
    sets: dict[str, str] = {}
    addresses: list[str] = []
    ingress = [a for a in svc.load_balancer_ingress if is_ip(a)] if svc.load_balancer_ingress else []
    for cluster_ip in svc.cluster_ips:
        v6 = ":" in cluster_ip
        names = _FAMILIES["6" if v6 else ""]
        f = names.f
        if svc.external_ips or ingress:
            family = [a for a in (cluster_ip, *svc.external_ips, *ingress) if (":" in a) == v6]
        else:
            family = [cluster_ip]
        external = family[1:]
        addresses.extend(family)
        # the Service's elements of each map, as written: "key : value", or "key" in a set
        ips = elements.setdefault(names.service_ips, {})
        elements.setdefault(names.cluster_ips, {})[cluster_ip] = cluster_ip
        for port in svc.ports:
            targets = _targets(svc, port, endpoints, node, v6)
            proto = port.protocol.lower()
            service_port = f"{proto} . {port.port}"
            node_port = f"{proto} . {port.node_port}" if port.node_port else ""
            if not targets:
                rejects = elements.setdefault(names.no_endpoints, {})
                for address in family:
                    key = f"{address} . {service_port}"
                    rejects[key] = f"{key} : {REJECT}"
                if node_port:
                    elements.setdefault("no-endpoint-nodeports", {})[node_port] = f"{node_port} : {REJECT}"
                continue
            endpoint_ips = elements.setdefault(names.endpoint_ips, {})
            for ip, _ in targets:
                endpoint_ips[ip] = ip
            n = len(targets)
            if svc.session_affinity == "ClientIP" or n > PICKS:
                suffix = f"{f}-{svc.namespace}/{svc.name}/{proto}/{port.name or port.port}"
                service_chain = f"service{suffix}"
                chains[service_chain] = _service_chain(port, targets, svc, v6, sets, suffix)
                to_service = to_external = f"goto {service_chain}"
                if external or node_port:
                    chains[f"external{suffix}"] = ("jump mark-for-masquerade", to_service)
                    to_external = f"goto external{suffix}"
                to_node_port = to_external
            else:
                values = [f"{ip} . {target}" for ip, target in targets]
                picks = elements.setdefault(names.endpoints, {})
                for address in family:
                    start = f"{address} . {service_port} . "
                    for k, value in enumerate(values):
                        key = f"{start}{k}"
                        picks[key] = f"{key} : {value}"
                to_service, to_external, to_node_port = names.picks[n]
                if node_port:
                    picks = elements.setdefault(names.nodeport_endpoints, {})
                    for k, value in enumerate(values):
                        key = f"{node_port} . {k}"
                        picks[key] = f"{key} : {value}"
            key = f"{cluster_ip} . {service_port}"
            ips[key] = f"{key} : {to_service}"
            for address in external:
                key = f"{address} . {service_port}"
                ips[key] = f"{key} : {to_external}"
            if node_port:
                elements.setdefault(names.nodeports, {})[node_port] = f"{node_port} : {to_node_port}"
    if not all(elements.values()):
        elements = {c: items for c, items in elements.items() if items}
    return ServiceRules(chains, elements, sets, tuple(dict.fromkeys(addresses)), (svc, endpoints))


def _targets(
    svc: Service, port: ServicePort, endpoints: Sequence[Endpoint], node: Node, v6: bool
) -> list[tuple[str, int]]:
    """The (address, port) pairs a service port forwards to: usable endpoints of its family whose port of
    the same name and protocol is known (named targetPorts were resolved per endpoint by the registry)."""
    if svc.key == KUBE_DNS and port.port == 53 and port.protocol in ("UDP", "TCP") and node.dns is not None:
        return [node.dns] if (":" in node.dns[0]) == v6 else []  # clusterdns is the cluster's DNS
    out: set[tuple[str, int]] = set()
    name, protocol, any_ready = port.name, port.protocol, svc.publish_not_ready_addresses
    for ep in endpoints:
        if (":" in ep.ip) != v6 or not (ep.ready or any_ready):
            continue
        for p in ep.ports:
            if p.name == name and p.protocol == protocol:
                out.add((ep.ip, p.port))
    return sorted(out)  # any fixed order: the same endpoints keep their places in the endpoints map


def _service_chain(
    port: ServicePort, targets: list[tuple[str, int]], svc: Service, v6: bool, sets: dict[str, str], suffix: str
) -> tuple[str, ...]:
    """The chain of a service port of its own. With ClientIP affinity, a client found in an endpoint's set
    (one dynamic set per endpoint, entries kept for the Service's timeout) goes to that endpoint again; any
    other is sent to a random endpoint (and added to its set). The i-th of N endpoints is taken when
    `numgen random mod (N - i)` is 0, the last one otherwise, which gives each endpoint 1/N of the clients."""
    family, addr_type = ("ip6", "ipv6_addr") if v6 else ("ip", "ipv4_addr")
    proto = port.protocol.lower()
    sticky: list[str] = []
    draws: list[str] = []
    for ip, target in targets:
        dnat = f"meta l4proto {proto} dnat {family} to {f'[{ip}]' if v6 else ip}:{target}"
        if svc.session_affinity == "ClientIP":
            name = f"affinity{suffix}__{ip.replace(':', '.')}/{target}"
            timeout = svc.session_affinity_timeout
            sets[name] = f"set {name} {{ type {addr_type}; flags dynamic,timeout; timeout {timeout}s; }}"
            dnat = f"update @{name} {{ {family} saddr }} {dnat}"
            sticky.append(f"{family} saddr @{name} {dnat}")
        draws.append(dnat)
    n = len(draws)
    return (*sticky, *(f"numgen random mod {n - i} == 0 {rule}" for i, rule in enumerate(draws[:-1])), draws[-1])


# --- the transaction ---


def script(old: Ruleset | None, new: Ruleset) -> str:
    """The `nft -f` text that turns the table as `old` left it into `new`, as one transaction.

    Without `old` (at start, or when the machine's part changed) the table is replaced whole: created if
    missing, deleted and written anew, in the same transaction. Otherwise only what differs is written:
    new and changed chains, element changes, and chains and sets no longer used. Empty when nothing differs.
    """
    if old is None or old.node != new.node:
        return _whole(new)
    olds, news = old.services, new.services
    changed_keys = [k for k, v in news.items() if olds.get(k) is not v]
    changed_keys += olds.keys() - news.keys()
    before, after = _Share(), _Share()
    for key in changed_keys:
        before.add(olds.get(key))
        after.add(news.get(key))
    out: list[str] = []
    changed = [c for c in after.chains if c in before.chains and before.chains[c] != after.chains[c]]
    added = [c for c in after.chains if c not in before.chains]
    out.extend(f"flush chain {TABLE} {c}" for c in changed)
    new_sets = [s for s in after.sets if s not in before.sets]
    if changed or added or new_sets:
        out.append(f"table {TABLE} {{")
        out.extend(f"\t{after.sets[s]}" for s in new_sets)
        for c in [*added, *changed]:
            out.extend(_chain(c, after.chains[c]))
        out.append("}")
    gone: dict[str, list[str]] = {}
    came: dict[str, list[str]] = {}
    for collection in sorted(before.elements.keys() | after.elements.keys()):
        was, now = before.elements.get(collection, {}), after.elements.get(collection, {})
        gone[collection] = [k for k, item in was.items() if now.get(k) != item]
        came[collection] = [item for k, item in now.items() if was.get(k) != item]
        if collection in SHARED and gone[collection]:  # an endpoint IP goes only when no Service has it any more
            still = {k for r in news.values() for k in r.elements.get(collection, ())}
            gone[collection] = [k for k in gone[collection] if k not in still]
    out.extend(_elements("delete", gone))
    out.extend(_elements("add", came))
    removed = [c for c in before.chains if c not in after.chains]
    out.extend(f"flush chain {TABLE} {c}" for c in removed)  # first, so that none still jumps to another
    out.extend(f"delete chain {TABLE} {c}" for c in removed)
    out.extend(f"delete set {TABLE} {s}" for s in before.sets if s not in after.sets)
    return "\n".join(out) + "\n" if out else ""


@dataclass
class _Share:
    """The chains, elements and sets of some Services, merged."""

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    elements: dict[str, dict[str, str]] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)

    def add(self, rules_: ServiceRules | None) -> None:
        if rules_ is None:
            return
        self.chains.update(rules_.chains)
        self.sets.update(rules_.sets)
        for collection, items in rules_.elements.items():
            merged = self.elements.get(collection)
            if merged is None:
                merged = self.elements[collection] = {}
            merged.update(items)


def _whole(new: Ruleset) -> str:
    """The whole table as one transaction: the stages of a first load (see `table_stage`), in one text."""
    return table_stage(new.node) + hooks_stage() + services_stage(new.services.values())


# A first load can also be written in stages, as transactions run one after the other or side by side:
# nft spends about 15-20 us reading each element, so a table of 10,000 Services (90,000 elements) takes it
# about a second, and several nft processes read shares of the Services at once in that time divided by
# the cores. The table comes first (`table_stage`: its maps and sets, every chain but the hooked ones, the
# node's elements), then the Services' shares (`services_stage`), and last the hooked chains
# (`hooks_stage`). Until that last transaction no packet passes through the table, so connections see it
# whole or not at all, as with one transaction.
_HOOKED = {name: lines for name, lines in BASE_CHAINS.items() if lines[0].startswith("type ")}


def table_stage(node: Node) -> str:
    """The table, replacing any before it, without its hooked chains and Services: the first stage."""
    out = [f"add table {TABLE}", f"delete table {TABLE}", f"table {TABLE} {{"]
    out.extend(f"\t{decl}" for decl in COLLECTIONS.values())
    for name, lines in (*BASE_CHAINS.items(), *PICK_CHAINS.items()):
        if name not in _HOOKED:
            out.extend(_chain(name, lines))
    out.append("}")
    out.extend(_elements("add", {c: list(els.values()) for c, els in Ruleset(node).node_elements().items()}))
    return _text(out)


def hooks_stage() -> str:
    """The hooked chains, which turn the table on: the last stage."""
    return _text([f"table {TABLE} {{", *(line for n, lines in _HOOKED.items() for line in _chain(n, lines)), "}"])


def services_stage(services: Iterable[ServiceRules]) -> str:
    """Some Services' chains, affinity sets and elements: a stage after the table's, before the hooks'.
    Elements are gathered in lists, not merged by key as `_Share` does for a diff: only endpoint IPs can
    repeat, and at 10,000 Services merging cost 35 ms of a first load."""
    declared: list[str] = []
    chains: dict[str, tuple[str, ...]] = {}
    items: dict[str, list[str]] = {}
    for rules_ in services:
        if rules_.chains:
            chains.update(rules_.chains)
            declared.extend(f"\t{decl}" for decl in rules_.sets.values())
        for collection, elements in rules_.elements.items():
            listed = items.get(collection)
            if listed is None:
                listed = items[collection] = []
            listed.extend(elements.values())
    out = []
    if chains:  # the affinity sets before the chains that use them
        out = [f"table {TABLE} {{", *declared, *(line for n, lines in chains.items() for line in _chain(n, lines)), "}"]
    for collection in SHARED:  # an endpoint of several Services, once (one another stage added is no error)
        if collection in items:
            items[collection] = list(dict.fromkeys(items[collection]))
    out.extend(_elements("add", dict(sorted(items.items()))))
    return _text(out)


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


def _chain(name: str, lines: Iterable[str]) -> list[str]:
    return [f"\tchain {name} {{", *(f"\t\t{line}" for line in lines), "\t}"]


def _elements(verb: str, elements: Mapping[str, list[str]]) -> list[str]:
    """One `add element` / `delete element` statement per map or set that has any."""
    return [f"{verb} element {TABLE} {c} {{ {', '.join(items)} }}" for c, items in elements.items() if items]
