"""Upstream resolvers: their addresses (flags, resolv.conf), the network transport that asks them, and
which of them lead back to clusterdns itself. The forwarder (forward.py) uses these; this module holds no
forwarding policy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("clusterdns.forward")

# --- upstream addresses ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """A resolver we forward to: an IP address (in its canonical text form) and a port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_upstream(text: str) -> Upstream:
    """`ADDR[:PORT]` -> Upstream: `10.0.0.10`, `10.0.0.10:5353`, `fd00::10`, `[fd00::10]:5353`."""
    spec = text.strip()
    host, port = spec, "53"
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0:
            raise _bad_upstream(text, "missing ']' after the IPv6 address")
        host, rest = spec[1:close], spec[close + 1 :]
        if rest and not rest.startswith(":"):
            raise _bad_upstream(text, "expected ':PORT' after ']'")
        port = rest[1:] if rest else port
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise _bad_upstream(text, f"{host!r} is not an IP address") from None
    if spec.startswith("[") and ip.version != 6:
        raise _bad_upstream(text, "only IPv6 addresses go in brackets")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise _bad_upstream(text, f"port must be 1-65535, got {port!r}")
    return Upstream(str(ip), int(port))


def _bad_upstream(text: str, reason: str) -> ValueError:
    return ValueError(f"upstream {text!r}: {reason} (expected ADDR[:PORT], e.g. 10.0.0.10:53 or [fd00::10]:53)")


def resolv_conf_upstreams(path: str = "/etc/resolv.conf") -> list[Upstream]:
    """The `nameserver` lines of a resolv.conf, on port 53, in order; [] when the file doesn't exist.
    A nameserver that isn't an IP address is skipped with a warning, as the C library skips it."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found: list[Upstream] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            upstream = Upstream(str(ipaddress.ip_address(words[1])))
        except ValueError:
            log.warning("%s:%d: nameserver %r is not an IP address; ignored", path, number, words[1])
            continue
        if upstream not in found:
            found.append(upstream)
    return found


# --- transport ---


class _UDPReply(asyncio.DatagramProtocol):
    """Waits on a connected UDP socket for the first datagram `accept` takes; ICMP errors fail it."""

    def __init__(self, accept: Accept, reply: asyncio.Future[bytes]) -> None:
        self.accept = accept
        self.reply = reply

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.reply.done() and self.accept(data):
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc or ConnectionError("socket closed"))


async def _udp(upstream: Upstream, message: bytes, accept: Accept) -> bytes:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _UDPReply(accept, reply), remote_addr=(upstream.host, upstream.port)
    )
    try:
        transport.sendto(message)
        return await reply
    finally:
        transport.close()


async def _tcp(upstream: Upstream, message: bytes, accept: Accept) -> bytes:
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    try:
        writer.write(struct.pack("!H", len(message)) + message)
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            data = await reader.readexactly(length)
            if accept(data):
                return data
    finally:
        writer.close()


# How a message reaches an upstream: `transport(upstream, message, tcp, accept)` sends `message` and returns
# the first reply that `accept` takes (a UDP socket also sees datagrams that are no reply to it: wrong ID,
# wrong question, late replies to others). It raises on any failure; the forwarder bounds its time. The
# network's in production (`network`); tests give a plain function that plays the upstream.
Accept = Callable[[bytes], bool]
Transport = Callable[[Upstream, bytes, bool, Accept], Awaitable[bytes]]


async def network(upstream: Upstream, message: bytes, tcp: bool, accept: Accept) -> bytes:
    """The transport over real sockets: a new connected UDP socket (a new source port per query, RFC 5452),
    or a TCP connection (RFC 7766 framing)."""
    return await (_tcp if tcp else _udp)(upstream, message, accept)


# --- loops ---

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Loop(NamedTuple):
    """An upstream dropped because it leads back to this clusterdns, and why."""

    upstream: Upstream
    reason: str


def ip_of(host: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(host or "::")
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def on_this_machine(ip: IPAddress) -> bool:
    """Whether `ip` is an address of this machine: loopback, or one a socket can bind to."""
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((str(ip), 0))
    except OSError:
        return False
    return True


def loop_reason(upstream: Upstream, local: Sequence[tuple[IPAddress, int]]) -> str | None:
    ip = ip_of(upstream.host)
    if ip is None:
        return None
    for host, port in local:
        if port != upstream.port:
            continue
        if ip == host:
            return f"it is an address clusterdns listens on ({upstream})"
        if ip.is_unspecified:
            return f"{ip} is this machine, where clusterdns listens on port {port}"
        # An address of this machine while clusterdns listens on 0.0.0.0 or :: on that port is not dropped
        # here: it may be clusterdns, or a resolver the kernel sends elsewhere first (Docker's 127.0.0.11 is
        # DNATed to Docker's own). The loop probe at start tells which, as CoreDNS's loop plugin does.
    return None
