"""Shared helpers for the DNS tests: a real server on a loopback port, queries over real sockets, and every
reply decoded by both dnspython and dnslib, which must agree.

`with servers(tmp_dir) as pool: pool.start(files, ...)` writes manifests into `<tmp_dir>/run<n>/zones`,
loads them as `clusterdns serve` does, and runs `clusterdns.server.serve` in a thread with its own event
loop until the block ends; the test gets a `DNS(host, port)`. Test modules make their fixtures from it,
at the scope they need. Expected records are written as zone-file lines and compared after both sides
are put in dnspython's text form.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dnslib
from conftest import write_files

from clusterdns.allocate import Store
from clusterdns.records import Zone
from clusterdns.registry import Config
from clusterdns.respond import Responder
from clusterdns.server import DNSServer, serve
from clusterdns.zones import Zones

SERIAL = 1_700_000_000
TIMEOUT = 2.0  # seconds to wait for a reply that should come

# --- decoding: dnspython and dnslib must agree --------------------------------------------------------


def _rdata_text(rdtype: int, text: str) -> str:
    """Any presentation of an rdata -> dnspython's text for it (IPv6 compression, quoting, dots)."""
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, text).to_text()


def _dnspython_view(msg: dns.message.Message) -> dict[str, Any]:
    sections = []
    for section in (msg.answer, msg.authority, msg.additional):
        records = []
        for rrset in section:
            for rd in rrset:
                records.append((rrset.name.to_text().lower(), rrset.rdtype, rrset.ttl, rd.to_text()))
        sections.append(sorted(records))
    edns = None
    if msg.edns >= 0:
        options = sorted((int(o.otype), o.to_wire()) for o in msg.options)
        edns = (msg.payload, msg.edns, msg.ednsflags & 0xFFFF, options)
    return {
        "id": msg.id,
        "flags": int(msg.flags),
        "rcode": msg.rcode(),
        "question": [(q.name.to_text(), q.rdtype, q.rdclass) for q in msg.question],
        "sections": sections,
        "edns": edns,
    }


def _name(label: dnslib.DNSLabel) -> str:
    """A dnslib name in dnspython's presentation (escapes for dots, quotes and other odd bytes)."""
    return dns.name.Name((*label.label, b"")).to_text()


def _dnslib_view(record: dnslib.DNSRecord) -> dict[str, Any]:
    sections = []
    edns = None
    rcode = record.header.rcode
    for index, section in enumerate((record.rr, record.auth, record.ar)):
        records = []
        for rr in section:
            if rr.rtype == dnslib.QTYPE.OPT:
                assert index == 2, "dnslib: an OPT outside the additional section"
                assert edns is None, "dnslib: more than one OPT"
                rcode |= (rr.ttl >> 24) << 4
                options = sorted((o.code, bytes(o.data)) for o in rr.rdata)
                edns = (rr.rclass, (rr.ttl >> 16) & 0xFF, rr.ttl & 0xFFFF, options)
                continue
            records.append((_name(rr.rname).lower(), rr.rtype, rr.ttl, _rdata_text(rr.rtype, str(rr.rdata))))
        assert len(records) == len(set(records)), f"duplicate records in a section: {records}"
        sections.append(sorted(records))
    return {
        "id": record.header.id,
        "flags": record.header.bitmap,
        "rcode": rcode,
        "question": [(_name(q.qname), q.qtype, q.qclass) for q in record.questions],
        "sections": sections,
        "edns": edns,
    }


def decode(wire: bytes) -> dns.message.Message:
    """A reply decoded by dnspython, after checking that dnslib decodes it to the same message: header
    flags, rcode (with the EDNS extension), question, each section's records and the OPT."""
    msg = dns.message.from_wire(wire)
    other = dnslib.DNSRecord.parse(wire)
    ours, theirs = _dnspython_view(msg), _dnslib_view(other)
    assert ours == theirs, f"dnspython and dnslib disagree:\n  dnspython {ours}\n  dnslib    {theirs}"
    return msg


def received(wire: bytes) -> bytes:
    """Every reply the suite receives passes here: decoded by both libraries, which must agree."""
    decode(wire)
    return wire


# --- expected records as zone-file lines ---------------------------------------------------------------


