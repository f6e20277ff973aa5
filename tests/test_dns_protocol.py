"""The DNS protocol around the records: TCP framing and pipelining, UDP and TCP alike, EDNS0, truncation
by whole RRsets, and the header guard; raw bytes over real UDP and TCP sockets of a running server."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from conftest import write_files
from dns_helpers import (
    DNS,
    TIMEOUT,
    ServerThread,
    decode,
    load_zone,
    make_query,
    read_framed,
    received,
    servers,
    slice_of,
)

import clusterdns.respond
import clusterdns.server
from clusterdns.forward import Forwarder, Upstream
from clusterdns.metrics import Stats, Tally, zone_labels
from clusterdns.registry import Config
from clusterdns.respond import Responder
from clusterdns.server import DNSServer

FILES = {
    "services.yaml": """
        apiVersion: v1
        kind: Service
        metadata: {name: my-nginx}
        spec:
          clusterIP: 10.0.0.50
          ports:
          - {name: http, port: 80}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: alias}
        spec:
          type: ExternalName
          externalName: big.default.svc.cluster.local
        """
    + slice_of("big", 5, 100)  # an A answer of 100 records: about 1,650 bytes
    + slice_of("mid", 6, 50)  # about 850 bytes: over 512, under 1232
    + slice_of("few", 7, 6),  # SRV: the answer fits in 512 bytes, the answer and the additional A records do not
}

NGINX = "my-nginx.default.svc.cluster.local."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DNS]:
    with servers(Path(tmp_path_factory.mktemp("dns-protocol"))) as pool:
        yield pool.start(FILES)


def header(wire: bytes) -> tuple[int, int, int, int, int, int]:
    """(ID, flags, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT)."""
    return struct.unpack_from("!HHHHHH", wire)


def raw(name: str = NGINX, rdtype: str = "A", flags: int = 0x0100, edns: bool = False) -> bytes:
    """A query's wire form with the given header flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD)."""
    wire = bytearray(make_query(name, rdtype, edns=edns).to_wire())
    struct.pack_into("!H", wire, 2, flags)
    return bytes(wire)


class UDPClient:
    """One UDP socket to the server: what it receives after sending a bad packet and then a good query
    shows whether the bad one was answered or dropped, without waiting for a timeout."""

    def __init__(self, server: DNS) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((server.host, server.port))

    def send(self, wire: bytes) -> None:
        self.sock.send(wire)

    def recv(self) -> bytes:
        return received(self.sock.recv(65535))

    def dropped(self, wire: bytes) -> bool:
        """Send `wire`, then a valid query: True when the first datagram back answers the valid query."""
        self.send(wire)
        probe = make_query(NGINX, "A", edns=False)
        probe.id = 4243 if wire[:2] == struct.pack("!H", 4242) else 4242
        self.send(probe.to_wire())
        return header(self.recv())[0] == probe.id

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def udp(server: DNS) -> Iterator[UDPClient]:
    client = UDPClient(server)
    yield client
    client.close()


def closed_by_server(sock: socket.socket, send: bytes = b"") -> bool:
    """True when the server closes (or resets) the connection, with or without `send` written first."""
    try:
        if send:
            sock.sendall(send)
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def assert_still_answering(server: DNS) -> None:
    for tcp in (False, True):
        msg = server.query(NGINX, "A", tcp=tcp)
        assert msg.rcode() == dns.rcode.NOERROR
        assert [rd.to_text() for rrset in msg.answer for rd in rrset] == ["10.0.0.50"]


# --- TCP ----------------------------------------------------------------------------------------------

QUESTIONS = [
    (NGINX, "A"),
    (NGINX, "AAAA"),
    ("_http._tcp.few.default.svc.cluster.local.", "SRV"),
    ("nosuch.default.svc.cluster.local.", "A"),
    ("alias.default.svc.cluster.local.", "A"),
    ("cluster.local.", "SOA"),
    ("cluster.local.", "NS"),
    ("dns-version.cluster.local.", "TXT"),
    ("50.0.0.10.in-addr.arpa.", "PTR"),
    ("example.com.", "A"),
    ("big.default.svc.cluster.local.", "A"),
]
SMALL = [q for q in QUESTIONS if q[0].split(".")[0] not in ("alias", "big", "_http")]  # replies under 512 bytes


