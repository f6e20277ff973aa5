"""Forwarding: queries for names clusterdns doesn't own go to upstream resolvers, with a cache.

`Forwarder.forward(query, tcp)` always comes back with a reply to the client's query: the upstream's
answer with the client's ID and question case, or SERVFAIL. The rules, and where they come from:

- Routing (kube-dns stubDomains, CoreDNS `forward` blocks): the longest stub domain that contains the
  name picks the upstreams, else the default upstreams. A stub domain whose upstreams were all dropped as
  loops answers SERVFAIL; it never falls back to the default upstreams.
- Failover: upstreams are tried in order, one that failed recently (no reply, connection refused, a
  malformed reply) last until `DOWN_RETRY` seconds have passed. A SERVFAIL or REFUSED answer moves on to the
  next upstream too, and is passed to the client when no upstream does better. One pass over the upstreams
  takes at most `timeout` (each gets an equal share), and there are at most `attempts` passes: with no
  upstream reachable the client gets SERVFAIL within timeout x attempts. Errors are logged when an
  upstream's state changes, never per query.
- Transport: a query that came over TCP is forwarded over TCP; a UDP answer with TC=1 is asked again
  over TCP (RFC 7766 section 5). Each query is sent from a new socket with a new random ID, and only a
  reply with that ID and question is taken (RFC 5452).
- EDNS: the client's query is forwarded as it came (its OPT, DO bit and payload size), and the answer is
  passed back as it came. Over UDP the reply is cut to the client's size, min(its EDNS payload, 1232)
  or 512 without EDNS, as a TC=1 reply with the question only, so the client asks again over TCP.
- Cache, keyed by (lower-cased name, type, class, DO bit), bounded to `cache_entries` (the oldest stored
  goes first): a positive answer is kept for the smallest TTL in the message (OPT aside), at most
  `MAX_POSITIVE_TTL`; NXDOMAIN and NODATA for min(SOA TTL, SOA MINIMUM) of the SOA in authority
  (RFC 2308 section 5), at most `MAX_NEGATIVE_TTL`, and not at all without a SOA. On the way out every
  TTL is reduced by the whole seconds the answer has been cached, the ID, RD and CD bits and question
  case are the client's, and the OPT record is removed or added so that there is one exactly when the
  client's query had one. SERVFAIL, REFUSED and truncated answers are never cached, so a failure can
  never shadow a good answer: the next query asks the upstreams again.
- In-flight bound: beyond `max_inflight` queries waiting for upstreams, a query that misses the cache is
  answered REFUSED at once (CoreDNS `forward` max_concurrent does the same): a stub resolver moves on
  to its next nameserver without counting it as a failure of the name, and nothing caches it.
- Loops, at construction: an upstream that is clusterdns itself (one of `local`, the addresses it listens
  on, or an address of this machine when it listens on 0.0.0.0 or :: on that port) is dropped with a
  warning and listed in `loops`.
- Loops, at run time (as CoreDNS's `loop` plugin): `probe()` sends `<random>.<token>.clusterdns-loop-check.
  HINFO` to every upstream, where `<token>` is this Forwarder's. When such a query reaches clusterdns,
  `forward()` recognises it (`is_probe`) and answers it itself with `probe_reply`: an HINFO record
  "clusterdns" "loop" that no real resolver makes up. A probe that comes back with that answer means the
  upstream leads back to us, directly or through other resolvers, and `probe()` drops it.

How the server uses it: forward every query for a name outside clusterdns's zones with `forward()` (the
UDP thread hands it to the event loop), and call `await forwarder.probe()` once the sockets serve
(and, if wanted, on reload). A process that answers without `forward()` (a UDP worker) should answer a
query whose name `is_probe()` with `probe_reply(query)` rather than refuse it, so the loop is found.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from clusterdns.upstream import (
    Loop,
    Transport,
    Upstream,
    ip_of,
    loop_reason,
    network,
    on_this_machine,
    parse_upstream,
    resolv_conf_upstreams,
)
from clusterdns.wire import Query, header_reply, opt_record, read_query, read_question

__all__ = [
    "DOWN_RETRY",
    "MAX_NEGATIVE_TTL",
    "MAX_POSITIVE_TTL",
    "PROBE_DOMAIN",
    "ForwardStats",
    "Forwarder",
    "Loop",
    "Upstream",
    "parse_upstream",
    "probe_reply",
    "resolv_conf_upstreams",
]

log = logging.getLogger("clusterdns.forward")

MAX_POSITIVE_TTL = 3600  # seconds; CoreDNS cache's default cap
MAX_NEGATIVE_TTL = 1800  # seconds; CoreDNS cache's default cap for denials
DOWN_RETRY = 5.0  # seconds a failed upstream is tried after the others
PROBE_DOMAIN = "clusterdns-loop-check"
_PROBE_LABEL = PROBE_DOMAIN.encode()
_PROBE_MARK = b"clusterdns"  # the HINFO CPU string of a probe answered by clusterdns

_OPT, _SOA = dns.rdatatype.OPT, dns.rdatatype.SOA
_NOERROR, _NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN
_TRY_NEXT = frozenset((dns.rcode.SERVFAIL, dns.rcode.REFUSED))  # answers that send us to the next upstream
_NO_STUBS: Mapping[str, Sequence[Upstream]] = MappingProxyType({})


# --- messages on the wire --------------------------------------------------------------------------


class _Record(NamedTuple):
    section: int  # 0 answer, 1 authority, 2 additional
    rtype: int
    start: int  # offset of the owner name
    ttl_at: int  # offset of the TTL field (the OPT's extended rcode and flags)
    end: int  # offset after the RDATA


def _records(msg: bytes, i: int) -> tuple[_Record, ...]:
    """The resource records after the question, which ends at `i`; ValueError when malformed."""
    an, ns, ar = struct.unpack_from("!HHH", msg, 6)
    records = []
    try:
        for index in range(an + ns + ar):
            start = i
            while msg[i] and msg[i] & 0xC0 != 0xC0:  # the owner name, up to its end or a pointer
                if msg[i] > 63:
                    raise ValueError("bad label length")
                i += msg[i] + 1
            i += 2 if msg[i] else 1
            rtype, _rclass, _ttl, rdlength = struct.unpack_from("!HHIH", msg, i)
            section = 0 if index < an else 1 if index < an + ns else 2
            records.append(_Record(section, rtype, start, i + 4, i + 10 + rdlength))
            i += 10 + rdlength
    except (IndexError, struct.error):
        raise ValueError("a record runs past the end") from None
    if i != len(msg):
        raise ValueError("records don't end where the message does")
    return tuple(records)


def _error_reply(q: Query, rcode: int) -> bytes:
    """Our own reply with `rcode`: the question, RD and CD copied, RA set, an OPT if the query had one."""
    head = q.wire[0:2] + bytes((0x80 | (q.wire[2] & 0x01), 0x80 | (q.wire[3] & 0x10) | rcode))
    counts = struct.pack("!HHHH", 1, 0, 0, 1 if q.edns else 0)
    return head + counts + q.wire[12 : q.qend] + (opt_record(q.do) if q.edns else b"")


def _fit(q: Query, msg: bytes | bytearray, tcp: bool) -> bytes:
    """`msg`, or over UDP when it is larger than the client takes: TC=1 with the question only."""
    if len(msg) <= q.limit(tcp):
        return bytes(msg)
    counts = struct.pack("!HHHH", 1, 0, 0, 1 if q.edns else 0)
    return (
        q.wire[0:2]
        + bytes((msg[2] | 0x02, msg[3]))
        + counts
        + q.wire[12 : q.qend]
        + (opt_record(q.do) if q.edns else b"")
    )


@dataclass(frozen=True, slots=True)
class _Reply:
    """An upstream's reply that matched what we sent, with its records located."""

    wire: bytes
    qend: int  # 12 when the reply carries no question (an error answered with a bare header)
    records: tuple[_Record, ...]

    @property
    def rcode(self) -> int:
        return self.wire[3] & 0x0F

    @property
    def truncated(self) -> bool:
        return bool(self.wire[2] & 0x02)


