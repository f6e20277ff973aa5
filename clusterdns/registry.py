"""One immutable snapshot of the cluster: objects, allocated addresses, derived endpoints, indexes.

`build` turns parsed manifest files into a Registry: it drops duplicates (the first one wins), adds the
built-in services, expands workloads into Pods, allocates cluster IPs, node ports and pod IPs through the
store, and derives every Service's endpoints as Kubernetes' endpoints controller would. Apart from the
store it is given, it does no I/O.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from clusterdns.allocate import OWNERS, Claim, Entry, IPSpace, PortSpace, Refusal, Store, SuffixSpace
from clusterdns.endpoints import derive_endpoints, note, sort_slices
from clusterdns.labels import looks_like_ipv4
from clusterdns.manifests import parse_cidr
from clusterdns.model import (
    EXTERNAL_NAME,
    LOAD_BALANCER,
    ConfigMap,
    Endpoint,
    EndpointSlice,
    EndpointsObject,
    Namespace,
    Object,
    Pod,
    Secret,
    Service,
    ServiceCIDR,
    ServicePort,
    Source,
    Workload,
    display_name,
    families_of,
    kind_of,
    shared_families,
)
from clusterdns.problems import FileResult, ManifestError, Path, Problem
from clusterdns.workloads import replica_owners, workload_pods

ALWAYS_NAMESPACES = ("default", "kube-public", "kube-system")
AGED_KINDS = ("Namespace", "Endpoints")  # and every Service; Pods: the time of their IP
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")

# Locates a field of an object declared at Source: returns its line, or 0. Given by the I/O layer.
Locator = Callable[[Source, Path], int]


class ConfigError(ValueError):
    """A command-line setting (CIDR, domain) is unusable."""


@dataclass(frozen=True, slots=True)
class Config:
    domain: str = "cluster.local"
    service_cidrs: tuple[str, ...] = ("10.0.0.0/16",)
    pod_cidrs: tuple[str, ...] = ("10.244.0.0/16",)
    loadbalancer_cidrs: tuple[str, ...] = ()  # where LoadBalancer Services without status get an address

    @staticmethod
    def from_flags(domain: str, service_cidr: str, pod_cidr: str, loadbalancer_cidr: str = "") -> Config:
        """Validate the global flags; ConfigError says which one is wrong and why."""
        domain = domain.strip().rstrip(".").lower()
        if not domain or any(not part for part in domain.split(".")):
            raise ConfigError(f"--domain: must be a DNS name such as cluster.local, got {domain!r}")

        def cidrs(flag: str, text: str) -> tuple[str, ...]:
            out: list[str] = []
            for part in text.split(","):
                try:
                    out.append(parse_cidr(part.strip(), ()))
                except ManifestError as exc:
                    raise ConfigError(f"{flag}: {exc.message}") from None
            return tuple(out)

        pods = cidrs("--pod-cidr", pod_cidr)
        if len(pods) > 2 or len({ipaddress.ip_network(c).version for c in pods}) != len(pods):
            raise ConfigError(f"--pod-cidr: give one CIDR, or one IPv4 and one IPv6, got {pod_cidr!r}")
        balancers = cidrs("--loadbalancer-cidr", loadbalancer_cidr) if loadbalancer_cidr.strip() else ()
        if len({ipaddress.ip_network(c).version for c in balancers}) != len(balancers):
            raise ConfigError(
                f"--loadbalancer-cidr: give one CIDR, or one IPv4 and one IPv6, got {loadbalancer_cidr!r}"
            )
        return Config(domain, cidrs("--service-cidr", service_cidr), pods, balancers)


@dataclass(frozen=True, slots=True)
class Registry:
    """Everything clusterdns serves, as of one load. Never mutated; a reload builds a new one."""

    config: Config
    namespaces: Mapping[str, Namespace]
    services: Mapping[tuple[str, str], Service]
    endpoints: Mapping[tuple[str, str], tuple[Endpoint, ...]]  # per service, ready and not ready
    pods: Mapping[tuple[str, str], Pod]
    workloads: Mapping[tuple[str, str, str], Workload]  # (kind, namespace, name)
    config_maps: Mapping[tuple[str, str], ConfigMap]
    secrets: Mapping[tuple[str, str], Secret]
    service_cidrs: tuple[str, ...]  # flags, then ServiceCIDR objects
    problems: tuple[Problem, ...] = ()
    notes: tuple[Problem, ...] = ()
    seen: Mapping[str, Entry] = field(default_factory=dict)  # "Kind/ns/name" -> [_, first seen]
    pod_ips_seen: Mapping[str, Entry] = field(default_factory=dict)  # "ns/name IPv4" -> [IP, allocated]
    loaded: float = 0.0  # when this snapshot was built
    # Endpoints of EndpointSlices whose Service does not exist, by (namespace, service name): their ready
    # addresses still have PTR records (CoreDNS indexes slices by their service-name label).
    orphan_endpoints: Mapping[tuple[str, str], tuple[Endpoint, ...]] = field(default_factory=dict)
    sliced: frozenset[tuple[str, str]] = frozenset()  # Services with a selector and merged EndpointSlices

    def services_in(self, namespace: str | None) -> list[Service]:
        """Services of one namespace (all when None), sorted by namespace and name."""
        return [s for k, s in sorted(self.services.items()) if namespace is None or k[0] == namespace]

    def pods_in(self, namespace: str | None) -> list[Pod]:
        return [p for k, p in sorted(self.pods.items()) if namespace is None or k[0] == namespace]

    def age_of(self, kind: str, namespace: str, name: str) -> float | None:
        """When an object was first seen (a Pod: when it got its IP), for kubectl's AGE column."""
        if kind == "Pod":
            if (namespace, name) not in self.pods:
                return None
            seen = self.pod_ips_seen
            entry = seen.get(f"{namespace}/{name} IPv4") or seen.get(f"{namespace}/{name} IPv6")
            return float(entry[1]) if entry else self.loaded
        entry = self.seen.get(f"{kind}/{namespace}/{name}")
        return float(entry[1]) if entry else None

    def counts(self) -> dict[str, int]:
        """Objects per kind, for metrics and summaries."""
        return {
            "Namespace": len(self.namespaces),
            "Service": len(self.services),
            "Pod": len(self.pods),
            "Endpoint": sum(len(e) for e in self.endpoints.values()),
            "Workload": len(self.workloads),
            "ConfigMap": len(self.config_maps),
            "Secret": len(self.secrets),
        }


