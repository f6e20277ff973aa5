"""Forwarding in the running `clusterdns serve` process: names outside the cluster go to real resolvers that
the tests start on loopback (dnsmasq logging every query, BIND logging every query and truncating UDP at
512 bytes), cluster names never do. Stub domains, an unreachable or silent upstream, `--upstream off`,
`--allow-recursion`, ExternalName targets outside the cluster, loops (direct and through dnsmasq),
truncation, the forwarded-answer cache and the forward metrics.

Every clusterdns here is given `--upstream` with a loopback resolver started by the test (or `off`): it
never asks the machine's resolv.conf nameservers.
"""

from __future__ import annotations

import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from conftest import write_files
from dns_helpers import DNS, check, decode, lines, make_query, read_framed
from prometheus_client.parser import text_string_to_metric_families
from test_forward import Daemon, Daemons, free_port
from test_serve import ROOT, metric, service_env, until

NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN
READY_WITHIN = 10.0  # seconds for a clusterdns to answer its first query
FORWARD_BOUND = 2.0 * 2  # Forwarder's default timeout x attempts: the longest a forwarded query may wait

MANIFESTS = {
    "services.yaml": """
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          clusterIP: 10.0.0.80
          ports:
          - {port: 80}
        ---
        # Its target is outside the cluster: the default upstream (dnsmasq) answers it.
        apiVersion: v1
        kind: Service
        metadata: {name: db}
        spec:
          type: ExternalName
          externalName: db.example.test
        ---
        # Its target does not exist in the corp.test stub domain (BIND answers NXDOMAIN).
        apiVersion: v1
        kind: Service
        metadata: {name: gone}
        spec:
          type: ExternalName
          externalName: missing.corp.test
        """
}
WEB = "web.default.svc.cluster.local."
WEB_A = ["web.default.svc.cluster.local. 5 IN A 10.0.0.80"]
DB_CNAME = "db.default.svc.cluster.local. 5 IN CNAME db.example.test."

DNSMASQ = [
    "log-queries",
    "local-ttl=300",
    "address=/example.test/192.0.2.7",
    "address=/db.example.test/192.0.2.20",
    "ptr-record=7.2.0.192.in-addr.arpa,www.example.test",
]
BIG_RECORDS = "".join(f"big A 192.0.2.{i}\n" for i in range(1, 41))  # 40 records: 671 bytes, over 512
CORP_ZONE = "$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 30\n@ NS ns\nns A 127.0.0.1\nwww 120 A 192.0.2.30\n"
BIG = sorted(f"big.corp.test. 300 IN A 192.0.2.{i}" for i in range(1, 41))
CACHE_ZONE = "$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 30\n@ NS ns\nns A 127.0.0.1\nttl60 60 A 192.0.2.60\n"


# --- clusterdns serve --------------------------------------------------------------------------------