def test_tcp_pipelined(server: DNS) -> None:
    """Several queries sent at once on one TCP connection are all answered, in order, on that connection."""
    queries = [make_query(name, rdtype) for name, rdtype in QUESTIONS]
    for i, q in enumerate(queries):
        q.id = 1000 + i
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries)))
        replies = [read_framed(sock) for _ in queries]
        for q, reply in zip(queries, replies, strict=True):
            assert reply is not None
            msg = decode(reply)
            assert (msg.id, msg.question) == (q.id, q.question)
        # the connection stays open for more
        again = make_query(NGINX, "A")
        wire = again.to_wire()
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        reply = read_framed(sock)
        assert reply is not None
        assert decode(reply).id == again.id


def test_tcp_framing_split(server: DNS) -> None:
    """A TCP message arriving in pieces (the length bytes apart, the body in two) is read whole."""
    q = make_query(NGINX, "A")
    framed = struct.pack("!H", len(q.to_wire())) + q.to_wire()
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (framed[:1], framed[1:2], framed[2:9], framed[9:]):
            sock.sendall(piece)
        reply = read_framed(sock)
    assert reply is not None
    msg = decode(reply)
    assert msg.id == q.id
    assert msg.rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize(("name", "rdtype"), SMALL)
def test_udp_and_tcp_answer_alike(server: DNS, name: str, rdtype: str) -> None:
    """UDP and TCP give the same reply to the same question when it fits in a datagram."""
    for edns in (False, True):
        q = make_query(name, rdtype, edns=edns)
        udp, tcp = server.exchange(q.to_wire()), server.exchange(q.to_wire(), tcp=True)
        assert udp is not None and tcp is not None
        assert decode(udp) == decode(tcp)
        assert (decode(udp).rcode(), decode(udp).edns) == (decode(tcp).rcode(), decode(tcp).edns)


