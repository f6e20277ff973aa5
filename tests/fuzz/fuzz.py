"""A seeded, bounded fuzzer for clusterdns: mutated DNS messages against a running server (UDP and TCP), and
mutated manifests against `clusterdns check`. It reports crashes, hangs, tracebacks, answers that are not
well-formed DNS (or SERVFAIL, which with forwarding off only a failure in the handler gives), and the time
and memory used.

    python tests/fuzz/fuzz.py packets --cases 1000000 --tcp-cases 20000 --seed 1
    python tests/fuzz/fuzz.py packets --server 127.0.0.1:1053 --pid 1234 --cases 100000
    python tests/fuzz/fuzz.py manifests --cases 5000 --seed 1
    python tests/fuzz/fuzz.py all --cases 1000000 --tcp-cases 20000 --manifests 5000

Without --server, `packets` starts `clusterdns serve --upstream off` on free loopback ports with the
shipped zones and reads its log (tracebacks) and memory (/proc/PID/status) itself. `manifests` runs
`clusterdns check` (cli.main, in a worker process that it restarts after a crash or a hang) on one mutated
file at a time beside a good one. Every case derives from --seed alone, so a run is repeatable; the
failing cases are written to --out. Exit status 0 when nothing was found, 1 otherwise.

Bounds: packets at most 4,096 bytes over UDP and 65,535 over TCP; manifests at most about 2 MB; at most
a few seconds per case (a case past --timeout is a hang).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # run as a script too, as the benchmark scripts are

from dns_helpers import free_port  # noqa: E402 (tests/dns_helpers.py)

SHIPPED = ROOT / "zones"
MAX_UDP = 4096
MAX_TCP = 65535
MAX_MANIFEST = 2_000_000
PROBE_ID = 0xFFFF  # the ID of probes; fuzzed messages get others


# --- reports ------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What one pass found; `ok` when there was no crash, hang, traceback or bad answer."""

    what: str
    cases: int = 0
    answered: int = 0
    rcodes: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    memory: list[str] = field(default_factory=list)  # memory past the bound given
    tracebacks: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # answers that are not what a client can use
    notes: list[str] = field(default_factory=list)  # figures worth knowing that are not failures
    seconds: float = 0.0
    slowest: float = 0.0  # seconds: the slowest probe answer, or manifest check
    slowest_case: str = ""
    rss_kb: tuple[int, int, int] = (0, 0, 0)  # the server's or worker's memory: at start, most, at the end

    @property
    def ok(self) -> bool:
        return not (self.crashes or self.hangs or self.tracebacks or self.bad or self.memory)

    def text(self) -> str:
        start, most, end = self.rss_kb
        lines = [
            f"{self.what}: {self.cases:,} cases in {self.seconds:.1f} s, {self.answered:,} answered; "
            f"{len(self.crashes)} crashes, {len(self.hangs)} hangs, {len(self.tracebacks)} tracebacks, "
            f"{len(self.bad)} bad answers, {len(self.memory)} over the memory bound; "
            f"slowest {self.slowest * 1000:.0f} ms" + (f" ({self.slowest_case})" if self.slowest_case else ""),
        ]
        if most:
            mb = [f"{kb / 1024:.1f} MB" for kb in (start, most, end)]
            lines.append(f"  memory (RSS): {mb[0]} at start, {mb[1]} at most, {mb[2]} at the end")
        if self.rcodes:
            lines.append("  " + ", ".join(f"{k} {v:,}" for k, v in self.rcodes.most_common()))
        for title, items in (
            ("crash", self.crashes),
            ("hang", self.hangs),
            ("memory", self.memory),
            ("traceback", self.tracebacks),
            ("bad", self.bad),
            ("note", self.notes),
        ):
            lines.extend(f"  {title}: {item[:2000]}" for item in items[:20])
        return "\n".join(lines)


