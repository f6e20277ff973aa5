"""asyncio UDP and TCP transports around `Responder.respond`: framing, threads, worker processes, counting.

`serve()` is an async context manager that binds both sockets on one port and yields a `DNSServer`
whose `responder` can be swapped at any time (a reload): each query reads it once, so it is answered
wholly from the old snapshot or wholly from the new one. Each answering thread counts into its own
`metrics.Tally` what respond() says an answer is counted under, and times it. TCP follows RFC 7766:
2-byte length framing, many queries per connection answered in order, an idle timeout, a bound on open
connections and a smaller one per client address; at the bound, the connection idle longest makes room
for a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from time import perf_counter_ns

from clusterdns.forward import Forwarder
from clusterdns.metrics import CACHED, Stats, Tally
from clusterdns.querylog import QueryLog
from clusterdns.respond import Chase, Forward, Responder, servfail

log = logging.getLogger("clusterdns.server")

TCP_IDLE_TIMEOUT = 10.0  # seconds without a query before we close (RFC 7766 suggests some seconds)
TCP_MAX_CONNECTIONS = 256
TCP_MAX_PER_CLIENT = 32  # open connections from one address: one client can't take every slot


class BindError(Exception):
    """A socket can't be bound; the message is one line naming the port and the reason."""


FAILURE_LOG_INTERVAL = 5.0  # seconds between two log lines for the same cause of failure
QUERY_LOGGED = 512  # bytes of a failing query written to the log, in hex