def test_tcp_idle_timeout(server: DNS, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TCP connection with no query for the idle timeout is closed by the server."""
    monkeypatch.setattr(clusterdns.server, "TCP_IDLE_TIMEOUT", 0.2)
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        assert closed_by_server(sock)  # well before our own timeout


def test_tcp_trickle_does_not_keep_a_connection(server: DNS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes that never make up a whole query do not hold a connection open past the idle timeout."""
    monkeypatch.setattr(clusterdns.server, "TCP_IDLE_TIMEOUT", 0.3)
    wire = make_query(NGINX, "A").to_wire()
    framed = struct.pack("!H", len(wire) + 100) + wire  # announces more than it will ever send
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        closed = False
        for byte in framed:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
        assert closed or closed_by_server(sock)
        assert time.monotonic() - started < TIMEOUT


def connect(server: DNS, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=TIMEOUT, source_address=(source, 0))


def round_trip(sock: socket.socket) -> bytes | None:
    """One query for my-nginx on an open connection; its reply, or None when the server closed it."""
    q = make_query(NGINX, "A").to_wire()
    try:
        sock.sendall(struct.pack("!H", len(q)) + q)
        return read_framed(sock)
    except (ConnectionResetError, BrokenPipeError):
        return None


def test_tcp_connection_bound(server: DNS, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the bound on open TCP connections a new one is taken and the one idle longest is closed; the
    others keep working."""
    monkeypatch.setattr(clusterdns.server, "TCP_MAX_CONNECTIONS", 2)
    held = [connect(server) for _ in range(2)]
    try:
        for sock in held:  # a round trip on each: both are open and counted, the first idle longest
            assert round_trip(sock) is not None
        with connect(server) as extra:
            assert round_trip(extra) is not None
            assert closed_by_server(held[0])
            assert round_trip(held[1]) is not None
    finally:
        for sock in held:
            sock.close()


def test_tcp_one_address_cannot_take_every_slot(server: DNS) -> None:
    """256 idle connections from one address hold only its share (32); another client still gets answers
    over TCP, and the held ones that were taken keep working."""
    held = [connect(server) for _ in range(256)]
    try:
        assert round_trip(held[0]) is not None
        with connect(server, "127.0.0.2") as other:
            assert round_trip(other) is not None
        assert closed_by_server(held[-1])  # beyond the address's share: closed at once
        assert round_trip(held[1]) is not None
    finally:
        for sock in held:
            sock.close()


def test_tcp_churning_client_does_not_shut_out_others(server: DNS) -> None:
    """A client that keeps opening connections without closing them is held to its share, however many it
    opens; a client from another address is answered all along."""
    held: list[socket.socket] = []
    try:
        for _ in range(10):
            held.extend(connect(server, "127.0.0.3") for _ in range(40))
            with connect(server, "127.0.0.4") as other:
                assert round_trip(other) is not None, f"shut out after {len(held)} connections"
    finally:
        for sock in held:
            sock.close()


def test_tcp_oldest_idle_closed_to_make_room(server: DNS, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every slot taken by idle connections from different addresses, a new client is answered and the
    connection idle longest is the one closed."""
    monkeypatch.setattr(clusterdns.server, "TCP_MAX_CONNECTIONS", 4)
    monkeypatch.setattr(clusterdns.server, "TCP_MAX_PER_CLIENT", 1)
    held = [connect(server, f"127.0.0.{i}") for i in range(10, 14)]
    try:
        for sock in held:
            assert round_trip(sock) is not None
        assert round_trip(held[0]) is not None  # the first is now the most recently active
        with connect(server, "127.0.0.20") as newcomer:
            assert round_trip(newcomer) is not None
            assert closed_by_server(held[1])
            for sock in (held[0], held[2], held[3]):
                assert round_trip(sock) is not None
    finally:
        for sock in held:
            sock.close()


# --- EDNS0 --------------------------------------------------------------------------------------------


def test_edns_echoed(server: DNS) -> None:
    """A query with an OPT gets an OPT of version 0; a query without one gets none, over UDP and TCP."""
    for tcp in (False, True):
        with_opt = server.query(NGINX, "A", tcp=tcp, edns=True)
        assert with_opt.edns == 0
        assert with_opt.rcode() == dns.rcode.NOERROR
        without = server.query(NGINX, "A", tcp=tcp, edns=False)
        assert without.edns == -1
        assert without.rcode() == dns.rcode.NOERROR
        negative = server.query("nosuch.default.svc.cluster.local.", "A", tcp=tcp, edns=True)
        assert negative.edns == 0
        assert negative.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("version", [1, 2, 255])
def test_edns_badvers(server: DNS, version: int) -> None:
    """An EDNS version above 0 gets BADVERS, in an OPT of version 0."""
    q = dns.message.make_query(NGINX, "A", use_edns=version)
    reply = server.exchange(q.to_wire())
    assert reply is not None
    msg = decode(reply)
    assert msg.id == q.id
    assert msg.rcode() == dns.rcode.BADVERS
    assert msg.edns == 0
    assert msg.answer == []


def test_edns_unknown_options_and_flags_not_echoed(server: DNS) -> None:
    """Options and EDNS flags the server does not know never come back."""
    option = dns.edns.GenericOption(65001, b"not-for-you")
    q = dns.message.make_query(NGINX, "A", use_edns=0, options=[option], ednsflags=0x4000 | 0x0001)
    reply = server.exchange(q.to_wire())
    assert reply is not None
    msg = decode(reply)
    assert msg.rcode() == dns.rcode.NOERROR
    assert list(msg.options) == []
    assert msg.ednsflags & 0x7FFF == 0


# --- truncation ---------------------------------------------------------------------------------------


def rrsets(msg: dns.message.Message) -> list[list[tuple[str, int, frozenset[str]]]]:
    """Each section as a list of (owner, type, records) RRsets."""
    return [
        [(r.name.to_text().lower(), r.rdtype, frozenset(rd.to_text() for rd in r)) for r in section]
        for section in (msg.answer, msg.authority, msg.additional)
    ]


def assert_cut_by_rrsets(udp: bytes, whole: bytes, limit: int) -> dns.message.Message:
    """`udp` fits in `limit` bytes, is `whole` with RRsets dropped from the end (none cut in part), and
    has TC set when an answer or authority RRset was dropped."""
    assert len(udp) <= limit
    short, full = decode(udp), decode(whole)
    assert not full.flags & dns.flags.TC
    kept, every = rrsets(short), rrsets(full)
    flat_kept = [s for section in kept for s in section]
    flat_every = [s for section in every for s in section]
    assert flat_kept == flat_every[: len(flat_kept)], "the kept RRsets must be whole and in order"
    for k, e in zip(kept, every, strict=True):
        assert k == e[: len(k)]
    if len(kept[0]) < len(every[0]) or len(kept[1]) < len(every[1]):
        assert short.flags & dns.flags.TC
    assert short.rcode() == full.rcode()
    return short


def sizes(server: DNS, name: str, rdtype: str) -> int:
    """The length of the whole reply over TCP (without EDNS)."""
    whole = server.exchange(make_query(name, rdtype, edns=False).to_wire(), tcp=True)
    assert whole is not None
    return len(whole)


TRUNCATION = [
    # (name, type, EDNS payload or None, the limit the UDP reply must fit)
    ("big.default.svc.cluster.local.", "A", None, 512),
    ("big.default.svc.cluster.local.", "A", 4096, 1232),
    ("big.default.svc.cluster.local.", "A", 1232, 1232),
    ("big.default.svc.cluster.local.", "A", 1400, 1232),
    ("mid.default.svc.cluster.local.", "A", None, 512),
    ("mid.default.svc.cluster.local.", "A", 600, 600),
    ("mid.default.svc.cluster.local.", "A", 100, 512),
    ("alias.default.svc.cluster.local.", "A", None, 512),
    ("alias.default.svc.cluster.local.", "A", 4096, 1232),
    ("_http._tcp.big.default.svc.cluster.local.", "SRV", None, 512),
    ("_http._tcp.big.default.svc.cluster.local.", "SRV", 4096, 1232),
]


@pytest.mark.parametrize(("name", "rdtype", "payload", "limit"), TRUNCATION)
def test_truncation(server: DNS, name: str, rdtype: str, payload: int | None, limit: int) -> None:
    """UDP replies fit in min(client buffer, 1232) bytes, or 512 without EDNS: whole RRsets are dropped
    from the end and TC set; over TCP the same question is answered whole."""
    edns = payload is not None
    q = make_query(name, rdtype, edns=edns, payload=payload or 512)
    whole = server.exchange(q.to_wire(), tcp=True)
    assert whole is not None
    assert len(whole) > limit, "the case must not fit, or it tests nothing"
    udp = server.exchange(q.to_wire())
    assert udp is not None
    short = assert_cut_by_rrsets(udp, whole, limit)
    assert short.flags & dns.flags.TC
    assert short.edns == (0 if edns else -1)


def test_truncation_keeps_whole_rrsets(server: DNS) -> None:
    """A CNAME and a target RRset too big for 512 bytes: the CNAME is kept whole, the A RRset dropped
    whole, TC set; TCP gives all 100 addresses."""
    q = make_query("alias.default.svc.cluster.local.", "A", edns=False)
    udp = server.exchange(q.to_wire())
    tcp = server.exchange(q.to_wire(), tcp=True)
    assert udp is not None and tcp is not None
    short, full = decode(udp), decode(tcp)
    assert [r.rdtype for r in short.answer] == [dns.rdatatype.CNAME]
    assert short.flags & dns.flags.TC
    assert [(r.rdtype, len(r)) for r in full.answer] == [(dns.rdatatype.CNAME, 1), (dns.rdatatype.A, 100)]
    assert not full.flags & dns.flags.TC


def test_fits_when_the_buffer_allows(server: DNS) -> None:
    """An 850-byte answer is cut at 512 without EDNS but comes whole with an EDNS buffer of 1232."""
    assert 512 < sizes(server, "mid.default.svc.cluster.local.", "A") <= 1232 - 11
    msg = server.query("mid.default.svc.cluster.local.", "A", edns=True, payload=1232)
    assert not msg.flags & dns.flags.TC
    assert sum(len(r) for r in msg.answer) == 50


def test_dropped_additional_sets_tc(server: DNS) -> None:
    """When only additional records are left out for size, TC is still set (issue 3: "what doesn't fit is
    truncated by whole RRsets with TC=1"; CoreDNS sets TC for any record dropped)."""
    name = "_http._tcp.few.default.svc.cluster.local."
    q = make_query(name, "SRV", edns=False)
    udp, whole = server.exchange(q.to_wire()), server.exchange(q.to_wire(), tcp=True)
    assert udp is not None and whole is not None
    assert len(whole) > 512
    short, full = decode(udp), decode(whole)
    assert short.answer == full.answer, "the case needs the answer to fit"
    assert len(short.additional) < len(full.additional)
    assert short.flags & dns.flags.TC


# --- header guard -------------------------------------------------------------------------------------

QR, AA, TC, RD, RA, Z, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0040, 0x0020, 0x0010


def test_response_dropped(server: DNS, udp: UDPClient) -> None:
    """A message with QR=1 is never answered (over UDP and TCP); the next query is."""
    assert udp.dropped(raw(flags=QR | RD))
    assert udp.dropped(raw(flags=QR | AA | RD, edns=True))
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        bad = raw(flags=QR | RD)
        good = make_query(NGINX, "A")
        good.id = (header(bad)[0] + 1) & 0xFFFF
        for wire in (bad, good.to_wire()):
            sock.sendall(struct.pack("!H", len(wire)) + wire)
        reply = read_framed(sock)
        assert reply is not None
        assert decode(reply).id == good.id


@pytest.mark.parametrize("length", [0, 1, 2, 11])
def test_short_packet_dropped(udp: UDPClient, length: int) -> None:
    """A datagram too short to hold a header gets no reply."""
    assert udp.dropped(raw()[:length])


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE, 3, 15])
def test_other_opcodes_notimp(udp: UDPClient, opcode: int) -> None:
    """An opcode other than QUERY gets NOTIMP with the opcode kept and every flag clear."""
    query = raw(flags=(opcode << 11) | RD | CD | AD | Z | AA | TC)
    udp.send(query)
    reply = udp.recv()
    msg = decode(reply)
    flags = header(reply)[1]
    assert msg.id == header(query)[0]
    assert msg.rcode() == dns.rcode.NOTIMP
    assert msg.opcode() == opcode
    assert flags & ~0x780F == QR, f"only QR, the opcode and the rcode may be set, got {flags:#06x}"


