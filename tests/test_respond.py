"""The pure query path, without sockets: the DNS records table of test_dns_records.py (question -> rcode,
answer, authority, additional as zone-file lines) answered by `Responder.respond` directly, and what
respond() hands the forwarder. A failure here points at a rule, not at a socket; the socket tests stay the
proof that the whole works."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from conftest import write_files
from dns_helpers import CLUSTER, CLUSTER_CONFIG, check, load_zone, make_query
from test_dns_records import RECORDS

from clusterdns.metrics import BUILT, CACHED, NO_ZONE, READ, counter_slot
from clusterdns.respond import Chase, Forward, Recursion, Responder, Result


@pytest.fixture(scope="module")
def responder(tmp_path_factory: pytest.TempPathFactory) -> Responder:
    zones = Path(tmp_path_factory.mktemp("respond")) / "zones"
    zones.mkdir()
    write_files(zones, CLUSTER)
    return Responder(load_zone(zones, CLUSTER_CONFIG))


def reply_of(result: Result) -> object:
    """The reply's bytes of a Reply (bytes, counter slot, how found); anything else as it is."""
    return result[0] if isinstance(result, tuple) else result


def answer(responder: Responder, qname: str, qtype: str, tcp: bool = False, client: str = "127.0.0.1") -> object:
    return reply_of(responder.respond(make_query(qname, qtype).to_wire(), tcp, client))


@pytest.mark.parametrize(("qname", "qtype", "rcode", "answer_", "authority", "additional"), RECORDS)
def test_records(
    responder: Responder,
    qname: str,
    qtype: str,
    rcode: int,
    answer_: list[str],
    authority: list[str],
    additional: list[str],
) -> None:
    """Each question of the table gets exactly its rcode and records from respond() itself."""
    reply = answer(responder, qname, qtype, tcp=qtype in ("AXFR", "IXFR"))
    assert isinstance(reply, bytes)
    msg = dns.message.from_wire(reply)
    check(msg, rcode, answer_, authority, additional)
    assert bool(msg.flags & dns.flags.AA) == (rcode != dns.rcode.REFUSED)


@pytest.fixture(scope="module")
def forwarding(tmp_path_factory: pytest.TempPathFactory) -> Responder:
    zones = Path(tmp_path_factory.mktemp("forwarding")) / "zones"
    zones.mkdir()
    write_files(zones, CLUSTER)
    return Responder(load_zone(zones, CLUSTER_CONFIG), forwarding=True, recursion=Recursion(["10.0.0.0/8"]))


@pytest.mark.parametrize(
    ("qname", "client", "want"),
    [
        ("example.com.", "10.1.2.3", Forward),
        ("example.com.", "192.0.2.1", "REFUSED"),  # outside --allow-recursion: answered here, never forwarded
        ("ext.default.svc.cluster.local.", "10.1.2.3", Chase),  # ExternalName to a name outside the zone
        ("ext.default.svc.cluster.local.", "192.0.2.1", "NOERROR"),  # our CNAME alone
        ("my-nginx.default.svc.cluster.local.", "10.1.2.3", "NOERROR"),  # ours: never forwarded
        ("alias.default.svc.cluster.local.", "10.1.2.3", "NOERROR"),  # an alias inside the zone: followed here
    ],
)
def test_what_the_forwarder_is_given(forwarding: Responder, qname: str, client: str, want: object) -> None:
    """With forwarding on, respond() decides from the question and the client alone: Forward for other names,
    Chase (with our CNAME and its target) for an ExternalName leaving the zone, a reply otherwise."""
    for tcp in (False, True):
        got = answer(forwarding, qname, "A", tcp=tcp, client=client)
        if isinstance(want, str):
            assert isinstance(got, bytes)
            assert dns.rcode.to_text(dns.message.from_wire(got).rcode()) == want
        else:
            assert isinstance(got, want)
    chase = answer(forwarding, "ext.default.svc.cluster.local.", "A", client="10.1.2.3")
    assert isinstance(chase, Chase) and chase.target == "my.database.example.com"
    ours = dns.message.from_wire(chase.ours)
    assert [rr.to_text() for rrset in ours.answer for rr in rrset] == ["my.database.example.com."]


def test_malformed_and_dropped(responder: Responder) -> None:
    """Runts and responses get nothing; a bad question FORMERR; another opcode NOTIMP."""
    query = make_query("my-nginx.default.svc.cluster.local.", "A").to_wire()
    assert responder.respond(query[:11]) is None
    assert responder.respond(query[:2] + bytes([query[2] | 0x80]) + query[3:]) is None
    formerr = reply_of(responder.respond(query[:12] + b"\x40" + query[13:]))
    assert isinstance(formerr, bytes) and formerr[3] & 0xF == dns.rcode.FORMERR
    notimp = reply_of(responder.respond(query[:2] + bytes([query[2] | 0x10]) + query[3:]))
    assert isinstance(notimp, bytes) and notimp[3] & 0xF == dns.rcode.NOTIMP


def test_what_the_server_counts(tmp_path: Path) -> None:
    """Each reply comes with its request counter (zone, type, rcode) and how it was found: from the raw bytes
    for a plain query (answered directly, or from the answer cache), read in full with EDNS, built on the
    first question the general path answers; a header-only reply counts under no zone."""
    zones = tmp_path / "zones"
    zones.mkdir()
    write_files(zones, CLUSTER)
    responder = Responder(load_zone(zones, CLUSTER_CONFIG))
    nginx = counter_slot(0, dns.rdatatype.A, dns.rcode.NOERROR)
    plain = make_query("my-nginx.default.svc.cluster.local.", "A", edns=False).to_wire()
    edns = make_query("MY-nginx.default.svc.cluster.local.", "A").to_wire()
    assert [responder.respond(q)[1:] for q in (plain, plain, edns)] == [(nginx, CACHED), (nginx, CACHED), (nginx, READ)]
    missing = make_query("nosuch.default.svc.cluster.local.", "AAAA", edns=False).to_wire()
    assert responder.respond(missing)[1:] == (counter_slot(0, dns.rdatatype.AAAA, dns.rcode.NXDOMAIN), CACHED)
    ptr = counter_slot(1, dns.rdatatype.PTR, dns.rcode.NOERROR)
    reverse = make_query("1.0.0.10.in-addr.arpa.", "PTR", edns=False).to_wire()
    reverse_edns = make_query("1.0.0.10.in-addr.arpa.", "PTR").to_wire()
    assert [responder.respond(q)[1:] for q in (reverse, reverse, reverse_edns)] == [
        (ptr, BUILT),
        (ptr, CACHED),
        (ptr, READ),
    ]
    assert len(responder.cache) == 1  # only what the general path built
    formerr = plain[:4] + b"\x00\x02" + plain[6:]
    assert responder.respond(formerr)[1:] == (counter_slot(NO_ZONE, 0, dns.rcode.FORMERR), READ)