class Clusterdns:
    """`clusterdns serve` on 127.0.0.1:`port` with `flags`, its stderr in a file; ready once it answers a
    cluster name."""

    def __init__(self, tmp: Path, zones: Path, port: int, *flags: str, http: str = "off") -> None:
        self.port = port
        self.dns = DNS("127.0.0.1", port)
        self.log = tmp / f"clusterdns-{port}.log"
        argv = [
            *(sys.executable, "-m", "clusterdns", "serve", "--zones", str(zones)),
            *("--state", str(tmp / f"state-{port}"), "--port", str(port), "--http", http, *flags),
        ]
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=service_env(), stdout=subprocess.DEVNULL, stderr=err)
        until(self._answers, READY_WITHIN, f"clusterdns on port {port} answers {WEB}")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"clusterdns exited with {self.proc.returncode}:\n{self.stderr()}")
        try:
            reply = self.dns.exchange(make_query(WEB, "A").to_wire(), timeout=0.2)
        except OSError:
            return False
        return reply is not None

    def ask(self, name: str, rdtype: str = "A", *, tcp: bool = False, edns: bool = True) -> dns.message.Message:
        """One query; the reply decoded by both libraries, its ID checked. Fails when none comes within
        twice the forwarding bound: a hang."""
        query = make_query(name, rdtype, edns=edns)
        try:
            wire = self.dns.exchange(query.to_wire(), tcp=tcp, timeout=2 * FORWARD_BOUND)
        except TimeoutError:
            wire = None
        assert wire is not None, f"no reply to {name} {rdtype} over {'TCP' if tcp else 'UDP'}"
        reply = decode(wire)
        assert reply.id == query.id
        return reply

    def rcode(self, name: str, rdtype: str = "A", *, tcp: bool = False) -> str:
        return dns.rcode.to_text(self.ask(name, rdtype, tcp=tcp).rcode())

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        """SIGINT (exits at once) by PID; then check that nothing crashed while answering."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        log = self.stderr()
        assert "answering failed" not in log and "forwarding failed" not in log, log
        assert "Traceback" not in log, f"clusterdns logged a traceback:\n{log}"


Start = Callable[..., Clusterdns]


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cluster") / "zones"
    path.mkdir()
    write_files(path, MANIFESTS)
    return path


@pytest.fixture(scope="module")
def resolvers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    pool = Daemons(tmp_path_factory.mktemp("resolvers"))
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def dnsmasq(resolvers: Daemons) -> Daemon:
    """The default upstream: example.test at fixed addresses (TTL 300), one PTR, every query logged."""
    return resolvers.dnsmasq(DNSMASQ)


@pytest.fixture(scope="module")
def bind(resolvers: Daemons) -> Daemon:
    """The corp.test stub domain's upstream: BIND, UDP answers cut at 512 bytes, every query logged."""
    return resolvers.named({"corp.test": CORP_ZONE + BIG_RECORDS})


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, zones: Path, dnsmasq: Daemon, bind: Daemon
) -> Iterator[Clusterdns]:
    """clusterdns forwarding to dnsmasq, and corp.test to BIND."""
    server = Clusterdns(
        tmp_path_factory.mktemp("served"),
        zones,
        free_port(),
        *("--upstream", str(dnsmasq.upstream), "--stub-domain", f"corp.test={bind.upstream}"),
    )
    yield server
    server.close()


@pytest.fixture
def start(tmp_path: Path, zones: Path) -> Iterator[Start]:
    """`start(*flags, port=None, http="off")`: a clusterdns for this test, closed and checked after it."""
    running: list[Clusterdns] = []

    def run(*flags: str, port: int | None = None, http: str = "off") -> Clusterdns:
        server = Clusterdns(tmp_path, zones, port or free_port(), *flags, http=http)
        running.append(server)
        return server

    yield run
    for server in running:
        server.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Resolvers for one test, stopped when it ends."""
    pool = Daemons(tmp_path)
    yield pool
    pool.stop()


def dnsmasq_queries(daemon: Daemon, name: str) -> list[str]:
    """The query types dnsmasq logged for `name`, in order."""
    return re.findall(rf"query\[(\w+)\] {re.escape(name)} from ", daemon.log.read_text())


def logged(daemon: Daemon, name: str, count: int = 1) -> list[str]:
    """Wait until dnsmasq has logged `count` queries for `name` (its log is written as it goes); return them."""

    def probe() -> list[str] | None:
        got = dnsmasq_queries(daemon, name)
        return got if len(got) >= count else None

    return until(probe, 5, f"dnsmasq logged {count} queries for {name}")


def counted_down(records: list[str], by: int = 5) -> list[str]:
    """Zone-file lines with TTLs up to `by` seconds below 300 put back to 300: the upstreams answer with
    TTL 300, and a cached answer's TTLs are counted down by the seconds it has been cached."""
    restored = []
    for record in records:
        name, ttl, rest = record.split(" ", 2)
        restored.append(f"{name} {300 if 300 - by <= int(ttl) <= 300 else ttl} {rest}")
    return restored


def bind_queries(daemon: Daemon, name: str) -> list[str]:
    """Over which transport BIND was asked for `name`, in order: "UDP" or "TCP"."""
    return ["TCP" if "T" in flags else "UDP" for flags in daemon.queries(name)]


# --- forwarding ----------------------------------------------------------------------------------------