def qdcount(wire: bytes, count: int, extra: bytes = b"") -> bytes:
    out = bytearray(wire + extra)
    struct.pack_into("!H", out, 4, count)
    return bytes(out)


MALFORMED = [
    pytest.param(qdcount(raw(), 0)[:12], id="QDCOUNT 0, no question"),
    pytest.param(qdcount(raw(), 0), id="QDCOUNT 0 with a question"),
    pytest.param(qdcount(raw(), 2, raw("kubernetes.default.svc.cluster.local.")[12:]), id="QDCOUNT 2"),
    pytest.param(qdcount(raw(), 2), id="QDCOUNT 2, one question"),
    pytest.param(raw()[:12] + b"\xff\xfe\xfd\xfc", id="garbage after the header"),
    pytest.param(raw()[:12] + b"\x05abc", id="label running past the end"),
    pytest.param(raw()[:-2], id="question without its class"),
    pytest.param(raw()[:12] + b"\xc0\x0c\x00\x01\x00\x01", id="compression pointer in the question"),
    pytest.param(raw() + b"\x00\x00\x00", id="trailing bytes"),
    pytest.param(raw(edns=True)[:-3], id="OPT cut short"),
]


def with_options(*options: tuple[int, bytes], rdlen: int | None = None) -> bytes:
    """The EDNS query for my-nginx with these (code, data) options in its OPT, `rdlen` its RDATA length."""
    rdata = b"".join(struct.pack("!HH", code, len(data)) + data for code, data in options)
    return raw(edns=True)[:-2] + struct.pack("!H", len(rdata) if rdlen is None else rdlen) + rdata


