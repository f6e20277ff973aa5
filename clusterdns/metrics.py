"""Query counters in shared memory, and their Prometheus exposition under CoreDNS's metric names.

Counting is on the answer path of every query, so it is an integer increment into a list, not
prometheus-client calls: respond() hands the server each answer's counter slot (zone, query type, rcode;
an answer-cache entry carries its own), the server bumps it in its thread's `Tally`, and durations go into
power-of-two buckets. Each process publishes its counters into a block of an anonymous shared mmap, so
UDP worker processes count too; a scrape sums the blocks and hands the totals to prometheus-client
through a custom collector. No label ever carries a query name.
"""

from __future__ import annotations

import array
import mmap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dns.rcode
import dns.rdatatype
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from clusterdns.wire import Query

# Label values, CoreDNS style: common query types by name, the rest "other".
TYPES = ("A", "AAAA", "SRV", "PTR", "CNAME", "TXT", "SOA", "NS", "MX", "ANY", "other")
TYPE_INDEX = {int(dns.rdatatype.from_text(t)): i for i, t in enumerate(TYPES[:-1])}
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other")
RCODE_INDEX = {int(dns.rcode.from_text(r)): i for i, r in enumerate(RCODES[:-1])}
PROTOS = ("udp", "tcp")
# Duration buckets as CoreDNS's: 0.25 ms doubling 16 times (to 8.192 s), plus +Inf.
BUCKET_BASE_NS = 250_000
BUCKETS = 16
NO_ZONE = 3  # the zone label "." (the last of zone_labels): what no zone of ours answered
# How respond() found an answer, for counting: from the raw question (the fast path: a plain query answered
# from the answer cache or straight from the snapshot's table, direct.py), after reading the query in full
# (the same, or a reply of only a header), or built now by the general path (a miss of the answer cache).
CACHED, READ, BUILT = 0, 1, 2


def zone_labels(domain: str) -> tuple[str, ...]:
    """The zone label values, in the order of Zone.zone_index; the last, ".", for what no zone answered."""
    return (f"{domain}.", "in-addr.arpa.", "ip6.arpa.", ".")


def type_index(qtype: int) -> int:
    return TYPE_INDEX.get(qtype, len(TYPES) - 1)


def rcode_index(rcode: int) -> int:
    return RCODE_INDEX.get(rcode, len(RCODES) - 1)


def counter_slot(zone: int, qtype: int, rcode: int) -> int:
    """The request counter of an answer from `zone` (an index into zone_labels) to a `qtype` question with
    `rcode`, over UDP; +1 is the TCP one."""
    return _slot(zone, type_index(qtype), rcode_index(rcode))


def _slot(zone: int, t: int, r: int) -> int:
    return ((zone * len(TYPES) + t) * len(RCODES) + r) * len(PROTOS)


