"""The answers written directly from the snapshot (clusterdns/direct.py) are, byte for byte, those of the
general path (records, then renderer): over every name shape and type, in any letter case, with and without
EDNS, with RD and CD set or not, over UDP and TCP, in the cluster zone and in others."""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.name
import pytest
from conftest import write_files
from dns_helpers import CLUSTER, CLUSTER_CONFIG, load_zone, make_query

from clusterdns.metrics import BUILT, CACHED
from clusterdns.records import Zone
from clusterdns.registry import Config
from clusterdns.respond import Responder, Result

# Services beside CLUSTER's, for the shapes the direct answers have to get right.
MORE = """
    apiVersion: v1
    kind: Service
    metadata: {name: one, namespace: team}
    spec:
      clusterIP: 10.0.1.1
      ports:
      - {name: grpc, port: 9090, protocol: UDP}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: six}
    spec:
      ipFamilies: [IPv6]
      clusterIP: "fd00:10:96::6"
      ports:
      - {name: http, port: 80}
    ---
    # The same number under two names and protocols: one SRV record, the weight counting both.
    apiVersion: v1
    kind: Service
    metadata: {name: twice}
    spec:
      clusterIP: 10.0.1.3
      ports:
      - {name: dns, port: 53, protocol: UDP}
      - {name: dns-tcp, port: 53, protocol: TCP}
      - {name: http, port: 80}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: svc, namespace: team}
    spec:
      clusterIP: 10.0.1.4
      ports:
      - {name: http, port: 80}
    ---
    # Enough ports that the bare name's SRV answer does not fit in 512 bytes.
    apiVersion: v1
    kind: Service
    metadata: {name: many}
    spec:
      clusterIP: 10.0.1.5
      ports:
""" + "".join(f"      - {{name: p{i}, port: {1000 + i}}}\n" for i in range(40))

SERVICES = (
    ("my-nginx", "default"),
    ("metrics", "default"),
    ("unnamed", "default"),
    ("dual", "default"),
    ("nginx", "default"),
    ("hdls", "default"),
    ("empty", "default"),
    ("v6", "default"),
    ("ext", "default"),
    ("alias", "default"),
    ("one", "team"),
    ("six", "default"),
    ("twice", "default"),
    ("svc", "team"),
    ("many", "default"),
    ("nosuch", "default"),
    ("my-nginx", "nosuch"),
    ("kube-dns", "kube-system"),
    ("kubernetes", "default"),
)
PORTS = ("_http._tcp", "http.tcp", "_https._tcp", "_HTTP._TCP", "_grpc._udp", "_dns._udp", "_dns-tcp._tcp",
         "_._tcp", "_http._", "_._", "_nope._tcp", "_http._udp", "_metrics._tcp", "_p7._tcp")  # fmt: skip
ZONE_NAMES = ("svc", "pod", "dns-version", "ns.dns", "dns", "x.dns", "hostmaster", "x.hostmaster", "foo", "a.b.foo",
              "default.svc", "nosuch.svc", "team.pod", "10-244-1-5.default.pod", "a.b.c.d.e.f.svc",
              "a.b.c.d.e.svc.x", "local")  # fmt: skip
TYPES = ("A", "AAAA", "SRV", "TXT", "CNAME", "ANY", "MX", "PTR", "SOA", "NS")


def names(zone: str) -> Iterator[str]:
    """Every name shape, for each Service: the name, its ports, endpoints, search-path expansions."""
    for svc, ns in SERVICES:
        base = f"{svc}.{ns}.svc.{zone}"
        yield base
        yield from (f"{p}.{base}" for p in PORTS)
        yield from (f"{e}.{base}" for e in ("web-0", "10-244-3-1", "x"))
        yield from (f"{base}.{suffix}" for suffix in (zone, f"svc.{zone}", f"{ns}.svc.{zone}", f"default.svc.{zone}"))
    yield from (f"{x}.{zone}" for x in ZONE_NAMES)
    yield zone
    yield from ("example.com", "50.0.0.10.in-addr.arpa", "9.9.9.10.in-addr.arpa", "local", "cluster")


def spellings(name: str) -> Iterator[str]:
    yield name
    yield name.upper()
    yield "".join(c.upper() if i % 2 else c for i, c in enumerate(name))


