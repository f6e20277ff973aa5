#!/usr/bin/env python3
"""Benchmark: dnsperf against clusterdns, BIND 9, Knot, NSD and dnsmasq on one generated cluster, in one run.

    python tests/bench/bench_dns.py [--sizes 1000,10000,100000] [--seconds 10] [--modes udp,tcp]
        [--workers N] [--peers BIND,Knot,NSD,dnsmasq] [--dnsmasq-max 10000] [--check-size 100000]
        [--baseline DIR] [--starts 3] [--reference 1000] [--paired 10]

For each size, one cluster is written three ways: Kubernetes manifests (for clusterdns), a zone file
(BIND, Knot and NSD, each authoritative for it) and host-record/srv-host lines (dnsmasq). The query mix
imitates pods with ndots:5: 70% A for existing services, 10% SRV `_http._tcp`, 10% AAAA (NODATA:
services are IPv4 only), 10% search-path misses (`<svc>.<ns>.svc.cluster.local.cluster.local`,
NXDOMAIN). Cluster IPs run from 10.0.1.0 upward, past 10.0.0.0/16 above 65,280 Services: clusterdns
serves with `--service-cidr 10.0.0.0/12` so that every Service is valid.

The servers are started one at a time, `--starts` times each (in rounds, each start on fresh state; the
figures are the medians). For each, the table shows:
- startup: from process start to the first correct answer (the last Service's A record, asked over
  UDP every 25 ms, for at most `--startup-timeout` seconds);
- first use: right after that answer, a UDP run of `--cold` seconds with no warm-up (clusterdns once built
  each distinct answer on its first query; this is what first use costs), and the QPS of its first second;
- warmed QPS: once every server is up, each gets a warm-up run of the same transport (`--warmup`
  seconds, about one pass over the query file) right before each measured run; the best of `--passes`
  runs (in alternating order) is kept, with lost queries and latency, and clusterdns' ratio to each peer;
- memory: the Pss of the server and all its processes (clusterdns' workers, NSD's servers), read from
  /proc/PID/smaps_rollup after every measured run of that size.

This machine's speed drifts by 10-20% from minute to minute, more than some differences measured here, so
two comparisons are also made at one moment:
- a "reference" clusterdns on its own cluster of `--reference` Services (1,000), started first and warmed,
  runs through the whole run. After the rounds of starts, clusterdns is started `--paired` more times on
  fresh state; right after each first answer it gets one second of UDP (its first second) and the
  reference gets the next second: each first second is set against the reference's second, and the
  median of those ratios is printed (one second apart, where single seconds swing by 10%, so many of
  them);
- with `--baseline`, clusterdns against clusterdns before within each pass (run one after the other),
  pass by pass, and their median.
"clusterdns -m" is clusterdns with --http off: no metrics, so no counting; its row shows what counting
costs. With `--baseline DIR`, "clusterdns before" is the clusterdns of the checkout DIR (a git worktree of
an earlier commit), measured in the same run, to see whether a change made anything slower. dnsmasq
searches its host records linearly: it is skipped above `--dnsmasq-max` Services.

Then `clusterdns check` runs on `--check-size` Services with the default service CIDR (10.0.0.0/16),
so every cluster IP past it is a problem (34,720 at 100,000 Services): its time, its peak RSS (the
largest of its processes, from wait4) and the problem lines it printed, killed after `--check-timeout`.

Needs dnsperf, named, knotd, nsd and dnsmasq (apt-get install dnsperf bind9 knot nsd dnsmasq-base).
Every server listens on 127.0.0.1 only, and every run and every wait is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from dns_helpers import free_port  # noqa: E402

NAN = float("nan")
# What serve is given, wide enough for every generated cluster IP; check keeps the default /16.
SERVE_CIDR = "10.0.0.0/12"
CHECK_CIDR = "10.0.0.0/16"
PEERS = ("BIND", "Knot", "NSD", "dnsmasq")
# Each tool, the Debian package it comes in.
PACKAGES = {
    "dnsperf": "dnsperf",
    "named": "bind9",
    "knotd": "knot",
    "nsd": "nsd",
    "dnsmasq": "dnsmasq-base",
}
TOOL = {"BIND": "named", "Knot": "knotd", "NSD": "nsd", "dnsmasq": "dnsmasq"}


def cluster_ip(i: int) -> str:
    """The generated cluster IP of service i: 10.0.1.0 upward."""
    k = i + 256
    return f"10.{k >> 16}.{(k >> 8) & 255}.{k & 255}"


def last_service(n: int) -> str:
    """The name of the last of `generate`'s n Services: its A record is the first answer waited for."""
    return f"svc-{n - 1}.ns-{(n - 1) % max(1, n // 50)}.svc.cluster.local"


