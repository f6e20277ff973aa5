"""DNS wire format of queries (RFC 1035 section 4, RFC 6891): a client's message read once, and the replies
made from its header alone, and our OPT record. Does no I/O.

`read_query` reads a client's message once into a `Query` (header, question, EDNS), or gives the reply
due at once (FORMERR, NOTIMP, BADVERS) or None (no reply): respond, the forwarder and the query log all
read queries through it. Answers are written by `renderer`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.message
import dns.rcode
import dns.rdatatype

UDP_LIMIT = 1232  # DNS flag day 2020: the largest UDP payload we send, and offer in our OPT
PLAIN_UDP_LIMIT = 512  # RFC 1035, without EDNS
TCP_LIMIT = 65535
OPT = dns.rdatatype.OPT


def opt_record(do: bool | int, ext_rcode: int = 0) -> bytes:
    """Our OPT record (RFC 6891): root owner, our UDP size, the upper bits of the rcode, version 0, the
    client's DO bit, no options."""
    return b"\x00\x00\x29" + struct.pack("!HBBHH", UDP_LIMIT, ext_rcode, 0, 0x8000 if do else 0, 0)


def header_reply(query: bytes, rcode: int, keep_flags: bool = True) -> bytes:
    """A reply of only a header: the query's ID and opcode, QR set, RD and CD kept unless told not to
    (NOTIMP clears every flag)."""
    f1 = 0x80 | (query[2] & 0x78)
    f2 = rcode & 0xF
    if keep_flags:
        f1 |= query[2] & 0x01
        f2 |= query[3] & 0x10
    return query[0:2] + bytes((f1, f2)) + b"\0" * 8


# --- reading queries ---


@dataclass(frozen=True, slots=True)
class Query:
    """A client's query, read once: the message, where its question ends, and its EDNS (RFC 6891)."""

    wire: bytes
    qend: int  # the offset after the question
    edns: bool
    payload: int = 0  # the client's UDP size (EDNS), 0 without
    do: bool = False  # DNSSEC OK

    @property
    def key(self) -> bytes:
        """The question as our caches know it: the name lower-cased (ASCII only, as DNS), type and class."""
        return self.wire[12 : self.qend - 4].lower() + self.wire[self.qend - 4 : self.qend]

    @property
    def qtype(self) -> int:
        return int.from_bytes(self.wire[self.qend - 4 : self.qend - 2], "big")

    @property
    def labels(self) -> tuple[bytes, ...]:
        """The question's labels, lower-cased."""
        out, i = [], 12
        while self.wire[i]:
            out.append(self.wire[i + 1 : i + 1 + self.wire[i]].lower())
            i += self.wire[i] + 1
        return tuple(out)

    def limit(self, tcp: bool) -> int:
        """The largest reply the client takes: 65535 over TCP; over UDP its EDNS size within 512-1232, or 512
        without EDNS (RFC 1035 4.2.1, RFC 6891 6.2.5)."""
        if tcp:
            return TCP_LIMIT
        if self.edns:
            return UDP_LIMIT if self.payload > UDP_LIMIT else max(self.payload, PLAIN_UDP_LIMIT)
        return PLAIN_UDP_LIMIT


def read_question(msg: bytes) -> int:
    """The offset after the question of a message with one question of plain labels; 0 when there is none
    (runt, compressed or overlong name, cut short)."""
    n, i = len(msg), 12
    while True:
        if i >= n:
            return 0
        length = msg[i]
        if length == 0:
            break
        if length > 63:
            return 0
        i += length + 1
    qend = i + 5
    return qend if qend <= n and i - 12 <= 255 else 0


def read_query(msg: bytes) -> Query | bytes | None:
    """A client's message read once. None when it gets no reply (shorter than a header, or a response:
    answering those makes reflection loops); the reply due at once as bytes: NOTIMP for an opcode other
    than QUERY (every flag clear), FORMERR for QDCOUNT other than 1 or anything that does not parse,
    BADVERS for an EDNS version above 0."""
    if len(msg) < 12 or msg[2] & 0x80:
        return None
    if msg[2] & 0x78:
        return header_reply(msg, dns.rcode.NOTIMP, keep_flags=False)
    if msg[4] or msg[5] != 1:
        return header_reply(msg, dns.rcode.FORMERR)
    qend = read_question(msg)
    if not qend:
        return header_reply(msg, dns.rcode.FORMERR)
    if qend == len(msg) and msg[6:12] == b"\0\0\0\0\0\0":
        return Query(msg, qend, False)
    opt = _read_opt(msg, qend)
    if opt is None:
        return header_reply(msg, dns.rcode.FORMERR)
    if not opt:
        return Query(msg, qend, False)
    payload, version, do = opt
    if version:
        return _badvers(msg, qend, do)
    return Query(msg, qend, True, payload, bool(do))