def rss_kb(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of a process in KiB, from /proc; (0, 0) when unknown."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        return 0, 0
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


# --- packets ------------------------------------------------------------------------------------------

QUESTIONS = [
    ("my-nginx.default.svc.cluster.local.", "A"),
    ("my-nginx.default.svc.cluster.local.", "AAAA"),
    ("_http._tcp.my-nginx.nginx-secure.svc.cluster.local.", "SRV"),
    ("my-nginx.nginx-secure.svc.cluster.local.", "SRV"),
    ("web-0.nginx.default.svc.cluster.local.", "A"),
    ("10-244-0-5.default.pod.cluster.local.", "A"),
    ("my-service.prod.svc.cluster.local.", "CNAME"),
    ("nosuch.default.svc.cluster.local.", "A"),
    ("my-nginx.default.default.svc.cluster.local.", "A"),
    ("cluster.local.", "SOA"),
    ("cluster.local.", "NS"),
    ("dns-version.cluster.local.", "TXT"),
    ("ns.dns.cluster.local.", "A"),
    ("10.0.0.10.in-addr.arpa.", "PTR"),
    ("1.0.0.10.in-addr.arpa.", "PTR"),
    ("5.0.244.10.in-addr.arpa.", "PTR"),
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", "PTR"),
    ("example.com.", "A"),
    ("cluster.local.", "AXFR"),
]
INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x0C, 0x29, 0x3F, 0x40, 0x7F, 0x80, 0xB2, 0xC0, 0xC1, 0xFE, 0xFF)


def packet_seeds() -> list[bytes]:
    """Valid queries of every shape clusterdns answers: plain, EDNS with and without options, a record
    beside the OPT, reverse names with odd bytes."""
    out: list[bytes] = []
    options: list[list[dns.edns.Option]] = [
        [],
        [dns.edns.GenericOption(dns.edns.COOKIE, b"12345678")],
        [dns.edns.ECSOption("10.1.2.0", 24)],
        [dns.edns.GenericOption(12, b"\0" * 8), dns.edns.GenericOption(65001, b"xyz")],
    ]
    for name, rdtype in QUESTIONS:
        out.append(dns.message.make_query(name, rdtype, use_edns=False).to_wire())
        for opts in options:
            out.append(dns.message.make_query(name, rdtype, use_edns=0, payload=1232, options=opts).to_wire())
    q = dns.message.make_query("my-nginx.default.svc.cluster.local.", "A", use_edns=0)
    q.additional.append(dns.rrset.from_text("x.example.", 0, "IN", "A", "192.0.2.1"))
    out.append(q.to_wire())
    for label in (b"\xb2", b"1\xb2", b"\xff", b"."):  # raw reverse labels, as a fuzzer once found them
        name = bytes([len(label)]) + label + b"\x010\x010\x0210\x07in-addr\x04arpa\x00"
        out.append(struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 12, 1))
    return out


