"""Forwarding against real resolvers on loopback: dnsmasq and BIND, started by the tests on free ports with
their configuration in a temporary directory, as the upstreams of a `Forwarder`. Expected records are
written as zone-file lines."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from dns_helpers import free_port

from clusterdns import forward
from clusterdns.forward import Forwarder, Loop, Upstream, parse_upstream, resolv_conf_upstreams
from clusterdns.wire import read_question

NOERROR, NXDOMAIN, SERVFAIL, REFUSED = dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED
FORMERR, NOTIMP = dns.rcode.FORMERR, dns.rcode.NOTIMP
READY_TIMEOUT = 10.0  # seconds for a resolver to start answering

ZONE_TEST = (
    "$TTL 300\n"
    "@ IN SOA ns hostmaster 1 3600 600 86400 30\n"  # negative TTL: min(300, 30)
    "@ NS ns\n"
    "ns A 127.0.0.1\n"
    "www 120 A 192.0.2.1\n"
    "tcp A 192.0.2.2\n"
    "edns A 192.0.2.3\n"
    + "".join(f"big A 192.0.2.{i}\n" for i in range(1, 41))  # 40 records: 671 bytes, over 512
    + "".join(f"wide A 192.0.2.{i}\n" for i in range(1, 41))
)
SOA_LINE = "zone.test. {ttl} IN SOA ns.zone.test. hostmaster.zone.test. 1 3600 600 86400 30"
BIG = sorted(f"big.zone.test. 300 IN A 192.0.2.{i}" for i in range(1, 41))
WIDE = sorted(f"wide.zone.test. 300 IN A 192.0.2.{i}" for i in range(1, 41))
EXAMPLE = [
    "local-ttl=300",
    "address=/example.test/192.0.2.7",
    "address=/deep.zone.test/192.0.2.99",
    "address=/broken.test/192.0.2.50",
]


# --- real resolvers --------------------------------------------------------------------------------


class Daemon:
    """A resolver process on 127.0.0.1:`port`, its output (BIND's includes its query log) in `log`."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.name = argv[0]
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self._wait_ready()

    @property
    def upstream(self) -> Upstream:
        return Upstream("127.0.0.1", self.port)

    def _wait_ready(self) -> None:
        """Query until any reply comes; fail with the daemon's output if it exits or never answers."""
        deadline = time.monotonic() + READY_TIMEOUT
        ready = dns.message.make_query("ready.invalid.", "A")
        while time.monotonic() < deadline:
            try:
                dns.query.udp(ready, "127.0.0.1", port=self.port, timeout=0.2)
                return
            except (dns.exception.Timeout, OSError):
                pass
            try:
                self.proc.wait(0.05)  # the pause between tries, and notice of an early exit
            except subprocess.TimeoutExpired:
                continue
            break
        self.stop()
        pytest.fail(f"{self.name} did not start on port {self.port}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def queries(self, name: str) -> list[str]:
        """BIND's query-log flags for each query of `name` so far: `+` RD, `E(0)` EDNS, `T` TCP."""
        return re.findall(rf"query: {re.escape(name)} IN \S+ (\S+)", self.log.read_text())


class Daemons:
    """Starts resolvers, each in a directory of its own under `root`; `stop()` ends them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Daemon] = []

    def _dir(self, kind: str) -> Path:
        path = self.root / f"{kind}-{len(self.started)}"
        path.mkdir()
        return path

    def named(self, zones: dict[str, str], port: int | None = None) -> Daemon:
        """BIND, authoritative for `zones` (a zone whose text is "" fails to load: SERVFAIL), answering
        at most 512 bytes over UDP even to EDNS queries, with every query logged."""
        d, port = self._dir("named"), port or free_port()
        zone_blocks = []
        for zone, text in zones.items():
            (d / zone).write_text(text or "garbage\n")
            zone_blocks.append(f'zone "{zone}" {{ type primary; file "{d / zone}"; }};')
        (d / "named.conf").write_text(
            f"""
            options {{
                directory "{d}"; pid-file "{d}/named.pid"; session-keyfile "{d}/session.key";
                managed-keys-directory "{d}";
                listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
                reuseport no; recursion no; dnssec-validation no; notify no;
                minimal-responses yes; max-udp-size 512; querylog yes;
            }};
            controls {{ }};
            {" ".join(zone_blocks)}
            """
        )
        return self._start(["named", "-g", "-n", "1", "-c", str(d / "named.conf")], port, d)

    def dnsmasq(self, lines: Sequence[str], port: int | None = None) -> Daemon:
        """dnsmasq with `lines` added to a configuration that answers only from them."""
        d, port = self._dir("dnsmasq"), port or free_port()
        base = [f"port={port}", "listen-address=127.0.0.1", "bind-interfaces", "no-resolv", "no-hosts", "no-poll"]
        (d / "dnsmasq.conf").write_text("\n".join([*base, "user=root", "pid-file=", *lines]) + "\n")
        return self._start(["dnsmasq", "-k", "--log-facility=-", "-C", str(d / "dnsmasq.conf")], port, d)

    def _start(self, argv: list[str], port: int, d: Path) -> Daemon:
        daemon = Daemon(argv, port, d / "output.log")
        self.started.append(daemon)
        return daemon

    def stop(self) -> None:
        for daemon in self.started:
            daemon.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    pool = Daemons(tmp_path_factory.mktemp("resolvers"))
    yield pool
    pool.stop()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Resolvers for one test, stopped when it ends."""
    pool = Daemons(tmp_path)
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def bind(shared: Daemons) -> Daemon:
    """BIND authoritative for zone.test, and for broken.test, which fails to load (SERVFAIL)."""
    return shared.named({"zone.test": ZONE_TEST, "broken.test": ""})


@pytest.fixture(scope="module")
def dnsmasq(shared: Daemons) -> Daemon:
    """dnsmasq answering example.test, deep.zone.test and broken.test with fixed addresses, TTL 300."""
    return shared.dnsmasq(EXAMPLE)


# --- queries ---------------------------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def query(name: str, rdtype: str = "A", *, edns: bool = False, do: bool = False) -> bytes:
    return dns.message.make_query(name, rdtype, use_edns=0 if edns or do else False, want_dnssec=do).to_wire()


async def ask(
    forwarder: Forwarder, name: str, rdtype: str = "A", *, tcp: bool = False, edns: bool = False, do: bool = False
) -> dns.message.Message:
    """Forward a query; its reply, checked to carry the query's ID and the question as asked."""
    wire = query(name, rdtype, edns=edns, do=do)
    reply = dns.message.from_wire(await forwarder.forward(wire, tcp))
    assert reply.id == dns.message.from_wire(wire).id
    assert [q.to_text() for q in reply.question] == [f"{name} IN {rdtype}"]
    return reply


def lines(section: Sequence[dns.rrset.RRset]) -> list[str]:
    """A section as sorted zone-file lines, owner names lower-cased."""
    return sorted(
        f"{rrset.name.to_text().lower()} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in section
        for rd in rrset
    )


def a_lines(name: str, ttl: int, *addresses: str) -> list[str]:
    return sorted(f"{name} {ttl} IN A {address}" for address in addresses)


# --- addresses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "upstream"),
    [
        ("10.0.0.10", Upstream("10.0.0.10", 53)),
        (" 10.0.0.10:5353 ", Upstream("10.0.0.10", 5353)),
        ("fd00::10", Upstream("fd00::10", 53)),
        ("[fd00:0::10]:5353", Upstream("fd00::10", 5353)),
        ("[::1]", Upstream("::1", 53)),
    ],
)
def test_parse_upstream(text: str, upstream: Upstream) -> None:
    """ADDR[:PORT] with IPv6 in brackets when it has a port; the address in canonical form."""
    assert parse_upstream(text) == upstream


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'' is not an IP address"),
        ("dns.google:53", "'dns.google' is not an IP address"),
        ("10.0.0.10:0", "port must be 1-65535, got '0'"),
        ("10.0.0.10:dns", "port must be 1-65535, got 'dns'"),
        ("[fd00::10", "missing ']'"),
        ("[fd00::10]5353", "expected ':PORT' after ']'"),
        ("[10.0.0.10]:53", "only IPv6 addresses go in brackets"),
    ],
)
def test_parse_upstream_errors(text: str, message: str) -> None:
    """A bad upstream is a ValueError naming the text, the problem and the expected form."""
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        parse_upstream(text)
    assert str(caught.value).startswith(f"upstream {text!r}: ")
    assert "expected ADDR[:PORT]" in str(caught.value)