def generic(zone: Zone, forwarding: bool = False) -> Responder:
    """A Responder that answers everything through the general path."""
    return Responder(zone, forwarding=forwarding, direct=False)


def same(result: Result) -> object:
    """What must agree between the two paths: the reply and its counter, or what the forwarder is given."""
    if isinstance(result, tuple):
        return result[:2]
    return result


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Zone:
    zones = Path(tmp_path_factory.mktemp("direct")) / "zones"
    zones.mkdir()
    write_files(zones, {**CLUSTER, "more.yaml": MORE})
    return load_zone(zones, CLUSTER_CONFIG)


def variants(name: str, qtype: str) -> Iterator[bytes]:
    """The query as clients send it: each spelling, with and without EDNS (and a small UDP size), RD and CD."""
    for spelled in spellings(name):
        plain = make_query(spelled, qtype, edns=False, rd=False).to_wire()
        for flags, payload in itertools.product((0x0100, 0x0010), (0, 1232, 600)):  # RD, or CD
            query = plain[:2] + struct.pack("!H", flags) + plain[4:]
            if payload:  # an OPT record, DO set with the small size
                opt = struct.pack("!HHIH", 41, payload, 0x8000 if payload < 1232 else 0, 0)
                query = query[:10] + b"\0\x01" + query[12:] + b"\0" + opt
            yield query


@pytest.mark.parametrize("qtype", TYPES)
def test_same_bytes_as_the_general_path(zone: Zone, qtype: str) -> None:
    """For every name shape and spelling, EDNS or not, RD and CD either way, over UDP and TCP: the same
    reply and counter as the general path, with and without forwarding."""
    for forwarding, tcp in ((False, False), (True, True)):
        direct, general = Responder(zone, forwarding=forwarding), generic(zone, forwarding)
        for name in names("cluster.local"):
            for query in variants(name, qtype):
                assert same(direct.respond(query, tcp)) == same(general.respond(query, tcp)), (name, qtype, tcp)
        assert direct.cache.keys() <= general.cache.keys()


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("my-nginx.default.svc.cluster.local", "A"),
        ("My-Nginx.Default.SVC.cluster.local", "AAAA"),
        ("my-nginx.default.svc.cluster.local", "SRV"),
        ("my-nginx.default.svc.cluster.local", "TXT"),
        ("_http._tcp.my-nginx.default.svc.cluster.local", "SRV"),
        ("http.tcp.my-nginx.default.svc.cluster.local", "A"),
        ("_nope._tcp.my-nginx.default.svc.cluster.local", "SRV"),
        ("_grpc._udp.one.team.svc.cluster.local", "SRV"),
        ("dual.default.svc.cluster.local", "AAAA"),
        ("_http._tcp.dual.default.svc.cluster.local", "SRV"),
        ("six.default.svc.cluster.local", "A"),
        ("twice.default.svc.cluster.local", "SRV"),
        ("nosuch.default.svc.cluster.local", "A"),
        ("_http._tcp.nosuch.default.svc.cluster.local", "SRV"),
        ("my-nginx.default.svc.cluster.local.cluster.local", "A"),
        ("my-nginx.default.svc.cluster.local.default.svc.cluster.local", "AAAA"),
        ("my-nginx.default.svc.cluster.local.svc.cluster.local", "A"),
        ("foo.cluster.local", "A"),
    ],
)
def test_answered_directly(zone: Zone, name: str, qtype: str) -> None:
    """The usual questions about Services, and names that cannot exist, never take the general path: a
    plain query gets its reply from the raw bytes, and nothing is cached."""
    responder = Responder(zone)
    for _ in range(2):
        result = responder.respond(make_query(name, qtype, edns=False).to_wire(), True)
        assert isinstance(result, tuple) and result[2] == CACHED
    assert responder.cache == {}


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("nginx.default.svc.cluster.local", "A"),  # headless
        ("alias.default.svc.cluster.local", "A"),  # ExternalName
        ("web-0.nginx.default.svc.cluster.local", "A"),  # an endpoint
        ("10-244-1-5.default.pod.cluster.local", "A"),
        ("default.svc.cluster.local", "A"),
        ("cluster.local", "SOA"),
        ("x.dns.cluster.local", "A"),  # the SOA's MNAME would point into the question
        ("hostmaster.cluster.local", "A"),  # and its RNAME
        ("50.0.0.10.in-addr.arpa", "PTR"),
        ("my-nginx.default.svc.cluster.local", "AXFR"),
    ],
)
def test_left_to_the_general_path(zone: Zone, name: str, qtype: str) -> None:
    """Anything else is built once by the general path and cached."""
    result = Responder(zone).respond(make_query(name, qtype, edns=False).to_wire(), True)
    assert isinstance(result, tuple) and result[2] == BUILT