def mutate(rng: random.Random, seeds: Sequence[bytes], limit: int) -> bytes:
    """A seed changed by 1-6 of: bit flips, interesting bytes, inserted random bytes, deleted and
    duplicated ranges, truncation, random section counts, a splice of another seed, a compression
    pointer; most keep QR clear so that they are answered."""
    wire = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6))):
        n = len(wire)
        i = rng.randrange(n + 1)
        op = rng.randrange(10)
        if op == 0 and n:
            wire[i % n] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            wire[i % n] = rng.choice(INTERESTING_BYTES)
        elif op == 2:
            wire[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del wire[i : i + rng.randint(1, 16)]
        elif op == 4 and rng.random() < 0.3:
            del wire[i:]
        elif op == 5 and n >= 12:
            count = rng.choice((0, 1, 2, 3, 0xFFFF, rng.randrange(65536)))
            struct.pack_into("!H", wire, rng.choice((4, 6, 8, 10)), count)
        elif op == 6:
            other = rng.choice(seeds)
            wire[i:] = other[rng.randrange(len(other) + 1) :]
        elif op == 7 and n:
            end = min(n, i + rng.randint(1, 32))
            wire[end:end] = wire[i:end] * rng.randint(1, 4)
        elif op == 8 and n > 13:
            j = rng.randrange(12, n - 1)
            wire[j : j + 2] = bytes((0xC0 | rng.randrange(64), rng.randrange(256)))
        elif op == 9 and n > 12:  # a label length byte that lies
            j = rng.randrange(12, n)
            wire[j] = rng.randrange(64)
    if len(wire) >= 3 and rng.random() < 0.95:
        wire[2] &= 0x7F
    return bytes(wire[:limit])


class Server:
    """`clusterdns serve --upstream off` on free loopback ports, serving the shipped zones; its log in a file."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        zones = workdir / "zones"
        shutil.copytree(SHIPPED, zones)
        self.log = workdir / "serve.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-m", "clusterdns", "serve", "--zones", str(zones), "--state", str(workdir / "state")]
        argv += ["--port", str(self.port), "--http", "off", "--upstream", "off"]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while probe_udp(("127.0.0.1", self.port), 0.2) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"clusterdns serve did not start:\n{self.log.read_text()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failures_logged(self) -> list[str]:
        """Tracebacks and logged failures in the server's log."""
        text = self.log.read_text(errors="replace")
        return [block for block in text.split("\n20") if "Traceback" in block or "answering failed" in block]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def probe_query() -> bytes:
    q = dns.message.make_query("my-nginx.default.svc.cluster.local.", "A", use_edns=False)
    q.id = PROBE_ID
    return q.to_wire()


def probe_udp(target: tuple[str, int], timeout: float) -> float | None:
    """Seconds a valid query over UDP took to be answered, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        started = time.monotonic()
        try:
            sock.sendto(probe_query(), target)
            while True:
                if sock.recv(65535)[:2] == struct.pack("!H", PROBE_ID):
                    return time.monotonic() - started
        except OSError:
            return None


def check_reply(query: bytes, reply: bytes, report: Report) -> None:
    """A reply must be a DNS response to the query sent, that dnspython decodes; SERVFAIL is a failure."""
    try:
        msg = dns.message.from_wire(reply)
    except Exception as exc:
        report.bad.append(f"undecodable reply ({type(exc).__name__}: {exc}) to {query.hex()}: {reply.hex()}")
        return
    if not msg.flags & dns.flags.QR or reply[:2] != query[:2]:
        report.bad.append(f"not a response to the query: {query.hex()} -> {reply.hex()}")
    rcode = dns.rcode.to_text(msg.rcode())
    report.rcodes[rcode] += 1
    if msg.rcode() == dns.rcode.SERVFAIL:
        report.bad.append(f"SERVFAIL (a failure in the handler) for {query.hex()}")


def fuzz_udp(target: tuple[str, int], cases: int, rng: random.Random, report: Report, batch: int = 32) -> None:
    """`cases` mutated datagrams in batches, each batch followed by a probe that must be answered."""
    seeds = packet_seeds()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(target)
    sock.settimeout(2.0)
    sent: dict[bytes, bytes] = {}
    try:
        while report.cases < cases:
            sent.clear()
            for _ in range(min(batch, cases - report.cases)):
                wire = bytearray(mutate(rng, seeds, MAX_UDP))
                if len(wire) >= 2:
                    struct.pack_into("!H", wire, 0, report.cases % PROBE_ID)
                sent[bytes(wire[:2])] = bytes(wire)
                with contextlib.suppress(OSError):
                    sock.send(wire)
                report.cases += 1
            started = time.monotonic()
            sock.send(probe_query())
            answered = False
            for attempt in range(2):
                try:
                    while True:
                        reply = sock.recv(65535)
                        if reply[:2] == struct.pack("!H", PROBE_ID):
                            answered = True
                            break
                        query = sent.get(reply[:2])
                        if query is None:
                            report.bad.append(f"a reply to nothing sent: {reply.hex()}")
                            continue
                        report.answered += 1
                        check_reply(query, reply, report)
                except TimeoutError:
                    if attempt == 0:
                        sock.send(probe_query())
                        continue
                if answered:
                    break
            report.slowest = max(report.slowest, time.monotonic() - started)
            if not answered:
                report.hangs.append("UDP: no answer to a probe after: " + " ".join(q.hex() for q in sent.values()))
                return
    finally:
        sock.close()


def read_framed(sock: socket.socket, buffer: bytearray) -> bytes | None:
    """One length-prefixed message from `sock`, or None when it closed first."""
    while True:
        if len(buffer) >= 2:
            length = struct.unpack_from("!H", buffer)[0]
            if len(buffer) >= 2 + length:
                message = bytes(buffer[2 : 2 + length])
                del buffer[: 2 + length]
                return message
        chunk = sock.recv(65535)
        if not chunk:
            return None
        buffer += chunk


def send_split(sock: socket.socket, data: bytes, rng: random.Random) -> None:
    """`data` in pieces: whole, at random cuts, or one byte at a time."""
    how = rng.random()
    if how < 0.5:
        sock.sendall(data)
        return
    i = 0
    while i < len(data):
        step = 1 if how < 0.6 else rng.randint(1, 64)
        sock.sendall(data[i : i + step])
        i += step


def fuzz_tcp(target: tuple[str, int], cases: int, rng: random.Random, report: Report) -> None:
    """`cases` mutated messages over TCP: pipelined with a probe last (answered in order, so every reply
    before it is checked), split at random or byte by byte; some connections with a lying length prefix
    or garbage, closed without waiting."""
    seeds = packet_seeds()
    done = 0
    while done < cases:
        try:
            sock = socket.create_connection(target, timeout=5)
        except OSError as exc:
            report.hangs.append(f"TCP: can't connect: {exc}")
            return
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mode = rng.random()
            try:
                if mode < 0.15:  # a length prefix that lies, or plain garbage
                    wire = mutate(rng, seeds, MAX_TCP - 100)
                    prefix = struct.pack("!H", max(0, len(wire) + rng.choice((-3, -1, 1, 5, 1000))))
                    send_split(sock, (prefix if rng.random() < 0.7 else b"") + wire, rng)
                    done += 1
                    report.cases += 1
                    continue
                messages: dict[bytes, bytes] = {}
                stream = bytearray()
                for _ in range(rng.randint(1, 8)):
                    wire = bytearray(mutate(rng, seeds, MAX_TCP))
                    if len(wire) >= 2:
                        struct.pack_into("!H", wire, 0, (done + len(messages)) % PROBE_ID)
                    messages[bytes(wire[:2])] = bytes(wire)
                    stream += struct.pack("!H", len(wire)) + wire
                probe = probe_query()
                stream += struct.pack("!H", len(probe)) + probe
                started = time.monotonic()
                send_split(sock, bytes(stream), rng)
                buffer = bytearray()
                while True:
                    reply = read_framed(sock, buffer)
                    if reply is None:
                        report.bad.append("TCP: closed before the probe's answer, after " + stream.hex())
                        break
                    if reply[:2] == struct.pack("!H", PROBE_ID):
                        break
                    query = messages.get(reply[:2])
                    if query is None:
                        report.bad.append(f"TCP: a reply to nothing sent: {reply.hex()}")
                        continue
                    report.answered += 1
                    check_reply(query, reply, report)
                report.slowest = max(report.slowest, time.monotonic() - started)
                done += len(messages)
                report.cases += len(messages)
            except TimeoutError:
                report.hangs.append("TCP: no answer within 5 s")
                return
            except OSError as exc:
                report.bad.append(f"TCP: {exc}")


def run_packets(
    cases: int,
    tcp_cases: int,
    seed: int,
    workdir: Path,
    server: tuple[str, int] | None = None,
    pid: int = 0,
    max_growth_mb: float = 200,
) -> Report:
    """UDP then TCP fuzzing of a server: the one given, or one started here (and stopped after). Its
    memory may grow by `max_growth_mb` at most (the answer cache holds up to 200,000 questions)."""
    report = Report("packets (UDP, then TCP)")
    rng = random.Random(seed)
    started_server = None
    if server is None:
        started_server = Server(workdir)
        server, pid = ("127.0.0.1", started_server.port), started_server.pid
    start_rss = rss_kb(pid)[0] if pid else 0
    started = time.monotonic()
    try:
        fuzz_udp(server, cases, rng, report)
        if not report.hangs:
            fuzz_tcp(server, tcp_cases, rng, report)
        if probe_udp(server, 5) is None:
            report.hangs.append("no answer to a valid query after the run")
        report.seconds = time.monotonic() - started
        if pid:
            now, peak = rss_kb(pid)
            report.rss_kb = (start_rss, peak, now)
            if peak - start_rss > max_growth_mb * 1024:
                report.memory.append(f"the server grew by {(peak - start_rss) / 1024:.0f} MB")
        if started_server is not None:
            if not started_server.alive():
                report.crashes.append(f"the server exited with {started_server.proc.returncode}")
            report.tracebacks.extend(started_server.failures_logged())
    finally:
        if started_server is not None:
            started_server.close()
    return report


# --- manifests ----------------------------------------------------------------------------------------

GOOD = "apiVersion: v1\nkind: Service\nmetadata:\n  name: fuzz-good\nspec:\n  ports:\n  - port: 80\n"
EXTRA_SEEDS = {
    "deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 3\n"
    "  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n"
    "      containers:\n      - name: c\n        image: nginx\n        ports:\n        - containerPort: 80\n"
    "          name: http\n",
    "list.yaml": "apiVersion: v1\nkind: List\nitems:\n- kind: Service\n  metadata: {name: a}\n  spec:\n    ports:\n"
    "    - port: 80\n      targetPort: http\n- kind: Endpoints\n  metadata: {name: a}\n  subsets:\n  - addresses:\n"
    "    - ip: 10.1.0.1\n    ports:\n    - port: 80\n",
    "config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: |\n    text\n  b: 'x'\n"
    "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  k: aGVsbG8=\n",
    "slice.yaml": "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: e\n  labels:\n"
    "    kubernetes.io/service-name: e\naddressType: IPv4\nendpoints:\n- addresses: [10.2.0.1]\n"
    "  conditions: {ready: true}\nports:\n- port: 53\n  protocol: UDP\n",
}
INTERESTING_TEXT = [
    ":", "-", "- ", "[", "]", "{", "}", "&a ", "*a", "!!str ", "!!binary ", "|", ">", "#", '"', "'", "\t", "\x00",
    "\x01", "\x85", "\u2028", "\ufeff", "²", "é", "\\", "? ", "---\n", "...\n", "<<: *a\n", "%YAML 1.1\n", " ",
    "\n", "null", "~", "yes", "0x1F", "0777", "1e309", "-1", "65536", "2147483648", "9" * 5000, "a" * 300,
]  # fmt: skip
NUMBERS = [
    "0", "-1", "1", "65535", "65536", "32767", "30000", "2147483648", "1e3", "0x10", "0o7", "1_000", ".inf", "9" * 5000,
]  # fmt: skip


def manifest_seeds() -> list[tuple[str, str]]:
    """(file name, text) of the shipped zones and a few more kinds, and JSON forms of some."""
    out = [(p.name, p.read_text()) for p in sorted(SHIPPED.glob("*.yaml"))]
    out += list(EXTRA_SEEDS.items())
    for index, (name, text) in enumerate(list(out[:4])):
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        out.append((name.replace(".yaml", ".json"), json.dumps(docs[0], indent=2 if index % 2 else None)))
    return out


def bomb(rng: random.Random) -> tuple[str, str]:
    """A file built to hurt: deep nesting of each kind, an alias bomb, a long line, many documents, a huge
    number of replicas, a big file."""
    kind = rng.randrange(9)
    depth = rng.choice((99, 100, 101, 150, 400, 1000, 5000))
    if kind == 0:
        return "deep.yaml", "kind: ConfigMap\ndata:\n" + "".join(" " * (i + 2) + f"k{i}:\n" for i in range(depth))
    if kind == 1:
        return "flow.yaml", "kind: ConfigMap\ndata:\n  x: " + "[" * depth + "]" * depth + "\n"
    if kind == 2:
        return "deep.json", "[" * depth * 10 + "]" * depth * 10
    if kind == 3:
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, rng.randint(2, 10))]
        return "alias.yaml", "\n".join(lines) + "\n"
    if kind == 4:
        return "long.yaml", "kind: ConfigMap\nmetadata: {name: l}\ndata:\n  a: " + "x" * rng.randint(
            10_000, 1_000_000
        ) + "\n"
    if kind == 5:
        return "empty.yaml", "---\n" * rng.randint(100, 20_000)
    if kind == 6:
        replicas = rng.choice((65_536, 150_001, 10**9, 2**63))
        return "huge.yaml", EXTRA_SEEDS["deployment.yaml"].replace("replicas: 3", f"replicas: {replicas}")
    if kind == 7:
        return "compact.yaml", "kind: ConfigMap\ndata:\n  x:\n" + "    - " * depth + "1\n"
    return "many.yaml", "".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\nspec:\n  ports:\n  - port: 80\n"
        for i in range(rng.randint(100, 3000))
    )


def mutate_manifest(rng: random.Random, seeds: Sequence[tuple[str, str]]) -> tuple[str, bytes]:
    """(file name, bytes) of a mutated manifest: line and character edits, interesting values, bytes that
    are not UTF-8; sometimes a bomb."""
    if rng.random() < 0.05:
        name, text = bomb(rng)
        return name, text.encode()[:MAX_MANIFEST]
    name, text = rng.choice(seeds)
    lines = text.split("\n")
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(9)
        i = rng.randrange(len(lines)) if lines else 0
        if not lines:
            lines.append("")
        elif op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines[i] = " " * rng.randint(0, 6) + lines[i].lstrip(" ")
        elif op == 4:
            line = lines[i]
            k = rng.randrange(len(line) + 1)
            lines[i] = line[:k] + rng.choice(INTERESTING_TEXT) + line[k + rng.choice((0, 0, 1, 3)) :]
        elif op == 5:
            words = lines[i].split(" ")
            k = rng.randrange(len(words))
            if any(c.isdigit() for c in words[k]):
                words[k] = rng.choice(NUMBERS)
                lines[i] = " ".join(words)
        elif op == 6:
            _, other = rng.choice(seeds)
            lines[i:i] = other.split("\n")[: rng.randint(1, 20)]
        elif op == 7:
            del lines[i:]
        else:
            lines[i] = lines[i].replace(":", rng.choice([": ", ":", " :", ": &x ", ": *x", ": !!int "]), 1)
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    if rng.random() < 0.03:
        k = rng.randrange(len(data) + 1)
        data = data[:k] + bytes([rng.choice((0x80, 0xB2, 0xC3, 0xFF, 0xFE))]) + data[k:]
    return name, data[:MAX_MANIFEST]


def worker() -> int:
    """Check the zones directory named on each line of stdin; one JSON line per case on stdout."""
    from clusterdns.cli import main

    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        buffer = io.StringIO()
        started = time.perf_counter()
        failure = ""
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                status = main(["check", "--zones", request["zones"], "--state", request["state"]])
        except BaseException:
            status, failure = -1, traceback.format_exc()
        seconds = time.perf_counter() - started
        text = buffer.getvalue()
        if "Traceback" in text and not failure:
            failure = text
        noline = [
            ln
            for ln in text.splitlines()
            if ln.startswith("error: ") and not _has_line(ln) and "cannot read file" not in ln
        ]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = {"status": status, "seconds": seconds, "failure": failure, "noline": noline, "peak_kb": peak}
        out.write(json.dumps(result) + "\n")
        out.flush()
    return 0


def _has_line(problem: str) -> bool:
    """`error: path:LINE: ...`: the first field after the path is a line number."""
    parts = problem.removeprefix("error: ").split(":", 2)
    return len(parts) > 1 and parts[1].isdigit()


class Worker:
    """The worker process, started again after it dies or hangs."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
        return self.proc

    def check(self, zones: Path, state: Path, timeout: float) -> dict[str, Any] | str:
        """The worker's result, or "hang" / "crash"."""
        import selectors

        proc = self.start()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"zones": str(zones), "state": str(state)}) + "\n")
        proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.kill()
                return "hang"
        line = proc.stdout.readline()
        if not line:
            self.kill()
            return "crash"
        result: dict[str, Any] = json.loads(line)
        return result

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def run_manifests(
    cases: int, seed: int, workdir: Path, out: Path | None = None, timeout: float = 30.0, max_rss_mb: float = 1024
) -> Report:
    """`cases` mutated manifests, each checked beside a good file, each within `timeout` seconds and
    `max_rss_mb` of memory (the worker is started again after one that passes it)."""
    report = Report("manifests (clusterdns check)")
    rng = random.Random(seed)
    seeds = manifest_seeds()
    runner = Worker()
    started = time.monotonic()
    noline = 0
    try:
        for case in range(cases):
            name, data = mutate_manifest(rng, seeds)
            zones = workdir / "case" / "zones"
            shutil.rmtree(workdir / "case", ignore_errors=True)
            zones.mkdir(parents=True)
            (zones / name).write_bytes(data)
            (zones / "zz-good.yaml").write_text(GOOD)
            result = runner.check(zones, workdir / "case" / "state", timeout)
            report.cases += 1
            where = f"case {case} ({name}, {len(data):,} bytes)"
            if isinstance(result, str):
                (report.hangs if result == "hang" else report.crashes).append(where)
                _keep(out, case, name, data)
                continue
            report.answered += 1
            if result["seconds"] > report.slowest:
                report.slowest, report.slowest_case = result["seconds"], where
            report.rcodes[f"exit {result['status']}"] += 1
            if result["failure"]:
                report.tracebacks.append(f"{where}: {result['failure']}")
                _keep(out, case, name, data)
            elif result["status"] not in (0, 1):
                report.bad.append(f"{where}: exit status {result['status']}")
                _keep(out, case, name, data)
            if result["noline"]:
                noline += 1
                if len(report.notes) < 10:
                    report.notes.append(f"{where}: a problem without a line: {result['noline'][0]}")
            start, peak, _ = report.rss_kb
            report.rss_kb = (start or result["peak_kb"], max(peak, result["peak_kb"]), result["peak_kb"])
            if result["peak_kb"] > max_rss_mb * 1024:
                report.memory.append(f"{where}: the check took {result['peak_kb'] / 1024:.0f} MB")
                _keep(out, case, name, data)
                runner.kill()
    finally:
        runner.kill()
    report.seconds = time.monotonic() - started
    if noline:
        report.notes.insert(0, f"{noline} case(s) had a problem naming no line")
    return report