def test_outside_names_forwarded(served: Clusterdns, dnsmasq: Daemon) -> None:
    """A name outside the cluster zones is answered with the upstream's records over UDP and TCP; cluster
    names, and reverse names of the service network, are answered locally and never reach the upstream."""
    check(served.ask(WEB), NOERROR, WEB_A)
    nx = served.ask("nope.default.svc.cluster.local.")
    assert (nx.rcode(), [r.rdtype for r in nx.authority]) == (NXDOMAIN, [dns.rdatatype.SOA])
    check(served.ask("80.0.0.10.in-addr.arpa.", "PTR"), NOERROR, ["80.0.0.10.in-addr.arpa. 5 IN PTR " + WEB])
    assert served.ask("99.0.0.10.in-addr.arpa.", "PTR").rcode() == NXDOMAIN
    check(served.ask("www.example.test."), NOERROR, ["www.example.test. 300 IN A 192.0.2.7"])
    check(served.ask("tcp.example.test.", tcp=True), NOERROR, ["tcp.example.test. 300 IN A 192.0.2.7"])
    check(
        served.ask("7.2.0.192.in-addr.arpa.", "PTR"), NOERROR, ["7.2.0.192.in-addr.arpa. 300 IN PTR www.example.test."]
    )
    assert (logged(dnsmasq, "www.example.test"), logged(dnsmasq, "tcp.example.test")) == (["A"], ["A"])
    logged(dnsmasq, "7.2.0.192.in-addr.arpa")  # asked after the local names: any of them would be logged by now
    log = dnsmasq.log.read_text()
    assert "cluster.local" not in log and "0.0.10.in-addr.arpa" not in log


def test_tcp_client_that_half_closes_gets_every_answer(served: Clusterdns) -> None:
    """A TCP client that sends a cluster query and a forwarded one and then shuts its sending side still
    gets both answers (the forwarded one when it comes back), then the server closes the connection."""
    queries = [make_query(WEB, "A"), make_query("half.example.test.", "A")]
    with socket.create_connection(("127.0.0.1", served.port), timeout=2 * FORWARD_BOUND) as sock:
        sock.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries)))
        sock.shutdown(socket.SHUT_WR)
        replies = [read_framed(sock), read_framed(sock)]
        assert read_framed(sock) is None  # then closed
    got = {decode(r).id: decode(r) for r in replies if r is not None}
    assert sorted(got) == sorted(q.id for q in queries)
    check(got[queries[0].id], NOERROR, WEB_A)
    check(got[queries[1].id], NOERROR, ["half.example.test. 300 IN A 192.0.2.7"])


def test_stub_domain(served: Clusterdns, dnsmasq: Daemon, bind: Daemon) -> None:
    """Names under a --stub-domain go to its upstream, answers and denials alike; other names to the default."""
    check(served.ask("www.corp.test."), NOERROR, ["www.corp.test. 120 IN A 192.0.2.30"])
    check(
        served.ask("nx.corp.test."),
        NXDOMAIN,
        authority=["corp.test. 30 IN SOA ns.corp.test. hostmaster.corp.test. 1 3600 600 86400 30"],
    )
    check(served.ask("stub.example.test."), NOERROR, ["stub.example.test. 300 IN A 192.0.2.7"])
    assert (bind_queries(bind, "www.corp.test"), bind_queries(bind, "nx.corp.test")) == (["UDP"], ["UDP"])
    assert bind_queries(bind, "stub.example.test") == []
    logged(dnsmasq, "stub.example.test")
    assert "corp.test" not in dnsmasq.log.read_text()


def test_external_name_outside_the_cluster(served: Clusterdns, dnsmasq: Daemon) -> None:
    """An ExternalName service whose target is outside the cluster: an A query gets the CNAME first, then
    the target's A from upstream; a CNAME query gets the CNAME only, without asking upstream."""
    for tcp in (False, True):
        reply = served.ask("db.default.svc.cluster.local.", tcp=tcp)
        assert reply.rcode() == NOERROR
        assert counted_down(lines(reply.answer)) == [DB_CNAME, "db.example.test. 300 IN A 192.0.2.20"], f"tcp={tcp}"
    only = served.ask("db.default.svc.cluster.local.", "CNAME")
    assert (only.rcode(), lines(only.answer)) == (NOERROR, [DB_CNAME])
    assert logged(dnsmasq, "db.example.test") == ["A"]  # the TCP query's A came from the cache


def test_external_name_target_missing(served: Clusterdns) -> None:
    """An ExternalName whose outside target does not exist: NXDOMAIN (the chain's end decides, RFC 6604)
    with the CNAME, and the upstream's SOA in authority so that the denial can be cached (RFC 2308 2.1)."""
    check(
        served.ask("gone.default.svc.cluster.local."),
        NXDOMAIN,
        ["gone.default.svc.cluster.local. 5 IN CNAME missing.corp.test."],
        ["corp.test. 30 IN SOA ns.corp.test. hostmaster.corp.test. 1 3600 600 86400 30"],
    )