def test_truncated_like_the_general_path(zone: Zone) -> None:
    """An answer too large for the client's UDP size is truncated by the general path, to the same bytes."""
    direct, general = Responder(zone), generic(zone)
    for payload in (512, 600, 1232):
        for edns in (False, True):
            query = make_query("many.default.svc.cluster.local", "SRV", edns=edns, payload=payload).to_wire()
            reply = direct.respond(query)
            assert isinstance(reply, tuple) and reply[0][2] & 0x02  # TC
            assert same(reply) == same(general.respond(query))


def label(text: bytes) -> bytes:
    return bytes((len(text),)) + text


def raw_queries() -> Iterator[bytes]:
    """Questions no client library writes: odd bytes in labels, compression, cut short, overlong, trailing
    bytes, another class, other header flags."""
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    zone = label(b"cluster") + label(b"local") + b"\0"
    svc = label(b"my-nginx") + label(b"default") + label(b"svc")
    tails = (b"\0\x01\0\x01", b"\0\x1c\0\x01", b"\0\x21\0\x01", b"\0\x01\0\x03", b"\0\x01\0\xff")
    bodies = [
        svc + zone,
        label(b"MY-NGINX") + label(b"default") + label(b"SVC") + zone,
        label(b"my-nginx\xc0") + label(b"default") + label(b"svc") + zone,
        label(b"my.nginx") + label(b"default") + label(b"svc") + zone,
        label(b"a.b") + zone,
        label(b"x\x07cluster\x05local") + zone,
        label(b"_http") + label(b"_tcp") + svc + zone,
        label(b"\xe9") + label(b"_tcp") + svc + zone,
        svc + zone + zone[:-1] + b"\0",
        svc + zone[:-1] + zone,
        label(b"x" * 63) * 3 + label(b"y" * 60) + zone,  # 256 bytes
        label(b"x" * 63) * 3 + label(b"y" * 61) + zone,  # too long
        b"\0" + svc + zone,
        svc + b"\xc0\x0c",
        svc + label(b"cluster") + b"\xc0\x0c",
        b"\x40" + b"x" * 64 + zone,
        svc + zone[:-1],
        svc[:3],
        b"",
        # The first label and the parent of a name that cannot exist, as `Direct.denies` reads them.
        b"\x3f" + b"x" * 10 + zone,  # a first label longer than the name
        label(b"a") + b"\0" + zone,  # an empty label inside
        label(b"a") + zone[:-1] + label(b"svc") + zone,  # ends like the zone, one label too few above it
        label(b"a") * 4 + label(b"svc") + zone,  # 5 labels in the svc tree
        label(b"a") * 5 + label(b"svc") + zone,  # 6
        label(b"x") + label(b"a" * 63) * 3 + label(b"b" * 46) + zone,  # 256 bytes: its parent fits
    ]
    for body in bodies:
        for tail in tails:
            yield header + body + tail
            yield header + body + tail + b"\0"
            yield header[:2] + b"\x01\x10" + header[4:] + body + tail  # RD and CD
            yield header[:2] + b"\x09\x00" + header[4:] + body + tail  # opcode 1
            yield header[:2] + b"\x81\x00" + header[4:] + body + tail  # a response
            yield header[:2] + b"\x01\x00\x00\x02" + header[6:] + body + tail + body + tail