def zone_line(text: str) -> str:
    """`name ttl IN type rdata` in dnspython's presentation; the owner keeps its letter case."""
    name, ttl, rdclass, rdtype, rdata = text.split(None, 4)
    assert rdclass == "IN", text
    code = dns.rdatatype.from_text(rdtype)
    owner = dns.name.from_text(name).to_text()
    return f"{owner} {int(ttl)} IN {dns.rdatatype.to_text(code)} {_rdata_text(code, rdata)}"


def lines(section: Iterable[Any]) -> list[str]:
    """The records of a dnspython section as zone-file lines, in the order received."""
    return [
        f"{rrset.name.to_text()} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in section
        for rd in rrset
    ]


def check(
    msg: dns.message.Message,
    rcode: int,
    answer: Sequence[str] = (),
    authority: Sequence[str] = (),
    additional: Sequence[str] = (),
) -> None:
    """The reply's rcode, and each section equal (as a set) to the given zone-file lines."""
    got = {
        "rcode": dns.rcode.to_text(msg.rcode()),
        "answer": sorted(lines(msg.answer)),
        "authority": sorted(lines(msg.authority)),
        "additional": sorted(lines(msg.additional)),
    }
    want = {
        "rcode": dns.rcode.to_text(rcode),
        "answer": sorted(zone_line(t) for t in answer),
        "authority": sorted(zone_line(t) for t in authority),
        "additional": sorted(zone_line(t) for t in additional),
    }
    assert got == want, "\n".join(_differences(got, want))


def _differences(got: Mapping[str, Any], want: Mapping[str, Any]) -> Iterator[str]:
    yield "the reply differs from the table:"
    for key, expected in want.items():
        if got[key] == expected:
            continue
        if isinstance(expected, str):
            yield f"  {key}: got {got[key]}, want {expected}"
            continue
        for line in expected:
            if line not in got[key]:
                yield f"  {key} missing:    {line}"
        for line in got[key]:
            if line not in expected:
                yield f"  {key} unexpected: {line}"


# --- talking to the server ----------------------------------------------------------------------------