def _keep(out: Path | None, case: int, name: str, data: bytes) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"case-{case}-{name}").write_bytes(data)


# --- command line -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("packets", "manifests", "all", "worker"))
    parser.add_argument("--cases", type=int, default=100_000, help="UDP packets (or manifests for `manifests`)")
    parser.add_argument("--tcp-cases", type=int, default=10_000, help="messages over TCP")
    parser.add_argument("--manifests", type=int, default=1_000, help="manifests, for `all`")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server", help="HOST:PORT of a running server (default: start one)")
    parser.add_argument("--pid", type=int, default=0, help="the running server's PID, to watch its memory")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a manifest check may take")
    parser.add_argument("--max-growth-mb", type=float, default=200, help="how much the server may grow")
    parser.add_argument("--max-rss-mb", type=float, default=1024, help="memory a manifest check may take")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="where failing cases are kept")
    args = parser.parse_args(argv)
    if args.what == "worker":
        return worker()
    reports = []
    with tempfile.TemporaryDirectory(prefix="clusterdns-fuzz-") as tmp:
        if args.what in ("packets", "all"):
            target = None
            if args.server:
                host, _, port = args.server.rpartition(":")
                target = (host.strip("[]"), int(port))
            reports.append(
                run_packets(args.cases, args.tcp_cases, args.seed, Path(tmp), target, args.pid, args.max_growth_mb)
            )
            print(reports[-1].text(), flush=True)
        if args.what in ("manifests", "all"):
            count = args.cases if args.what == "manifests" else args.manifests
            reports.append(run_manifests(count, args.seed, Path(tmp), args.out, args.timeout, args.max_rss_mb))
            print(reports[-1].text(), flush=True)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
