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
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from clusterdns.records import Zone
from clusterdns.registry import Registry
from clusterdns.respond import Responder
from clusterdns.server import DNSServer, Sockets, serve
from clusterdns.watch import Watcher
from clusterdns.zones import Zones, ZonesError

log = logging.getLogger("clusterdns")


@dataclass
class Options:
    ttl: int = 5
    pods: str = "insecure"
    watch: bool = True
    lameduck: float = 5.0


@dataclass
class Daemon:
    zones: Zones
    options: Options
    registry: Registry | None = None
    serial: int = 0
    ready: bool = False
    reloads: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    workers: list[int] = field(default_factory=list)
    server: DNSServer | None = None
    _reloading: bool = False
    _again: bool = False

    def load(self) -> Responder:
        """Load the zones into a new Responder (raises ZonesError when the directory is unusable)."""
        now = time.time()
        registry = self.zones.load(now)
        self.serial = max(int(now), self.serial + 1)  # SOA serials only grow
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
        self.registry = registry
        return Responder(Zone(registry, ttl=self.options.ttl, pods=self.options.pods, serial=self.serial))

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
                except (ZonesError, OSError) as exc:
                    self.reloads["failure"] += 1
                    log.error("reload failed, keeping the previous registry: %s", exc)
                else:
                    if self.server is not None:
                        self.server.responder = responder
                    self.reloads["success"] += 1
                    log.info("reloaded in %.0f ms", (time.perf_counter() - started) * 1000)
                    for pid in self.workers:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGHUP)
                if not self._again:
                    return
        finally:
            self._reloading = False

    async def run(self, responder: Responder, sockets: Sockets) -> int:
        """Serve until SIGTERM (after the lameduck) or SIGINT."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        lameduck = asyncio.Event()
        async with serve(responder, sockets=sockets) as server:
            self.server = server
            self.ready = True
            log.info(
                "serving %s on %s port %d (UDP and TCP; %d UDP process(es))",
                self.zones.config.domain,
                sockets.host,
                sockets.port,
                len(self.workers) + 1,
            )
            watcher = None
            if self.options.watch:
                watcher = Watcher(self.zones.directory, lambda: loop.create_task(self.reload()))
                watcher.start()
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
            for task in waiters:
                task.cancel()
            self.ready = False
            if watcher:
                watcher.stop()
            log.info("stopping")
        return 0
