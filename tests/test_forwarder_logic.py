"""The forwarder's logic against fake upstreams written as plain functions (its `transport`), as httpx tests
its transports: routing, failover, the cache and its TTLs, truncation retried over TCP, spoofed replies
ignored, and the ExternalName chase's merge. No socket is opened; tests/test_forward.py and
tests/test_forwarding.py hold the real-socket ones (BIND and dnsmasq upstreams)."""

from __future__ import annotations

from collections.abc import Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from clusterdns.forward import Forwarder, Upstream

A = Upstream("192.0.2.1")
B = Upstream("192.0.2.2")
STUB = Upstream("192.0.2.53")


def query(name: str, rdtype: str = "A") -> bytes:
    return dns.message.make_query(name, rdtype, use_edns=False).to_wire()


def answering(address: str = "203.0.113.7", ttl: int = 300, rcode: int = dns.rcode.NOERROR, **flags: bool):  # type: ignore[no-untyped-def]
    """An upstream that answers every question with one A record (or `rcode`), as a reply to the message."""

    def reply(message: bytes) -> bytes:
        q = dns.message.from_wire(message)
        r = dns.message.make_response(q)
        r.set_rcode(rcode)
        if rcode == dns.rcode.NOERROR:
            r.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", "A", address))
        else:
            r.authority.append(dns.rrset.from_text("example.", 60, "IN", "SOA", "ns. host. 1 2 3 4 60"))
        if flags.get("tc"):
            r.flags |= dns.flags.TC
            r.answer.clear()
        return r.to_wire()

    return reply


class Fake:
    """Upstreams as functions of the message; records what each was asked, and over what."""

    def __init__(self, upstreams: dict[Upstream, Callable[[bytes], bytes] | None]) -> None:
        self.upstreams = upstreams
        self.asked: list[tuple[Upstream, str, bool]] = []

    async def __call__(self, upstream: Upstream, message: bytes, tcp: bool, accept: Callable[[bytes], bool]) -> bytes:
        self.asked.append((upstream, str(dns.message.from_wire(message).question[0].name), tcp))
        play = self.upstreams.get(upstream)
        if play is None:
            raise TimeoutError("no answer")
        data = play(message)
        if not accept(data):
            raise TimeoutError("only replies that don't match")
        return data


def rcode_and_addresses(reply: bytes) -> tuple[str, list[str]]:
    msg = dns.message.from_wire(reply)
    return dns.rcode.to_text(msg.rcode()), [rr.to_text() for rrset in msg.answer for rr in rrset]


async def test_failover_to_the_next_upstream() -> None:
    """An upstream that does not answer is passed over for the next one, within the time budget."""
    fake = Fake({A: None, B: answering()})
    fw = Forwarder([A, B], timeout=0.2, transport=fake)
    assert rcode_and_addresses(await fw.forward(query("example.com."))) == ("NOERROR", ["203.0.113.7"])
    assert [u for u, _, _ in fake.asked][:2] == [A, B]


async def test_no_upstream_answers_servfail() -> None:
    """With none answering: SERVFAIL, never a hang."""
    fw = Forwarder([A, B], timeout=0.05, attempts=2, transport=Fake({A: None, B: None}))
    assert rcode_and_addresses(await fw.forward(query("example.com.")))[0] == "SERVFAIL"


async def test_cached_for_the_ttl_counted_down() -> None:
    """An answer is cached for its TTL: the second query is not sent upstream, and its TTL has aged."""
    now = [1000.0]
    fake = Fake({A: answering(ttl=300)})
    fw = Forwarder([A], transport=fake, clock=lambda: now[0])
    await fw.forward(query("example.com."))
    now[0] += 100
    reply = dns.message.from_wire(await fw.forward(query("example.com.")))
    assert len(fake.asked) == 1
    assert reply.answer[0].ttl == 200
    now[0] += 201
    await fw.forward(query("example.com."))
    assert len(fake.asked) == 2, "expired: asked again"


async def test_truncated_udp_retried_over_tcp() -> None:
    """A truncated UDP reply is asked again over TCP, and the TCP answer given."""

    def upstream(message: bytes) -> bytes:
        return answering(tc=not tcp_now[0])(message)

    tcp_now = [False]
    fake = Fake({A: upstream})

    async def transport(u: Upstream, message: bytes, tcp: bool, accept: Callable[[bytes], bool]) -> bytes:
        tcp_now[0] = tcp
        return await fake(u, message, tcp, accept)

    fw = Forwarder([A], transport=transport)
    assert rcode_and_addresses(await fw.forward(query("example.com."))) == ("NOERROR", ["203.0.113.7"])
    assert [tcp for _, _, tcp in fake.asked] == [False, True]


async def test_spoofed_reply_ignored() -> None:
    """A reply with another ID than the one sent is never taken: the query fails over instead."""

    def spoofer(message: bytes) -> bytes:
        forged = bytearray(answering()(message))
        forged[0] ^= 0xFF
        return bytes(forged)

    fake = Fake({A: spoofer, B: answering("198.51.100.9")})
    fw = Forwarder([A, B], timeout=0.2, transport=fake)
    assert rcode_and_addresses(await fw.forward(query("example.com."))) == ("NOERROR", ["198.51.100.9"])


async def test_stub_domain_routing() -> None:
    """A name under a stub domain goes to its upstream, others to the default ones."""
    fake = Fake({A: answering("203.0.113.1"), STUB: answering("10.9.9.9")})
    fw = Forwarder([A], {"consul": [STUB]}, transport=fake)
    assert rcode_and_addresses(await fw.forward(query("web.service.consul.")))[1] == ["10.9.9.9"]
    assert rcode_and_addresses(await fw.forward(query("example.com.")))[1] == ["203.0.113.1"]


async def test_chase_merges_the_target_records() -> None:
    """Our CNAME, then the target's records from upstream, the upstream's rcode; AA off, RA on. A denial
    brings the upstream's SOA."""
    ours = dns.message.make_response(dns.message.make_query("ext.default.svc.cluster.local.", "A"))
    ours.flags |= dns.flags.AA
    ours.answer.append(dns.rrset.from_text("ext.default.svc.cluster.local.", 5, "IN", "CNAME", "db.example.com."))
    fw = Forwarder([A], transport=Fake({A: answering("203.0.113.5")}))
    merged = dns.message.from_wire(await fw.chase(ours.to_wire(), "db.example.com", tcp=False))
    assert [rr.to_text() for rrset in merged.answer for rr in rrset] == ["db.example.com.", "203.0.113.5"]
    assert not merged.flags & dns.flags.AA and merged.flags & dns.flags.RA
    fw = Forwarder([A], transport=Fake({A: answering(rcode=dns.rcode.NXDOMAIN)}))
    denied = dns.message.from_wire(await fw.chase(ours.to_wire(), "gone.example.com", tcp=True))
    assert denied.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in denied.authority] == [dns.rdatatype.SOA]