def generate(out: str, n: int, peers: bool = True) -> None:
    """N services over N/50 namespaces, cluster IPs from 10.0.1.0, one port `http` 80/TCP each."""
    namespaces = max(1, n // 50)
    svcs = [(f"svc-{i}", f"ns-{i % namespaces}", cluster_ip(i)) for i in range(n)]
    os.makedirs(os.path.join(out, "zones"), exist_ok=True)
    with open(os.path.join(out, "zones", "services.yaml"), "w") as f:
        for name, ns, ip in svcs:
            f.write(
                f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
                f"spec:\n  clusterIP: {ip}\n  ports:\n  - name: http\n    port: 80\n    protocol: TCP\n"
            )
    write_queries(out, svcs)
    if not peers:
        return
    with open(os.path.join(out, "cluster.local.zone"), "w") as f:
        f.write("$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n")
        f.write("@ IN NS ns.dns.cluster.local.\nns.dns IN A 10.0.0.10\n")
        for name, ns, ip in svcs:
            f.write(f"{name}.{ns}.svc IN A {ip}\n")
            f.write(f"_http._tcp.{name}.{ns}.svc IN SRV 0 100 80 {name}.{ns}.svc.cluster.local.\n")
    with open(os.path.join(out, "dnsmasq.hosts"), "w") as f:
        for name, ns, ip in svcs:
            fq = f"{name}.{ns}.svc.cluster.local"
            f.write(f"host-record={fq},{ip}\nsrv-host=_http._tcp.{fq},{fq},80,0,100\n")


def write_queries(out: str, svcs: list[tuple[str, str, str]]) -> None:
    """queries.txt: the mix, 200,000 questions."""
    rnd = random.Random(7)
    with open(os.path.join(out, "queries.txt"), "w") as f:
        for _ in range(200_000):
            name, ns, _ip = rnd.choice(svcs)
            fq = f"{name}.{ns}.svc.cluster.local"
            r = rnd.random()
            if r < 0.7:
                f.write(f"{fq} A\n")
            elif r < 0.8:
                f.write(f"_http._tcp.{fq} SRV\n")
            elif r < 0.9:
                f.write(f"{fq} AAAA\n")
            else:
                f.write(f"{fq}.cluster.local A\n")


@dataclasses.dataclass
class Server:
    """One server under test: how to start it, where it answers, and what was measured of it."""

    name: str
    cmd: list[str]
    port: int
    log: str
    env: dict[str, str] | None = None
    cwd: str | None = None  # clusterdns: its checkout (`python -m` puts the working directory first on sys.path)
    proc: subprocess.Popen[bytes] | None = None
    startup: float = NAN
    cold: dict[str, float] = dataclasses.field(default_factory=dict)
    state: str = ""  # clusterdns: its --state directory, removed before each start
    queries: str = ""  # the reference clusterdns: its query file
    pss_mb: float = NAN


def servers_for(fx: str, peers: list[str], workers: int, baseline: str = "") -> list[Server]:
    """clusterdns as it runs by default (metrics on), clusterdns without metrics (to see what counting
    costs), the clusterdns of the `baseline` checkout when given (as it runs by default), and the peers,
    each configured in the fixture directory on its own free port of 127.0.0.1."""
    servers = [clusterdns(fx, "clusterdns", workers), clusterdns(fx, "clusterdns -m", workers, metrics=False)]
    if baseline:
        servers.append(clusterdns(fx, "clusterdns before", workers, root=baseline))
    for peer in peers:
        port = free_port()
        servers.append(Server(peer, PEER_CONFIG[peer](fx, port), port, peer + ".log"))
    return servers


def clusterdns(fx: str, name: str, workers: int, root: str = ROOT, metrics: bool = True) -> Server:
    """clusterdns of the checkout `root` on the fixture in `fx`, on a free port of 127.0.0.1."""
    port = free_port()
    state = os.path.join(fx, "state" + name.replace(" ", ""))
    cmd = [sys.executable, "-m", "clusterdns", "serve", "--zones", os.path.join(fx, "zones")]
    cmd += ["--state", state, "--service-cidr", SERVE_CIDR, "--port", str(port), "--upstream", "off"]
    cmd += ["--http", f"127.0.0.1:{free_port()}" if metrics else "off", "--lameduck", "0"]
    if workers:
        cmd += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=root)
    return Server(name, cmd, port, name.replace(" ", "") + ".log", env, cwd=root, state=state)