def test_resolv_conf_upstreams(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """resolv.conf nameservers in order, on port 53, without duplicates; bad ones skipped with a warning."""
    path = tmp_path / "resolv.conf"
    path.write_text(
        "# generated\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\n"
        "nameserver fd00::a\nnameserver resolver.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    )
    assert resolv_conf_upstreams(str(path)) == [Upstream("10.96.0.10"), Upstream("fd00::a")]
    assert f"{path}:5: nameserver 'resolver.local' is not an IP address; ignored" in caplog.text
    assert resolv_conf_upstreams(str(tmp_path / "missing")) == []


# --- answers ---------------------------------------------------------------------------------------


async def test_forwarded_answer(dnsmasq: Daemon) -> None:
    """The upstream's answer comes back with the client's ID and the question's letter case."""
    fw = Forwarder([dnsmasq.upstream])
    reply = await ask(fw, "Www.EXAMPLE.test.")
    assert (reply.rcode(), lines(reply.answer)) == (NOERROR, a_lines("www.example.test.", 300, "192.0.2.7"))
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RD
    assert fw.stats.requests == {str(dnsmasq.upstream): 1}
    assert fw.stats.responses == {(str(dnsmasq.upstream), "NOERROR"): 1}


async def test_stub_domains(bind: Daemon, dnsmasq: Daemon) -> None:
    """The longest stub domain holding the name picks the upstreams; other names go to the defaults."""
    fw = Forwarder([dnsmasq.upstream], {"Zone.Test": [bind.upstream], "deep.zone.test.": [dnsmasq.upstream]})
    assert fw.stub_domains == {"zone.test.": [bind.upstream], "deep.zone.test.": [dnsmasq.upstream]}
    cases = [
        ("www.zone.test.", a_lines("www.zone.test.", 120, "192.0.2.1"), bind),
        ("x.deep.zone.test.", a_lines("x.deep.zone.test.", 300, "192.0.2.99"), dnsmasq),
        ("www.example.test.", a_lines("www.example.test.", 300, "192.0.2.7"), dnsmasq),
    ]
    for name, answer, upstream in cases:
        before = fw.stats.requests[str(upstream.upstream)]
        assert lines((await ask(fw, name)).answer) == answer, name
        assert fw.stats.requests[str(upstream.upstream)] == before + 1, name


async def test_edns_passed_through(bind: Daemon) -> None:
    """A query's EDNS goes upstream as it came: an OPT in the answer exactly when the query had one."""
    fw = Forwarder([bind.upstream])
    plain, edns = await ask(fw, "www.zone.test."), await ask(fw, "edns.zone.test.", edns=True)
    dnssec = await ask(fw, "edns.zone.test.", do=True)
    assert (plain.edns, edns.edns, dnssec.edns, bool(dnssec.ednsflags & dns.flags.DO)) == (-1, 0, 0, True)
    assert [flags.removesuffix("K") for flags in bind.queries("edns.zone.test")] == ["+E(0)", "+E(0)D"]


@pytest.mark.parametrize(
    ("query_bytes", "rcode"),
    [
        (b"\x12\x34\x01", None),  # shorter than a header: nothing to send
        (query("www.example.test.")[:2] + b"\x81\x00" + query("www.example.test.")[4:], None),  # a response
        (b"\x12\x34\x28\x00" + query("www.example.test.")[4:], NOTIMP),  # opcode UPDATE
        (b"\x12\x34\x01\x00\x00\x02" + query("www.example.test.")[6:], FORMERR),  # two questions
        (query("www.example.test.")[:-2], FORMERR),  # cut short
    ],
)
async def test_bad_queries(query_bytes: bytes, rcode: int | None) -> None:
    """What isn't a query gets no reply; an unreadable query gets FORMERR, another opcode NOTIMP."""
    reply = await Forwarder([]).forward(query_bytes)
    if rcode is None:
        assert reply == b""
    else:
        assert reply[:2] == query_bytes[:2] and reply[2] & 0x80 and reply[3] & 0x0F == rcode


# --- cache -----------------------------------------------------------------------------------------


async def test_positive_cache_counts_down(dnsmasq: Daemon) -> None:
    """An answer is cached for its TTL, counted down on the way out, and asked again when it expires."""
    clock = Clock()
    fw = Forwarder([dnsmasq.upstream], clock=clock)
    assert lines((await ask(fw, "count.example.test.")).answer) == a_lines("count.example.test.", 300, "192.0.2.7")
    clock.now += 42.7
    reply = await ask(fw, "COUNT.example.test.")
    assert lines(reply.answer) == a_lines("count.example.test.", 258, "192.0.2.7")
    assert (fw.stats.cache_hits, fw.stats.cache_misses, fw.stats.requests[str(dnsmasq.upstream)]) == (1, 1, 1)
    clock.now += 300 - 42.7
    assert lines((await ask(fw, "count.example.test.")).answer) == a_lines("count.example.test.", 300, "192.0.2.7")
    assert (fw.stats.cache_hits, fw.stats.cache_misses, fw.stats.requests[str(dnsmasq.upstream)]) == (1, 2, 2)


async def test_negative_cache(daemons: Daemons) -> None:
    """NXDOMAIN and NODATA are cached for min(SOA TTL, SOA MINIMUM), answered with the upstream gone,
    the SOA's TTL counted down, and fail once they expire."""
    clock = Clock()
    bind = daemons.named({"zone.test": ZONE_TEST})
    fw = Forwarder([bind.upstream], clock=clock, timeout=0.5, attempts=1)
    nx, nodata = await ask(fw, "nx.zone.test."), await ask(fw, "www.zone.test.", "AAAA")
    for reply in nx, nodata:
        assert (lines(reply.answer), lines(reply.authority)) == ([], [SOA_LINE.format(ttl=30)])
    assert (nx.rcode(), nodata.rcode(), fw.stats.cache_entries) == (NXDOMAIN, NOERROR, 2)
    bind.stop()
    clock.now += 10
    nx, nodata = await ask(fw, "nx.zone.test."), await ask(fw, "www.zone.test.", "AAAA")
    assert (nx.rcode(), nodata.rcode()) == (NXDOMAIN, NOERROR)
    assert lines(nx.authority) == lines(nodata.authority) == [SOA_LINE.format(ttl=20)]
    clock.now += 20
    assert (await ask(fw, "nx.zone.test.")).rcode() == SERVFAIL


async def test_cache_bound(dnsmasq: Daemon) -> None:
    """The cache holds at most `cache_entries` answers; the oldest stored goes first."""
    fw = Forwarder([dnsmasq.upstream], cache_entries=2)
    for name in ("a.example.test.", "b.example.test.", "c.example.test."):
        await ask(fw, name)
    assert fw.stats.cache_entries == 2
    await ask(fw, "c.example.test.")
    assert (fw.stats.cache_hits, fw.stats.requests[str(dnsmasq.upstream)]) == (1, 3)
    await ask(fw, "a.example.test.")
    assert (fw.stats.cache_hits, fw.stats.requests[str(dnsmasq.upstream)]) == (1, 4)


async def test_cache_follows_client_edns(dnsmasq: Daemon) -> None:
    """A cached answer carries an OPT exactly when the client's query did, and the client's RD bit."""
    fw = Forwarder([dnsmasq.upstream])
    await ask(fw, "plain.example.test.")
    await ask(fw, "edns.example.test.", edns=True)
    with_opt, without_opt = await ask(fw, "plain.example.test.", edns=True), await ask(fw, "edns.example.test.")
    assert (with_opt.edns, without_opt.edns, fw.stats.cache_hits) == (0, -1, 2)
    no_rd = dns.message.make_query("plain.example.test.", "A")
    no_rd.flags &= ~dns.flags.RD
    assert not dns.message.from_wire(await fw.forward(no_rd.to_wire())).flags & dns.flags.RD


def _reply(
    *records: str, rcode: dns.rcode.Rcode = NOERROR, section: str = "answer", tc: bool = False
) -> forward._Reply:
    msg = dns.message.make_response(dns.message.make_query("q.zone.test.", "A"))
    msg.set_rcode(rcode)
    for text in records:
        name, ttl, rest = text.split(" ", 2)
        rrset = dns.rrset.from_text(name, int(ttl), *rest.split(" ", 2))
        getattr(msg, "authority" if " SOA " in text else section).append(rrset)
    if tc:
        msg.flags |= dns.flags.TC
    wire = msg.to_wire()
    qend = read_question(wire)
    return forward._Reply(wire, qend, forward._records(wire, qend))


SOA_300_30 = "zone.test. 300 IN SOA ns.zone.test. h.zone.test. 1 3600 600 86400 30"
SOA_20_30 = "zone.test. 20 IN SOA ns.zone.test. h.zone.test. 1 3600 600 86400 30"


@pytest.mark.parametrize(
    ("reply", "ttl"),
    [
        (_reply("q.zone.test. 300 IN A 192.0.2.1", "q.zone.test. 60 IN A 192.0.2.2"), 60),
        (_reply("q.zone.test. 86400 IN A 192.0.2.1"), forward.MAX_POSITIVE_TTL),
        (_reply("q.zone.test. 0 IN A 192.0.2.1"), None),
        (_reply(SOA_300_30, rcode=NXDOMAIN), 30),
        (_reply(SOA_20_30, rcode=NXDOMAIN), 20),
        (_reply(SOA_300_30), 30),  # NODATA
        (_reply(rcode=NXDOMAIN), None),  # no SOA: not cached (RFC 2308 section 5)
        (_reply("zone.test. 300 IN NS ns.zone.test.", section="authority"), None),  # a referral
        (_reply(rcode=SERVFAIL), None),
        (_reply(SOA_300_30, rcode=REFUSED), None),
        (_reply("q.zone.test. 300 IN A 192.0.2.1", tc=True), None),
    ],
    ids=["min", "capped", "ttl 0", "nxdomain", "soa ttl", "nodata", "no soa", "referral", "servfail", "refused", "tc"],
)
def test_cache_ttl(reply: forward._Reply, ttl: int | None) -> None:
    """How long an answer is cached: its smallest TTL; a denial min(SOA TTL, MINIMUM); failures never."""
    assert forward._cache_ttl(reply) == ttl


# --- failures --------------------------------------------------------------------------------------


async def test_unreachable_upstream() -> None:
    """With nothing listening on the upstream's port the client gets SERVFAIL, not a hang."""
    fw = Forwarder([Upstream("127.0.0.1", free_port())], timeout=0.5, attempts=2)
    start = time.monotonic()
    reply = await ask(fw, "www.example.test.")
    assert (reply.rcode(), time.monotonic() - start < 1.0) == (SERVFAIL, True)
    assert fw.stats.cache_entries == 0


async def test_silent_upstream_bounded() -> None:
    """An upstream that never replies costs at most timeout x attempts, then SERVFAIL."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        silent = Upstream(*hole.getsockname())
        fw = Forwarder([silent], timeout=0.3, attempts=2)
        start = time.monotonic()
        reply = await ask(fw, "www.example.test.")
        elapsed = time.monotonic() - start
    assert reply.rcode() == SERVFAIL
    assert 0.55 <= elapsed < 0.6 + 0.5  # timeout x attempts, and some scheduling
    assert fw.stats.requests == fw.stats.failures == {str(silent): 2}


async def test_failover(dnsmasq: Daemon, caplog: pytest.LogCaptureFixture) -> None:
    """A dead upstream fails over to the next; afterwards the live one is asked first; the dead one's
    failure is logged once, not per query."""
    dead = Upstream("127.0.0.1", free_port())
    fw = Forwarder([dead, dnsmasq.upstream], timeout=1.0)
    with caplog.at_level(logging.INFO, logger="clusterdns.forward"):
        for name in ("one.example.test.", "two.example.test.", "three.example.test."):
            assert lines((await ask(fw, name)).answer) == a_lines(name, 300, "192.0.2.7")
    assert (fw.stats.requests[str(dead)], fw.stats.requests[str(dnsmasq.upstream)]) == (1, 3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"upstream {dead}: connection refused over UDP; asking the other upstreams first"]


async def test_upstream_servfail(bind: Daemon, dnsmasq: Daemon) -> None:
    """An upstream's SERVFAIL moves on to the next upstream, is passed on when none does better, and is
    never cached."""
    alone = Forwarder([bind.upstream])
    for _ in range(2):
        assert (await ask(alone, "www.broken.test.")).rcode() == SERVFAIL
    assert (alone.stats.requests[str(bind.upstream)], alone.stats.cache_entries) == (2, 0)
    fw = Forwarder([bind.upstream, dnsmasq.upstream])
    assert lines((await ask(fw, "www.broken.test.")).answer) == a_lines("www.broken.test.", 300, "192.0.2.50")
    assert fw.stats.responses == {(str(bind.upstream), "SERVFAIL"): 1, (str(dnsmasq.upstream), "NOERROR"): 1}


async def test_servfail_never_shadows(daemons: Daemons) -> None:
    """After a SERVFAIL the next query asks again: an upstream that comes back is answered from at once."""
    port = free_port()
    fw = Forwarder([Upstream("127.0.0.1", port)], timeout=0.5, attempts=1, clock=Clock())
    assert (await ask(fw, "back.example.test.")).rcode() == SERVFAIL
    daemons.dnsmasq(EXAMPLE, port=port)
    assert lines((await ask(fw, "back.example.test.")).answer) == a_lines("back.example.test.", 300, "192.0.2.7")


# --- transports ------------------------------------------------------------------------------------


async def test_truncated_answer_retried_over_tcp(bind: Daemon) -> None:
    """A UDP answer with TC=1 is asked again over TCP; the full answer fits the client's EDNS size."""
    fw = Forwarder([bind.upstream])
    reply = await ask(fw, "big.zone.test.", edns=True)
    assert (reply.flags & dns.flags.TC, lines(reply.answer)) == (0, BIG)
    assert [("T" in flags) for flags in bind.queries("big.zone.test")] == [False, True]


async def test_truncated_for_a_small_client(bind: Daemon) -> None:
    """A full answer larger than the client's 512 bytes is TC=1 for it; its TCP retry comes from the cache."""
    fw = Forwarder([bind.upstream])
    small = await ask(fw, "wide.zone.test.")
    assert (bool(small.flags & dns.flags.TC), small.answer) == (True, [])
    full = await ask(fw, "wide.zone.test.", tcp=True)
    assert (full.flags & dns.flags.TC, lines(full.answer)) == (0, WIDE)
    assert [("T" in flags) for flags in bind.queries("wide.zone.test")] == [False, True]
    assert fw.stats.cache_hits == 1


async def test_tcp_forwarded_over_tcp(bind: Daemon) -> None:
    """A query that came over TCP goes upstream over TCP."""
    fw = Forwarder([bind.upstream])
    assert lines((await ask(fw, "tcp.zone.test.", tcp=True)).answer) == a_lines("tcp.zone.test.", 300, "192.0.2.2")
    assert [("T" in flags) for flags in bind.queries("tcp.zone.test")] == [True]


async def test_inflight_bound() -> None:
    """Beyond `max_inflight` queries waiting for upstreams, another is answered REFUSED at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        hole.setblocking(False)
        fw = Forwarder([Upstream(*hole.getsockname())], timeout=0.5, attempts=1, max_inflight=2)
        waiting = [asyncio.create_task(ask(fw, f"{n}.example.test.")) for n in ("one", "two")]
        loop = asyncio.get_running_loop()
        for _ in waiting:
            await loop.sock_recvfrom(hole, 512)  # both queries are upstream now
        assert (await ask(fw, "three.example.test.")).rcode() == REFUSED
        assert [(await task).rcode() for task in waiting] == [SERVFAIL, SERVFAIL]
    assert fw.stats.rejects == 1


# --- loops -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "upstream", "looped"),
    [
        (("127.0.0.1", 5300), "127.0.0.1:5300", True),
        (("127.0.0.1", 5300), "127.0.0.1:5301", False),
        (("127.0.0.1", 5300), "127.0.0.2:5300", False),
        (("127.0.0.1", 5300), "0.0.0.0:5300", True),
        # a wildcard listener's port on an address of this machine is left to the loop probe: it may be a
        # resolver the kernel sends elsewhere (Docker's 127.0.0.11)
        (("0.0.0.0", 5300), "127.0.0.9:5300", False),
        (("0.0.0.0", 5300), "[::1]:5300", False),
        (("0.0.0.0", 5300), "192.0.2.1:5300", False),  # not an address of this machine
        (("::", 5300), "127.0.0.9:5300", False),
        (("::", 5300), "[::1]:5300", False),
        (("::1", 5300), "[::ffff:127.0.0.1]:5300", False),
    ],
)
def test_loop_rules(local: tuple[str, int], upstream: str, looped: bool) -> None:
    """An upstream is clusterdns itself, dropped at construction, when it is a listening address (or 0.0.0.0
    on its port); an address of this machine under a 0.0.0.0 or :: listener is left to the probe."""
    fw = Forwarder([parse_upstream(upstream)], local=[local])
    assert (fw.upstreams == [], [loop.upstream for loop in fw.loops]) == (
        (True, [parse_upstream(upstream)]) if looped else (False, [])
    )


def test_loops_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Upstreams and stub-domain upstreams that are clusterdns itself are dropped with a warning."""
    us, other = Upstream("127.0.0.1", 5300), Upstream("127.0.0.1", 5301)
    fw = Forwarder([us, other], {"consul": [us]}, local=[("127.0.0.1", 5300)])
    assert (fw.upstreams, fw.stub_domains) == ([other], {"consul.": []})
    assert fw.loops == [Loop(us, "it is an address clusterdns listens on (127.0.0.1:5300)")]
    assert "upstream 127.0.0.1:5300 dropped: it is an address clusterdns listens on" in caplog.text


class Relay(asyncio.DatagramProtocol):
    """Plays clusterdns's UDP side: every query goes through `forwarder.forward`; names are recorded."""

    def __init__(self) -> None:
        self.forwarder = Forwarder([])
        self.names: list[dns.name.Name] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.names.append(dns.message.from_wire(data).question[0].name)
        task = asyncio.ensure_future(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.transport.sendto(await self.forwarder.forward(data), addr)


async def test_probe(daemons: Daemons, dnsmasq: Daemon) -> None:
    """A probe that comes back to us, directly or through another resolver, drops that upstream; the
    probe names are recognised by the forwarder that sent them and no other."""
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(Relay, local_addr=("127.0.0.1", 0))
    try:
        ours = Upstream("127.0.0.1", transport.get_extra_info("sockname")[1])
        via = daemons.dnsmasq([f"server=/{forward.PROBE_DOMAIN}/127.0.0.1#{ours.port}"]).upstream
        fw = relay.forwarder = Forwarder([ours, dnsmasq.upstream], {"svc.test": [via]}, timeout=1.0)
        assert await fw.probe() == [ours, via]
    finally:
        transport.close()
    assert (fw.upstreams, fw.stub_domains) == ([dnsmasq.upstream], {"svc.test.": []})
    reason = "a loop probe sent to it came back to this clusterdns"
    assert fw.loops == [Loop(ours, reason), Loop(via, reason)]
    assert len(relay.names) == 2 and all(fw.is_probe(name) for name in relay.names)
    assert not any(Forwarder([]).is_probe(name) for name in relay.names)
    assert not fw.is_probe("www.example.test.") and not fw.is_probe(f"x.y.{forward.PROBE_DOMAIN}.")
    assert await Forwarder([dnsmasq.upstream]).probe() == []