def with_additional(record: bytes) -> bytes:
    """The EDNS query for my-nginx with `record` (owner, type, class, TTL, RDATA) before its OPT."""
    wire = bytearray(raw(edns=True))
    struct.pack_into("!H", wire, 10, 2)
    return bytes(wire[:-11] + record + wire[-11:])


def record(rtype: int, rdata: bytes, owner: bytes = b"\x00") -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 0, len(rdata)) + rdata


ECS, COOKIE, EDE, A_TYPE, CNAME_TYPE = 8, 10, 15, 1, 5
MALFORMED += [
    pytest.param(with_options((COOKIE, b"12345678"))[:-3], id="OPT option cut short"),
    pytest.param(with_options(rdlen=8) + struct.pack("!HH", 65001, 8) + b"1234", id="option length past the RDATA"),
    pytest.param(with_options(rdlen=3) + b"\x00\x0a\x00", id="option header cut short"),
    pytest.param(with_options((COOKIE, b"12345")), id="COOKIE of 5 bytes"),
    pytest.param(with_options((COOKIE, b"x" * 12)), id="COOKIE of 12 bytes"),
    pytest.param(with_options((COOKIE, b"x" * 41)), id="COOKIE of 41 bytes"),
    pytest.param(with_options((ECS, struct.pack("!HBB", 3, 0, 0))), id="ECS family 3"),
    pytest.param(with_options((ECS, struct.pack("!HBB", 1, 33, 0) + b"\x01" * 5)), id="ECS prefix 33 for IPv4"),
    pytest.param(with_options((ECS, struct.pack("!HBB", 1, 8, 0) + b"\x01\x02")), id="ECS address too long"),
    pytest.param(with_options((ECS, struct.pack("!HBB", 1, 8, 8) + b"\x01")), id="ECS scope not 0"),
    pytest.param(with_options((ECS, struct.pack("!HBB", 1, 7, 0) + b"\x03")), id="ECS bits past the prefix"),
    pytest.param(with_options((ECS, b"\x00\x01")), id="ECS cut short"),
    pytest.param(with_options((EDE, b"\x00")), id="EDE of 1 byte"),
    pytest.param(with_additional(record(A_TYPE, b"\x01\x02\x03")), id="A record of 3 bytes in additional"),
    pytest.param(with_additional(record(CNAME_TYPE, b"\x03abc")), id="CNAME whose name runs out"),
    pytest.param(with_additional(record(CNAME_TYPE, b"\xc0\xff")), id="CNAME pointing past the end"),
]


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(with_options((COOKIE, b"12345678")), id="client COOKIE"),
        pytest.param(with_options((COOKIE, b"x" * 24)), id="client and server COOKIE"),
        pytest.param(with_options((ECS, struct.pack("!HBB", 1, 24, 0) + b"\x0a\x00\x01")), id="ECS /24"),
        pytest.param(with_options((ECS, struct.pack("!HBB", 2, 0, 0))), id="ECS ::/0"),
        pytest.param(with_options((65001, b"anything"), (12, b"\x00" * 7)), id="unknown option and padding"),
        pytest.param(with_additional(record(A_TYPE, b"\x01\x02\x03\x04")), id="an A record in additional"),
    ],
)
def test_wellformed_options_and_records_answered(server: DNS, wire: bytes) -> None:
    """Well-formed options, and well-formed records beside the OPT, are answered as the plain query is."""
    for tcp in (False, True):
        reply = server.exchange(wire, tcp=tcp)
        assert reply is not None
        msg = decode(reply)
        assert msg.rcode() == dns.rcode.NOERROR
        assert [rd.to_text() for rrset in msg.answer for rd in rrset] == ["10.0.0.50"]