def _match(ident: bytes, question: bytes, data: bytes) -> _Reply | None:
    """`data` as the reply to our query with ID `ident` and lower-cased `question`, or None."""
    if len(data) < 12 or data[0:2] != ident or not data[2] & 0x80 or data[2] & 0x78:
        return None
    try:
        if data[4:6] == b"\x00\x01":
            qend = read_question(data)
            if not qend or data[12:qend].lower() != question:
                return None
        elif data[4:6] == b"\x00\x00" and data[3] & 0x0F:
            qend = 12
        else:
            return None
        return _Reply(data, qend, _records(data, qend))
    except ValueError:
        return None


def _cache_ttl(reply: _Reply) -> int | None:
    """How long to cache `reply` in seconds, or None when it must not be cached (see the module doc)."""
    if reply.truncated or reply.qend == 12 or reply.rcode not in (_NOERROR, _NXDOMAIN):
        return None
    ttls = [struct.unpack_from("!I", reply.wire, r.ttl_at)[0] for r in reply.records if r.rtype != _OPT]
    ttl = min(ttls, default=0)
    if reply.rcode == _NOERROR and any(r.section == 0 for r in reply.records):
        ttl = min(ttl, MAX_POSITIVE_TTL)
    else:  # NXDOMAIN or NODATA (RFC 2308 section 5): only with a SOA, for min(its TTL, its MINIMUM)
        soa = next((r for r in reply.records if r.section == 1 and r.rtype == _SOA), None)
        if soa is None:
            return None
        (minimum,) = struct.unpack_from("!I", reply.wire, soa.end - 4)
        ttl = min(ttl, minimum, MAX_NEGATIVE_TTL)
    return ttl if ttl > 0 else None


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cached upstream answer and where to patch it on the way out."""

    wire: bytes
    qend: int
    ttl_at: tuple[int, ...]  # TTL fields of every record but the OPT
    opt: tuple[int, int] | None  # the OPT record's span
    stored: float
    expires: float


def _from_cache(q: Query, entry: _Entry, elapsed: int) -> bytearray:
    """The cached answer for this client: TTLs counted down, its ID, RD, CD, question and EDNS."""
    msg = bytearray(entry.wire)
    for at in entry.ttl_at:
        (ttl,) = struct.unpack_from("!I", msg, at)
        struct.pack_into("!I", msg, at, max(ttl - elapsed, 0))
    (arcount,) = struct.unpack_from("!H", msg, 10)
    if entry.opt is not None and not q.edns:
        del msg[entry.opt[0] : entry.opt[1]]
        struct.pack_into("!H", msg, 10, arcount - 1)
    elif entry.opt is None and q.edns:
        msg += opt_record(q.do)
        struct.pack_into("!H", msg, 10, arcount + 1)
    msg[0:2] = q.wire[0:2]
    msg[2] = (msg[2] & 0xFE) | (q.wire[2] & 0x01)
    msg[3] = (msg[3] & 0xEF) | (q.wire[3] & 0x10)
    msg[12 : entry.qend] = q.wire[12 : q.qend]
    return msg


# --- transports ------------------------------------------------------------------------------------


async def _exchange(transport: Transport, upstream: Upstream, query: bytes, qend: int, tcp: bool) -> _Reply:
    """Send `query` under a new random ID; the upstream's matching reply. Raises on any failure."""
    ident = secrets.token_bytes(2)
    question = query[12:qend].lower()
    data = await transport(upstream, ident + query[2:], tcp, lambda d: _match(ident, question, d) is not None)
    reply = _match(ident, question, data)
    if reply is None:
        raise ValueError("the transport returned a reply that does not match the query")
    return reply


