"""asyncio UDP and TCP transports around `Responder.respond`.

`serve()` is an async context manager that binds both sockets on one port and yields a `DNSServer`
whose `responder` can be swapped at any time (a reload): each query reads it once, so it is answered
wholly from the old snapshot or wholly from the new one. TCP follows RFC 7766: 2-byte length framing,
many queries per connection answered in order, an idle timeout, a bound on open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from clusterdns.respond import Responder, servfail

log = logging.getLogger("clusterdns.server")

TCP_IDLE_TIMEOUT = 10.0  # seconds without a query before we close (RFC 7766 suggests some seconds)
TCP_MAX_CONNECTIONS = 256


class BindError(Exception):
    """A socket can't be bound; the message is one line naming the port and the reason."""


@dataclass
class DNSServer:
    responder: Responder
    host: str = "127.0.0.1"
    port: int = 0
    tcp_connections: int = 0
    failures: int = 0
    _tcp: asyncio.Server | None = field(default=None, repr=False)

    def answer(self, query: bytes, tcp: bool) -> bytes | None:
        """respond(), with any unexpected failure turned into SERVFAIL and logged once per query."""
        try:
            return self.responder.respond(query, tcp)
        except Exception:
            self.failures += 1
            log.exception("answering failed; replying SERVFAIL to query %s", query.hex())
            return servfail(query)


def _udp_loop(server: DNSServer, sock: socket.socket, stop: threading.Event) -> None:
    """Answer UDP queries in a tight blocking loop: without the event loop's per-datagram overhead this
    answers several times more queries per second. Runs in its own thread (and in worker processes)."""
    recvfrom, sendto, answer = sock.recvfrom, sock.sendto, server.answer
    while not stop.is_set():
        try:
            data, addr = recvfrom(65535)
        except OSError as exc:
            if stop.is_set() or exc.errno == errno.EBADF:
                return
            log.debug("UDP receive error: %s", exc)
            continue
        reply = answer(data, False)
        if reply is not None:
            try:
                sendto(reply, addr)
            except OSError as exc:  # e.g. an unreachable client: nothing to do
                log.debug("UDP send to %s failed: %s", addr, exc)


def _wake(sock: socket.socket) -> None:
    """Unblock a thread waiting in recvfrom on `sock` by sending it an empty datagram."""
    with contextlib.suppress(OSError), socket.socket(sock.family, socket.SOCK_DGRAM) as s:
        s.sendto(b"", sock.getsockname())


async def _tcp_client(server: DNSServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if server.tcp_connections >= TCP_MAX_CONNECTIONS:
        writer.close()
        return
    server.tcp_connections += 1
    try:
        while True:
            try:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    query = await reader.readexactly(length)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            reply = server.answer(query, True)
            if reply is None:
                continue
            writer.write(struct.pack("!H", len(reply)) + reply)
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
    finally:
        server.tcp_connections -= 1
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.close()


def bind_error(port: int, exc: OSError) -> BindError:
    if exc.errno == errno.EACCES and port < 1024:
        return BindError(f"port {port} needs root (or CAP_NET_BIND_SERVICE); use --port 1053")
    if exc.errno == errno.EADDRINUSE:
        return BindError(f"port {port} is already in use by another program")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return BindError(f"can't listen on port {port}: the address is not on this machine ({exc.strerror})")
    return BindError(f"can't listen on port {port}: {exc.strerror or exc}")


@contextlib.asynccontextmanager
async def serve(responder: Responder, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[DNSServer]:
    """Listen on UDP and TCP `host:port` (port 0: one free port for both) until the block exits."""
    server = DNSServer(responder, host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(20):  # port 0: find a port free for both UDP and TCP
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
    server.port = bound
    stop = threading.Event()
    udp_thread = threading.Thread(target=_udp_loop, args=(server, udp_sock, stop), name="udp", daemon=True)
    udp_thread.start()
    tcp_sock.listen(128)
    server._tcp = await asyncio.start_server(
        lambda r, w: _tcp_client(server, r, w), sock=tcp_sock, limit=TCP_LIMIT_BYTES
    )
    try:
        yield server
    finally:
        stop.set()
        _wake(udp_sock)
        await asyncio.to_thread(udp_thread.join, 2)
        udp_sock.close()
        server._tcp.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server._tcp.wait_closed(), 1)


TCP_LIMIT_BYTES = 65536 + 2