@pytest.mark.parametrize("wire", MALFORMED)
@pytest.mark.parametrize("flags", [RD, CD, RD | CD, 0])
def test_malformed_formerr(udp: UDPClient, wire: bytes, flags: int) -> None:
    """A message that can't be parsed, or with QDCOUNT other than 1, gets FORMERR with RD and CD copied."""
    query = bytearray(wire)
    struct.pack_into("!H", query, 2, flags)
    udp.send(bytes(query))
    reply = udp.recv()
    msg = decode(reply)
    assert msg.id == header(bytes(query))[0]
    assert msg.rcode() == dns.rcode.FORMERR
    assert header(reply)[1] & (QR | RD | CD | Z | TC | RA) == QR | flags


@pytest.mark.parametrize("flags", [0, RD, CD, RD | CD, RD | Z, CD | Z | AD, RD | TC | RA | AA])
@pytest.mark.parametrize(("name", "rcode"), [(NGINX, "NOERROR"), ("nosuch.default.svc.cluster.local.", "NXDOMAIN")])
def test_header_flags(server: DNS, flags: int, name: str, rcode: str) -> None:
    """RD and CD are copied from the query, AA is set on authoritative answers, Z is always 0, and TC only
    when truncated, whatever the query had set; over UDP and TCP."""
    for tcp in (False, True):
        query = raw(name, flags=flags)
        reply = server.exchange(query, tcp=tcp)
        assert reply is not None
        msg = decode(reply)
        assert msg.id == header(query)[0]
        assert dns.rcode.to_text(msg.rcode()) == rcode
        got = header(reply)[1]
        assert got & (QR | AA | RD | CD) == QR | AA | (flags & (RD | CD))
        assert got & (Z | TC | RA) == 0
        assert msg.opcode() == dns.opcode.QUERY


def test_refused_not_authoritative(server: DNS) -> None:
    """A name outside the zone is REFUSED without AA, the question echoed."""
    msg = server.query("example.com.", "A")
    assert msg.rcode() == dns.rcode.REFUSED
    assert not msg.flags & dns.flags.AA
    assert (msg.answer, msg.authority, msg.additional) == ([], [], [])


def test_survives_fuzz(server: DNS, udp: UDPClient) -> None:
    """Mutated queries never get SERVFAIL or stop the server: each is answered with a decodable reply or
    dropped, and a valid query afterwards is answered (the server's failure count stays 0)."""
    rng = random.Random(3)
    seeds = [
        raw(),
        raw(edns=True),
        raw("_http._tcp.big.default.svc.cluster.local.", "SRV"),
        raw("5.1.244.10.in-addr.arpa.", "PTR", edns=True),
    ]
    for _ in range(300):
        wire = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(2, len(wire) + 1)
            choice = rng.random()
            if choice < 0.6 and i < len(wire):
                wire[i] = rng.randrange(128)  # dnslib reads only UTF-8 labels back
            elif choice < 0.8:
                del wire[max(i, 12) :]
            else:
                wire[i:i] = bytes(rng.randrange(128) for _ in range(rng.randint(1, 8)))
        wire[2] &= 0x7F  # a query: one with QR set would be dropped and tell nothing
        struct.pack_into("!H", wire, 0, 7)
        udp.send(bytes(wire))
        probe = make_query(NGINX, "A", edns=False)
        probe.id = 8
        udp.send(probe.to_wire())
        while True:
            reply = udp.recv()
            msg = decode(reply)
            assert msg.rcode() != dns.rcode.SERVFAIL, f"SERVFAIL for {bytes(wire).hex()}"
            if msg.id == 8:
                break
    assert_still_answering(server)