def _failure(exc: Exception, tcp: bool, budget: float) -> str:
    proto = "TCP" if tcp else "UDP"
    if isinstance(exc, TimeoutError):
        return f"no reply over {proto} within {budget:.2g} s"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed the TCP connection before replying"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror.lower()} over {proto}"
    return f"{type(exc).__name__} over {proto}: {exc}"


# --- loops -----------------------------------------------------------------------------------------


def probe_reply(query: bytes) -> bytes:
    """clusterdns's answer to a loop probe: HINFO "clusterdns" "loop", which tells the prober that its
    query came back to clusterdns."""
    reply = dns.message.make_response(dns.message.from_wire(query))
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.HINFO, '"clusterdns" "loop"')
    rrset = reply.find_rrset(reply.answer, reply.question[0].name, dns.rdataclass.IN, dns.rdatatype.HINFO, create=True)
    rrset.add(rdata, 0)
    return reply.to_wire()


def _is_probe_answer(reply: _Reply) -> bool:
    try:
        message = dns.message.from_wire(reply.wire)
    except dns.exception.DNSException:
        return False
    return any(
        rrset.rdtype == dns.rdatatype.HINFO and any(rd.cpu == _PROBE_MARK for rd in rrset) for rrset in message.answer
    )


# --- the forwarder ---------------------------------------------------------------------------------