class DNS(NamedTuple):
    """A running server's address."""

    host: str
    port: int

    def exchange(self, wire: bytes, tcp: bool = False, timeout: float = TIMEOUT) -> bytes | None:
        """Send one message and return the raw reply, checked by `received`; None when a UDP reply did
        not come in `timeout` or the TCP connection was closed without a reply."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        if tcp:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(struct.pack("!H", len(wire)) + wire)
                return read_framed(sock)
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(wire, (self.host, self.port))
            try:
                return received(sock.recv(65535))
            except TimeoutError:
                return None

    def query(
        self,
        name: str,
        rdtype: str | int,
        tcp: bool = False,
        edns: bool = True,
        payload: int = 1232,
        rd: bool = True,
        cd: bool = False,
        options: Sequence[dns.edns.Option] = (),
    ) -> dns.message.Message:
        """One question over UDP (or TCP); the reply decoded by both libraries, its ID and question checked.

        Real sockets as dns.query.udp/tcp use, written out because those don't return the raw bytes that
        dnslib must decode too.
        """
        q = make_query(name, rdtype, edns=edns, payload=payload, rd=rd, cd=cd, options=options)
        wire = q.to_wire()
        reply = self.exchange(wire, tcp=tcp)
        assert reply is not None, f"no reply to {name} {rdtype} over {'TCP' if tcp else 'UDP'}"
        msg = decode(reply)
        assert msg.id == q.id
        end = 12 + len(q.question[0].name.to_wire()) + 4
        assert reply[12:end] == wire[12:end], "the question must come back byte for byte"
        return msg


def make_query(
    name: str,
    rdtype: str | int,
    edns: bool = True,
    payload: int = 1232,
    rd: bool = True,
    cd: bool = False,
    options: Sequence[dns.edns.Option] = (),
) -> dns.message.QueryMessage:
    q = dns.message.make_query(
        name, rdtype, use_edns=0 if edns else False, payload=payload, options=list(options) or None
    )
    q.id = random.randrange(1, 0x10000)
    q.flags = dns.flags.Flag(0)
    if rd:
        q.flags |= dns.flags.RD
    if cd:
        q.flags |= dns.flags.CD
    return q


def read_framed(sock: socket.socket) -> bytes | None:
    """One length-prefixed DNS message from a TCP socket, checked by `received`; None at a clean end of
    stream."""
    head = _read_exactly(sock, 2)
    if head is None:
        return None
    (length,) = struct.unpack("!H", head)
    body = _read_exactly(sock, length)
    assert body is not None, "connection closed in the middle of a message"
    return received(body)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            assert not buf, "connection closed in the middle of a message"
            return None
        buf += chunk
    return buf


# --- the test cluster ---------------------------------------------------------------------------------

CLUSTER_CONFIG = Config(
    service_cidrs=("10.0.0.0/16", "fd00:10:96::/112"), pod_cidrs=("10.244.0.0/16", "fd00:10:244::/64")
)


def pod(name: str, ip: str, labels: str, ready: bool = True, spec: str = "") -> str:
    """A Pod document with a stated IP and Ready condition; `spec` adds `{hostname: .., subdomain: ..}` keys."""
    status = "True" if ready else "False"
    return f"""
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: {name}, labels: {{{labels}}}}}
        spec: {{{spec}{", " if spec else ""}containers: [{{name: c}}]}}
        status:
          podIP: {ip}
          conditions: [{{type: Ready, status: "{status}"}}]
        """


SERVICES = """
    apiVersion: v1
    kind: Namespace
    metadata: {name: team}
    ---
    # ClusterIP, two named ports; two ready Pods and one not ready behind it.
    apiVersion: v1
    kind: Service
    metadata: {name: my-nginx}
    spec:
      clusterIP: 10.0.0.50
      selector: {run: my-nginx}
      ports:
      - {name: http, port: 80, targetPort: 8080}
      - {name: https, port: 443, targetPort: 8443}
    ---
    # A second Service selecting the same Pods: their IPs get one PTR per Service.
    apiVersion: v1
    kind: Service
    metadata: {name: metrics}
    spec:
      clusterIP: 10.0.0.51
      selector: {run: my-nginx}
      ports:
      - {name: metrics, port: 9100}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: unnamed}
    spec:
      clusterIP: 10.0.0.52
      ports:
      - {port: 8000}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: dual}
    spec:
      ipFamilyPolicy: RequireDualStack
      ipFamilies: [IPv4, IPv6]
      clusterIPs: [10.0.0.60, "fd00:10:96::60"]
      ports:
      - {name: http, port: 80}
    ---
    # Headless, StatefulSet style: the Pods' hostnames name the endpoints.
    apiVersion: v1
    kind: Service
    metadata: {name: nginx}
    spec:
      clusterIP: None
      selector: {app: nginx}
      ports:
      - {name: web, port: 80}
    ---
    # Headless without hostnames: endpoints are named by their dashed IPs; ports map to other numbers.
    apiVersion: v1
    kind: Service
    metadata: {name: hdls}
    spec:
      clusterIP: None
      selector: {app: hdls}
      ports:
      - {name: http, port: 80, targetPort: 8080}
      - {name: metrics, port: 9000, targetPort: 9100}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: empty}
    spec:
      clusterIP: None
      selector: {app: empty}
      ports:
      - {name: http, port: 80}
    ---
    # Headless with IPv6 endpoints from an EndpointSlice.
    apiVersion: v1
    kind: Service
    metadata: {name: v6}
    spec:
      clusterIP: None
      ports:
      - {name: http, port: 80, targetPort: 8080}
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: v6-abcde
      labels: {kubernetes.io/service-name: v6}
    addressType: IPv6
    ports:
    - {name: http, port: 8080, protocol: TCP}
    endpoints:
    - addresses: ["fd00::1"]
    - addresses: ["2001:db8::"]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: ext}
    spec:
      type: ExternalName
      externalName: my.database.example.com
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: alias}
    spec:
      type: ExternalName
      externalName: my-nginx.default.svc.cluster.local
    """

PODS = "".join(
    (
        pod("nginx-a", "10.244.1.5", "run: my-nginx"),
        pod("nginx-b", "10.244.1.6", "run: my-nginx"),
        pod("nginx-c", "10.244.1.7", "run: my-nginx", ready=False),
        pod("web-0", "10.244.2.10", "app: nginx", spec="hostname: web-0, subdomain: nginx"),
        pod("web-1", "10.244.2.11", "app: nginx", spec="hostname: web-1, subdomain: nginx"),
        pod("h1", "10.244.3.1", "app: hdls"),
        pod("h2", "10.244.3.2", "app: hdls"),
        pod("h3", "10.244.3.3", "app: hdls"),
        pod("h4", "10.244.3.4", "app: hdls", ready=False),
        pod("e1", "10.244.4.1", "app: empty", ready=False),
    )
)


def slice_of(name: str, first: int, count: int) -> str:
    """A headless selectorless Service with `count` ready endpoints 10.244.<first>.1.. in one EndpointSlice."""
    addresses = "\n".join(f"        - addresses: [10.244.{first}.{i}]" for i in range(1, count + 1))
    return f"""
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}}}
        spec:
          clusterIP: None
          ports:
          - {{name: http, port: 80, targetPort: 8080}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: {name}-abcde
          labels: {{kubernetes.io/service-name: {name}}}
        addressType: IPv4
        ports:
        - {{name: http, port: 8080, protocol: TCP}}
        endpoints:
{addresses}
        """


# The cluster most DNS tests ask about; `big` has 100 endpoints, an A answer of about 1,650 bytes.
CLUSTER = {"services.yaml": SERVICES, "pods.yaml": PODS, "big.yaml": slice_of("big", 5, 100)}


# --- running a server ---------------------------------------------------------------------------------


class ServerThread:
    """`serve()` run in a thread with its own event loop until `stop()`."""

    def __init__(self, responder: Responder, host: str, port: int) -> None:
        self.responder, self.host, self.port = responder, host, port
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.server: DNSServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="dns-test-server", daemon=True)

    async def _main(self) -> None:
        try:
            async with serve(self.responder, self.host, self.port) as server:
                self.server, self.loop, self.done = server, asyncio.get_running_loop(), asyncio.Event()
                self.started.set()
                await self.done.wait()
        except BaseException as exc:
            self.error = exc
            self.started.set()

    def start(self) -> DNS:
        self.thread.start()
        assert self.started.wait(10), "the DNS server did not start"
        if self.error is not None:
            raise self.error
        assert self.server is not None
        return DNS(self.host, self.server.port)

    def stop(self) -> None:
        if self.loop is not None and self.done is not None:
            self.loop.call_soon_threadsafe(self.done.set)
        self.thread.join(10)
        assert not self.thread.is_alive(), "the DNS server did not stop"
        if self.error is not None:
            raise self.error


def load_zone(zones: Path, config: Config, ttl: int = 5, pods: str = "insecure", serial: int = SERIAL) -> Zone:
    """The Zone of a zones directory, loaded as `clusterdns serve` loads it (allocations in memory)."""
    store = Store(None)
    try:
        registry = Zones(str(zones), config, store).load(float(serial))
    finally:
        store.close()
    problems = [str(p) for p in registry.problems]
    assert problems == [], f"the test manifests must load without problems: {problems}"
    return Zone(registry, ttl=ttl, pods=pods, serial=serial)


class Servers:
    """Starts servers on manifests written under `root`; `close()` stops them all and checks that none
    answered anything with an unexpected failure (SERVFAIL from a crash in the handler)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: list[ServerThread] = []
        self.count = 0

    def start(
        self,
        files: Mapping[str, str],
        *,
        config: Config | None = None,
        ttl: int = 5,
        pods: str = "insecure",
        serial: int = SERIAL,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> DNS:
        self.count += 1
        zones = self.root / f"run{self.count}" / "zones"
        zones.mkdir(parents=True)
        write_files(zones, files)
        zone = load_zone(zones, config or Config(), ttl=ttl, pods=pods, serial=serial)
        thread = ServerThread(Responder(zone), host, port)
        address = thread.start()
        self.running.append(thread)
        return address

    def close(self) -> None:
        failures = 0
        for thread in self.running:
            thread.stop()
            failures += thread.server.failures if thread.server else 0
        self.running.clear()
        assert failures == 0, "the server hit an unexpected failure while answering (see the log)"


@contextlib.contextmanager
def servers(root: Path) -> Iterator[Servers]:
    pool = Servers(root)
    try:
        yield pool
    finally:
        pool.close()


def free_port() -> int:
    """A loopback port free for both UDP and TCP right now, below the kernel's ephemeral range.

    Not from the ephemeral range (what binding port 0 gives): a client polling a server that is not
    listening yet may then be handed that very port as its own source port and connect to itself
    (TCP simultaneous open), reading its own request back and holding the port the server needs.
    """
    low = _ephemeral_low()
    while True:
        port = random.randrange(10000, low)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            try:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, 12000)
