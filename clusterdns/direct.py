"""The common questions answered straight from the snapshot: a Service's addresses and SRV records, and the
denial of a name that cannot exist, written from templates. Does no I/O.

These are what pods ask most (with ndots:5, most of their questions are search-path expansions that do not
exist), and in a large cluster most of them are new to a snapshot: on the general path (`records`, then
`renderer`) a first question costs some 30 times a cached one, and caching every answer costs memory in
every process. Here the name is looked up whole in a table of the Services' names built with the snapshot,
and the answer written as `renderer.encode` writes it: every owner name is the question's by compression
(`c00c`, or a pointer to the Service's or the zone's name inside the question), and so are the SOA's
names. The bytes are those of the general path, by construction and by test (tests/test_direct.py compares
the two over every shape, letter case, flag and EDNS variant). A name that cannot exist is told from its
first label and its parent's shape below the zone, which is kept (a cluster's search-path expansions have a
few thousand parents), so that a first question costs what a repeat does.

Anything else gets None and takes the general path: names outside the cluster zone, endpoints, pods,
namespaces and the zone's own names, ExternalName and headless Services, zone transfers and classes other
than IN, and the denial of a name under `dns` or `hostmaster` (the SOA's names would compress into it).
"""

from __future__ import annotations

import socket
import struct

import dns.rdatatype

from clusterdns.metrics import counter_slot
from clusterdns.model import EXTERNAL_NAME, Service, ServicePort
from clusterdns.records import Zone
from clusterdns.renderer import Heads, heads

A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
SRV = dns.rdatatype.SRV
SOA = dns.rdatatype.SOA
_ZONE_TRANSFER = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
A_IN = struct.pack("!HH", A, 1)  # type and class at the end of a question (the most asked: respond uses it)
AAAA_IN = struct.pack("!HH", AAAA, 1)
SRV_IN = struct.pack("!HH", SRV, 1)
# The label right above the zone (CoreDNS parse.go) that names something other than "no such name" takes
# the general path; `dns` and `hostmaster` also begin the SOA's MNAME and RNAME.
_NOT_NONE = (b"svc", b"pod", b"dns", b"dns-version", b"hostmaster")
SHAPES_KEPT = 10_000  # bound on the parents whose shape is kept (Direct._parent), per snapshot

# Header bytes 2-12 (flags, counts) of our answers, RD and CD clear: QR, AA, rcode; QDCOUNT 1.
_NODATA = b"\x84\x00\x00\x01\x00\x00\x00\x01\x00\x00"
_NXDOMAIN = b"\x84\x03\x00\x01\x00\x00\x00\x01\x00\x00"

# What respond() needs of an answer besides its sections: its header for each (RD, CD), its counts with
# our OPT, and its request counter (metrics.counter_slot).
Kind = tuple[Heads, int]
Made = tuple[Kind, bytes]