class FailureLog:
    """Logs unexpected failures while answering: the first of each cause (exception type and the line that
    raised it) with its traceback and the query, then nothing for that cause for `interval` seconds; the next
    line says how many were suppressed meanwhile. Safe to call from the UDP thread and the event loop."""

    def __init__(self, interval: float = FAILURE_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._causes: dict[tuple[str, str], tuple[float, int]] = {}  # cause -> (last logged, suppressed since)
        self._lock = threading.Lock()

    def failed(self, exc: BaseException, query: bytes) -> None:
        cause = _cause(exc)
        now = self.clock()
        with self._lock:
            last = self._causes.get(cause)
            if last is not None and now - last[0] < self.interval:
                self._causes[cause] = (last[0], last[1] + 1)
                return
            if len(self._causes) >= 1024:  # bounded: forget old causes rather than grow
                self._causes.clear()
            self._causes[cause] = (now, 0)
        suppressed = last[1] if last is not None else 0
        more = f" ({suppressed} more failure(s) like it not logged in the last {now - last[0]:.0f} s)" if last else ""
        text = query[:QUERY_LOGGED].hex() + ("..." if len(query) > QUERY_LOGGED else "")
        log.error("answering failed; replying SERVFAIL to query %s%s", text, more, exc_info=exc)


def _cause(exc: BaseException) -> tuple[str, str]:
    """An exception's type and the file and line that raised it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return type(exc).__name__, where


@dataclass
class DNSServer:
    responder: Responder
    host: str = "127.0.0.1"
    port: int = 0
    tcp_connections: int = 0
    failures: int = 0
    forwarder: Forwarder | None = None
    loop: asyncio.AbstractEventLoop | None = None  # where forwarded queries run
    query_log: QueryLog | None = None
    stats: Stats | None = None  # counters for /metrics; None: nothing is counted
    tally: Tally | None = None  # the event loop's counting (TCP); the UDP thread has its own
    failure_log: FailureLog = field(default_factory=lambda: FailureLog(), repr=False)
    tcp_clients: dict[_TCPClient, None] = field(default_factory=dict, repr=False)  # open ones, oldest first
    tcp_per_client: dict[str, int] = field(default_factory=dict, repr=False)  # open connections per address
    _tcp: asyncio.Server | None = field(default=None, repr=False)

    def answer(self, query: bytes, tcp: bool, client: str, tally: Tally | None) -> bytes | Forward | Chase | None:
        """respond()'s reply to `query`, counted and timed in `tally` (the calling thread's), or what needs
        upstream. An unexpected failure is SERVFAIL, not counted, and logged at most once per cause every
        FAILURE_LOG_INTERVAL seconds (a client repeating a query that fails can't flood the log)."""
        started = perf_counter_ns() if tally is not None else 0
        try:
            result = self.responder.respond(query, tcp, client)
        except Exception as exc:
            self.failures += 1
            self.failure_log.failed(exc, query)
            return servfail(query)
        if isinstance(result, tuple):
            reply, slot, found = result
            if tally is not None:  # inline, not a call: this is on the answer path of every query
                tally.counts[slot + tcp] += 1
                if found == CACHED and tally.countdown > 0:
                    tally.countdown -= 1
                else:
                    tally.timed(slot, found, started)
            return reply
        return result

    def forward_udp(self, todo: Forward | Chase, addr: tuple[str | int, ...], sock: socket.socket) -> None:
        """Hand a query that needs upstream, from the UDP thread, to the event loop, which sends the reply."""
        asyncio.run_coroutine_threadsafe(self._forward_udp(todo, addr, sock), self.loop or asyncio.get_event_loop())

    async def forward(self, todo: Forward | Chase, tcp: bool) -> bytes:
        """What the forwarder answers for `todo` (b"" for a message that needs no reply); counted in the stats.
        An unexpected failure is SERVFAIL, logged as answer() logs."""
        started = time.perf_counter_ns()
        try:
            if self.forwarder is None:  # forwarding off: respond() never asks, but answer it here if it does
                return servfail(todo.query.wire) or b""
            if isinstance(todo, Chase):
                reply = await self.forwarder.chase(todo.ours, todo.target, tcp)
            else:
                reply = await self.forwarder.forward(todo.query, tcp)
        except Exception as exc:
            self.failures += 1
            self.failure_log.failed(exc, todo.query.wire)
            return servfail(todo.query.wire) or b""
        if self.stats is not None and reply:
            self.stats.count_forwarded(todo.query, reply, tcp, time.perf_counter_ns() - started)
        return reply

    async def _forward_udp(self, todo: Forward | Chase, addr: tuple[str | int, ...], sock: socket.socket) -> None:
        started = time.perf_counter_ns()
        reply = await self.forward(todo, False)
        if self.query_log is not None and reply:
            self.query_log.put(addr, todo.query.wire, reply, "udp", started)
        if reply:
            with contextlib.suppress(OSError):
                sock.sendto(reply, addr)


def _udp_loop(server: DNSServer, sock: socket.socket, stop: threading.Event) -> None:
    """Answer UDP queries in a tight blocking loop: without the event loop's per-datagram overhead this
    answers several times more queries per second. Runs in its own thread (and in worker processes).
    Queries are read into 4 KiB; a longer datagram is cut and then fails to parse (FORMERR)."""
    recvfrom, sendto, answer = sock.recvfrom, sock.sendto, server.answer
    tally = Tally(server.stats) if server.stats is not None else None
    while not stop.is_set():
        try:
            data, addr = recvfrom(UDP_READ_SIZE)
        except OSError as exc:
            if stop.is_set() or exc.errno == errno.EBADF:
                return
            log.debug("UDP receive error: %s", exc)
            continue
        query_log = server.query_log
        started = time.perf_counter_ns() if query_log is not None else 0
        reply = answer(data, False, addr[0], tally)
        if reply is not None and not isinstance(reply, bytes):
            server.forward_udp(reply, addr, sock)
            continue
        if query_log is not None and reply is not None:
            query_log.put(addr, data, reply, "udp", started)
        if reply is not None:
            try:
                sendto(reply, addr)
            except OSError as exc:  # e.g. an unreachable client: nothing to do
                log.debug("UDP send to %s failed: %s", addr, exc)


UDP_READ_SIZE = 4096


def _wake(sock: socket.socket) -> None:
    """Unblock a thread waiting in recvfrom on `sock` by sending it an empty datagram."""
    with contextlib.suppress(OSError), socket.socket(sock.family, socket.SOCK_DGRAM) as s:
        s.sendto(b"", sock.getsockname())


class _TCPClient(asyncio.Protocol):
    """One TCP client (RFC 7766): 2-byte length framing; every complete query in what arrives is answered
    at once, in order, in one write; forwarded queries are answered when they complete, maybe after later
    ones. Closed after TCP_IDLE_TIMEOUT seconds without a query; see connection_made for the bounds.
    A Protocol rather than streams: no task, no await and no timer per query."""

    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.client = ""
        self.pending: set[asyncio.Task[None]] = set()  # forwarded queries not yet answered
        self.last = 0.0  # loop time of the last query
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take the connection unless its address already holds TCP_MAX_PER_CLIENT of them; at
        TCP_MAX_CONNECTIONS the connection idle longest is closed to make room (one with forwarded queries
        still to answer is not idle), so that no client holding or churning connections shuts out another."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        self.peer = transport.get_extra_info("peername")
        self.client = str(self.peer[0]) if self.peer else ""
        if server.tcp_per_client.get(self.client, 0) >= TCP_MAX_PER_CLIENT:
            transport.close()
            return
        if server.tcp_connections >= TCP_MAX_CONNECTIONS:
            idle = [c for c in server.tcp_clients if not c.pending]
            if not idle:
                transport.close()
                return
            oldest = min(idle, key=lambda c: c.last)
            oldest._release()
            assert oldest.transport is not None
            oldest.transport.close()
        server.tcp_connections += 1
        server.tcp_per_client[self.client] = server.tcp_per_client.get(self.client, 0) + 1
        server.tcp_clients[self] = None
        self.counted = True
        loop = asyncio.get_running_loop()
        self.last = loop.time()
        self.timer = loop.call_later(TCP_IDLE_TIMEOUT, self._idle)

    def _release(self) -> None:
        """Stop counting this connection (closed, or being closed to make room)."""
        if not self.counted:
            return
        self.counted = False
        server = self.server
        server.tcp_connections -= 1
        server.tcp_clients.pop(self, None)
        left = server.tcp_per_client.get(self.client, 1) - 1
        if left:
            server.tcp_per_client[self.client] = left
        else:
            server.tcp_per_client.pop(self.client, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self.timer is not None:
            self.timer.cancel()

    def _idle(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self.last
        if quiet < TCP_IDLE_TIMEOUT:
            self.timer = loop.call_later(TCP_IDLE_TIMEOUT - quiet, self._idle)
        elif self.pending:  # forwarded queries already asked may finish, for one more timeout
            self.last = loop.time()
            self.pending.clear()
            self.timer = loop.call_later(TCP_IDLE_TIMEOUT, self._idle)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        transport, server, buffer = self.transport, self.server, self.buffer
        assert transport is not None
        buffer += data
        replies = []
        used = 0
        query_log, tally = server.query_log, server.tally
        while len(buffer) - used >= 2:
            length = buffer[used] << 8 | buffer[used + 1]
            if len(buffer) - used - 2 < length:
                break
            query = bytes(buffer[used + 2 : used + 2 + length])
            used += 2 + length
            started = time.perf_counter_ns() if query_log is not None else 0
            reply = server.answer(query, True, self.client, tally)
            if isinstance(reply, Forward | Chase):
                task = asyncio.ensure_future(self._forward(reply))
                self.pending.add(task)
                task.add_done_callback(self._forwarded)
                continue
            if reply is None:
                continue
            if query_log is not None:
                query_log.put(self.peer, query, reply, "tcp", started)
            replies.append(struct.pack("!H", len(reply)) + reply)
        if used:
            del buffer[:used]
            self.last = asyncio.get_running_loop().time()  # a query, not any byte, keeps it open
        if replies:
            transport.write(b"".join(replies))

    async def _forward(self, todo: Forward | Chase) -> None:
        started = time.perf_counter_ns()
        reply = await self.server.forward(todo, True)
        if self.server.query_log is not None and reply:
            self.server.query_log.put(self.peer, todo.query.wire, reply, "tcp", started)
        if reply and self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack("!H", len(reply)) + reply)

    def _forwarded(self, task: asyncio.Task[None]) -> None:
        self.pending.discard(task)
        if self.eof and not self.pending and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        """The client sent all it will: keep the connection while its forwarded queries are answered."""
        self.eof = True
        return bool(self.pending)

    def pause_writing(self) -> None:  # a client that does not read its answers: stop reading its queries
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


def bind_error(port: int, exc: OSError) -> BindError:
    if exc.errno == errno.EACCES and port < 1024:
        return BindError(f"port {port} needs root (or CAP_NET_BIND_SERVICE); use --port 1053")
    if exc.errno == errno.EADDRINUSE:
        return BindError(f"port {port} is already in use by another program")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return BindError(f"can't listen on port {port}: the address is not on this machine ({exc.strerror})")
    return BindError(f"can't listen on port {port}: {exc.strerror or exc}")


@dataclass(frozen=True)
class Sockets:
    """A UDP and a TCP socket bound to the same address and port, not yet serving."""

    udp: socket.socket
    tcp: socket.socket
    host: str
    port: int

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def bind(host: str = "127.0.0.1", port: int = 0) -> Sockets:
    """Bind UDP and TCP on `host:port` (port 0: one port free for both); BindError says why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(20):
        udp_sock = socket.socket(family, socket.SOCK_DGRAM)
        tcp_sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp_sock.bind((host, port))
            bound = udp_sock.getsockname()[1]
            tcp_sock.bind((host, bound))
            break
        except OSError as exc:
            udp_sock.close()
            tcp_sock.close()
            if port == 0 and exc.errno == errno.EADDRINUSE and attempt < 19:
                continue
            raise bind_error(port, exc) from None
    with contextlib.suppress(OSError):
        udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return Sockets(udp_sock, tcp_sock, host, bound)


@contextlib.asynccontextmanager
async def serve(
    responder: Responder,
    host: str = "127.0.0.1",
    port: int = 0,
    sockets: Sockets | None = None,
    forwarder: Forwarder | None = None,
    query_log: QueryLog | None = None,
    stats: Stats | None = None,
) -> AsyncIterator[DNSServer]:
    """Serve UDP and TCP on `sockets`, or on new ones bound to `host:port`, until the block exits,
    counting answers in `stats` when given.

    UDP is answered by a thread of its own (see `_udp_loop`); TCP by the running event loop.
    """
    socks = sockets or bind(host, port)
    server = DNSServer(responder, socks.host, socks.port, forwarder=forwarder, loop=asyncio.get_running_loop())
    server.query_log = query_log
    server.stats = stats
    server.tally = Tally(stats) if stats is not None else None  # the event loop's, for TCP
    stop = threading.Event()
    udp_thread = threading.Thread(target=_udp_loop, args=(server, socks.udp, stop), name="udp", daemon=True)
    udp_thread.start()
    socks.tcp.listen(128)
    server._tcp = await asyncio.get_running_loop().create_server(lambda: _TCPClient(server), sock=socks.tcp)
    try:
        yield server
    finally:
        stop.set()
        _wake(socks.udp)
        await asyncio.to_thread(udp_thread.join, 2)
        server._tcp.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server._tcp.wait_closed(), 1)
        socks.close()


def fork_workers(count: int, sockets: Sockets, server: DNSServer, reload: Callable[[], Responder]) -> list[int]:
    """Start `count` processes that answer UDP on the same socket as this one; returns their PIDs.

    The kernel hands each datagram to one of the processes blocked on the socket, so UDP is answered on
    every core. Call this before any thread starts (fork copies only the calling thread). A worker
    exits with its parent (PR_SET_PDEATHSIG) or on SIGTERM, and on SIGHUP reloads the zones itself:
    it reads the same files and allocation state, so it builds the same registry.
    """
    pids = []
    for index in range(count):
        pid = os.fork()
        if pid:
            pids.append(pid)
            continue
        try:
            _die_with_parent()
            stats = server.stats
            if stats is not None:
                stats.use_block(index + 1)
                threading.Thread(target=stats.run_publisher, name="stats", daemon=True).start()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

            signal.signal(signal.SIGHUP, _WorkerReload(server, reload))
            sockets.tcp.close()
            if server.query_log is not None:
                server.query_log = server.query_log.reopen()
            if server.forwarder is not None:  # forwarded queries need an event loop: one of its own
                server.loop = asyncio.new_event_loop()
                threading.Thread(target=server.loop.run_forever, name="forward", daemon=True).start()
            server.responder.touch()
            _udp_loop(server, sockets.udp, threading.Event())
        finally:
            os._exit(0)
    return pids


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent exits."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _WorkerReload:
    """A worker's SIGHUP handler. Python runs it between any two bytecodes of the main thread, also in the
    middle of a reload: then it only asks the running reload to go round once more, so that loads never
    nest (they share one SQLite connection) and the last SIGHUP is never lost."""

    def __init__(self, server: DNSServer, reload: Callable[[], Responder]) -> None:
        self.server = server
        self.reload = reload
        self.running = False
        self.again = False

    def __call__(self, _signum: int, _frame: object) -> None:
        if self.running:
            self.again = True
            return
        self.running = True
        try:
            while True:
                self.again = False
                try:
                    self.server.responder = self.reload()
                except Exception:
                    log.exception("worker %d: reload failed; keeping the previous registry", os.getpid())
                if not self.again:
                    return
        finally:
            self.running = False
