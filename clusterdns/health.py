"""A small HTTP endpoint for operators: /health, /ready and /metrics (Prometheus text format).

Plain asyncio: read one request, write one response, close. The routes are callables supplied by the
daemon, so this module knows nothing of DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

log = logging.getLogger("clusterdns.health")

Route = Callable[[], tuple[int, str, bytes]]  # () -> (status, content type, body)
REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 8192  # bytes: the request line alone (else 414), and the request line and headers (else 431)


def parse_listen(text: str) -> tuple[str, int] | None:
    """`ADDR:PORT` (or `[v6]:PORT`, or `:PORT` for all addresses) -> (host, port); None for `off`."""
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be ADDR:PORT (such as 127.0.0.1:9153) or off, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


async def _read_head(reader: asyncio.StreamReader) -> bytes | int:
    """The request line, after reading the headers to the blank line; or 414 when the request line is
    longer than MAX_REQUEST, 431 when it and the headers are (StreamReader's limit is MAX_REQUEST, so
    no line is ever buffered beyond it)."""
    try:
        request_line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        return 414
    size = len(request_line)
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            return 431
        size += len(line)
        if size > MAX_REQUEST:
            return 431
        if line == b"\r\n":
            return request_line


async def _handle(routes: Mapping[str, Route], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            head = await _read_head(reader)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        writer.close()
        return
    if isinstance(head, int):
        await _refuse(head, reader, writer)
        return
    parts = head.decode("latin-1").split()
    method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
    path = path.split("?", 1)[0]
    route = routes.get(path)
    if route is None:
        status, ctype, body = 404, "text/plain; charset=utf-8", b"not found: try /health, /ready or /metrics\n"
    elif method not in ("GET", "HEAD"):
        status, ctype, body = 405, "text/plain; charset=utf-8", b"only GET\n"
    else:
        try:  # in a thread: a scrape that waits for worker processes never holds up TCP answers or forwarding
            status, ctype, body = await asyncio.to_thread(route)
        except Exception:
            log.exception("%s failed", path)
            status, ctype, body = 503, "text/plain; charset=utf-8", b"internal error\n"
    header = (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(header.encode() + (b"" if method == "HEAD" else body))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


async def _refuse(status: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer `status` to a request too large to read, then read what the client still sends for a moment
    (closing with unread bytes would reset the connection, and the client could lose the answer)."""
    body = f"{status} {REASONS[status]}: the request line and headers may hold {MAX_REQUEST} bytes\n".encode()
    header = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(header.encode() + body)
    with contextlib.suppress(ConnectionError, TimeoutError, OSError):
        async with asyncio.timeout(1.0):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            read = 0
            while read < 1 << 20 and (chunk := await reader.read(65536)):
                read += len(chunk)
    writer.close()


async def serve_http(host: str, port: int, routes: Mapping[str, Route]) -> asyncio.Server:
    """Start answering HTTP on host:port; close the returned server to stop."""
    return await asyncio.start_server(lambda r, w: _handle(routes, r, w), host, port, limit=MAX_REQUEST)