def reverse_query(first: bytes, qtype: int = dns.rdatatype.PTR) -> bytes:
    """A PTR query whose first label is the raw bytes `first`, under 0.0.10.in-addr.arpa (ours)."""
    name = bytes([len(first)]) + first + b"".join(bytes([len(x)]) + x for x in (b"0", b"0", b"10", b"in-addr", b"arpa"))
    return struct.pack("!HHHHHH", 77, RD, 1, 0, 0, 0) + name + b"\x00" + struct.pack("!HH", qtype, 1)


@pytest.mark.parametrize("label", [b"\xb2", b"\xb9", b"1\xb2", b"\xbc", b"\xd9\xa1"])
def test_reverse_label_with_non_ascii_digit(server: DNS, label: bytes) -> None:
    """A reverse name whose label holds a byte that Latin-1 reads as a digit (0xB2 is '²') is answered like
    any other name that is not an address, over UDP and TCP, without an unexpected failure."""
    for tcp in (False, True):
        reply = exchange_undecoded(server, reverse_query(label), tcp)
        other = exchange_undecoded(server, reverse_query(b"x"), tcp)
        assert header(reply)[1] & 0x000F == header(other)[1] & 0x000F != dns.rcode.SERVFAIL


def exchange_undecoded(server: DNS, wire: bytes, tcp: bool) -> bytes:
    """One reply, not decoded: dnslib reads only UTF-8 labels, and the question comes back as asked."""
    if tcp:
        with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack_from("!H", data)[0]:
                chunk = sock.recv(65535)
                assert chunk, "closed without a reply"
                data += chunk
            return data[2:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendto(wire, (server.host, server.port))
        return sock.recv(65535)


def test_reverse_ip_ascii_digits_only() -> None:
    """names.reverse_ip reads only ASCII digits as numbers (and nibbles as hex digits)."""
    from clusterdns import names

    arpa = ("in-addr", "arpa")
    assert names.reverse_ip(("5", "1", "244", "10", *arpa)) == "10.244.1.5"
    for bad in ("\xb2", "\xb9", "\u0661", "\uff11", "", "1234", "256", "01"):
        assert names.reverse_ip((bad, "1", "244", "10", *arpa)) is None, bad
    nibbles = tuple("1" + "0" * 31)
    assert names.reverse_ip((*nibbles, "ip6", "arpa")) == "::1"
    assert names.reverse_ip(("\xb2", *nibbles[1:], "ip6", "arpa")) is None


def broken_responder(tmp_path: Path) -> Responder:
    """A Responder on an empty zone whose every answer raises: the zone's lookups and the direct answers."""
    zones = tmp_path / "zones"
    zones.mkdir()
    zone = load_zone(zones, Config())

    def broken(*args: object) -> None:
        raise RuntimeError("injected failure")

    zone.lookup = broken  # type: ignore[method-assign,assignment]
    responder = Responder(zone)
    responder.direct.answer = broken  # type: ignore[method-assign,assignment]
    responder.direct.srv = broken  # type: ignore[method-assign,assignment]
    return responder


def broken_server(tmp_path: Path) -> ServerThread:
    """A server on an empty zone whose every lookup raises."""
    return ServerThread(broken_responder(tmp_path), "127.0.0.1", 0)


def test_unexpected_failures_logged_at_most_once_per_interval(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Repeated failures of one cause are all answered SERVFAIL but logged once per interval; the next line
    after the interval counts the ones not logged."""
    thread = broken_server(tmp_path)
    server = thread.start()
    assert thread.server is not None
    now = [1000.0]
    thread.server.failure_log.clock = lambda: now[0]
    try:
        for i in range(50):
            q = make_query(f"n{i}.default.svc.cluster.local.", "A", edns=False)
            reply = server.exchange(q.to_wire(), tcp=i % 2 == 1)
            assert reply is not None and decode(reply).rcode() == dns.rcode.SERVFAIL
        logged = [r for r in caplog.records if r.name == "clusterdns.server"]
        assert len(logged) == 1
        assert logged[0].exc_info is not None  # the one line has the traceback
        now[0] += 10
        reply = server.exchange(make_query(NGINX, "A", edns=False).to_wire())
        assert reply is not None and decode(reply).rcode() == dns.rcode.SERVFAIL
        logged = [r.getMessage() for r in caplog.records if r.name == "clusterdns.server"]
        assert len(logged) == 2
        assert "(49 more failure(s) like it not logged in the last 10 s)" in logged[1]
        assert thread.server.failures == 51
    finally:
        thread.stop()


def test_unexpected_failure_servfail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A failure inside the handler is answered SERVFAIL with RD and CD copied, logged once with the query
    (not again for the same cause right after), and the server goes on answering, over UDP and TCP."""
    thread = broken_server(tmp_path)
    server = thread.start()
    try:
        sent = []
        for tcp in (False, True, False):
            q = make_query(NGINX, "A", edns=False, rd=True, cd=True)
            sent.append(q.to_wire().hex())
            reply = server.exchange(q.to_wire(), tcp=tcp)
            assert reply is not None
            msg = decode(reply)
            assert (msg.id, msg.rcode()) == (q.id, dns.rcode.SERVFAIL)
            assert header(reply)[1] & (QR | RD | CD) == QR | RD | CD
        assert thread.server is not None and thread.server.failures == 3
        logged = [r.getMessage() for r in caplog.records if r.name == "clusterdns.server"]
        assert logged == [f"answering failed; replying SERVFAIL to query {sent[0]}"]
    finally:
        thread.stop()


def test_still_answering_after_all(server: DNS) -> None:
    """After every bad packet of this module a valid query over UDP and over TCP is answered."""
    assert_still_answering(server)


def test_truncated_forms_bounded(tmp_path: Path) -> None:
    """A question asked with each of the 720 EDNS UDP sizes that truncate it keeps at most 16 truncated
    answers, each still right."""
    zones = tmp_path / "zones"
    zones.mkdir()
    write_files(zones, {"big.yaml": slice_of("big", 5, 100)})
    responder = Responder(load_zone(zones, Config()))
    for payload in range(513, 1233):
        result = responder.respond(make_query("big.default.svc.cluster.local.", "A", payload=payload).to_wire())
        assert isinstance(result, tuple)
        reply = result[0]
        assert len(reply) <= payload and decode(reply).flags & dns.flags.TC
    assert max(len(e.truncated) for e in responder.cache.values()) <= clusterdns.respond.TRUNCATED_FORMS


def test_answers_stay_counted_when_the_answer_cache_is_emptied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the answer cache reaches its bound and is emptied, the answers counted in its entries are kept:
    the request counter for /metrics never goes back."""
    monkeypatch.setattr(clusterdns.respond, "CACHE_ENTRIES", 3)
    zones = tmp_path / "zones"
    zones.mkdir()
    stats = Stats(zone_labels("cluster.local"))
    server = DNSServer(Responder(load_zone(zones, Config())), stats=stats)
    tally = Tally(stats)
    sent = 0
    for i in range(10):
        for _ in range(5):  # the first is a miss, the rest are answered from the cache entry
            query = make_query(f"n{i}.default.svc.cluster.local.", "A", edns=False).to_wire()
            assert server.answer(query, False, "127.0.0.1", tally)
            sent += 1
        assert sum(stats.totals()[: stats.requests]) == sent


class BrokenForwarder(Forwarder):
    """A forwarder that fails in a way nobody foresaw (a fake written as a class, no upstream reached)."""

    async def forward(self, query: bytes, tcp: bool = False) -> bytes:
        raise RuntimeError("injected forwarding failure")


async def test_forwarding_failure_servfail_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected failure while forwarding is answered SERVFAIL over UDP and TCP (not left unanswered,
    nor logged as a task exception never retrieved), logged once for repeats of the same cause."""
    zones = tmp_path / "zones"
    zones.mkdir()
    responder = Responder(load_zone(zones, Config()), forwarding=True)
    forwarder = BrokenForwarder([Upstream("192.0.2.1")])  # never asked: forward() fails first
    async with clusterdns.server.serve(responder, forwarder=forwarder) as server:
        dns_server = DNS(server.host, server.port)
        for tcp in (False, True, False, True):
            q = make_query("example.com.", "A")
            reply = await asyncio.to_thread(dns_server.exchange, q.to_wire(), tcp)
            assert reply is not None
            assert (decode(reply).id, decode(reply).rcode()) == (q.id, dns.rcode.SERVFAIL)
        assert server.failures == 4
    logged = [r for r in caplog.records if r.name == "clusterdns.server"]
    assert len(logged) == 1 and "injected forwarding failure" in str(logged[0].exc_info)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
