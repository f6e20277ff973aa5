"""The running server: load the zones, serve, watch and reload, shut down gracefully.

A reload builds a whole new registry snapshot (re-parsing only changed files) and index in a worker
thread, then swaps the Responder in one assignment: a query is answered wholly from the old snapshot or
wholly from the new. A failed reload keeps the previous snapshot. SIGHUP reloads too. SIGTERM starts
the lameduck: /ready turns 503 while queries are still answered for `lameduck` seconds, then exit 0.
SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from clusterdns.forward import Forwarder
from clusterdns.health import serve_http
from clusterdns.metrics import Stats, StatsCollector
from clusterdns.proxy import Proxy, ProxyError
from clusterdns.querylog import QueryLog
from clusterdns.records import Zone
from clusterdns.registry import Registry
from clusterdns.respond import Recursion, Responder
from clusterdns.server import BindError, DNSServer, Sockets, bind_error, serve
from clusterdns.watch import Watcher
from clusterdns.zones import Zones, ZonesError, paused_gc

log = logging.getLogger("clusterdns")


@dataclass
class Options:
    ttl: int = 5
    pods: str = "insecure"
    watch: bool = True
    lameduck: float = 5.0
    http: tuple[str, int] | None = ("127.0.0.1", 9153)


@dataclass
class Daemon:
    zones: Zones
    options: Options
    registry: Registry | None = None
    zone: Zone | None = None
    serial: int = 0
    ready: bool = False
    reloads: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    workers: list[int] = field(default_factory=list)
    server: DNSServer | None = None
    stats: Stats | None = None
    forwarder: Forwarder | None = None
    recursion: Recursion = field(default_factory=Recursion)  # who may have other names forwarded
    query_log: QueryLog | None = None
    proxy: Proxy | None = None  # --proxy: the data plane, synced after every load of this process
    reload_error: str = ""  # why the last reload failed; "" after one that succeeded
    _reloading: bool = False
    _missed: bool = False  # a reload finished before the server existed
    _again: bool = False

    def load(self) -> Responder:
        """Load the zones into a new Responder (raises ZonesError when the directory is unusable)."""
        now = time.time()
        with paused_gc():
            registry = self.zones.load(now)
            serial = max(int(now), self.serial + 1)  # SOA serials only grow
            zone = Zone(registry, ttl=self.options.ttl, pods=self.options.pods, serial=serial, previous=self.zone)
        self.serial = serial
        for problem in registry.problems:
            log.warning("%s", problem)
        counts = registry.counts()
        log.info(
            "loaded %s: %d services, %d endpoints, %d pods, %d problems (serial %d)",
            self.zones.directory,
            counts["Service"],
            counts["Endpoint"],
            counts["Pod"],
            len(registry.problems),
            self.serial,
        )
        self.registry, self.zone = registry, zone
        responder = Responder(zone, forwarding=self.forwarder is not None, recursion=self.recursion)
        if os.environ.get("CLUSTERDNS_NO_GC_FREEZE") is None:
            # The snapshot lives until the next reload and holds no reference cycles: keep the cyclic
            # garbage collector from walking its 100,000s of objects again and again while serving.
            gc.freeze()
        return responder

    async def reload(self) -> None:
        """Build a new snapshot off the event loop and swap it in; reloads never overlap."""
        if self._reloading:
            self._again = True
            return
        self._reloading = True
        try:
            while True:
                self._again = False
                started = time.perf_counter()
                try:
                    responder = await asyncio.to_thread(self.load)
                except Exception as exc:  # whatever it was, the old snapshot serves and later reloads run
                    self.reloads["failure"] += 1
                    expected = isinstance(exc, ZonesError | OSError)
                    self.reload_error = f"{exc}" if expected else f"{type(exc).__name__}: {exc}"
                    log.error(
                        "reload failed, keeping the previous registry: %s",
                        self.reload_error,
                        exc_info=None if expected else exc,
                    )
                else:
                    self.reload_error = ""
                    if self.server is not None:
                        self.server.responder = responder
                    else:
                        self._missed = True
                    self.reloads["success"] += 1
                    log.info("reloaded in %.0f ms", (time.perf_counter() - started) * 1000)
                    if self.proxy is not None and self.registry is not None:
                        await self.sync_proxy(self.registry)
                    for pid in self.workers:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGHUP)
                if not self._again:
                    return
        finally:
            self._reloading = False

    async def sync_proxy(self, registry: Registry) -> None:
        """Bring the kernel's data plane to `registry`, off the event loop; a failure keeps the old rules."""
        assert self.proxy is not None
        try:
            await asyncio.to_thread(self.proxy.sync, registry)
        except Exception as exc:  # counted and shown by the proxy; the rules in the kernel stay as they were
            log.error(
                "proxy: keeping the previous rules: %s", exc, exc_info=None if isinstance(exc, ProxyError) else exc
            )
        else:
            log.info("proxy: rules applied in %.0f ms", self.proxy.last_seconds * 1000)

    async def run(self, responder: Responder, sockets: Sockets) -> int:
        """Serve until SIGTERM (after the lameduck) or SIGINT."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        lameduck = asyncio.Event()
        watcher = None
        if self.options.watch:  # before serving: a change made once answers are seen must not be missed
            watcher = Watcher(self.zones.directory, lambda: loop.create_task(self.reload()))
            watcher.start()
        async with serve(
            responder, sockets=sockets, forwarder=self.forwarder, query_log=self.query_log, stats=self.stats
        ) as server:
            self.server = server
            if self._missed or self.zones.changed():  # changed between the first load and the watch
                await self.reload()
            self.ready = True
            log.info(
                "serving %s on %s port %d (UDP and TCP; %d UDP process(es))",
                self.zones.config.domain,
                sockets.host,
                sockets.port,
                len(self.workers) + 1,
            )
            http = await self._start_http(sockets)
            probe = loop.create_task(self._probe()) if self.forwarder is not None else None
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
            loop.add_signal_handler(signal.SIGTERM, lameduck.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(lameduck.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if lameduck.is_set() and not stop.is_set():
                self.ready = False
                log.info("SIGTERM: not ready; answering for %.1f more seconds", self.options.lameduck)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.lameduck)
            for task in [*waiters, *([probe] if probe else [])]:
                task.cancel()
            self.ready = False
            if watcher:
                watcher.stop()
            if http:
                http.close()
            log.info("stopping")
        return 0

    async def _probe(self) -> None:
        """Send each upstream on this machine a loop probe (as CoreDNS's loop plugin): one that comes back to
        us is dropped. Remote upstreams are not probed: clusterdns sends nothing upstream unasked."""
        assert self.forwarder is not None
        looping = await self.forwarder.probe(local_only=True)
        if looping and not self.forwarder.upstreams:
            log.error("every upstream leads back to clusterdns: names outside the cluster get SERVFAIL")

    # --- health and metrics ---

    async def _start_http(self, sockets: Sockets) -> asyncio.Server | None:
        if self.options.http is None:
            return None
        host, port = self.options.http
        registry = CollectorRegistry(auto_describe=True)
        if self.stats is not None:
            family = "2" if ":" in sockets.host else "1"
            registry.register(StatsCollector(self.stats, f"dns://{sockets.host}:{sockets.port}", family, self._gauges))
        routes = {"/health": self._health, "/ready": self._ready, "/metrics": lambda: self._metrics(registry)}
        try:
            server = await serve_http(host, port, routes)
        except OSError as exc:
            raise BindError(f"--http {host}:{port}: {bind_error(port, exc)}") from None
        log.info("health and metrics on http://%s:%d/ (/health, /ready, /metrics)", host, port)
        return server

    def _health(self) -> tuple[int, str, bytes]:
        return 200, "text/plain; charset=utf-8", b"OK\n"

    def _ready(self) -> tuple[int, str, bytes]:
        """503 until the first load and the sockets are up, and during shutdown; the zone errors as detail."""
        problems = self.registry.problems if self.registry else ()
        lines = ["ready" if self.ready else "not ready"]
        if self.reload_error:
            lines.append(f"last reload failed, serving the registry loaded before it: {self.reload_error}")
        if problems:
            lines.append(f"{len(problems)} zone file error(s):")
            lines.extend(f"  {p}" for p in problems)
        if self.proxy is not None and self.proxy.last_error:
            lines.append(f"proxy: the last change could not be applied: {self.proxy.last_error}")
        return (200 if self.ready else 503), "text/plain; charset=utf-8", ("\n".join(lines) + "\n").encode()

    def _metrics(self, registry: CollectorRegistry) -> tuple[int, str, bytes]:
        if self.stats is not None:
            self.stats.refresh()  # the workers' counts, as of now
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)

    def _gauges(self) -> dict[str, tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]]:
        """Metrics read at scrape time: registry objects, reloads, zone errors, the answer cache."""
        out: dict[str, tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]] = {}
        if self.registry is not None:
            out["clusterdns_registry_objects"] = (
                "gauge",
                "Objects in the service registry, per kind.",
                ("kind",),
                [((kind,), n) for kind, n in self.registry.counts().items()],
            )
            out["clusterdns_zone_errors"] = (
                "gauge",
                "Problems found in the zone files at the last load.",
                (),
                [((), len(self.registry.problems))],
            )
        if self.proxy is not None:
            applied = self.proxy.applied
            out["clusterdns_proxy_syncs"] = (
                "counter",
                "Data plane updates (nft transactions and address changes), by result.",
                ("result",),
                [((result,), n) for result, n in self.proxy.syncs.items()],
            )
            out["clusterdns_proxy_services"] = (
                "gauge",
                "Services with cluster IPs in the data plane.",
                (),
                [((), len(applied.services) if applied else 0)],
            )
            out["clusterdns_proxy_addresses"] = (
                "gauge",
                "Service addresses claimed on the proxy interface.",
                (),
                [((), len(self.proxy.claimed))],
            )
            out["clusterdns_proxy_sync_seconds"] = (
                "gauge",
                "How long the last successful data plane update took.",
                (),
                [((), self.proxy.last_seconds)],
            )
        out["clusterdns_reloads"] = (
            "counter",
            "Registry reloads, by result.",
            ("result",),
            [((result,), n) for result, n in self.reloads.items()],
        )
        if self.stats is not None and self.server is not None:
            totals = self.stats.totals()
            misses = totals[self.stats.miss_slot]
            answered = sum(totals[: self.stats.requests]) - totals[self.stats.forward_slot]
            server = f"dns://{self.server.host}:{self.server.port}"
            responder = self.server.responder
            entries = list(responder.cache.values())  # one C call, which the answering thread can't interleave
            denial = sum(1 for e in entries if e.denial)
            out["coredns_cache_entries"] = (
                "gauge",
                "The number of elements in the cache.",
                ("server", "type"),
                [((server, "success"), len(entries) - denial), ((server, "denial"), denial)],
            )
            out["coredns_cache_hits"] = (
                "counter",
                "The count of cache hits.",
                ("server", "type"),
                [((server, "success"), answered - misses)],
            )
            out["coredns_cache_misses"] = ("counter", "The count of cache misses.", ("server",), [((server,), misses)])
            out["clusterdns_process_queries"] = (
                "counter",
                "Queries answered per process (0: the main one; others: --workers).",
                ("process",),
                [((str(i),), n) for i, n in enumerate(self.stats.per_process())],
            )
            fw = self.forwarder.stats if self.forwarder is not None else None
            if fw is not None:  # the forwarded-answer cache, beside the answer cache
                out["coredns_cache_entries"][3].append(((server, "forward"), fw.cache_entries))
                out["coredns_cache_hits"][3].append(((server, "forward"), fw.cache_hits))
                out["coredns_cache_misses"][3][0] = ((server,), misses + fw.cache_misses)
                out["coredns_forward_requests"] = (
                    "counter",
                    "Counter of requests made per upstream.",
                    ("to",),
                    [((to,), n) for to, n in sorted(fw.requests.items())],
                )
                out["coredns_forward_responses"] = (
                    "counter",
                    "Counter of responses received per upstream.",
                    ("to", "rcode"),
                    [((to, rcode), n) for (to, rcode), n in sorted(fw.responses.items())],
                )
        return out
