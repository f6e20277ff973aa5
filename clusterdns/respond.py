"""Query bytes -> reply bytes: header guard, EDNS0, truncation, and the answer cache. Does no I/O, reads
no clock and counts nothing: each reply comes with what the server counts it under.

The hot path reads the header and question by hand, gets the sections after the question for the
lower-cased (name, type, class) from `direct` (the usual questions, written straight from the snapshot and
not cached) or from a per-snapshot cache, and returns them with only the ID, the RD and CD bits and the
question's letter case patched in: names in the answer point at the question by compression, so they
follow its case too. Any other query is read in full through `wire`; a question neither answered directly
nor cached is answered by `records` and written by `renderer`, once; negative answers are cached the same
way.

Header rules (RFC 1035, RFC 6891, and what CoreDNS's server does):
- QR=1: no reply. Too short to hold a header: no reply.
- opcode other than QUERY: NOTIMP, every flag clear.
- QDCOUNT other than 1, or anything that can't be parsed: FORMERR.
- EDNS: an OPT in the reply exactly when the query had one, version 0; BADVERS for higher versions;
  no option is echoed. UDP replies fit in min(client size, 1232) bytes, or 512 without EDNS.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import dns.message
import dns.rcode
import dns.rdatatype

from clusterdns.direct import A_IN, AAAA_IN, SRV_IN, Direct, Made
from clusterdns.metrics import BUILT, CACHED, NO_ZONE, READ, counter_slot
from clusterdns.records import REFUSED, Answer, Zone
from clusterdns.renderer import encode, heads
from clusterdns.wire import PLAIN_UDP_LIMIT, TCP_LIMIT, Query, header_reply, opt_record, read_query

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_RECURSION = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
CACHE_ENTRIES = 200_000  # bound on distinct questions cached per snapshot
# Bound on the direct answers kept per snapshot (those respond does not write itself), about 190 bytes each,
# about 6 MB per process at most.
DIRECT_KEPT = 30_000
TRUNCATED_FORMS = 16  # bound on the truncated forms (one per UDP size asked with) kept per question
OPT = dns.rdatatype.OPT
A, AAAA = dns.rdatatype.A, dns.rdatatype.AAAA
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QDCOUNT 1, no other records
_ZONE_TRANSFER = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
_OPT_RECORDS = (opt_record(False), opt_record(True))  # our OPT, by the client's DO bit


@dataclass(frozen=True, slots=True)
class Forward:
    """respond()'s result for a name outside our zones, from a client that may recurse: ask upstream."""

    query: Query


@dataclass(frozen=True, slots=True)
class Chase:
    """respond()'s result for our answer ending in a CNAME to a name outside our zones (an ExternalName):
    `ours` (our reply, as over TCP) is to be completed with the records of `target` from upstream."""

    query: Query
    ours: bytes
    target: str


# A reply of ours: its bytes, its request counter in metrics (counter_slot: zone, type, rcode) and how it
# was found (metrics.CACHED, READ or BUILT), for the server to count. A plain tuple, so that the hot path
# allocates nothing more.
Reply = tuple[bytes, int, int]
# What respond() gives: a Reply, None for a message that gets no reply, or what the forwarder must do.
Result = Reply | Forward | Chase | None


class Recursion:
    """Which clients may have names outside our zones resolved (--allow-recursion): clusterdns is not an
    open resolver. Answers are remembered per address, up to a bound."""

    def __init__(self, networks: Iterable[str | IPNetwork] = DEFAULT_RECURSION) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._known: dict[str, bool] = {}

    def allows(self, client: str) -> bool:
        allowed = self._known.get(client)
        if allowed is None:
            try:
                ip = ipaddress.ip_address(client.split("%", 1)[0])
            except ValueError:
                return False
            allowed = any(ip in net for net in self.networks)
            if len(self._known) > 65536:
                self._known.clear()
            self._known[client] = allowed
        return allowed


@dataclass(slots=True)
class _Entry:
    """One question's encoded answer: everything after the question, and header parts to patch. Small: a
    snapshot holds up to CACHE_ENTRIES of them in every process (about 400 bytes each, key included)."""

    question: bytes  # lower-cased, as encoded: also the cache key
    heads: tuple[bytes, ...]  # header bytes 2-12 (flags, counts) for each (RD, CD): index RD | CD << 1
    counts_opt: bytes  # the counts with ARCOUNT + 1, for our OPT
    body: bytes  # the sections after the question
    size: int  # length of the whole message without OPT
    slot: int  # its request counter (metrics.counter_slot)
    chase: str = ""  # the answer's CNAME target out of our zones, which upstream completes
    forward: bool = False  # ask upstream (when the client may recurse), else answer with this entry
    truncated: dict[int, _Entry] | None = None  # by byte limit, made when a client first needs one

    @property
    def denial(self) -> bool:
        """No records in the answer section (NXDOMAIN, NODATA, REFUSED): ANCOUNT, in the header, is 0."""
        return self.heads[0][4:6] == b"\0\0"