def named_config(fx: str, port: int) -> list[str]:
    with open(os.path.join(fx, "named.conf"), "w") as f:
        f.write(
            f'options {{ directory "{fx}"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};\n'
            f'  recursion no; pid-file none; }};\nzone "cluster.local" {{ type master; file "cluster.local.zone"; }};\n'
        )
    return ["named", "-c", f"{fx}/named.conf", "-g", "-u", "root"]


def knot_config(fx: str, port: int) -> list[str]:
    """Knot's defaults otherwise: a UDP and a TCP thread per core, no response rate limiting (that is
    the rrl module, not loaded). No journal and no zone file flush: the zone is read, served, dropped."""
    run = os.path.join(fx, "knot")
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(fx, "knot.conf"), "w") as f:
        f.write(
            f'server:\n  rundir: "{run}"\n  listen: 127.0.0.1@{port}\n'
            f'database:\n  storage: "{run}"\n'
            "log:\n  - target: stderr\n    any: info\n"
            f'zone:\n  - domain: cluster.local\n    storage: "{fx}"\n    file: cluster.local.zone\n'
            "    journal-content: none\n    zonefile-sync: -1\n"
        )
    return ["knotd", "-c", f"{fx}/knot.conf"]


def nsd_config(fx: str, port: int) -> list[str]:
    """As many server processes as cores (BIND and Knot run a thread per core by default; NSD one
    process) on one reuseport socket each, and no response rate limiting: from one client every query
    would count against the same limit. Every file it keeps is in the fixture directory."""
    with open(os.path.join(fx, "nsd.conf"), "w") as f:
        f.write(
            f"server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  do-ip6: no\n"
            f"  server-count: {os.cpu_count() or 1}\n  reuseport: yes\n"
            f'  username: ""\n  chroot: ""\n  zonesdir: "{fx}"\n  pidfile: "{fx}/nsd.pid"\n'
            f'  database: ""\n  zonelistfile: "{fx}/nsd.zonelist"\n  xfrdfile: "{fx}/nsd.xfrd"\n'
            f'  xfrdir: "{fx}"\n  verbosity: 1\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n'
            "remote-control:\n  control-enable: no\n"
            "zone:\n  name: cluster.local\n  zonefile: cluster.local.zone\n"
        )
    return ["nsd", "-d", "-c", f"{fx}/nsd.conf"]


def dnsmasq_config(fx: str, port: int) -> list[str]:
    with open(os.path.join(fx, "dnsmasq.conf"), "w") as f:
        f.write(f"no-resolv\nno-hosts\nport={port}\nlisten-address=127.0.0.1\nbind-interfaces\ncache-size=0\n")
        f.write(f"local=/cluster.local/\nconf-file={fx}/dnsmasq.hosts\n")
    return ["dnsmasq", "-C", f"{fx}/dnsmasq.conf", "--keep-in-foreground", "--pid-file="]


PEER_CONFIG = {"BIND": named_config, "Knot": knot_config, "NSD": nsd_config, "dnsmasq": dnsmasq_config}