def builtin_services(cidrs: Sequence[str]) -> list[Service]:
    """default/kubernetes (first address) and kube-system/kube-dns (tenth), as kubeadm sets them up."""
    net = ipaddress.ip_network(cidrs[0])
    base = int(net.network_address)
    source = Source("<built-in>", 0)
    return [
        Service(
            "default",
            "kubernetes",
            ports=(ServicePort("https", 443, "TCP", 6443),),
            cluster_ips=(str(ipaddress.ip_address(base + 1)),),
            labels={"component": "apiserver", "provider": "kubernetes"},
            source=source,
        ),
        Service(
            "kube-system",
            "kube-dns",
            ports=(
                ServicePort("dns", 53, "UDP", 53),
                ServicePort("dns-tcp", 53, "TCP", 53),
                ServicePort("metrics", 9153, "TCP", 9153),
            ),
            selector={"k8s-app": "kube-dns"},
            cluster_ips=(str(ipaddress.ip_address(base + 10)),),
            labels={"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            source=source,
        ),
    ]


class Memo:
    """What one build leaves to the next, so that a reload redoes little for what did not change.

    A file that did not change keeps its parsed objects (Zones caches them), so entries are reused only
    for the very parsed object they were made from: a Service's or a Pod's claims, and the final Service
    or Pod with its allocated values, reused when the allocation hands it the same values again; a
    workload's Pods, reused when its Pods get the same names. The last registry lends its endpoints to
    unchanged Services in namespaces whose Pods are all unchanged. Allocation spaces are kept too, with
    what they know of which values are valid. One Memo serves one sequence of builds.
    """

    def __init__(self) -> None:
        self.cidrs: tuple[str, ...] = ()
        self.spaces: dict[str, IPSpace] = {}
        self.node_ports = PortSpace()
        self.services: dict[tuple[str, str], _ServiceClaims] = {}  # by (namespace, name)
        self.workloads: dict[int, tuple[Workload, list[str | Refusal | None], list[Pod]]] = {}
        self.pods: dict[int, _PodClaims] = {}
        self.registry: Registry | None = None  # the last build's

    def start(self, service_cidrs: Sequence[str]) -> None:
        """Forget everything when the service CIDRs (flags and ServiceCIDR objects) changed."""
        if tuple(service_cidrs) != self.cidrs:
            self.cidrs = tuple(service_cidrs)
            self.spaces.clear()
            self.services.clear()
            self.workloads.clear()
            self.pods.clear()
            self.registry = None

    def space(self, cidr: str, valid: Sequence[str], what: str = "IP") -> IPSpace:
        key = f"{cidr} {','.join(valid)} {what}"
        space = self.spaces.get(key)
        if space is None:
            space = self.spaces[key] = IPSpace(cidr, valid, what)
        return space


def _seen_owner(svc: Service) -> str:
    """A Service's owner in the pool of first-seen times."""
    return f"Service/{svc.namespace}/{svc.name}"


class _ServiceClaims:
    """One parsed Service's claims and, once allocated, the Service it became (the parsed one itself when
    it was given what it states). Kept for every Service between loads, so kept small: the primary
    cluster IP's claim on its own, and most Services' other claims are the one empty tuple.

    `plain`: the Service claims only the one cluster IP it states, and states the family of that IP (most
    Services). Such a claim gets its wish or is refused, so when the pool refuses nothing the Service is
    the parsed one as it stands, and `build` does not visit it again."""

    __slots__ = ("final", "ip_claim", "lb_claims", "more_ip_claims", "parsed", "plain", "port_claims", "seen")

    def __init__(
        self,
        parsed: Service,
        ip_claim: Claim,  # a Service has one cluster IP per family, at least one
        more_ip_claims: tuple[Claim, ...],  # a dual-stack Service's second
        port_claims: tuple[Claim, ...],
        lb_claims: tuple[Claim, ...],
        plain: bool,
    ) -> None:
        self.parsed = parsed
        self.ip_claim = ip_claim
        self.more_ip_claims = more_ip_claims
        self.port_claims = port_claims
        self.lb_claims = lb_claims
        self.plain = plain
        self.seen = _seen_owner(parsed)
        self.final: Service | None = None

    @property
    def ip_claims(self) -> tuple[Claim, ...]:
        return (self.ip_claim, *self.more_ip_claims)


class _PodClaims:
    """One Pod's pod-IP claims and, once allocated, the Pod it became."""

    __slots__ = ("claims", "final", "pod")

    def __init__(self, pod: Pod, claims: tuple[Claim, ...]) -> None:
        self.pod = pod  # kept alive, so that its id() is not reused
        self.claims = claims
        self.final: Pod | None = None


class _Builder:
    """The state of one build; `build` below is its only user."""

    def __init__(self, config: Config, store: Store, now: float, locate: Locator | None, memo: Memo) -> None:
        self.config = config
        self.memo = memo
        self.store = store
        self.now = now
        self.locate = locate
        self.problems: list[Problem] = []

    def problem(self, obj: Object, path: Path, message: str) -> None:
        src = obj.source or Source("<unknown>", 0)
        line = (self.locate(src, path) if self.locate and path else 0) or src.line
        field_text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        self.problems.append(Problem(src.path, line, display_name(obj), field_text, message))


def build(
    files: Iterable[FileResult],
    config: Config,
    store: Store,
    now: float,
    locate: Locator | None = None,
    memo: Memo | None = None,
) -> Registry:
    """Build a registry from parsed files, allocating through `store` at time `now`. Given the `memo` of
    the previous build, Services whose parsed object and allocated values are unchanged are reused."""
    memo = memo or Memo()
    b = _Builder(config, store, now, locate, memo)
    notes: list[Problem] = []
    objects: dict[tuple[str, str, str], Object] = {}  # but Services
    by_kind: dict[str, list[Object]] = defaultdict(list)  # but Services
    kinds: dict[type, str] = {}  # kind_of's answers by type, one call per type (100,000s of objects)
    declared: dict[tuple[str, str], Service] = {}  # Services, the most objects: one key and one dict each
    # First-seen claims, for kubectl's AGE column, of the kinds `get` lists other than Services (below),
    # in declaration order (the order of the pool's stored text); Pods use their IP's time.
    seen_claims: list[Claim] = []
    for result in files:
        b.problems.extend(result.problems)
        notes.extend(result.notes)
        for obj in result.objects:
            if type(obj) is Service:
                first: Object = declared.setdefault((obj.namespace, obj.name), obj)
                if first is not obj:
                    b.problem(obj, (), f"duplicate object; the one at {first.source} is used")
                continue
            kind = kinds.get(type(obj))
            if kind is None:
                kind = kind_of(obj)
                if not isinstance(obj, Workload):  # a workload's kind is its own, not its type's
                    kinds[type(obj)] = kind
            namespace = getattr(obj, "namespace", "")
            first = objects.setdefault((kind, namespace, obj.name), obj)
            if first is obj:
                by_kind[kind].append(obj)
                if kind in AGED_KINDS:
                    seen_claims.append((f"{kind}/{namespace}/{obj.name}", OWNERS, None))
            else:
                b.problem(obj, (), f"duplicate object; the one at {first.source} is used")

    # Service CIDRs: the flags, then ServiceCIDR objects; the first of each family allocates.
    service_cidrs = list(config.service_cidrs)
    for obj in by_kind["ServiceCIDR"]:
        assert isinstance(obj, ServiceCIDR)
        service_cidrs.extend(c for c in obj.cidrs if c not in service_cidrs)
    allocating = _first_per_family(service_cidrs)

    # Services by (namespace, name), `declared` above: each Service's key tuple is made once, and every index
    # of it shares it.
    services = {key: s for s in builtin_services(service_cidrs) if (key := s.key) not in declared}
    services.update(declared)

    pods = [p for p in by_kind["Pod"] if isinstance(p, Pod)]
    workloads = [w for k in ("Deployment", "ReplicaSet", "StatefulSet") for w in by_kind[k] if isinstance(w, Workload)]

    # --- allocation: one transaction for every pool ---
    memo.start(service_cidrs)
    ip_spaces = {family: memo.space(cidr, service_cidrs) for family, cidr in allocating.items()}
    lb_spaces = {
        f"IPv{ipaddress.ip_network(c).version}": memo.space(c, (c,), "load-balancer IP")
        for c in config.loadbalancer_cidrs
    }
    ip_claims: list[Claim] = []
    port_claims: list[Claim] = []
    lb_claims: list[Claim] = []
    claims: dict[tuple[str, str], _ServiceClaims] = {}
    irregular: list[tuple[tuple[str, str], Service, _ServiceClaims | None]] = []  # those not `plain`
    # Every Service's first-seen claim, built-in ones too, with the memo's string where it has one (the
    # string the pool keeps, which a reload finds at once); after the other kinds' in the pool.
    service_seen: list[Claim] = []
    remembered, node_ports = memo.services, memo.node_ports
    for key, svc in services.items():
        mine = None
        if svc.type != EXTERNAL_NAME and not svc.headless:
            mine = remembered.get(key) if remembered else None
            if mine is None or mine.parsed is not svc:
                mine = _claims_of(b, svc, allocating, ip_spaces, node_ports, lb_spaces)
        if mine is None:  # it claims nothing: ExternalName, headless, or of families that are not served
            irregular.append((key, svc, None))
            service_seen.append((_seen_owner(svc), OWNERS, None))
            continue
        service_seen.append((mine.seen, OWNERS, None))
        claims[key] = mine
        ip_claims.append(mine.ip_claim)
        if mine.plain:  # most Services: no other claim
            continue
        irregular.append((key, svc, mine))
        ip_claims.extend(mine.more_ip_claims)
        port_claims.extend(mine.port_claims)
        lb_claims.extend(mine.lb_claims)
    memo.services = claims

    name_claims: list[Claim] = []
    for w in workloads:
        if w.kind == "StatefulSet":
            continue
        space = SuffixSpace(w.pod_prefix)
        name_claims.extend((owner, space, None) for owner in replica_owners(w))

    seen_claims += service_seen

    pools = {"service-ip": ip_claims, "node-port": port_claims, "pod-name": name_claims, "object": seen_claims}
    if lb_spaces:  # without --loadbalancer-cidr the pool is left as it is, not emptied
        pools["load-balancer-ip"] = lb_claims
    results, entries = store.allocate(pools, now)
    pod_names = results["pod-name"]

    # Workload pods, now that their names are known, then every Pod's IPs: a second pool.
    generated: dict[int, tuple[Workload, list[str | Refusal | None], list[Pod]]] = {}
    for w in workloads:
        got = [pod_names.get(owner) for owner in replica_owners(w)]
        before = memo.workloads.get(id(w))
        runs = before[2] if before is not None and before[0] is w and before[1] == got else workload_pods(w, got)
        generated[id(w)] = (w, got, runs)
        pods.extend(runs)
    memo.workloads = generated
    final_pods, pod_entries = _allocate_pod_ips(b, pods)
    for _w, _got, runs in generated.values():  # the memo keeps the Pods with their IPs, not a second copy
        runs[:] = [f if (f := final_pods.get((p.namespace, p.name))) and f.owner == p.owner else p for p in runs]

    got_ips = results["service-ip"]
    if len(got_ips) == len(ip_claims) and Refusal not in map(type, got_ips.values()):  # (one pass, in C)
        visit: Iterable[tuple[tuple[str, str], Service, _ServiceClaims | None]] = irregular  # plain ones: as stated
    else:
        visit = ((key, svc, claims.get(key)) for key, svc in services.items())
    final_services = _apply_service_allocations(
        b, services, visit, got_ips, results["node-port"], results.get("load-balancer-ip", {})
    )

    namespaces: dict[str, Namespace] = {n: Namespace(n) for n in ALWAYS_NAMESPACES}
    for obj in by_kind["Namespace"]:
        assert isinstance(obj, Namespace)
        namespaces[obj.name] = obj
    for ns in {ns for _, ns, _ in objects} | {ns for ns, _ in declared}:
        if ns and ns not in namespaces:
            namespaces[ns] = Namespace(ns)

    slices = [e for e in by_kind["EndpointSlice"] if isinstance(e, EndpointSlice)]
    sliced, orphans = sort_slices(final_services, slices, notes)
    previous, changed = _unchanged_since(memo.registry, final_pods)
    endpoints = derive_endpoints(
        final_services,
        final_pods.values(),
        [e for e in by_kind["Endpoints"] if isinstance(e, EndpointsObject)],
        slices,
        previous,
        changed,
        sliced | (previous.sliced if previous is not None else frozenset()),
    )
    for svc in final_services.values():  # CoreDNS serves no CNAME to an IP: it answers NXDOMAIN
        if svc.type == EXTERNAL_NAME and looks_like_ipv4(svc.external_name):
            notes.append(
                note(svc, "spec.externalName", f"{svc.external_name} is an IP address, not a name: not served")
            )

    memo.registry = Registry(
        config=config,
        namespaces=dict(sorted(namespaces.items())),
        services=final_services,
        endpoints=endpoints,
        pods=final_pods,
        workloads={(w.kind, w.namespace, w.name): w for w in workloads},
        config_maps={c.key: c for c in by_kind["ConfigMap"] if isinstance(c, ConfigMap)},
        secrets={s.key: s for s in by_kind["Secret"] if isinstance(s, Secret)},
        service_cidrs=tuple(service_cidrs),
        problems=tuple(b.problems),
        notes=tuple(notes),
        seen=entries["object"],
        orphan_endpoints=orphans,
        sliced=frozenset(sliced),
        pod_ips_seen=pod_entries,
        loaded=now,
    )
    return memo.registry


def _unchanged_since(
    previous: Registry | None, pods: Mapping[tuple[str, str], Pod]
) -> tuple[Registry | None, set[str]]:
    """The previous registry and the namespaces where a Pod came, went or changed since it was built."""
    if previous is None:
        return None, set()
    before = previous.pods
    changed = {key[0] for key, pod in pods.items() if before.get(key) is not pod}
    changed.update(ns for ns, name in before.keys() - pods.keys())
    return previous, changed


def _allocate_pod_ips(b: _Builder, pods: list[Pod]) -> tuple[dict[tuple[str, str], Pod], Mapping[str, Entry]]:
    """Give every Pod an IP of each pod-network family, keeping the IPs a manifest states.

    A Pod that states its IPs gets no other family; a hostNetwork Pod's stated IPs are the node's and
    are shared, not claimed. Duplicate Pod names: the first one wins.
    """
    nets = {ipaddress.ip_network(c).version: c for c in b.config.pod_cidrs}
    versions = sorted(nets)
    # A Pod manifest's own status.podIP is used as given, inside the pod CIDR or not (a container on
    # another network, a hostNetwork Pod); it must only be unique. Other Pods get one from the CIDR.
    anywhere = ["0.0.0.0/0", "::/0"]
    spaces = {v: b.memo.space(c, anywhere) for v, c in nets.items()}
    families = [(v, f" IPv{v}", spaces[v]) for v in versions]
    claims: list[Claim] = []
    kept: dict[tuple[str, str], Pod] = {}
    owners: list[tuple[tuple[str, str], _PodClaims]] = []  # each Pod that takes pod-network IPs, with its claims
    remembered, memo = b.memo.pods, {}
    for pod in pods:
        key = (pod.namespace, pod.name)
        if key in kept:
            b.problem(pod, (), f"duplicate Pod name; the one at {kept[key].source} is used")
            continue
        kept[key] = pod
        stated = () if pod.owner else pod.ips  # a generated Pod may hold the IPs of an earlier build
        if stated and pod.spec.host_network:
            continue
        mine = remembered.get(id(pod))
        if mine is None or mine.pod is not pod:
            base = f"{pod.namespace}/{pod.name}"
            own: list[Claim] = []
            for version, suffix, space in families:
                wish = None
                if stated:
                    wish = next((ip for ip in stated if _version(ip) == version), None)
                    if wish is None:
                        continue
                own.append((base + suffix, space, wish))
            mine = _PodClaims(pod, tuple(own))
        memo[id(pod)] = mine
        claims.extend(mine.claims)
        owners.append((key, mine))
    b.memo.pods = memo
    results, entries = b.store.allocate({"pod-ip": claims}, b.now)
    got_ips = results["pod-ip"]
    out = {key: pod for key, pod in kept.items() if pod.spec.host_network and pod.ips and not pod.owner}
    for key, mine in owners:
        pod = mine.pod
        if len(mine.claims) == 1 and isinstance(got := got_ips[mine.claims[0][0]], str):  # most Pods
            given: tuple[str, ...] = (got,)
        else:
            ips: list[str] = []
            refused = False
            for owner, _, _ in mine.claims:
                got = got_ips[owner]
                if isinstance(got, Refusal):
                    b.problem(pod, ("status", "podIP"), got.message)
                    refused = True
                else:
                    ips.append(got)
            if refused:
                continue
            if pod.ips and not pod.owner:  # keep the declared order
                ips = [ip for ip in pod.ips if ip in ips] or ips
            given = tuple(ips)
        if pod.ips == given:  # as stated, or a generated Pod given the same IPs again
            final = pod
        elif mine.final is not None and mine.final.ips == given:  # as in the previous build
            final = mine.final
        else:  # a new Pod with the IPs: the parsed one may be shared with its file's cache or an older snapshot
            final = _pod_with_ips(pod, given)
        mine.final = final
        out[key] = final
    return out, entries["pod-ip"]


def _service_with(
    svc: Service,
    cluster_ips: tuple[str, ...],
    ports: tuple[ServicePort, ...],
    families: tuple[str, ...],
    ingress: tuple[str, ...],
) -> Service:
    """A Service with its allocated values; every field named, so that a new field can't shift the others."""
    return Service(
        namespace=svc.namespace,
        name=svc.name,
        type=svc.type,
        ports=ports,
        selector=svc.selector,
        headless=svc.headless,
        cluster_ips=cluster_ips,
        ip_families=families,
        ip_family_policy=svc.ip_family_policy,
        external_name=svc.external_name,
        external_ips=svc.external_ips,
        load_balancer_ingress=ingress,
        publish_not_ready_addresses=svc.publish_not_ready_addresses,
        session_affinity=svc.session_affinity,
        session_affinity_timeout=svc.session_affinity_timeout,
        labels=svc.labels,
        annotations=svc.annotations,
        source=svc.source,
    )


def _pod_with_ips(pod: Pod, ips: tuple[str, ...]) -> Pod:
    """A Pod with its allocated IPs; every field named (dataclasses.replace is several times slower, and
    this runs for every Pod)."""
    return Pod(
        namespace=pod.namespace,
        name=pod.name,
        spec=pod.spec,
        labels=pod.labels,
        annotations=pod.annotations,
        ips=ips,
        host_ip=pod.host_ip,
        ready=pod.ready,
        phase=pod.phase,
        owner=pod.owner,
        uid=pod.uid,
        source=pod.source,
    )


def _version(ip: str) -> int:
    return 6 if ":" in ip else 4


def _first_per_family(cidrs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in cidrs:
        out.setdefault(f"IPv{ipaddress.ip_network(c).version}", c)
    return out


def _service_families(b: _Builder, svc: Service, allocating: Mapping[str, str]) -> Sequence[str] | None:
    """The IP families a Service gets cluster IPs of, primary first; None (and a problem) if impossible."""
    if svc.ip_family_policy == "SingleStack":  # most Services: their one family, without lists
        stated = svc.ip_families
        if len(stated) == 1 and stated[0] in allocating:  # stated (or implied by the cluster IP) and served
            return stated
        given = stated or svc.cluster_ips
        family = next(iter(allocating)) if not given else given[0] if stated else f"IPv{_version(given[0])}"
        if family in allocating:
            return shared_families((family,))
    primary = next(iter(allocating))
    order = list(svc.ip_families) or [f"IPv{_version(ip)}" for ip in svc.cluster_ips] or [primary]
    if svc.ip_family_policy == "SingleStack":
        families = order[:1]
    else:
        families = order + [f for f in allocating if f not in order]
        families = [f for f in families if f in allocating]
        if svc.ip_family_policy == "RequireDualStack" and len(families) < 2:
            b.problem(
                svc,
                ("spec", "ipFamilyPolicy"),
                "RequireDualStack needs a service CIDR of each IP family (add one with --service-cidr)",
            )
            return None
        if not families:
            families = [primary]
    for i, family in enumerate(families):
        if family not in allocating:
            b.problem(
                svc,
                ("spec", "ipFamilies", i),
                f"{family} is not served: no {family} service CIDR is configured",
            )
            return None
    return families


def _claims_of(
    b: _Builder,
    svc: Service,
    allocating: Mapping[str, str],
    ip_spaces: Mapping[str, IPSpace],
    node_ports: PortSpace,
    lb_spaces: Mapping[str, IPSpace],
) -> _ServiceClaims | None:
    """A Service's claims: a cluster IP of each of its families, a node port per port of a NodePort or
    LoadBalancer Service, and a load-balancer IP of each of its families that --loadbalancer-cidr has for a
    LoadBalancer Service without status.loadBalancer.ingress (as a load-balancer controller would give it).
    None (and a problem) when its families can't be served."""
    wishes = svc.cluster_ips
    base = f"{svc.namespace}/{svc.name} "  # each claim's owner: this and the family (or the port)
    if svc.ip_family_policy == "SingleStack" and len(wishes) == 1 and svc.type not in NODE_PORT_TYPES:
        stated = svc.ip_families
        family = "IPv6" if ":" in wishes[0] else "IPv4"  # families_of(wishes)[0], without the call
        if len(stated) == 1 and stated[0] == family and family in ip_spaces:  # most Services: `plain`, as below
            return _ServiceClaims(svc, (base + family, ip_spaces[family], wishes[0]), (), (), (), True)
    families = _service_families(b, svc, allocating)
    if families is None:
        return None
    if len(families) == 1:  # most Services
        ip_claims: Sequence[Claim] = ((base + families[0], ip_spaces[families[0]], wishes[0] if wishes else None),)
    else:
        ip_claims = [(base + f, ip_spaces[f], wishes[i] if i < len(wishes) else None) for i, f in enumerate(families)]
    port_claims: tuple[Claim, ...] = ()
    if svc.type in NODE_PORT_TYPES:
        port_claims = tuple(
            [
                (f"{base}{p.port}/{p.protocol}", node_ports, None if p.node_port is None else str(p.node_port))
                for p in svc.ports
            ]
        )
    lb_claims: tuple[Claim, ...] = ()
    if svc.type == LOAD_BALANCER and not svc.load_balancer_ingress:
        lb_claims = tuple([(base + f, lb_spaces[f], None) for f in families if f in lb_spaces])
    plain = (
        len(ip_claims) == 1
        and len(wishes) == 1
        and not (port_claims or lb_claims)
        and svc.ip_families == families_of(wishes)
    )
    return _ServiceClaims(svc, ip_claims[0], tuple(ip_claims[1:]), port_claims, lb_claims, plain)


def _apply_service_allocations(
    b: _Builder,
    services: Mapping[tuple[str, str], Service],
    visit: Iterable[tuple[tuple[str, str], Service, _ServiceClaims | None]],
    ips: Mapping[str, str | Refusal],
    ports: Mapping[str, str | Refusal],
    balancers: Mapping[str, str | Refusal],
) -> dict[tuple[str, str], Service]:
    """`services` with the cluster IPs and node ports they were given; one refused anything is left out.

    `visit` holds, in order, the Services to look at with their claims (None for one that claims nothing);
    those left out of it stay as they are: `build` leaves out the `plain` Services when the pool refused
    nothing. A Service given what it states is the parsed one itself; one given what it was given last time
    is the Service it became then."""
    out = dict(services)  # in order; a Service replaced keeps its place
    for key, svc, mine in visit:
        final = _allocated(b, svc, mine, ips, ports, balancers)
        if final is None:
            del out[key]
        else:
            out[key] = final
    return out


def _allocated(
    b: _Builder,
    svc: Service,
    mine: _ServiceClaims | None,
    ips: Mapping[str, str | Refusal],
    ports: Mapping[str, str | Refusal],
    balancers: Mapping[str, str | Refusal],
) -> Service | None:
    """One Service with what its claims were given, or None (and problems) when it was refused any."""
    if mine is None:
        return svc if svc.type == EXTERNAL_NAME or svc.headless else None
    if mine.plain and ips[mine.ip_claim[0]] == svc.cluster_ips[0]:  # given the one IP it states: as below
        mine.final = svc
        return svc
    refused = False
    if not mine.more_ip_claims:  # most Services
        got = ips[mine.ip_claim[0]]
        cluster_ips: tuple[str, ...] = (got,) if isinstance(got, str) else ()
        wanted = 1
    else:
        cluster_ips = tuple([got for owner, _, _ in mine.ip_claims if isinstance(got := ips[owner], str)])
        wanted = 1 + len(mine.more_ip_claims)
    if len(cluster_ips) < wanted:
        for i, (owner, _, _) in enumerate(mine.ip_claims):
            if isinstance(got := ips[owner], Refusal):
                path: Path = ("spec", "clusterIPs", i) if len(svc.cluster_ips) > 1 else ("spec", "clusterIP")
                b.problem(svc, path, got.message)
        refused = True
    new_ports = svc.ports
    if mine.port_claims:
        listed = list(svc.ports)
        for i, (owner, _, _) in enumerate(mine.port_claims):
            got = ports[owner]
            if isinstance(got, Refusal):
                b.problem(svc, ("spec", "ports", i, "nodePort"), got.message)
                refused = True
            elif listed[i].node_port != int(got):
                listed[i] = dataclasses.replace(listed[i], node_port=int(got))
        new_ports = tuple(listed)
    ingress = svc.load_balancer_ingress
    if mine.lb_claims:
        given: list[str] = []
        for owner, _, _ in mine.lb_claims:
            got = balancers[owner]
            if isinstance(got, Refusal):  # the Service stays, <pending>, as without a controller
                b.problem(svc, ("spec", "type"), f"no load-balancer IP: {got.message} (--loadbalancer-cidr)")
            else:
                given.append(got)
        ingress = (*ingress, *given)
    if refused:
        return None
    final = mine.final
    if (
        final is None
        or final.cluster_ips != cluster_ips
        or final.ports != new_ports
        or final.load_balancer_ingress != ingress
    ):
        families = families_of(cluster_ips)
        if (
            svc.cluster_ips == cluster_ips
            and svc.ip_families == families
            and svc.ports == new_ports
            and svc.load_balancer_ingress == ingress
        ):
            final = svc
        else:
            final = _service_with(svc, cluster_ips, new_ports, families, ingress)
        mine.final = final
    return final