def _entry(question: bytes, answer: Answer, slot: int, limit: int = TCP_LIMIT) -> _Entry:
    msg = encode(question, answer, limit)
    shared, counts_opt = heads(msg[2:12])
    return _Entry(question, shared, counts_opt, msg[12 + len(question) :], len(msg), slot, answer.chase)


class Responder:
    """Answers queries from one Zone. Make a new one for each registry snapshot."""

    def __init__(
        self, zone: Zone, forwarding: bool = False, recursion: Recursion | None = None, direct: bool = True
    ) -> None:
        self.zone = zone
        self.forwarding = forwarding
        self.recursion = recursion or Recursion()
        self.cache: dict[bytes, _Entry] = {}
        self.direct = Direct(zone)
        # The usual answers, which direct.py writes from a table entry and a few shared parts as cheaply as
        # they could be looked up, so they are not kept: the A record and the denial of AAAA of a Service
        # with one IPv4 cluster IP (most questions), SRV of its one named port, and A and AAAA of a name that
        # cannot exist (search-path expansions). With direct=False (tests), everything takes the general path.
        self._names = self.direct.names if direct else {}
        (self._a_heads, _), self._a_slot = self.direct.one_a
        (self._no_aaaa_heads, _), self._no_aaaa_slot = self.direct.no_aaaa
        (self._srv_heads, _), self._srv_slot = self.direct.one_srv
        self._nx = {A_IN: self.direct.nxdomain(A), AAAA_IN: self.direct.nxdomain(AAAA)}
        self._denial = self.direct.denial
        self._direct_on = direct
        # The other direct answers (a Service's other types and shapes, other denials) cost 1.5-2 us more to
        # write than to look up: the first DIRECT_KEPT questions asked keep theirs, as asked (never evicted, so
        # a small zone keeps all of them).
        self._made: dict[bytes, Made] = {}

    def touch(self) -> None:
        """Take a reference to every key and value of the table of Services' names once, as answering does:
        call it right after fork(). A lookup writes the reference count of the key it compares and the
        value it takes, so the first question for each name after a fork copies the pages that hold them
        (copy-on-write) in both processes, from memory that is no longer in the CPU's caches; here those
        copies are made before the first question instead. At 100,000 Services it takes about 30 ms a
        process, and the first second of answering makes about 130 page faults instead of 2,100."""
        for _item in self._names.items():
            pass

    def respond(self, query: bytes, tcp: bool = False, client: str = "127.0.0.1") -> Result:
        """The reply to one DNS message from `client`; None when it must be dropped; Forward or Chase when
        the answer needs upstream (forwarding is on and the client may recurse). Everything it decides,
        it decides from this Responder's snapshot."""
        # Fast path: a plain query (one question, nothing after it) answered directly or from the cache, that
        # fits. `direct` reads the name label by label; the cache only holds questions that were once parsed
        # in full, so its key proves the format.
        if query[4:12] == _PLAIN_COUNTS and not query[2] & 0xF8:
            name, tail = query[12:-4], query[-4:]
            flags = (query[2] & 0x01) | ((query[3] & 0x10) >> 3)  # RD | CD << 1: which header of an answer
            found = self._names.get(name)
            if type(found) is bytes:  # `direct`'s first cases, written out here
                if tail == A_IN:
                    return query[0:2] + self._a_heads[flags] + query[12:] + found[:16], self._a_slot, CACHED
                if tail == AAAA_IN:
                    head = self._no_aaaa_heads[flags]
                    return query[0:2] + head + query[12:] + self._denial[len(name)], self._no_aaaa_slot, CACHED
            elif found is None and self._direct_on:
                if tail == SRV_IN:
                    body = self.direct.srv(name)
                    if body is not None and (tcp or len(query) + len(body) <= PLAIN_UDP_LIMIT):
                        return query[0:2] + self._srv_heads[flags] + query[12:] + body, self._srv_slot, CACHED
                else:
                    denied = self._nx.get(tail)  # A or AAAA
                    if denied is not None and self.direct.denies(name):
                        (heads, _), slot = denied
                        return query[0:2] + heads[flags] + query[12:] + self._denial[len(name)], slot, CACHED
            question = query[12:]
            made = self._made.get(question)
            if made is None and self._direct_on:
                made = self.direct.answer(name, tail)
                if made is not None and len(self._made) < DIRECT_KEPT:
                    self._made[question] = made
            if made is not None:
                if tcp or len(query) + len(made[1]) <= PLAIN_UDP_LIMIT:
                    (shared, slot), body = made
                    return query[0:2] + shared[0][flags] + query[12:] + body, slot, CACHED
                return self._answer(query, tcp, client)
            cache = self.cache
            entry = cache.get(query[12:]) or cache.get(query[12:-4].lower() + query[-4:])
            if entry is not None and (tcp or entry.size <= PLAIN_UDP_LIMIT):
                if entry.forward and self.recursion.allows(client):
                    return self._upstream(Query(query, len(query), False), entry)  # the key: all after the header
                return query[0:2] + entry.heads[flags] + query[12:] + entry.body, entry.slot, CACHED
        return self._answer(query, tcp, client)

    def _upstream(self, q: Query, entry: _Entry) -> Forward | Chase:
        """What the forwarder must do for a query whose entry needs upstream: forward the query, or complete
        our CNAME chain (answered here, from this snapshot, as over TCP) with its target's records."""
        if not entry.chase:
            return Forward(q)
        return Chase(q, self._reply(q, entry, True), entry.chase)

    def _answer(self, query: bytes, tcp: bool, client: str) -> Result:
        """The full path: the query read once, the cache filled on a miss. Forward or Chase when the entry
        needs upstream and `client` may recurse."""
        q = read_query(query)
        if not isinstance(q, Query):  # no reply, or one of only a header
            return q if q is None else (q, counter_slot(NO_ZONE, 0, q[3] & 0xF), READ)
        key = q.key
        entry = self._direct(key) or self.cache.get(key)
        found = READ
        if entry is None:
            entry, found = self._miss(key), BUILT
        if entry.forward and self.recursion.allows(client):
            return self._upstream(q, entry)
        return self._reply(q, entry, tcp), entry.slot, found

    def _reply(self, q: Query, entry: _Entry, tcp: bool) -> bytes:
        """The reply to `q` from its entry, truncated to what the client takes."""
        limit = q.limit(tcp) - (11 if q.edns else 0)  # room for our OPT
        if entry.size > limit:
            entry = self._truncated(entry, limit)
        query, qend = q.wire, q.qend
        head = entry.heads[(query[2] & 0x01) | ((query[3] & 0x10) >> 3)]
        if q.edns:
            return query[0:2] + head[:2] + entry.counts_opt + query[12:qend] + entry.body + _OPT_RECORDS[q.do]
        return query[0:2] + head + query[12:qend] + entry.body

    def _direct(self, key: bytes) -> _Entry | None:
        """The entry of a common question, written straight from the snapshot (direct.py) and not cached."""
        made = self.direct.answer(key[:-4], key[-4:]) if self._direct_on else None
        if made is None:
            return None
        ((shared, counts_opt), slot), body = made
        return _Entry(key, shared, counts_opt, body, 12 + len(key) + len(body), slot)

    def _miss(self, key: bytes) -> _Entry:
        qtype, qclass = struct.unpack_from("!HH", key, len(key) - 4)
        answer, ours, labels = self._lookup(key, qtype, qclass)
        slot = counter_slot(self.zone.zone_index(labels, answer), qtype, answer.rcode)
        entry = _entry(key, answer, slot)
        # Not ours, or ours but ending in a CNAME out of our zones: the server completes it upstream.
        entry.forward = self.forwarding and (not ours or bool(answer.chase))
        if len(self.cache) >= CACHE_ENTRIES:
            self.cache.clear()
        self.cache[key] = entry
        return entry

    def _lookup(self, key: bytes, qtype: int, qclass: int) -> tuple[Answer, bool, tuple[str, ...]]:
        """The zone's answer to the question `key` (name, type, class as in the query: the type and class
        given), whether it is ours to give (a class other than IN and zone transfers are refused here, never
        forwarded), and the name's labels."""
        if qclass != 1 or qtype in _ZONE_TRANSFER:
            return REFUSED, True, ()
        labels: list[str] = []
        i = 0
        while key[i]:
            labels.append(key[i + 1 : i + 1 + key[i]].decode("latin-1"))
            i += key[i] + 1
        if not labels:
            return REFUSED, False, ()
        answer = self.zone.lookup(tuple(labels), qtype)
        return answer, answer is not REFUSED, tuple(labels)

    def _truncated(self, entry: _Entry, limit: int) -> _Entry:
        """The entry's answer cut to `limit` bytes: looked up again (rare: only clients with small buffers and
        large answers need it), then kept beside the entry."""
        forms = entry.truncated
        if forms is None:
            forms = entry.truncated = {}
        small = forms.get(limit)
        if small is None:
            key = entry.question
            answer, _, _ = self._lookup(key, *struct.unpack_from("!HH", key, len(key) - 4))
            small = _entry(entry.question, answer, entry.slot, limit)
            if len(forms) >= TRUNCATED_FORMS:  # clients can ask with any of 720 payload sizes
                forms.clear()
            forms[limit] = small
        return small


def servfail(query: bytes) -> bytes | None:
    """SERVFAIL for a query whose handling failed unexpectedly; None when even the header is unusable."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    return header_reply(query, dns.rcode.SERVFAIL)