def start(server: Server, fx: str, qname: str, expected: str, timeout: float) -> bool:
    """Start the server and time it to the first reply that holds `expected` as qname's A record."""
    log = os.open(os.path.join(fx, server.log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    t0 = time.monotonic()
    try:
        server.proc = subprocess.Popen(server.cmd, env=server.env, cwd=server.cwd, stdout=log, stderr=log)
    finally:
        os.close(log)
    seconds = first_answer(server.port, qname, expected, server.proc, t0 + timeout)
    if seconds is not None:
        server.startup = seconds - t0
    return seconds is not None


def start_fresh(server: Server, fx: str, size: int, timeout: float) -> bool:
    """Start the server on fresh state (clusterdns: no --state left from before) and wait for its first
    answer; when none comes, say why, with the end of its log."""
    if server.state:
        shutil.rmtree(server.state, ignore_errors=True)
    if start(server, fx, last_service(size), cluster_ip(size - 1), timeout):
        return True
    state = "exited" if server.proc and server.proc.poll() is not None else "no answer"
    print(f"{server.name}: {state} within {timeout:.0f} s on port {server.port}")
    with open(os.path.join(fx, server.log), errors="replace") as log:
        print(log.read()[-2000:])
    return False


def paired_starts(
    server: Server, reference: Server, fx: str, size: int, queries: str, args: argparse.Namespace
) -> list[tuple[float, float]] | None:
    """clusterdns stopped and started `--paired` times on fresh state: right after each first answer, one
    second of UDP from it (its first second), then one second from the warmed reference right after. The
    (first second, reference) pairs; None when a start failed. The last start is left running."""
    pairs = []
    for n in range(args.paired):
        stop([server])
        if not start_fresh(server, fx, size, args.startup_timeout):
            return None
        first = dnsperf(server.port, queries, 1, "udp")["qps"]
        ref = dnsperf(reference.port, reference.queries, 1, "udp")["qps"]
        pairs.append((first, ref))
        print(
            f"{size:>6} {server.name:<13} paired start {n + 1}: first second {first:>8.0f} QPS, the reference "
            f"({args.reference:,} Services, warmed) the second after {ref:>8.0f} QPS: {first / ref:.2f}x",
            flush=True,
        )
    return pairs


def first_answer(port: int, qname: str, expected: str, proc: subprocess.Popen[bytes], deadline: float) -> float | None:
    """Ask for qname's A record every 25 ms until a reply holds `expected`; the time of that reply, or
    None when the process exits or the deadline passes."""
    query_id = 0
    want = socket.inet_aton(expected)
    question = b"".join(bytes([len(label)]) + label.encode() for label in qname.split(".")) + b"\0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        while time.monotonic() < deadline and proc.poll() is None:
            query_id = (query_id + 1) & 0xFFFF
            with contextlib.suppress(ConnectionRefusedError):  # the last query's ICMP port unreachable
                sock.send(struct.pack("!HHHHHH", query_id, 0, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1))
            tick = time.monotonic() + 0.025
            while (left := tick - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    reply = sock.recv(4096)
                except (TimeoutError, ConnectionRefusedError):
                    break
                # Same ID, rcode NOERROR, at least one answer, and the A record's address in it.
                answers = struct.unpack("!H", reply[6:8])[0] if len(reply) > 12 else 0
                if answers and reply[:2] == struct.pack("!H", query_id) and reply[3] & 15 == 0 and want in reply[12:]:
                    return time.monotonic()
            time.sleep(max(0.0, tick - time.monotonic()))
    return None


def stop(servers: list[Server]) -> None:
    for server in servers:
        if server.proc and server.proc.poll() is None:
            server.proc.terminate()
    for server in servers:
        if server.proc:
            try:
                server.proc.wait(10)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(10)


def descendants(pid: int) -> list[int]:
    """pid and every process below it, from the parent field of /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, []))
    return found


def pss_mb(pid: int) -> float:
    """The Pss of a process and all its descendants, in MB (shared pages counted once between them)."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except OSError:
            continue
    return total / 1024


def dnsperf(port: int, queries: str, seconds: int, mode: str, per_second: bool = False) -> dict[str, float]:
    """One dnsperf run; with per_second, also the QPS of its first second ("first")."""
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(seconds), "-T", "1"]
    if mode == "tcp":
        cmd += ["-m", "tcp", "-c", "20"]
    if per_second:
        cmd += ["-S", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    found: dict[str, float] = {}
    for key, pattern in (
        ("sent", r"Queries sent:\s+(\d+)"),
        ("lost", r"Queries lost:\s+(\d+)"),
        ("qps", r"Queries per second:\s+([\d.]+)"),
        ("latency", r"Average Latency \(s\):\s+([\d.]+)"),
    ):
        m = re.search(pattern, out)
        found[key] = float(m.group(1)) if m else NAN
    if per_second:
        # `-S 1` prints "<time>: <QPS>" at the start (a meaningless 0) and after each whole second.
        rates = re.findall(r"^\d+\.\d+: ([\d.]+)$", out, re.M)
        found["first"] = float(rates[1]) if len(rates) > 1 else NAN
    return found


@dataclasses.dataclass
class Check:
    size: int
    expected: int
    seconds: float
    peak_mb: float
    problems: int
    located: int
    status: str


def run_check(fx: str, size: int, timeout: float) -> Check:
    """`clusterdns check` with the default service CIDR, killed after `timeout` seconds."""
    out_path = os.path.join(fx, "check.out")
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "clusterdns", "check", "--zones", os.path.join(fx, "zones")]
    cmd += ["--state", os.path.join(fx, "state-check"), "--service-cidr", CHECK_CIDR]
    with open(out_path, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        status, usage = _wait4(proc.pid, t0 + timeout)
        seconds = time.monotonic() - t0
        if status is None:
            os.killpg(proc.pid, signal.SIGKILL)
            _status, usage = _wait4(proc.pid, time.monotonic() + 10)
            result = f"killed at the {timeout:.0f} s timeout"
        else:
            result = f"exit {os.waitstatus_to_exitcode(status)} after {seconds:.1f} s"
        proc.returncode = -1  # reaped by wait4: Popen must not wait for it again
    problems = located = 0
    with open(out_path, errors="replace") as f:
        for line in f:
            if line.startswith("error: "):
                problems += 1
                located += bool(re.match(r"error: \S+:\d+: ", line))
    peak = usage.ru_maxrss / 1024 if usage else NAN
    return Check(size, max(0, size - 65280), seconds, peak, problems, located, result)


def _wait4(pid: int, deadline: float) -> tuple[int | None, resource.struct_rusage | None]:
    """Reap pid before the deadline: its wait status and resource usage, or (None, None)."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--modes", default="udp,tcp")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of queries before measuring")
    parser.add_argument("--passes", type=int, default=2, help="measured runs per server (best kept)")
    parser.add_argument("--workers", type=int, default=0, help="clusterdns --workers (default: its own)")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, from " + ", ".join(PEERS))
    parser.add_argument("--dnsmasq-max", type=int, default=10_000, help="skip dnsmasq above this many Services")
    parser.add_argument("--cold", type=int, default=3, help="seconds of the first-use UDP run (no warm-up)")
    parser.add_argument(
        "--starts", type=int, default=3, help="starts of each server per size; startup and first use are their medians"
    )
    parser.add_argument("--startup-timeout", type=float, default=120, help="seconds to wait for a first answer")
    parser.add_argument(
        "--baseline",
        default="",
        help="also measure the clusterdns of this checkout (a worktree of an earlier commit) as `clusterdns before`",
    )
    parser.add_argument(
        "--reference",
        type=int,
        default=1000,
        help="Services of the warmed clusterdns that each first second of clusterdns is set against (0: none)",
    )
    parser.add_argument(
        "--paired", type=int, default=10, help="starts of clusterdns whose first second is set against the reference"
    )
    parser.add_argument("--check-size", type=int, default=100_000, help="Services for `check` (0: no check)")
    parser.add_argument("--check-timeout", type=float, default=120, help="seconds before `check` is killed")
    args = parser.parse_args()
    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "clusterdns", "__main__.py")):
        parser.error(f"--baseline: {args.baseline} holds no clusterdns package")
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"--peers: unknown {', '.join(unknown)}; known: {', '.join(PEERS)}")
    tools = ["dnsperf", *(TOOL[p] for p in peers)]
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install {' '.join(PACKAGES[t] for t in missing)})")
        return 1
    if args.starts < 1:
        parser.error("--starts: at least 1")
    # Each clusterdns checkout's bytecode, compiled before it is timed, as `pip install` and .ci/venv.sh do:
    # with PYTHONDONTWRITEBYTECODE set (as it is on some machines), every start would compile it again.
    for root in [ROOT, *([args.baseline] if args.baseline else [])]:
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(root, "clusterdns")], check=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        reference = None
        if args.reference:
            reference = start_reference(stack.enter_context(tempfile.TemporaryDirectory()), args)
            if reference is None:
                return 1
            stack.callback(stop, [reference])
        return run(args, sizes, modes, peers, reference, started)


def start_reference(fx: str, args: argparse.Namespace) -> Server | None:
    """clusterdns on its own cluster of `--reference` Services, started and warmed up, kept running for the
    whole run: measured the second after each paired first second of clusterdns, so that the two are
    compared at one moment (this machine's speed drifts by 10-20% from minute to minute)."""
    size = args.reference
    generate(fx, size, peers=False)
    server = clusterdns(fx, "clusterdns reference", args.workers)
    if not start_fresh(server, fx, size, args.startup_timeout):
        stop([server])
        return None
    server.queries = os.path.join(fx, "queries.txt")
    dnsperf(server.port, server.queries, args.warmup, "udp")
    return server


def run(
    args: argparse.Namespace,
    sizes: list[int],
    modes: list[str],
    peers: list[str],
    reference: Server | None,
    started: float,
) -> int:
    """Every size in turn, then `check`, then the tables."""
    rows: list[tuple[int, str, str, dict[str, float]]] = []
    measured: list[tuple[int, Server]] = []
    checks: list[Check] = []
    paired: dict[int, list[tuple[float, float]]] = {}  # by size: (clusterdns' first second, the reference's QPS)
    passes: dict[tuple[int, str], list[float]] = {}  # by size and mode: clusterdns / clusterdns before, each pass
    for size in sizes:
        with tempfile.TemporaryDirectory() as fx:
            generate(fx, size)
            here = [p for p in peers if p != "dnsmasq" or size <= args.dnsmasq_max]
            servers = servers_for(fx, here, args.workers, args.baseline)
            if here != peers:
                print(f"{size:>6} dnsmasq skipped: above --dnsmasq-max {args.dnsmasq_max} Services", flush=True)
            queries = os.path.join(fx, "queries.txt")
            try:
                # `--starts` rounds; in each, every server in turn is started on fresh state, timed to its
                # first answer and given the first-use run, then stopped, except in the last round.
                starts: dict[str, list[float]] = {s.name: [] for s in servers}
                colds: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
                for round_ in range(args.starts):
                    for server in servers:
                        if not start_fresh(server, fx, size, args.startup_timeout):
                            return 1
                        # First use: straight after the first answer, no warm-up.
                        cold = dnsperf(server.port, queries, args.cold, "udp", per_second=True)
                        starts[server.name].append(server.startup)
                        colds[server.name].append(cold)
                        print(
                            f"{size:>6} {server.name:<13} start {round_ + 1}: {server.startup:6.2f} s  first use: "
                            f"first second {cold['first']:>8.0f} QPS, first {args.cold} s {cold['qps']:>8.0f} QPS",
                            flush=True,
                        )
                        if round_ + 1 < args.starts:
                            stop([server])
                if reference is not None and args.paired:
                    pairs = paired_starts(servers[0], reference, fx, size, queries, args)
                    if pairs is None:
                        return 1
                    paired[size] = pairs
                for server in servers:  # the medians of the rounds (not of the paired starts)
                    server.startup = statistics.median(starts[server.name])
                    server.cold = {
                        key: statistics.median(c[key] for c in colds[server.name]) for key in ("first", "qps")
                    }
                for mode in modes:
                    # Each server is measured `--passes` times, the order reversed on every other pass:
                    # the first server measured in a block came out slower, whichever it was. The best
                    # pass of each server is kept.
                    best: dict[str, dict[str, float]] = {}
                    for n in range(args.passes):
                        this_pass: dict[str, float] = {}
                        for server in servers if n % 2 == 0 else reversed(servers):
                            dnsperf(server.port, queries, args.warmup, mode)  # answer caches, page faults
                            result = dnsperf(server.port, queries, args.seconds, mode)
                            print(
                                f"{size:>6} {mode:<4} {server.name:<13} pass {n + 1}: {result['qps']:>8.0f} QPS"
                                f"  lost {result['lost']:>5.0f}  latency {result['latency'] * 1000:>7.3f} ms",
                                flush=True,
                            )
                            if server.name not in best or result["qps"] > best[server.name]["qps"]:
                                best[server.name] = result
                            this_pass[server.name] = result["qps"]
                        if "clusterdns before" in this_pass:
                            ratio = this_pass["clusterdns"] / this_pass["clusterdns before"]
                            passes.setdefault((size, mode), []).append(ratio)
                    rows.extend((size, mode, s.name, best[s.name]) for s in servers)
                for server in servers:
                    assert server.proc is not None
                    server.pss_mb = pss_mb(server.proc.pid)
                    print(f"{size:>6} {server.name:<13} Pss after the runs {server.pss_mb:7.0f} MB", flush=True)
                measured.extend((size, s) for s in servers)
            finally:
                stop(servers)
            if size == args.check_size:
                checks.append(run_check(fx, size, args.check_timeout))
    if args.check_size and args.check_size not in sizes:
        with tempfile.TemporaryDirectory() as fx:
            generate(fx, args.check_size, peers=False)
            checks.append(run_check(fx, args.check_size, args.check_timeout))
    print_tables(rows, measured, checks, sizes, args.cold)
    print_pairs(paired, passes, args.reference)
    print(f"\nwhole run: {time.monotonic() - started:.0f} s")
    return 0


def print_tables(
    rows: list[tuple[int, str, str, dict[str, float]]],
    measured: list[tuple[int, Server]],
    checks: list[Check],
    sizes: list[int],
    cold: int,
) -> None:
    print()
    print("| services | transport | server | QPS | lost | avg latency | clusterdns / server |")
    print("|---:|---|---|---:|---:|---:|---:|")
    by_key = {(s, m, n): r for s, m, n, r in rows}
    for size, mode, name, r in rows:
        ours = by_key[(size, mode, "clusterdns")]["qps"]
        ratio = "" if name == "clusterdns" else f"{ours / r['qps']:.2f}x"
        print(
            f"| {size:,} | {mode.upper()} | {name} | {r['qps']:,.0f} | {r['lost']:.0f} "
            f"| {r['latency'] * 1000:.2f} ms | {ratio} |"
        )
    print()
    print(
        f"| services | server | startup to first answer | UDP QPS, first second | UDP QPS, first {cold} s "
        "| warmed UDP QPS | first second / warmed | Pss after the runs |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for size, server in measured:
        warm = by_key.get((size, "udp", server.name), {}).get("qps", NAN)
        first, cold_qps = server.cold.get("first", NAN), server.cold.get("qps", NAN)
        print(
            f"| {size:,} | {server.name} | {server.startup:.2f} s | {_num(first)} | {_num(cold_qps)} "
            f"| {_num(warm)} | {first / warm:.2f}x | {server.pss_mb:,.0f} MB |"
        )
    warm_small = by_key.get((sizes[0], "udp", "clusterdns"), {}).get("qps", NAN)
    for size, server in measured:
        if server.name == "clusterdns" and size != sizes[0]:
            first = server.cold.get("first", NAN)
            print(
                f"\nclusterdns, first second of UDP at {size:,} Services / warmed UDP at {sizes[0]:,}: "
                f"{_num(first)} / {_num(warm_small)} = {first / warm_small:.2f}x"
            )
    for c in checks:
        print(
            f"\n`clusterdns check`, {c.size:,} Services, {c.expected:,} cluster IPs outside {CHECK_CIDR}: "
            f"{c.status}, peak RSS {c.peak_mb:,.0f} MB, {c.problems:,} problem lines "
            f"({c.located:,} with file:line)"
        )


def print_pairs(
    paired: dict[int, list[tuple[float, float]]], passes: dict[tuple[int, str], list[float]], ref: int
) -> None:
    """The comparisons made at one moment: clusterdns' first second against the warmed reference's second
    right after it, start by start, and clusterdns against clusterdns before, pass by pass."""
    for size, pairs in paired.items():
        ratios = [first / qps for first, qps in pairs]
        each = ", ".join(f"{first:,.0f} / {qps:,.0f} = {first / qps:.2f}x" for first, qps in pairs)
        print(
            f"\nclusterdns, first second of UDP at {size:,} Services / warmed UDP at {ref:,} the second after, "
            f"start by start: {each}; median {statistics.median(ratios):.2f}x{interval(ratios)}"
            + (" (issue 10: at least 0.9x)" if size == 100_000 else "")
        )
    for (size, mode), ratios in passes.items():
        each = ", ".join(f"{r:.2f}x" for r in ratios)
        print(
            f"\nclusterdns / clusterdns before, {size:,} Services, {mode.upper()}, pass by pass: {each}; "
            f"median {statistics.median(ratios):.2f}x"
        )


def interval(ratios: list[float], resamples: int = 4000) -> str:
    """The median's 95% bootstrap interval, for ten ratios or more: where single pairs swing by 10-20%, it
    says whether the median is clear of a target or could fall either side of it."""
    if len(ratios) < 10:
        return ""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    low, high = medians[int(resamples * 0.025)], medians[int(resamples * 0.975) - 1]
    return f" (95% bootstrap interval {low:.2f}x-{high:.2f}x over {len(ratios)} starts)"


def _num(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


if __name__ == "__main__":
    sys.exit(main())