def test_raw_questions(zone: Zone) -> None:
    """Odd and broken questions get the general path's reply (FORMERR, NOTIMP, nothing, or the answer)."""
    for forwarding in (False, True):
        direct, general = Responder(zone, forwarding=forwarding), generic(zone, forwarding)
        for query in raw_queries():
            for tcp in (False, True):
                assert same(direct.respond(query, tcp)) == same(general.respond(query, tcp)), query.hex()


def test_shapes_kept_up_to_a_bound(zone: Zone, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parents whose shape is kept are dropped when they reach the bound; the answers stay the general
    path's, for names whose parents are kept, dropped or read again."""
    monkeypatch.setattr("clusterdns.direct.SHAPES_KEPT", 3)
    direct, general = Responder(zone), generic(zone)
    for i in range(20):
        for name in (
            f"x{i}.default.svc.cluster.local.cluster.local",
            f"x.n{i}.svc.cluster.local.n{i}.svc.cluster.local",
        ):
            for query in variants(name, "A"):
                assert same(direct.respond(query)) == same(general.respond(query)), name
        assert len(direct.direct._shapes) <= 3


@pytest.mark.parametrize("domain", ["example.org", "k8s", "svc.local", "dns.corp", "a.b.c.d", "x.svc", "svc"])
def test_other_cluster_domains(tmp_path: Path, domain: str) -> None:
    """The same bytes in a cluster zone of another name, even one whose labels are those of the tree."""
    zones = tmp_path / "zones"
    zones.mkdir()
    write_files(zones, {**CLUSTER, "more.yaml": MORE})
    config = Config(domain, CLUSTER_CONFIG.service_cidrs, CLUSTER_CONFIG.pod_cidrs)
    zone = load_zone(zones, config, ttl=30)
    direct, general = Responder(zone), generic(zone)
    for name in names(domain):
        for qtype in ("A", "SRV"):
            for query in variants(name, qtype):
                assert same(direct.respond(query)) == same(general.respond(query)), (name, qtype)
    assert dns.name.from_text(domain)  # a valid name


def size_class(length: int) -> int:
    """What CPython's allocator takes for a bytes object of `length` bytes: 33 + length, rounded up to 16."""
    return -(-(33 + length) // 16) * 16


def test_values_as_large_as_their_keys(zone: Zone) -> None:
    """Each value of the table of Services' names (A record, then SRV part) takes its key's size class in
    CPython's allocator (33 bytes + length, rounded up to 16), so that built one after the other they are
    neighbours; a value that would not fit in it is left as it is."""
    table = Responder(zone).direct.names
    values = [(key, value) for key, value in table.items() if type(value) is bytes]
    assert len(values) >= 5
    for key, value in values:
        assert 33 + len(value) == size_class(len(key)) or len(value.rstrip(b"\0")) > size_class(len(key)) - 33, key
        assert value[18] == 0 or value[16:18] != b"\0\0", key  # a named port: its number and labels


NEIGHBOURS = """
import pathlib, sys
from dns_helpers import CLUSTER_CONFIG, load_zone
from clusterdns.respond import Responder
names = Responder(load_zone(pathlib.Path(sys.argv[1]), CLUSTER_CONFIG)).direct.names
for key, value in names.items():
    if type(value) is bytes:
        print(len(key), id(value) - id(key))
"""


def test_values_next_to_their_keys(tmp_path: Path) -> None:
    """In a server's process (a fresh one: here a child), nearly every value of a 3,000-Service table sits in
    memory next to its key, or one block away (the allocator reuses blocks freed while loading), where a
    question reads it next."""
    manifest = "".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns-{i % 30}}}\n"
        f"spec:\n  ports:\n  - {{name: http, port: 80}}\n" + ("" if i % 3 else "  - {name: https, port: 443}\n")
        for i in range(3000)
    )  # beside them, the cluster's own: kubernetes and kube-dns
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "services.yaml").write_text(manifest)
    tests = str(Path(__file__).parent)
    child = [sys.executable, "-c", NEIGHBOURS, str(zones)]
    out = subprocess.run(child, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": tests})
    pairs = [tuple(map(int, line.split())) for line in out.stdout.splitlines()]
    neighbours = sum(abs(distance) <= 2 * size_class(length) for length, distance in pairs)
    assert len(pairs) == 3002 and neighbours >= 0.9 * len(pairs), out.stdout[:2000]