@dataclass
class ForwardStats:
    """Counters for metrics (CoreDNS's forward and cache metrics); only ever increased, but for
    `cache_entries`, which is the cache's current size."""

    requests: Counter[str] = field(default_factory=Counter)  # queries sent, by upstream "host:port"
    responses: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (upstream, rcode text)
    failures: Counter[str] = field(default_factory=Counter)  # queries that got no usable reply, by upstream
    rejects: int = 0  # queries answered REFUSED because `max_inflight` were waiting
    cache_hits: int = 0
    cache_misses: int = 0
    cache_entries: int = 0


@dataclass
class _Health:
    down: bool = False
    retry_at: float = 0.0  # loop time after which a down upstream is tried in its place again


class Forwarder:
    """Forwards queries to upstream resolvers and caches their answers (see the module doc). Use it from
    one event loop: it is not thread-safe."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        stub_domains: Mapping[str, Sequence[Upstream]] = _NO_STUBS,
        *,
        timeout: float = 2.0,
        attempts: int = 2,
        max_inflight: int = 1000,
        cache_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        local: Iterable[tuple[str, int]] = (),
        transport: Transport = network,
    ) -> None:
        if timeout <= 0 or attempts < 1 or max_inflight < 1 or cache_entries < 0:
            raise ValueError("timeout must be > 0, attempts and max_inflight >= 1, cache_entries >= 0")
        self.timeout = timeout
        self.attempts = attempts
        self.max_inflight = max_inflight
        self.cache_entries = cache_entries
        self.stats = ForwardStats()
        self.loops: list[Loop] = []  # upstreams dropped because they lead back to us, and why
        self._clock = clock
        self._transport = transport
        self._token = secrets.token_hex(4).encode()
        self._cache: dict[tuple[bytes, bool], _Entry] = {}  # by (question key, DO)
        self._health: dict[Upstream, _Health] = {}
        self._inflight = 0
        addresses = [(ip, port) for host, port in local if (ip := ip_of(host)) is not None]
        stubs: dict[tuple[bytes, ...], list[Upstream]] = {}
        for domain, targets in stub_domains.items():
            try:
                name = dns.name.from_text(domain).canonicalize()
            except dns.exception.DNSException as exc:
                raise ValueError(f"stub domain {domain!r}: {exc}") from None
            stubs[name.labels[:-1]] = list(targets)
        self.upstreams: list[Upstream] = list(upstreams)
        self._stubs = stubs
        for upstream in dict.fromkeys([*self.upstreams, *(u for targets in stubs.values() for u in targets)]):
            reason = loop_reason(upstream, addresses)
            if reason is not None:
                self._drop(upstream, reason)
        if not self.upstreams:
            log.warning("no upstream resolver: names outside clusterdns's zones will get SERVFAIL")

    @property
    def stub_domains(self) -> dict[str, list[Upstream]]:
        """The stub domains in text form ("consul.") with their upstreams."""
        return {".".join(label.decode("latin-1") for label in (*k, b"")) or ".": v for k, v in self._stubs.items()}

    async def forward(self, query: Query | bytes, tcp: bool = False) -> bytes:
        """The reply to a client's query (as respond() read it, or its bytes): from the cache or an upstream,
        SERVFAIL when none answers within timeout x attempts. Never raises (but for cancellation); b"" only
        for a message that is no query (a response, or shorter than a header), which gets no reply."""
        try:
            return await self._forward(query, tcp)
        except Exception:
            msg = query.wire if isinstance(query, Query) else query
            log.exception("forwarding failed; replying SERVFAIL to query %s", msg.hex())
            return header_reply(msg, dns.rcode.SERVFAIL) if len(msg) >= 12 and not msg[2] & 0x80 else b""

    async def chase(self, ours: bytes, target: str, tcp: bool) -> bytes:
        """Our reply `ours`, ending in a CNAME to `target` outside our zones, completed with `target`'s
        records from upstream (an ExternalName Service, Kubernetes DNS spec 2.5).

        The upstream's rcode is the chain's (RFC 6604); a denial brings its SOA along (RFC 2308). AA goes
        (part of the answer is not ours) and RA comes (we recursed for it). If the whole does not fit a UDP
        reply, the client gets our CNAME alone with TC set, and retries over TCP.
        """
        merged = dns.message.from_wire(ours)
        question = merged.question[0]
        upstream_query = dns.message.make_query(target + ".", question.rdtype, want_dnssec=False)
        upstream = await self.forward(upstream_query.to_wire(), tcp)
        try:
            theirs = dns.message.from_wire(upstream)
        except dns.exception.DNSException:
            return ours
        merged.set_rcode(theirs.rcode())
        merged.answer.extend(theirs.answer)
        if not theirs.answer:
            merged.authority.extend(theirs.authority)
        merged.flags &= ~dns.flags.AA
        merged.flags |= dns.flags.RA
        limit = 65535 if tcp else max(512, min(merged.payload, 1232)) if merged.edns >= 0 else 512
        try:
            return merged.to_wire(max_size=limit)
        except dns.exception.TooBig:
            merged.answer = merged.answer[:1]
            merged.flags |= dns.flags.TC
            return merged.to_wire()

    async def _forward(self, query: Query | bytes, tcp: bool) -> bytes:
        q = query if isinstance(query, Query) else read_query(query)
        if not isinstance(q, Query):
            return q or b""
        if self._is_own_probe(q.labels):
            return probe_reply(q.wire)
        entry = self._cache.get((q.key, q.do))
        if entry is not None:
            now = self._clock()
            if now < entry.expires:
                self.stats.cache_hits += 1
                return _fit(q, _from_cache(q, entry, int(now - entry.stored)), tcp)
            del self._cache[(q.key, q.do)]
            self.stats.cache_entries = len(self._cache)
        self.stats.cache_misses += 1
        if self._inflight >= self.max_inflight:
            self.stats.rejects += 1
            return _error_reply(q, dns.rcode.REFUSED)
        self._inflight += 1
        try:
            reply = await self._resolve(q, self._route(q.labels), tcp)
        finally:
            self._inflight -= 1
        if reply is None:
            return _error_reply(q, dns.rcode.SERVFAIL)
        if reply.qend == 12:
            return _error_reply(q, reply.rcode)
        self._store((q.key, q.do), reply)
        return _fit(q, q.wire[0:2] + reply.wire[2:12] + q.wire[12 : q.qend] + reply.wire[reply.qend :], tcp)

    def _route(self, labels: tuple[bytes, ...]) -> list[Upstream]:
        """The upstreams of the longest stub domain holding the name, else the default ones."""
        for i in range(len(labels) + 1):
            targets = self._stubs.get(labels[i:])
            if targets is not None:
                return targets
        return self.upstreams

    async def _resolve(self, q: Query, upstreams: list[Upstream], tcp: bool) -> _Reply | None:
        """The best reply from `upstreams` in order with failover, None when none replied in time."""
        if not upstreams:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout * self.attempts
        share = self.timeout / len(upstreams)
        fallback: _Reply | None = None  # an answer to give if no upstream does better
        for _ in range(self.attempts):
            for upstream in self._order(upstreams):
                reply = await self._ask(upstream, q, tcp, min(share, deadline - loop.time()))
                if reply is not None and reply.truncated and not tcp:
                    fallback = reply
                    reply = await self._ask(upstream, q, True, min(share, deadline - loop.time()))
                if reply is None:
                    continue
                if reply.rcode in _TRY_NEXT:
                    fallback = reply
                    continue
                return reply
            if fallback is not None:
                return fallback
        return fallback

    async def _ask(self, upstream: Upstream, q: Query, tcp: bool, budget: float) -> _Reply | None:
        """One query to one upstream, counted and logged on a change of the upstream's state."""
        if budget <= 0:
            return None
        name = str(upstream)
        self.stats.requests[name] += 1
        try:
            async with asyncio.timeout(budget):
                reply = await _exchange(self._transport, upstream, q.wire, q.qend, tcp)
        except Exception as exc:
            self.stats.failures[name] += 1
            self._set_health(upstream, _failure(exc, tcp, budget))
            return None
        self._set_health(upstream, None)
        self.stats.responses[(name, dns.rcode.to_text(dns.rcode.Rcode(reply.rcode)))] += 1
        return reply

    def _order(self, upstreams: list[Upstream]) -> list[Upstream]:
        """`upstreams` in order, those that failed in the last DOWN_RETRY seconds moved to the end."""
        now = asyncio.get_running_loop().time()
        ready = [u for u in upstreams if u not in self._health or self._health[u].retry_at <= now]
        return ready + [u for u in upstreams if u not in ready]

    def _set_health(self, upstream: Upstream, failure: str | None) -> None:
        health = self._health.setdefault(upstream, _Health())
        if failure is None:
            if health.down:
                log.info("upstream %s answers again", upstream)
            health.down, health.retry_at = False, 0.0
            return
        if not health.down:
            log.warning("upstream %s: %s; asking the other upstreams first", upstream, failure)
        health.down, health.retry_at = True, asyncio.get_running_loop().time() + DOWN_RETRY

    def _store(self, key: tuple[bytes, bool], reply: _Reply) -> None:
        ttl = _cache_ttl(reply)
        if ttl is None or self.cache_entries == 0:
            return
        cache = self._cache
        cache.pop(key, None)
        while len(cache) >= self.cache_entries:
            del cache[next(iter(cache))]  # dicts keep insertion order: the oldest stored goes
        opt = next(((r.start, r.end) for r in reply.records if r.rtype == _OPT), None)
        ttl_at = tuple(r.ttl_at for r in reply.records if r.rtype != _OPT)
        now = self._clock()
        cache[key] = _Entry(reply.wire, reply.qend, ttl_at, opt, now, now + ttl)
        self.stats.cache_entries = len(cache)

    # --- loops ---------------------------------------------------------------------------------------

    def is_probe(self, qname: str | dns.name.Name) -> bool:
        """Whether `qname` is a loop probe this Forwarder (or a process forked from it) sent."""
        try:
            name = dns.name.from_text(qname) if isinstance(qname, str) else qname
        except dns.exception.DNSException:
            return False
        return self._is_own_probe(tuple(label.lower() for label in name.labels if label))

    def _is_own_probe(self, labels: tuple[bytes, ...]) -> bool:
        return len(labels) == 3 and labels[2] == _PROBE_LABEL and labels[1] == self._token

    async def probe(self, local_only: bool = False) -> list[Upstream]:
        """Send a loop probe to every upstream at once (with `local_only`, only to those on this machine,
        where loops come from); drop those whose probe came back to us (see the module doc) and return
        them. Waits at most `timeout`."""
        upstreams = list(dict.fromkeys([*self.upstreams, *(u for targets in self._stubs.values() for u in targets)]))
        if local_only:
            upstreams = [u for u in upstreams if (ip := ip_of(u.host)) is not None and on_this_machine(ip)]
        answers = await asyncio.gather(*(self._probe(upstream) for upstream in upstreams))
        looping = [upstream for upstream, looped in zip(upstreams, answers, strict=True) if looped]
        for upstream in looping:
            self._drop(upstream, "a loop probe sent to it came back to this clusterdns")
        return looping

    async def _probe(self, upstream: Upstream) -> bool:
        name = dns.name.Name((secrets.token_hex(6).encode(), self._token, _PROBE_LABEL, b""))
        query = dns.message.make_query(name, dns.rdatatype.HINFO).to_wire()
        try:
            async with asyncio.timeout(self.timeout):
                reply = await _exchange(self._transport, upstream, query, read_question(query), tcp=False)
        except Exception:
            return False
        return _is_probe_answer(reply)

    def _drop(self, upstream: Upstream, reason: str) -> None:
        log.warning("upstream %s dropped: %s (a forwarding loop)", upstream, reason)
        self.loops.append(Loop(upstream, reason))
        self.upstreams = [u for u in self.upstreams if u != upstream]
        self._stubs = {domain: [u for u in targets if u != upstream] for domain, targets in self._stubs.items()}