def test_truncating_upstream(served: Clusterdns, bind: Daemon) -> None:
    """A truncated upstream answer is asked again over TCP; a client without EDNS gets TC=1 over UDP (671
    bytes don't fit its 512), an EDNS client the whole answer over UDP, and TCP the whole answer."""
    small = served.ask("big.corp.test.", edns=False)
    assert (small.rcode(), bool(small.flags & dns.flags.TC), small.answer) == (NOERROR, True, [])
    assert bind_queries(bind, "big.corp.test") == ["UDP", "TCP"]
    for tcp, edns in ((False, True), (True, False)):
        full = served.ask("big.corp.test.", tcp=tcp, edns=edns)
        assert (full.rcode(), full.flags & dns.flags.TC) == (NOERROR, 0)
        assert sorted(counted_down(lines(full.answer))) == BIG, f"tcp={tcp} edns={edns}"
    assert bind_queries(bind, "big.corp.test") == ["UDP", "TCP"]  # the full answer was cached


def test_cache_outlives_upstream(start: Start, daemons: Daemons) -> None:
    """A forwarded answer is cached for its TTL: with its upstream stopped it is still answered, over UDP
    and TCP, its TTL counted down from 60."""
    bind = daemons.named({"cache.test": CACHE_ZONE})
    server = start("--upstream", str(bind.upstream))
    check(server.ask("ttl60.cache.test."), NOERROR, ["ttl60.cache.test. 60 IN A 192.0.2.60"])
    bind.stop()
    assert bind.proc.poll() is not None
    for tcp in (False, True):
        reply = server.ask("ttl60.cache.test.", tcp=tcp)
        assert (reply.rcode(), [rd.to_text() for rrset in reply.answer for rd in rrset]) == (NOERROR, ["192.0.2.60"])
        assert 55 <= reply.answer[0].ttl <= 60
    assert bind_queries(bind, "ttl60.cache.test") == ["UDP"]


# --- failures ------------------------------------------------------------------------------------------


def test_unreachable_upstream(start: Start) -> None:
    """With nothing listening on the upstream's port, outside names get SERVFAIL at once over UDP and TCP;
    cluster names still answer."""
    server = start("--upstream", f"127.0.0.1:{free_port()}")
    for tcp in (False, True):
        started = time.monotonic()
        assert server.rcode("www.example.test.", tcp=tcp) == "SERVFAIL"
        assert time.monotonic() - started < FORWARD_BOUND, f"tcp={tcp}"
    check(server.ask(WEB), NOERROR, WEB_A)


