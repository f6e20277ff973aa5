"""Answers in DNS wire format (RFC 1035 section 4): name compression, and truncation by RRset. Does no I/O.

`encode` is the one place that writes answers; it runs once per distinct (name, type) of a registry
snapshot, after which `respond` reuses the bytes. It is a small special-purpose writer rather than
dnspython's renderer because it is on the measured path of every cache miss; the tests decode everything
it writes with both dnspython and dnslib.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import dns.rdatatype

from clusterdns.records import RR, Answer

A, AAAA, NS, CNAME, SOA, PTR, TXT, SRV = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.NS,
    dns.rdatatype.CNAME,
    dns.rdatatype.SOA,
    dns.rdatatype.PTR,
    dns.rdatatype.TXT,
    dns.rdatatype.SRV,
)
CLASS_IN = 1
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200


# An answer's header bytes 2-12 for each (RD, CD) a query sets (index RD | CD << 1), and bytes 4-12 with
# ARCOUNT + 1, for our OPT.
Heads = tuple[tuple[bytes, ...], bytes]
# Shared by every answer with the same flags and counts (a few hundred kinds), not kept per answer.
_HEADS: dict[bytes, Heads] = {}


def heads(head: bytes) -> Heads:
    """The header variants of an answer whose bytes 2-12 (flags, counts) are `head`, RD and CD clear."""
    shared = _HEADS.get(head)
    if shared is None:
        f1, f2 = head[0], head[1]
        variants = tuple(bytes((f1 | (i & 1), f2 | (0x10 if i & 2 else 0))) + head[2:] for i in range(4))
        ar = struct.unpack_from("!H", head, 8)[0]
        shared = (variants, head[2:8] + struct.pack("!H", ar + 1))
        if len(_HEADS) >= 4096:  # counts are small numbers: never reached by real answers
            _HEADS.clear()
        _HEADS[head] = shared
    return shared


class _Writer:
    def __init__(self, question: bytes) -> None:
        self.buf = bytearray(12)
        self.suffixes: dict[tuple[str, ...], int] = {}
        self.added: list[tuple[str, ...]] = []  # suffixes registered since the last mark
        labels = _labels_of(question)  # the question's name: every suffix of it is a pointer target
        offset = 12
        for j, label in enumerate(labels):
            self.suffixes[labels[j:]] = offset
            offset += len(label) + 1
        self.qname = ".".join(labels)
        self.buf += question

    def name(self, name: str, compress: bool = True) -> None:
        """Write a name, ending in a pointer to the longest suffix already written when `compress`;
        every suffix written here becomes a pointer target for later names."""
        if compress and name == self.qname and name:  # most owners are the question's name
            self.buf += b"\xc0\x0c"
            return
        labels = tuple(name.split(".")) if name else ()
        pointer, cut = None, len(labels)
        if compress:
            for j in range(len(labels)):
                pointer = self.suffixes.get(labels[j:])
                if pointer is not None:
                    cut = j
                    break
        offset = len(self.buf)
        for j in range(cut):
            suffix = labels[j:]
            if offset < 0x4000 and suffix not in self.suffixes:
                self.suffixes[suffix] = offset
                self.added.append(suffix)
            raw = labels[j].encode("latin-1")
            self.buf.append(len(raw))
            self.buf += raw
            offset += len(raw) + 1
        if pointer is not None:
            self.buf += struct.pack("!H", 0xC000 | pointer)
        else:
            self.buf.append(0)

    def rr(self, rr: RR) -> None:
        self.name(rr.name)
        self.buf += struct.pack("!HHIH", rr.rtype, CLASS_IN, rr.ttl, 0)
        start = len(self.buf)
        t, d = rr.rtype, rr.rdata
        if t == A:
            self.buf += socket.inet_pton(socket.AF_INET, d)
        elif t == AAAA:
            self.buf += socket.inet_pton(socket.AF_INET6, d)
        elif t in (CNAME, PTR, NS):
            self.name(d)
        elif t == SRV:
            self.buf += struct.pack("!HHH", d[0], d[1], d[2])
            self.name(d[3], compress=False)  # RFC 2782: the target is never compressed
        elif t == TXT:
            for text in d:
                raw = text.encode()
                self.buf.append(len(raw))
                self.buf += raw
        elif t == SOA:
            self.name(d[0])
            self.name(d[1])
            self.buf += struct.pack("!IIIII", *d[2:])
        else:  # pragma: no cover - records.py makes no other types
            raise ValueError(f"cannot write type {t}")
        struct.pack_into("!H", self.buf, start - 2, len(self.buf) - start)

    def mark(self) -> int:
        self.added = []
        return len(self.buf)

    def rollback(self, mark: int) -> None:
        del self.buf[mark:]
        for suffix in self.added:
            del self.suffixes[suffix]
        self.added = []


def _labels_of(question: bytes) -> tuple[str, ...]:
    labels = []
    i = 0
    while question[i]:
        n = question[i]
        # bytes.lower() folds ASCII only, as DNS does; latin-1 keeps one character per byte so offsets hold
        labels.append(question[i + 1 : i + 1 + n].lower().decode("latin-1"))
        i += n + 1
    return tuple(labels)


def _rrsets(rrs: tuple[RR, ...]) -> Iterator[list[RR]]:
    """Consecutive records with the same owner and type, as RRsets."""
    group: list[RR] = []
    for rr in rrs:
        if group and (rr.name != group[0].name or rr.rtype != group[0].rtype):
            yield group
            group = []
        group.append(rr)
    if group:
        yield group


def encode(question: bytes, answer: Answer, limit: int = 65535) -> bytes:
    """The reply to `question` (qname, qtype, qclass in wire form) with ID 0, RD and CD clear.

    What does not fit in `limit` bytes is left out by whole RRsets, and TC is set, also when only
    additional records were dropped: so CoreDNS does, and a client that wants them all retries over TCP
    (RFC 2181 section 9 would allow leaving TC clear there).
    """
    w = _Writer(question)
    counts = [0, 0, 0]
    truncated = False
    for index, section in enumerate((answer.answer, answer.authority, answer.additional)):
        for rrset in _rrsets(section):
            mark = w.mark()
            for rr in rrset:
                w.rr(rr)
            if len(w.buf) > limit:
                w.rollback(mark)
                truncated = True
                break
            counts[index] += len(rrset)
        else:
            continue
        break
    flags = FLAG_QR | (answer.rcode & 0xF)
    if answer.authoritative:
        flags |= FLAG_AA
    if truncated:
        flags |= FLAG_TC
    struct.pack_into("!HHHHHH", w.buf, 0, 0, flags, 1, *counts)
    return bytes(w.buf)
