"""A registry snapshot + a question -> the records of the answer; NXDOMAIN vs NODATA is decided here.

Does no I/O. `Zone` indexes one Registry for DNS (ready endpoints with their names, reverse names, pod
IPs) and `Zone.lookup` answers one (name, type) as CoreDNS's kubernetes plugin and the Kubernetes DNS
specification 1.1.0 say. Every negative answer carries the zone's SOA in the authority section.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import dns.rcode
import dns.rdatatype

from clusterdns import names
from clusterdns.labels import looks_like_ipv4
from clusterdns.model import EXTERNAL_NAME, Endpoint, Service
from clusterdns.registry import Registry

A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
NS = dns.rdatatype.NS
CNAME = dns.rdatatype.CNAME
SOA = dns.rdatatype.SOA
PTR = dns.rdatatype.PTR
TXT = dns.rdatatype.TXT
SRV = dns.rdatatype.SRV

SCHEMA_VERSION = "1.1.0"  # Kubernetes DNS-Based Service Discovery specification, section 2.2
SCHEMA_TTL = 28800  # the spec's example TTL for dns-version, as CoreDNS answers it
MAX_CNAME_CHAIN = 8
PODS_MODES = ("insecure", "verified", "disabled")


@dataclass(frozen=True, slots=True)
class RR:
    """One resource record. Names are lower-case, absolute, without the trailing dot.

    rdata: A/AAAA an IP string; CNAME/PTR/NS a name; TXT a tuple of strings; SRV (priority, weight,
    port, target); SOA (mname, rname, serial, refresh, retry, expire, minimum).
    """

    name: str
    rtype: int
    ttl: int
    rdata: Any


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: int = dns.rcode.NOERROR
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    authoritative: bool = True
    chase: str = ""  # a CNAME target outside our zones whose records belong after the answer (upstream's)


REFUSED = Answer(dns.rcode.REFUSED, authoritative=False)


@dataclass(frozen=True, slots=True)
class Ready:
    """A ready endpoint as DNS names it."""

    name: str  # hostname, or dashed IP
    ip: str
    endpoint: Endpoint


@dataclass(slots=True)
class _Found:
    """What a name holds: exists (else NXDOMAIN), the records of the asked type, extra records."""

    exists: bool
    records: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)


_NX = _Found(False)


class Zone:
    """One registry, indexed for DNS. Built once per registry snapshot and never changed."""

    def __init__(
        self, registry: Registry, ttl: int = 5, pods: str = "insecure", serial: int = 1, previous: Zone | None = None
    ) -> None:
        """`previous`, the Zone of the snapshot this one replaces, lends its named endpoints for services
        whose endpoints did not change; it is not kept."""
        if pods not in PODS_MODES:
            raise ValueError(f"pods mode must be one of {', '.join(PODS_MODES)}, got {pods!r}")
        self.registry = registry
        self.ttl = ttl
        self.pods = pods
        self.domain = registry.config.domain
        self.labels = tuple(self.domain.split("."))
        self.services = registry.services
        self.namespaces = registry.namespaces
        self.soa = RR(
            self.domain,
            SOA,
            ttl,
            (f"ns.dns.{self.domain}", f"hostmaster.{self.domain}", serial, 7200, 1800, 86400, ttl),
        )
        self.reverse_soa = {
            zone: RR(zone, SOA, ttl, (f"ns.dns.{zone}", f"hostmaster.{zone}", serial, 7200, 1800, 86400, ttl))
            for zone in ("in-addr.arpa", "ip6.arpa")
        }
        self._ready: dict[tuple[str, str], list[Ready]] = {}
        self._endpoint_ptrs: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (IP, PTR target) per service
        self.by_cluster_ip: dict[str, Service] = {}  # the Service a cluster IP names (the first that has it)
        self.ptr: dict[str, list[str]] = {}  # the names of other ready endpoint IPs
        self.pod_ips: set[tuple[str, str]] = set()  # (namespace, IP) of every Pod, for pods verified
        if pods == "verified":
            self.pod_ips = {(p.namespace, ip) for p in registry.pods.values() for ip in p.ips}
        self.networks = [ipaddress.ip_network(c) for c in (*registry.service_cidrs, *registry.config.pod_cidrs)]
        self._index_reverse(previous)

    # --- indexes ---

    def ready(self, svc: Service) -> list[Ready]:
        """The ready endpoints of a service, named; computed once per service."""
        found = self._ready.get(svc.key)
        if found is None:
            found = [
                Ready(names.endpoint_name(ep.ip, ep.hostname), ep.ip, ep)
                for ep in self.registry.endpoints.get(svc.key, ())
                if ep.ready
            ]
            self._ready[svc.key] = found
        return found

    def _index_reverse(self, previous: Zone | None) -> None:
        """Cluster IPs name their service; other ready endpoint IPs name `<endpoint>.<svc>.<ns>.svc.<zone>`,
        once per service that has them (CoreDNS plugin/kubernetes/reverse.go: cluster IPs first)."""
        by_cluster_ip = self.by_cluster_ip
        endpoints: dict[str, list[str]] = {}
        with_endpoints = self.registry.endpoints
        # Without any endpoint (Services only, as in a zone of selectorless Services), there are cluster IPs
        # to index and nothing to look up per Service; any() stops at the first Service with endpoints.
        some = any(with_endpoints.values())
        for key, svc in self.services.items():
            if svc.type == EXTERNAL_NAME:
                continue
            if not svc.headless:
                for ip in svc.cluster_ips:
                    by_cluster_ip.setdefault(ip, svc)
            if not some:
                continue
            eps = with_endpoints.get(key)
            if not eps:
                continue
            base = f"{svc.name}.{svc.namespace}.svc.{self.domain}"
            pairs = None
            if previous is not None and previous.domain == self.domain and previous.registry.endpoints.get(key) is eps:
                pairs = previous._endpoint_ptrs.get(key)
                if pairs is not None:
                    self._ready[key] = previous._ready[key]
            if pairs is None:
                pairs = [(r.ip, f"{r.name}.{base}") for r in self.ready(svc)]
            self._endpoint_ptrs[key] = pairs
            for ip, target in pairs:
                targets = endpoints.get(ip)
                if targets is None:
                    endpoints[ip] = [target]
                elif target not in targets:
                    targets.append(target)
        for (namespace, service), eps in self.registry.orphan_endpoints.items():
            base = f"{service}.{namespace}.svc.{self.domain}"
            for ep in eps:  # EndpointSlices of missing Services: indexed by their label, as CoreDNS does
                if ep.ready:
                    target = f"{names.endpoint_name(ep.ip, ep.hostname)}.{base}"
                    targets = endpoints.setdefault(ep.ip, [])
                    if target not in targets:
                        targets.append(target)
        self.ptr = {ip: targets for ip, targets in endpoints.items() if ip not in by_cluster_ip}

    def service_name(self, svc: Service) -> str:
        return f"{svc.name}.{svc.namespace}.svc.{self.domain}"

    # --- lookup ---

    def lookup(self, labels: tuple[str, ...], qtype: int) -> Answer:
        """Answer a question; `labels` is the lower-cased name, nearest the root last."""
        n = len(self.labels)
        if labels[-n:] == self.labels and len(labels) >= n:
            return self._in_zone(labels, labels[:-n], qtype, 0)
        if labels[-2:] in (("in-addr", "arpa"), ("ip6", "arpa")):
            return self._reverse(labels, qtype)
        return REFUSED

    def zone_index(self, labels: tuple[str, ...], answer: Answer) -> int:
        """The zone that answered (an index into metrics.zone_labels(domain)); 3 when none did."""
        if answer is REFUSED:
            return 3
        n = len(self.labels)
        if labels[-n:] == self.labels:
            return 0
        return 2 if labels[-2:] == ("ip6", "arpa") else 1

    def _in_zone(self, labels: tuple[str, ...], rel: tuple[str, ...], qtype: int, depth: int) -> Answer:
        name = ".".join(labels)
        req = names.parse(rel)
        kind = req.kind
        if kind in (names.SERVICE, names.ENDPOINT, names.PORT):
            svc = self.services.get((req.namespace, req.service))
            if svc is not None and svc.type == EXTERNAL_NAME:
                if looks_like_ipv4(svc.external_name):  # not served: as if it did not exist
                    return self._negative(_NX)
                if kind != names.SERVICE:
                    return self._negative(_NX)
                return self._alias(name, svc.external_name.rstrip(".").lower(), qtype, depth)
            found = self._service(name, req, svc, qtype) if svc is not None else _NX
        elif kind == names.APEX:
            found = self._apex(name, qtype)
        elif kind == names.NAMESPACE:
            exists = req.namespace in self.namespaces and not (rel[-1] == "pod" and self.pods == "disabled")
            found = _Found(exists)
        elif kind == names.POD:
            found = self._pod(name, req, qtype)
        elif kind == names.SERVICE_TREE:
            found = _Found(True)
        elif kind == names.DNS_VERSION:
            found = _Found(True, [RR(name, TXT, SCHEMA_TTL, (SCHEMA_VERSION,))] if qtype == TXT else [])
        elif kind == names.NAMESERVER:
            found = _Found(True, self._addresses(name, self._dns_service_ips(), qtype))
        else:
            found = _NX
        if found.records:
            return Answer(answer=tuple(found.records), additional=tuple(found.additional))
        return self._negative(found)

    def _negative(self, found: _Found) -> Answer:
        """NXDOMAIN for a name that does not exist, NODATA (NOERROR, empty) for one that does; the SOA
        in authority either way, so resolvers can cache the denial (RFC 2308)."""
        rcode = dns.rcode.NOERROR if found.exists else dns.rcode.NXDOMAIN
        return Answer(rcode, authority=(self.soa,))

    def _apex(self, name: str, qtype: int) -> _Found:
        if qtype == SOA:
            return _Found(True, [RR(name, SOA, self.ttl, self.soa.rdata)])
        if qtype == NS:
            ns_name = self._ns_name()
            glue = self._addresses(ns_name, self._dns_service_ips(), A) + self._addresses(
                ns_name, self._dns_service_ips(), AAAA
            )
            return _Found(True, [RR(name, NS, self.ttl, ns_name)], glue)
        return _Found(True)

    def _dns_service(self) -> Service | None:
        svc = self.services.get(("kube-system", "kube-dns"))
        return svc if svc is not None and svc.has_cluster_ip else None

    def _dns_service_ips(self) -> tuple[str, ...]:
        svc = self._dns_service()
        return svc.cluster_ips if svc else ()

    def _ns_name(self) -> str:
        svc = self._dns_service()
        return self.service_name(svc) if svc else f"ns.dns.{self.domain}"

    def _addresses(self, name: str, ips: tuple[str, ...] | list[str], qtype: int) -> list[RR]:
        """A records of the IPv4 addresses for A, AAAA of the IPv6 ones for AAAA; duplicates once."""
        want6 = qtype == AAAA
        if qtype not in (A, AAAA):
            return []
        out: list[RR] = []
        seen: set[str] = set()
        for ip in ips:
            if (":" in ip) == want6 and ip not in seen:
                seen.add(ip)
                out.append(RR(name, qtype, self.ttl, ip))
        return out

    def _service(self, name: str, req: names.Request, svc: Service, qtype: int) -> _Found:
        headless = svc.headless or not svc.cluster_ips
        ready = self.ready(svc)
        if req.kind == names.SERVICE:
            if headless:
                # Spec 2.4.1: a headless service without ready endpoints is NXDOMAIN.
                if not ready:
                    return _NX
                if qtype == SRV:
                    return self._srv(name, svc, ready, "", "")
                return _Found(True, self._addresses(name, [r.ip for r in ready], qtype))
            if qtype == SRV:
                return self._srv(name, svc, None, "", "")
            return _Found(True, self._addresses(name, svc.cluster_ips, qtype))
        if req.kind == names.ENDPOINT:
            mine = [r for r in ready if r.name == req.endpoint]
            if not mine:
                return _NX
            if qtype == SRV:
                return self._srv(name, svc, mine, "", "")
            return _Found(True, self._addresses(name, [r.ip for r in mine], qtype))
        # _<port>._<proto>: the name exists when some port matches.
        found = self._srv(name, svc, ready if headless else None, req.port, req.protocol)
        if not found.exists or qtype == SRV:
            return found
        if headless:
            return _Found(True, self._addresses(name, [rr.rdata for rr in found.additional], qtype))
        return _Found(True, self._addresses(name, svc.cluster_ips, qtype))

    def _srv(self, name: str, svc: Service, ready: list[Ready] | None, port: str, protocol: str) -> _Found:
        """SRV records as CoreDNS builds them: priority 0, weight floor(100/N) (at least 1) with N the
        number of (target, port) entries before duplicates are dropped; ClusterIP services point at the
        service name and port, headless ones at each ready endpoint and its port. An empty port or
        protocol matches any (so a bare service name lists every port)."""

        def matches(p_name: str, p_protocol: str) -> bool:
            return (not port or port == p_name.lower()) and (not protocol or protocol == p_protocol.lower())

        entries: list[tuple[str, int, str]] = []  # (target, port, address)
        if ready is None:
            target = self.service_name(svc)
            for sp in svc.ports:
                if matches(sp.name, sp.protocol):
                    entries.extend((target, sp.port, ip) for ip in svc.cluster_ips)
        else:
            base = self.service_name(svc)
            for r in ready:
                for ep in r.endpoint.ports:
                    if matches(ep.name, ep.protocol):
                        entries.append((f"{r.name}.{base}", ep.port, r.ip))
        if not entries:
            # CoreDNS: a service without ports has the name but no SRV; an unmatched port is NXDOMAIN.
            return _Found(not port and not protocol)
        weight = max(1, 100 // len(entries))
        records: list[RR] = []
        additional: list[RR] = []
        seen_srv: set[tuple[str, int]] = set()
        seen_addr: set[tuple[str, str]] = set()
        for target, number, ip in entries:
            if (target, number) not in seen_srv:
                seen_srv.add((target, number))
                records.append(RR(name, SRV, self.ttl, (0, weight, number, target)))
            if (target, ip) not in seen_addr:
                seen_addr.add((target, ip))
                additional.append(RR(target, AAAA if ":" in ip else A, self.ttl, ip))
        return _Found(True, records, additional)

    def _pod(self, name: str, req: names.Request, qtype: int) -> _Found:
        """`a-b-c-d.<ns>.pod.<zone>` (spec 2.6): any well-formed IP in an existing namespace when
        insecure, only a Pod of that namespace with that IP when verified, nothing when disabled."""
        if self.pods == "disabled" or req.namespace not in self.namespaces:
            return _NX
        ip = names.pod_ip(req.pod)
        if ip is None or (self.pods == "verified" and (req.namespace, ip) not in self.pod_ips):
            return _NX
        return _Found(True, self._addresses(name, [ip], qtype))

    def _alias(self, name: str, target: str, qtype: int, depth: int) -> Answer:
        """An ExternalName service: a CNAME, followed inside the cluster zone for the asked type.

        The chain's end decides the rcode (RFC 6604). A target outside the zone is marked `chase`: when
        forwarding is on, the server asks upstream for it and appends those records (spec 2.5's example).
        """
        cname = RR(name, CNAME, self.ttl, target)
        if qtype == CNAME or depth >= MAX_CNAME_CHAIN:
            return Answer(answer=(cname,))
        labels = tuple(target.split("."))
        n = len(self.labels)
        if labels[-n:] != self.labels or len(labels) <= n:
            return Answer(answer=(cname,), chase=target)
        rest = self._in_zone(labels, labels[:-n], qtype, depth + 1)
        return Answer(rest.rcode, (cname, *rest.answer), rest.authority, rest.additional, chase=rest.chase)

    def _reverse(self, labels: tuple[str, ...], qtype: int) -> Answer:
        """PTR for cluster IPs and ready endpoint IPs. Reverse names of the service and pod networks
        are ours (NXDOMAIN when unknown); other reverse names are not."""
        ip = names.reverse_ip(labels)
        if ip is None:
            return REFUSED
        svc = self.by_cluster_ip.get(ip)
        targets = [self.service_name(svc)] if svc is not None else self.ptr.get(ip)
        if targets is None and not any(ipaddress.ip_address(ip) in net for net in self.networks):
            return REFUSED
        soa = self.reverse_soa["ip6.arpa" if labels[-2] == "ip6" else "in-addr.arpa"]
        if not targets:
            return Answer(dns.rcode.NXDOMAIN, authority=(soa,))
        if qtype != PTR:
            return Answer(authority=(soa,))
        name = ".".join(labels)
        return Answer(answer=tuple(RR(name, PTR, self.ttl, t) for t in targets))
