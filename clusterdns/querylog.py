"""--log-queries: one JSON line per query, written by a thread of its own so answers never wait for it.

The answer path only puts (client, query, reply, transport, time) on a queue; this thread decodes the
name, type and rcode from the bytes and writes the line. When the writer falls behind by more than
`MAX_BACKLOG` queries, further lines are dropped (and counted) rather than letting memory grow.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import TextIO

import dns.rcode
import dns.rdatatype

from clusterdns.wire import read_question

MODES = ("all", "denial", "error")
MAX_BACKLOG = 100_000
_ERRORS = {dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED}


class QueryLog:
    def __init__(self, mode: str, out: TextIO) -> None:
        if mode not in MODES:
            raise ValueError(f"--log-queries: must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.out = out
        self.dropped = 0
        self._queue: queue.SimpleQueue[tuple[object, bytes, bytes, str, int, float] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="query-log", daemon=True)
        self._thread.start()

    def put(self, client: object, query: bytes, reply: bytes, transport: str, started_ns: int) -> None:
        """Called on the answer path (`started_ns` from time.perf_counter_ns()): cheap, never blocks."""
        if self._queue.qsize() > MAX_BACKLOG:
            self.dropped += 1
            return
        self._queue.put((client, query, reply, transport, time.perf_counter_ns() - started_ns, time.time()))

    def reopen(self) -> QueryLog:
        """A new log of the same mode and output, for a forked worker (threads don't survive fork)."""
        return QueryLog(self.mode, self.out)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(2)

    def _write(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self.out.flush()
                return
            line = self.format(*item)
            if line is not None:
                self.out.write(line + "\n")
                if self._queue.empty():
                    self.out.flush()

    def format(
        self, client: object, query: bytes, reply: bytes, transport: str, elapsed_ns: int, when: float
    ) -> str | None:
        """The JSON line for one answered query, or None when the mode leaves it out."""
        if len(reply) < 12:
            return None
        rcode = reply[3] & 0xF
        answers = int.from_bytes(reply[6:8], "big")
        denial = rcode == dns.rcode.NXDOMAIN or (rcode == dns.rcode.NOERROR and answers == 0)
        if (self.mode == "denial" and not denial) or (self.mode == "error" and rcode not in _ERRORS):
            return None
        name, qtype = _question(query)
        host, port = (client[0], client[1]) if isinstance(client, tuple) and len(client) >= 2 else ("", 0)
        return json.dumps(
            {
                "time": round(when, 6),
                "client": f"{host}:{port}",
                "proto": transport,
                "name": name,
                "type": dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype)) if qtype else "",
                "rcode": dns.rcode.to_text(dns.rcode.Rcode.make(rcode)),
                "answers": answers,
                "duration": round(elapsed_ns / 1e9, 9),
                "size": len(reply),
            },
            separators=(",", ":"),
        )


def _question(query: bytes) -> tuple[str, int]:
    """The question's name (as asked) and type; ("", 0) when there is none to read."""
    qend = read_question(query)
    if not qend:
        return "", 0
    labels, i = [], 12
    while query[i]:
        labels.append(query[i + 1 : i + 1 + query[i]].decode("ascii", "backslashreplace"))
        i += query[i] + 1
    return ".".join(labels) + ".", int.from_bytes(query[qend - 4 : qend - 2], "big")