def test_silent_upstream(start: Start) -> None:
    """An upstream that takes queries and never replies (UDP and TCP) costs a bounded time, then SERVFAIL."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))
        tcp.listen(16)  # the kernel accepts connections; nobody reads them
        server = start("--upstream", f"127.0.0.1:{port}")

        def timed(over_tcp: bool) -> tuple[str, bool]:
            started = time.monotonic()
            rcode = server.rcode(f"silent-{'tcp' if over_tcp else 'udp'}.example.test.", tcp=over_tcp)
            return rcode, time.monotonic() - started < FORWARD_BOUND + 0.5

        with ThreadPoolExecutor(2) as pool:  # both at once: each waits out the whole bound
            assert list(pool.map(timed, (False, True))) == [("SERVFAIL", True), ("SERVFAIL", True)]


def test_upstream_off(start: Start) -> None:
    """With --upstream off, names outside the cluster get REFUSED over UDP and TCP; cluster names answer."""
    server = start("--upstream", "off")
    assert [server.rcode("www.example.test.", tcp=tcp) for tcp in (False, True)] == ["REFUSED", "REFUSED"]
    check(server.ask(WEB), NOERROR, WEB_A)


def test_not_an_open_resolver(start: Start, dnsmasq: Daemon) -> None:
    """A client outside --allow-recursion gets REFUSED for outside names (never forwarded) and answers for
    cluster names; an ExternalName with an outside target gets its CNAME alone."""
    chased = len(dnsmasq_queries(dnsmasq, "db.example.test"))
    server = start("--upstream", str(dnsmasq.upstream), "--allow-recursion", "10.99.0.0/16")
    for tcp in (False, True):
        assert server.rcode("open.example.test.", tcp=tcp) == "REFUSED", f"tcp={tcp}"
        check(server.ask(WEB, tcp=tcp), NOERROR, WEB_A)
        reply = server.ask("db.default.svc.cluster.local.", tcp=tcp)
        assert (reply.rcode(), lines(reply.answer)) == (NOERROR, [DB_CNAME]), f"tcp={tcp}"
    assert dnsmasq_queries(dnsmasq, "open.example.test") == []
    assert len(dnsmasq_queries(dnsmasq, "db.example.test")) == chased


# --- loops ---------------------------------------------------------------------------------------------


def test_loop_to_itself(start: Start) -> None:
    """An upstream that is clusterdns's own address is dropped at start with a warning naming it; outside
    names then get SERVFAIL at once rather than looping."""
    port = free_port()
    server = start("--upstream", f"127.0.0.1:{port}", port=port)
    assert (
        f"upstream 127.0.0.1:{port} dropped: it is an address clusterdns listens on (127.0.0.1:{port})"
        in server.stderr()
    )
    for tcp in (False, True):
        started = time.monotonic()
        assert server.rcode("loop.example.test.", tcp=tcp) == "SERVFAIL"
        assert time.monotonic() - started < 1.0, f"tcp={tcp}"
    check(server.ask(WEB), NOERROR, WEB_A)


def test_loop_to_itself_through_a_wildcard(start: Start) -> None:
    """Listening on 0.0.0.0, an upstream at 127.0.0.1 on the same port may be clusterdns or a resolver the
    kernel redirects (Docker's 127.0.0.11): the start-up probe tells, and here drops it as a loop."""
    port = free_port()
    server = start("--host", "0.0.0.0", "--upstream", f"127.0.0.1:{port}", port=port)
    warning = f"upstream 127.0.0.1:{port} dropped: a loop probe sent to it came back to this clusterdns"
    until(lambda: warning in server.stderr(), 5, "the loop warning")
    assert server.rcode("loop.example.test.") == "SERVFAIL"
    check(server.ask(WEB), NOERROR, WEB_A)


def test_loop_through_dnsmasq(start: Start, daemons: Daemons) -> None:
    """An upstream that forwards back to clusterdns (dnsmasq with server=<clusterdns>) is found by the start-up
    probe and dropped with a warning naming it; outside names then get SERVFAIL and never reach it."""
    port = free_port()
    relay = daemons.dnsmasq(["log-queries", "local=/invalid/", f"server=127.0.0.1#{port}"])
    server = start("--upstream", str(relay.upstream), port=port)
    warning = f"upstream {relay.upstream} dropped: a loop probe sent to it came back to this clusterdns"
    until(lambda: warning in server.stderr(), 5, "the loop warning")
    assert server.rcode("relay.example.test.") == "SERVFAIL"
    assert server.rcode("relay.example.test.", tcp=True) == "SERVFAIL"
    assert dnsmasq_queries(relay, "relay.example.test") == []


# --- metrics -------------------------------------------------------------------------------------------


def test_forward_metrics(start: Start, dnsmasq: Daemon) -> None:
    """/metrics counts each query sent upstream by upstream, and each answer by upstream and rcode; cluster
    names and cache hits send nothing."""
    http_port = free_port()
    server = start("--upstream", str(dnsmasq.upstream), http=f"127.0.0.1:{http_port}")
    for name in ("m1", "m2", "m3"):
        check(server.ask(f"{name}.example.test."), NOERROR, [f"{name}.example.test. 300 IN A 192.0.2.7"])
    for name in ("m4", "m5"):
        check(server.ask(f"{name}.example.test.", tcp=True), NOERROR, [f"{name}.example.test. 300 IN A 192.0.2.7"])
    assert server.ask("m1.example.test.").rcode() == NOERROR  # from the cache
    check(server.ask(WEB), NOERROR, WEB_A)
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]
    to = str(dnsmasq.upstream)
    forward = [(n, labels) for n, labels, _ in samples if n.startswith("coredns_forward_")]
    assert {labels["to"] for _, labels in forward} == {to}
    assert metric(samples, "coredns_forward_requests_total", to=to) == 5
    assert metric(samples, "coredns_forward_responses_total", to=to, rcode="NOERROR") == 5
    assert metric(samples, "coredns_forward_responses_total") == 5
    assert metric(samples, "coredns_cache_hits_total", type="forward") == 1