class Stats:
    """Counters for `processes` processes; `zones` are the zone label values (the last is ".").

    Requests and responses are counted exactly, in a list of counters per thread that counts (the UDP
    thread, the event loop): a thread only bumps its own list, so none loses a count to another, and a
    scrape reads the lists without stopping them. The duration histogram observes every answer that
    was built or read in full and every forwarded one, but only one in SAMPLE of the cached answers to
    plain queries (the fast path; see Tally). Its _count is therefore smaller than the request count; its
    quantiles are those of the sample. Worker processes publish their counts into shared memory only when
    a scrape asks (`refresh`, which waits for them up to a second).
    """

    SAMPLE = 64

    def __init__(self, zones: tuple[str, ...], processes: int = 1) -> None:
        self.zones = zones
        self.requests = len(zones) * len(TYPES) * len(RCODES) * len(PROTOS)
        self.histogram = len(zones) * len(TYPES) * (BUCKETS + 1)
        self.sums = len(zones) * len(TYPES)
        self.miss_slot = self.requests + self.histogram + self.sums  # answers built, not found in the cache
        self.forward_slot = self.miss_slot + 1  # queries forwarded upstream
        self.block = self.forward_slot + 1
        self.processes = processes
        self._map = mmap.mmap(-1, 8 * self.block * processes)  # anonymous and MAP_SHARED: kept across fork
        self.shared = memoryview(self._map).cast("Q")
        # [0]: the last publication the main process asked for; [1 + p]: the last one process p made
        self._control_map = mmap.mmap(-1, 8 * (1 + processes))
        self.control = memoryview(self._control_map).cast("Q")
        # This process' counters, one list per thread that counts (the UDP thread, the event loop): list
        # items are the cheapest to bump, and a thread that only bumps its own list loses no count to another.
        self._lists: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self.index = 0  # this process' block in `shared`

    @property
    def counts(self) -> list[int]:
        """The calling thread's own counters."""
        mine = self._lists.get(threading.get_ident())
        if mine is None:
            with self._lock:
                mine = self._lists[threading.get_ident()] = [0] * self.block
        return mine

    def use_block(self, index: int) -> None:
        """In a worker process: count from zero into block `index`, published by `publish()`."""
        self.index = index
        with self._lock:
            self._lists = {}

    def publish(self) -> None:
        """Copy this process' counters into its shared block (workers do so every second)."""
        start = self.index * self.block
        self.shared[start : start + self.block] = array.array("Q", self.local())

    def local(self) -> list[int]:
        """This process' counters: the sum of its threads' lists."""
        out = [0] * self.block
        with self._lock:
            lists = list(self._lists.values())
        for counts in lists:
            for i, v in enumerate(counts):
                if v:
                    out[i] += v
        return out

    def run_publisher(self) -> None:
        """In a worker process (a daemon thread): publish the counters when the main process asks.

        Publishing sums the counters holding the interpreter lock; doing it on a timer (when it also walked
        the answer cache) cost a worker 6-16% of its UDP answers, while a scrape every few seconds costs
        nothing visible.
        """
        done = 0
        while True:
            time.sleep(0.05)
            asked = self.control[0]
            if asked != done:
                self.publish()
                self.control[1 + self.index] = done = asked

    def refresh(self, timeout: float = 1.0) -> None:
        """In the main process, before reading totals: have every worker publish, waiting at most
        `timeout` (a worker that does not answer in time is read as it last published)."""
        if self.processes < 2:
            return
        asked = self.control[0] + 1
        self.control[0] = asked
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.control[1 + p] >= asked for p in range(1, self.processes)):
                return
            time.sleep(0.005)

    def slot(self, zone: int, t: int, r: int) -> int:
        """The request counter of (zone, type index, rcode index) over UDP; +1 is the TCP one."""
        return _slot(zone, t, r)

    def timing(self, zone: int, qtype: int) -> int:
        """The first histogram bucket of (zone, type)."""
        return self.requests + (zone * len(TYPES) + qtype) * (BUCKETS + 1)

    def sum_slot(self, zone: int, qtype: int) -> int:
        return self.requests + self.histogram + zone * len(TYPES) + qtype

    def observe(self, counts: list[int], slot: int, elapsed_ns: int) -> None:
        """Put one duration into the histogram of the zone and type of request counter `slot`, in `counts`
        (the calling thread's)."""
        zone, t = divmod(slot // (len(RCODES) * len(PROTOS)), len(TYPES))
        bucket = (elapsed_ns // BUCKET_BASE_NS).bit_length()
        counts[self.timing(zone, t) + (bucket if bucket < BUCKETS else BUCKETS)] += 1
        counts[self.sum_slot(zone, t)] += elapsed_ns

    def count_forwarded(self, query: Query, reply: bytes, tcp: bool, elapsed_ns: int) -> None:
        """Count a query answered by an upstream (zone ".", the upstream's rcode), from the calling thread."""
        counts = self.counts
        slot = counter_slot(NO_ZONE, query.qtype, reply[3] & 0xF if len(reply) >= 12 else 2)
        counts[slot + tcp] += 1
        self.observe(counts, slot, elapsed_ns)
        counts[self.forward_slot] += 1

    def per_process(self) -> list[int]:
        """Queries answered by each process (0: the main one), as last published."""
        out = []
        mine = self.local()
        for p in range(self.processes):
            block = mine if p == self.index else self.shared[p * self.block : (p + 1) * self.block]
            out.append(sum(block[: self.requests]))
        return out

    def totals(self) -> list[int]:
        """Every counter summed: this process' own, and what the other processes last published."""
        out = self.local()
        for p in range(self.processes):
            if p == self.index:
                continue
            block = self.shared[p * self.block : (p + 1) * self.block]
            for i, v in enumerate(block):
                if v:
                    out[i] += v
        return out


class Tally:
    """One answering thread's counting (the server bumps `counts[slot + tcp]` for each answer): its own list
    of the Stats counters, and its countdown to the next CACHED answer whose duration is observed (reading
    the clock a second time for each of those would cost the fast path more than the rest of counting).
    Make it in the thread that uses it."""

    __slots__ = ("countdown", "counts", "stats")

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.counts = stats.counts
        self.countdown = 0

    def timed(self, slot: int, found: int, started_ns: int) -> None:
        """Observe the duration of an answer from request counter `slot`, to a query that came at
        perf_counter_ns() `started_ns`, and count it as a miss when it was BUILT."""
        if found == BUILT:
            self.counts[self.stats.miss_slot] += 1
        self.stats.observe(self.counts, slot, time.perf_counter_ns() - started_ns)
        self.countdown = Stats.SAMPLE


class StatsCollector(Collector):
    """Exposes Stats and a few gauges at scrape time, under CoreDNS's names and clusterdns' own."""

    def __init__(
        self,
        stats: Stats,
        server: str,
        family: str,
        extra: Callable[[], Mapping[str, Any]],
    ) -> None:
        self.stats = stats
        self.server = server  # "dns://127.0.0.1:1053", as CoreDNS labels it
        self.family = family  # "1" IPv4, "2" IPv6
        self.extra = extra

    def collect(self) -> Iterator[Any]:
        s = self.stats
        totals = s.totals()
        requests = CounterMetricFamily(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            labels=["server", "zone", "proto", "family", "type"],
        )
        responses = CounterMetricFamily(
            "coredns_dns_responses", "Counter of response status codes.", labels=["server", "zone", "rcode"]
        )
        by_request: dict[tuple[str, str, str], int] = {}
        by_rcode: dict[tuple[str, str], int] = {}
        for z, zone in enumerate(s.zones):
            for t, qtype in enumerate(TYPES):
                for r, rcode in enumerate(RCODES):
                    for p, proto in enumerate(PROTOS):
                        v = totals[s.slot(z, t, r) + p]
                        if v:
                            by_request[(zone, proto, qtype)] = by_request.get((zone, proto, qtype), 0) + v
                            by_rcode[(zone, rcode)] = by_rcode.get((zone, rcode), 0) + v
        for (zone, proto, qtype), v in sorted(by_request.items()):
            requests.add_metric([self.server, zone, proto, self.family, qtype], v)
        for (zone, rcode), v in sorted(by_rcode.items()):
            responses.add_metric([self.server, zone, rcode], v)
        yield requests
        yield responses
        duration = HistogramMetricFamily(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took.",
            labels=["server", "zone", "type"],
        )
        for z, zone in enumerate(s.zones):
            for t, qtype in enumerate(TYPES):
                first = s.timing(z, t)
                counts = totals[first : first + BUCKETS + 1]
                if not any(counts):
                    continue
                buckets, running = [], 0
                for b in range(BUCKETS):
                    running += counts[b]
                    buckets.append((f"{BUCKET_BASE_NS * (1 << b) / 1e9:g}", running))
                buckets.append(("+Inf", running + counts[BUCKETS]))
                duration.add_metric([self.server, zone, qtype], buckets, totals[s.sum_slot(z, t)] / 1e9)
        yield duration
        extra = self.extra()
        for name, (kind, help_text, labels, values) in extra.items():
            family: Any = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, help_text, labels=list(labels)
            )
            for label_values, value in values:
                family.add_metric(list(label_values), value)
            yield family