def _skip_name(msg: bytes, i: int) -> int:
    """The offset after a (possibly compressed) name at `i`; raises IndexError/ValueError if bad."""
    while True:
        length = msg[i]
        if length == 0:
            return i + 1
        if length & 0xC0 == 0xC0:
            if i + 1 >= len(msg):
                raise IndexError("pointer past the end")
            return i + 2
        if length > 63:
            raise ValueError("bad label")
        i += length + 1


def _read_opt(msg: bytes, i: int) -> tuple[int, int, int] | tuple[()] | None:
    """Walk the answer, authority and additional sections after the question.

    Returns (payload, version, DO) of the OPT, () when there is none, None when the message is malformed
    (truncated records, trailing bytes, more than one OPT, an OPT outside the additional section, OPT
    options that don't fill its RDATA exactly or break their own rules, a record other than the OPT that
    does not parse): FORMERR, as BIND answers. A record other than the OPT is rare in a query, and only
    then is the whole message parsed by dnspython, which checks every RDATA by its type.
    """
    an, ns, ar = struct.unpack_from("!HHH", msg, 6)
    found: tuple[int, int, int] | tuple[()] = ()
    others = False
    try:
        for index in range(an + ns + ar):
            start = i
            i = _skip_name(msg, i)
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", msg, i)
            i += 10 + rdlen
            if i > len(msg):
                return None
            if rtype == OPT:
                if found or index < an + ns or msg[start] != 0:
                    return None
                if rdlen and not _options_valid(msg, i - rdlen, i):
                    return None
                found = (rclass, (ttl >> 16) & 0xFF, (ttl >> 15) & 1)
            else:
                others = True
    except (IndexError, ValueError, struct.error):
        return None
    if i != len(msg):
        return None
    if others:
        try:
            dns.message.from_wire(msg)
        except Exception:  # whatever dnspython refuses: not a message we can trust
            return None
    return found


_COOKIE, _ECS, _EDE = 10, 8, 15  # EDNS option codes (RFC 7873, RFC 7871, RFC 8914)


def _options_valid(msg: bytes, i: int, end: int) -> bool:
    """The OPT RDATA msg[i:end] is a sequence of options exactly filling it (RFC 6891 6.1.2), and the
    options whose form a query must respect respect it, as BIND checks them: a COOKIE is a client cookie
    of 8 bytes or one with a server cookie, 16-40 (RFC 7873 5.2.2); an ECS option's family is IPv4 or
    IPv6, its source prefix fits the family, its address has exactly the prefix's bytes with no bit set
    beyond it, and its scope is 0 (RFC 7871 6, 7.1.2); an EDE holds at least its 2-byte code."""
    while i < end:
        if i + 4 > end:
            return False
        code, length = struct.unpack_from("!HH", msg, i)
        i += 4
        if i + length > end:
            return False
        if code == _COOKIE:
            if length != 8 and not 16 <= length <= 40:
                return False
        elif code == _ECS:
            if not _ecs_valid(msg[i : i + length]):
                return False
        elif code == _EDE and length < 2:
            return False
        i += length
    return True


def _ecs_valid(data: bytes) -> bool:
    if len(data) < 4:
        return False
    family, source, scope = struct.unpack_from("!HBB", data)
    bits = 32 if family == 1 else 128 if family == 2 else 0
    if not bits or source > bits or scope != 0 or len(data) - 4 != (source + 7) // 8:
        return False
    return not (source % 8 and data[-1] & (0xFF >> (source % 8)))  # no bit set beyond the source prefix


def _badvers(query: bytes, qend: int, do: int) -> bytes:
    """BADVERS (extended rcode 16: 0 in the header, 1 in the OPT) for an EDNS version we don't speak."""
    f1 = 0x80 | (query[2] & 0x01)
    opt = opt_record(do, dns.rcode.BADVERS >> 4)
    return query[0:2] + bytes((f1, query[3] & 0x10)) + b"\x00\x01\x00\x00\x00\x00\x00\x01" + query[12:qend] + opt