class Direct:
    """Writes the common answers of one Zone. Build it with the Zone: it indexes every Service's name."""

    def __init__(self, zone: Zone) -> None:
        self.services = zone.services
        self.zone_wire = b"".join(bytes((len(x),)) + x.encode("latin-1") for x in zone.labels) + b"\0"
        self.svc_wire = b"\x03svc" + self.zone_wire
        ttl = struct.pack("!I", zone.ttl)
        self._a = b"\xc0\x0c" + A_IN + ttl + b"\x00\x04"  # an A record owned by the question's name
        self._aaaa = b"\xc0\x0c" + AAAA_IN + ttl + b"\x00\x10"
        self._srv = b"\xc0\x0c" + struct.pack("!HH", SRV, 1) + ttl
        mname, rname, *numbers = zone.soa.rdata
        ns, dns_ = mname.split(".")[:2]
        hostmaster = rname.split(".")[0]
        # The SOA of a denial, cut where its names point at the zone's name in the question.
        self._soa = (
            struct.pack("!HHIH", SOA, 1, zone.soa.ttl, 7 + len(ns) + len(dns_) + len(hostmaster) + 20),
            bytes((len(ns),)) + ns.encode() + bytes((len(dns_),)) + dns_.encode(),
            bytes((len(hostmaster),)) + hostmaster.encode(),
            struct.pack("!IIIII", *numbers),
        )
        self._kinds: dict[tuple[bytes, int], Kind] = {}
        self.one_a = self._kind(_counts(1, 0), A)
        self.no_aaaa = self._kind(_NODATA, AAAA)
        self.one_srv = self._kind(_counts(1, 1), SRV)
        # What the common answers share, worked out once instead of for each question: the authority section
        # of a denial of a name `n` bytes long that ends in the zone's name (by n), the fixed part of an SRV
        # record of weight 100 whose target is `n` bytes long (by n), and a pointer to offset 12 + n.
        zone_at = 12 - len(self.zone_wire)
        self.denial = [self._soa_at(zone_at + n) if n >= len(self.zone_wire) else b"" for n in range(256)]
        self._srv_fixed = [self._srv + struct.pack("!HHH", 6 + n, 0, 100) for n in range(256)]
        self._pointers = [struct.pack("!H", 0xC000 | (12 + n)) for n in range(256)]
        # (labels below the zone, the last of them) of names under the zone, by name: see _shape
        self._shapes: dict[bytes, tuple[int, bytes] | None] = {}
        self.names = self._index(zone)

    def _index(self, zone: Zone) -> dict[bytes, bytes | Service]:
        """Every Service's name as a question spells it (`<svc>.<ns>.svc.<zone>` in wire form), with what
        answers the usual questions: for a Service with one IPv4 cluster IP (most), its A record as an answer
        writes it (owned by the question's name: 16 bytes), then two bytes and the SRV labels of its one named
        port (`_<port>._<proto>`, lower-cased) or three zero bytes when there is none (`found[18]` tells),
        then zero bytes up to the key's allocation size; the Service itself for the others.

        That padding puts each value in memory next to its key (or a block away): both are allocated one
        after the other, in the same size class of Python's allocator. At 100,000 Services the table no
        longer fits the CPU's caches, and a question reads its key, then its value: as neighbours they share
        a page and mostly a cache line. At that size respond() takes 3.31 us a first question, not 3.78
        (tests/bench/bench_respond.py, two processes)."""
        names: dict[bytes, bytes | Service] = {}
        aton, a, svc_wire, external = socket.inet_aton, self._a, self.svc_wire, EXTERNAL_NAME
        tails: dict[str, bytes] = {}  # `<ns>.svc.<zone>` in wire form, by namespace
        # What follows the A record for a Service's ports, by the id of its ports tuple: most Services share
        # one of a few tuples (manifests), so this is worked out a few times, not once per Service.
        srvs: dict[int, bytes] = {}
        zeros = _ZEROS
        for (namespace, name), svc in zone.services.items():
            tail = tails.get(namespace)
            if tail is None:
                label = _label(namespace)
                tail = tails[namespace] = label + svc_wire if label else b""
            if not tail or len(name) > 63:  # no question spells it
                continue
            try:
                key = (chr(len(name)) + name).encode("latin-1") + tail
            except UnicodeEncodeError:  # nor this
                continue
            if len(key) > 255:  # nor a name this long
                continue
            ips = svc.cluster_ips
            if len(ips) != 1 or svc.headless or svc.type == external or ":" in ips[0]:
                names[key] = svc
                continue
            ports = svc.ports
            srv = srvs.get(id(ports))
            if srv is None:
                srv = srvs[id(ports)] = _srv_entry(ports)
            # A bytes object of n bytes takes 33 + n, rounded up to 16 (pymalloc's size classes): the value
            # is filled up to the key's size, and made in one allocation, right after the key's.
            fill = (48 + len(key)) // 16 * 16 - 33 - 16 - len(srv)
            names[key] = b"".join((a, aton(ips[0]), srv, zeros[fill if fill > 0 else 0]))
        return names

    def _kind(self, head: bytes, qtype: int) -> Kind:
        kind = self._kinds.get((head, qtype))
        if kind is None:
            kind = self._kinds[(head, qtype)] = (heads(head), counter_slot(0, qtype, head[1] & 0xF))
        return kind

    def _soa_at(self, zone_at: int) -> bytes:
        """The authority section of a denial: the zone's SOA, its names pointing at the zone's name in the
        question, at offset `zone_at` of the message (worked out once per name length: `denial`)."""
        fixed, mname, rname, numbers = self._soa
        to_zone = struct.pack("!H", 0xC000 | zone_at)
        soa: bytes = to_zone + fixed + mname + to_zone + rname + to_zone + numbers
        return soa

    def answer(self, name: bytes, tail: bytes) -> Made | None:
        """The answer to the question of `name` (in wire form, in any letter case) and `tail` (its type and
        class), or None when it takes the general path."""
        found = self.names.get(name)
        if found is None:  # not a Service's name, or one asked in capitals
            lowered = name.lower()
            if lowered != name:
                name = lowered
                found = self.names.get(name)
        if type(found) is bytes:  # the name of a Service with one IPv4 cluster IP
            if tail == A_IN:
                return self.one_a, found[:16]
            if tail == AAAA_IN:
                return self.no_aaaa, self.denial[len(name)]
            if tail == SRV_IN and found[18]:
                return self.one_srv, self._one_srv(name, 0, found)
        if len(tail) != 4 or tail[2:] != b"\x00\x01" or not name.endswith(self.zone_wire):
            return None
        qtype = tail[0] << 8 | tail[1]
        if qtype in _ZONE_TRANSFER:
            return None
        if found is not None:
            return self._service(name, qtype, 0, found)
        if name.endswith(self.svc_wire) and len(name) <= 255:
            # _<port>._<proto>.<svc>.<ns>.svc.<zone>: a Service's name (the table's keys are whole names) after
            # two labels, whose lengths are checked here
            at = name[0] + 1
            if 1 < at < 65 and at < len(name) and 0 < name[at] < 64:
                at += name[at] + 1
                found = self.names.get(name[at:])
                if type(found) is bytes and tail == SRV_IN and name[:at] == found[18 : 18 + at]:
                    return self.one_srv, self._one_srv(name, at, found)
                if found is not None:
                    return self._service(name, qtype, at, found)
        # Any other name of the zone, as CoreDNS parse.go reads it: how many labels there are below the zone,
        # and the last of them.
        shape = self._shape(name) if len(name) <= 255 else None
        if shape is None:
            return None
        labels, tree = shape
        if tree == b"svc":
            if labels < 5 and labels != 3:  # the svc tree, a namespace, an endpoint: the general path
                return None
            # 3 and 5: no such Service (both looked up above); more: no such name
        elif tree in _NOT_NONE:
            return None
        return self._kind(_NXDOMAIN, qtype), self.denial[len(name)]

    def srv(self, name: bytes) -> bytes | None:
        """The answer's sections for SRV of `_<port>._<proto>.<svc>.<ns>.svc.<zone>` (in wire form, as the table
        spells it: in lower case) when that Service has one IPv4 cluster IP and that is its one named port, the
        most asked SRV question; None for any other name. The answer's kind is `one_srv`."""
        at = name[0] + 1 if name else 0
        if 1 < at < len(name):
            at += name[at] + 1
            found = self.names.get(name[at:])
            if type(found) is bytes and name[:at] == found[18 : 18 + at] and len(name) <= 255:
                return self._one_srv(name, at, found)
        return None

    def denies(self, name: bytes) -> bool:
        """Whether the name `name` (in wire form, in any letter case) does not exist whatever its first label is:
        a name under the zone, neither a Service's nor in a tree with other names (CoreDNS parse.go), as the
        search-path expansions of a Service's name are (`<svc>.<ns>.svc.<zone>.<zone>`). Its denial is
        `denial[len(name)]` with the kind `nxdomain(qtype)`."""
        shape = self._shape(name) if name and len(name) <= 255 else None
        if shape is None or shape[0] < 2:  # below the zone itself, its first label is the tree: answer() reads it
            return False
        labels, tree = shape
        return labels > 5 if tree == b"svc" else tree not in _NOT_NONE

    def nxdomain(self, qtype: int) -> Kind:
        return self._kind(_NXDOMAIN, qtype)

    def _shape(self, name: bytes) -> tuple[int, bytes] | None:
        """How many labels `name` has below the zone, and the last of them; None when its labels don't end where
        the zone's name begins. The last label is in lower case when it is not the first (else as asked)."""
        first = name[0]
        if not 0 < first < 64:
            return None
        shape = self._parent(name[first + 1 :])
        if shape is None:
            return None
        labels, tree = shape
        return labels + 1, tree or name[1 : first + 1]

    def _parent(self, name: bytes) -> tuple[int, bytes] | None:
        """_shape of a name's parent, the last label in lower case, (0, b"") for the zone's own name; kept, as
        asked: the names asked that are not a Service's are mostly search-path expansions of one, and a
        cluster has a few thousand of their parents (`<ns>.svc.<zone>.<zone>`)."""
        try:
            return self._shapes[name]
        except KeyError:
            shape = self._walk(name.lower())
            if len(self._shapes) >= SHAPES_KEPT:
                self._shapes.clear()
            self._shapes[name] = shape
            return shape

    def _walk(self, name: bytes) -> tuple[int, bytes] | None:
        """_parent, label by label."""
        zone_at = len(name) - len(self.zone_wire)
        if zone_at < 0 or name[zone_at:] != self.zone_wire:
            return None
        i = labels = last = 0
        while i < zone_at:
            length = name[i]
            if length == 0 or length > 63:
                return None
            last = i
            labels += 1
            i += length + 1
        if i != zone_at:
            return None
        return labels, name[last + 1 : zone_at] if labels else b""

    def _service(self, name: bytes, qtype: int, at: int, found: bytes | Service) -> Made | None:
        """The answer for a Service whose name starts at `at` of the question's name: `<svc>.<ns>.svc.<zone>`
        (at 0) or `_<port>._<proto>.<svc>.<ns>.svc.<zone>`, as records.Zone._service gives it for a
        Service with cluster IPs."""
        svc: Service | None = None
        if isinstance(found, bytes):
            addresses = [(False, found[12:16])]
        else:
            svc = found
            if svc.headless or not svc.cluster_ips or svc.type == EXTERNAL_NAME:
                return None
            addresses = [
                (":" in ip, socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip))
                for ip in dict.fromkeys(svc.cluster_ips)
            ]
        if at or qtype == SRV:
            if svc is None:
                end = at + 1 + name[at]
                svc = self.services[
                    (name[end + 1 : -len(self.svc_wire)].decode("latin-1"), name[at + 1 : end].decode("latin-1"))
                ]
            ports = svc.ports
            if at:  # `_<port>._<proto>` as CoreDNS reads them: the underscore optional, empty matching any
                port = name[1 : 1 + name[0]].decode("latin-1").removeprefix("_")
                protocol = name[2 + name[0] : at].decode("latin-1").removeprefix("_")
                ports = tuple(
                    sp
                    for sp in ports
                    if (not port or port == sp.name.lower()) and (not protocol or protocol == sp.protocol.lower())
                )
                if not ports:  # CoreDNS: an unmatched port is NXDOMAIN
                    head = _NODATA if not port and not protocol else _NXDOMAIN
                    return self._kind(head, qtype), self.denial[len(name)]
            if qtype == SRV and ports:
                return self._srv_answer(name, at, svc, ports, addresses)
        if qtype in (A, AAAA):
            want6 = qtype == AAAA
            owned = self._aaaa if want6 else self._a
            records = [owned + packed for is6, packed in addresses if is6 == want6]
            if records:
                return self._kind(_counts(len(records), 0), qtype), b"".join(records)
        # NODATA: an address family the Service lacks, another type, or SRV of a Service without ports
        return self._kind(_NODATA, qtype), self.denial[len(name)]

    def _one_srv(self, name: bytes, at: int, found: bytes) -> bytes:
        """The SRV answer's sections for the one port of a Service with one IPv4 cluster IP, whose name starts at
        `at` of the question's name, from its entry in the table (`_srv_answer` for that case: weight 100)."""
        return self._srv_fixed[len(name) - at] + found[16:18] + name[at:] + self._pointers[at] + found[2:16]

    def _srv_answer(
        self, name: bytes, at: int, svc: Service, ports: tuple[ServicePort, ...], addresses: list[tuple[bool, bytes]]
    ) -> Made:
        """SRV as records.Zone._srv writes them for a Service with cluster IPs: priority 0, weight 100 / (ports x
        cluster IPs), one record per port number to the Service's name (written whole, RFC 2782), whose
        addresses go in additional under a pointer to that name in the question."""
        target = name[at:]
        fixed = self._srv + struct.pack("!HHH", 6 + len(target), 0, max(1, 100 // (len(ports) * len(svc.cluster_ips))))
        to_target = struct.pack("!H", 0xC000 | (12 + at))
        numbers = dict.fromkeys(sp.port for sp in ports)
        records = [fixed + struct.pack("!H", number) + target for number in numbers]
        records.extend(to_target + (self._aaaa if is6 else self._a)[2:] + packed for is6, packed in addresses)
        return self._kind(_counts(len(numbers), len(addresses)), SRV), b"".join(records)


def _srv_entry(ports: tuple[ServicePort, ...]) -> bytes:
    """What follows the A record in the table for a Service with these ports: for one named port, its number
    and SRV labels (`_<port>._<proto>`, as records.Zone._srv matches them: latin-1, lower-cased); else three
    zero bytes (no labels: `found[18]` is 0)."""
    if len(ports) != 1 or not ports[0].name:
        return b"\0\0\0"
    sp = ports[0]
    port, protocol = _label("_" + sp.name.lower()), _label("_" + sp.protocol.lower())
    return struct.pack("!H", sp.port) + port + protocol if port and protocol else b"\0\0\0"


_ZEROS = [b"\0" * n for n in range(512)]  # the table's padding (Direct._index), made once


def _label(text: str) -> bytes:
    """`text` as a label in wire form; b"" when no question can spell it (longer than 63, not latin-1: the
    manifests' checks keep such names out)."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        return b""
    return bytes((len(raw),)) + raw if len(raw) < 64 else b""


def _counts(answers: int, additional: int) -> bytes:
    """Header bytes 2-12 of an answer with records, RD and CD clear."""
    return struct.pack("!BBHHHH", 0x84, 0, 1, answers, 0, additional)
