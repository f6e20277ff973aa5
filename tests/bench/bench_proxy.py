#!/usr/bin/env python3
"""Benchmark: the data plane of `serve --proxy`. Run as root (it makes network namespaces).

    python tests/bench/bench_proxy.py [--sizes 1000,10000] [--replicas 3] [--changes 10] [--seconds 5]

Two parts, in one run:
1. HTTP through the proxy: nginx in a pod namespace on a bridge, a client namespace running wrk (1 thread,
   10 connections, small GETs); the same GET straight to the pod IP and through the Service's cluster IP,
   which a real `clusterdns serve --proxy` in the node namespace forwards. Two passes in alternating order,
   the best of each kept. The kernel does the forwarding, so the ratio shows what DNAT, conntrack and
   masquerading cost.
2. Applying rules: a generated cluster of N Services, each selecting `--replicas` Pods of a Deployment, one
   application per file, in a fresh namespace: the first sync (ruleset built, the whole table written in
   stages, the Services' shares read by nft processes at once, every service address claimed with
   `ip -batch`), then `--changes` one-Service changes (a
   Deployment scaled), each a reload's sync: the ruleset rebuilt (unchanged Services reused), the
   transaction of differences, the addresses. Each figure is split into building (Python) and applying
   (nft and ip).
nginx and wrk are installed with apt-get when missing. Everything made is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]


NODE_IP = "10.244.0.1"
POD_IP = "10.244.0.20"  # stated in the manifest: in the allocator's static band, so no other Pod gets it
CLIENT_IP = "10.244.0.100"

NGINX_CONF = """\
daemon off; worker_processes 1; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
       uwsgi_temp_path {dir}; scgi_temp_path {dir};
       server {{ listen 80; location / {{ return 200 "hello from the pod\\n"; }} }} }}
"""

HTTP_ZONE = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec: {{containers: [{{name: nginx, ports: [{{name: http, containerPort: 80}}]}}]}}
status: {{podIP: {POD_IP}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  clusterIP: 10.0.0.80
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
"""

INNER_APPLY = r"""
import os, sys, time
from clusterdns.allocate import Store
from clusterdns.proxy import Proxy, place
from clusterdns.registry import Config
from clusterdns.zones import Zones, paused_gc
zones, changes = sys.argv[1], int(sys.argv[2])
z = Zones(zones, Config(), Store(None))

def load():
    with paused_gc():  # as serve loads: what the load made is frozen out of the collector's way
        return z.load(time.time())

registry = load()
proxy = Proxy(place("10.244.0.1", 53, [], None))
proxy.start()

def sync(label, registry):
    proxy.sync(registry)
    t = proxy.timings
    print(label, len(proxy.applied.services), len(proxy.claimed), t["build"], t["nft"], t["addresses"],
          int(t["script bytes"]), flush=True)

sync("first", registry)
path = os.path.join(zones, "app-0.yaml")
text = open(path).read()
for i in range(changes):
    scaled = "replicas: REPLICAS-1" if i % 2 == 0 else "replicas: REPLICAS"
    open(path, "w").write(text.replace("replicas: REPLICAS", scaled, 1))
    sync("change", load())
proxy.stop()
"""


def generate(directory: str, services: int, replicas: int) -> None:
    """One file per application, as zones are usually kept: a Service and the Deployment it selects (bench_load's
    cluster, written file by file), so that a change to one application re-reads one file."""
    namespaces = max(1, services // 50)
    for i in range(services):
        ns = f"ns-{i % namespaces}"
        with open(os.path.join(directory, f"app-{i}.yaml"), "w") as f:
            f.write(
                f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\n"
                f"spec:\n  selector:\n    app: app-{i}\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n"
                f"---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{i}\n  namespace: {ns}\n"
                f"spec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: app-{i}\n"
                f"  template:\n    metadata:\n      labels:\n        app: app-{i}\n    spec:\n"
                f"      containers:\n      - name: app\n        image: registry.example/app:1\n"
                f"        ports:\n        - name: http\n          containerPort: 8080\n"
            )


def sh(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done  # type: ignore[no-any-return]


def need(command: str, package: str) -> None:
    if shutil.which(command) is None:
        print(f"installing {package} ...", flush=True)
        sh("apt-get", "install", "-y", "-qq", package, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


@contextmanager
def namespaces(tag: str) -> Iterator[list[str]]:
    made: list[str] = []
    try:
        yield made
    finally:
        for ns in reversed(made):
            sh("ip", "netns", "delete", ns, check=False)


def add_node(made: list[str], node: str) -> None:
    sh("ip", "netns", "add", node)
    made.append(node)
    sh("ip", "-n", node, "link", "set", "lo", "up")
    sh("ip", "-n", node, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", node, "addr", "add", f"{NODE_IP}/16", "dev", "br0")
    sh("ip", "-n", node, "link", "set", "br0", "up")


def add_pod(made: list[str], node: str, ns: str, ip: str) -> None:
    sh("ip", "netns", "add", ns)
    made.append(ns)
    sh("ip", "link", "add", f"v{ns}"[:15], "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", f"v{ns}"[:15], "netns", node)
    sh("ip", "-n", node, "link", "set", f"v{ns}"[:15], "master", "br0", "up")
    sh("ip", "-n", ns, "addr", "add", f"{ip}/16", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "route", "add", "default", "via", NODE_IP)


def wrk(client: str, url: str, seconds: int) -> tuple[float, float]:
    """Requests per second and average latency (ms) of one wrk run."""
    out = sh("ip", "netns", "exec", client, "wrk", "-t1", "-c10", f"-d{seconds}s", url, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    latency = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, latency


def http_part(tmp: str, seconds: int) -> None:
    tag = str(os.getpid() % 10000)
    node, pod, client = f"cbn{tag}", f"cbp{tag}", f"cbc{tag}"
    zones, state = os.path.join(tmp, "http-zones"), os.path.join(tmp, "http-state")
    os.makedirs(zones)
    with open(os.path.join(zones, "web.yaml"), "w") as f:
        f.write(HTTP_ZONE)
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(dir=tmp))
    procs: list[subprocess.Popen[str]] = []
    with namespaces(tag) as made:
        try:
            add_node(made, node)
            add_pod(made, node, pod, POD_IP)
            add_pod(made, node, client, CLIENT_IP)
            procs.append(subprocess.Popen(["ip", "netns", "exec", pod, "nginx", "-c", os.path.join(tmp, "nginx.conf")]))
            server = subprocess.Popen(
                [
                    *("ip", "netns", "exec", node, sys.executable, "-m", "clusterdns", "serve", "--proxy"),
                    *("--zones", zones, "--state", state, "--host", NODE_IP, "--port", "53"),
                    *("--upstream", "off", "--http", "127.0.0.1:9153", "--lameduck", "0"),
                ],
                env=dict(os.environ, PYTHONPATH=ROOT),
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(tmp, "serve.log"), "w"),  # noqa: SIM115 (closed with the process)
            )
            procs.append(server)  # type: ignore[arg-type]
            deadline = time.monotonic() + 30
            while sh("ip", "netns", "exec", node, "curl", "-sf", "http://127.0.0.1:9153/ready", check=False).returncode:
                if time.monotonic() > deadline:
                    sys.exit("clusterdns --proxy did not become ready:\n" + Path(tmp, "serve.log").read_text())
                time.sleep(0.1)
            while sh("ip", "netns", "exec", client, "curl", "-sf", f"http://{POD_IP}/", check=False).returncode:
                if time.monotonic() > deadline:
                    sys.exit("nginx did not answer")
                time.sleep(0.1)
            best: dict[str, tuple[float, float]] = {}
            order = [("pod IP", f"http://{POD_IP}/"), ("cluster IP", "http://10.0.0.80/")]
            for run in range(2):
                for label, url in order if run == 0 else order[::-1]:
                    rps, latency = wrk(client, url, seconds)
                    if label not in best or rps > best[label][0]:
                        best[label] = (rps, latency)
            print(f"\nHTTP GET, wrk 1 thread 10 connections, {seconds} s, best of 2 passes")
            print(f"{'path':<12}{'requests/s':>12}{'avg latency':>14}{'ratio':>8}")
            for label, (rps, latency) in best.items():
                ratio = rps / best["pod IP"][0]
                print(f"{label:<20}{rps:>12,.0f}{latency:>11.3f} ms{ratio:>7.2f}x")
        finally:
            for p in procs:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def apply_part(tmp: str, sizes: list[int], replicas: int, changes: int) -> None:
    print(f"\napplying rules: N Services, each with {replicas} endpoints; a change scales one Deployment")
    print(
        f"{'services':>9}{'endpoints':>10}  {'sync':<20}{'build':>9}{'nft -f':>9}{'rules':>9}"
        f"{'addresses':>11}{'nft text':>13}"
    )
    for n in sizes:
        zones = os.path.join(tmp, f"zones-{n}")
        os.makedirs(zones)
        generate(zones, n, replicas)
        inner = INNER_APPLY.replace("REPLICAS-1", str(max(1, replicas - 1))).replace("REPLICAS", str(replicas))
        tag = f"cba{os.getpid() % 10000}"
        with namespaces(tag) as made:
            add_node(made, tag)
            argv = ["ip", "netns", "exec", tag, sys.executable, "-c", inner, zones, str(changes)]
            out = sh(*argv, env=dict(os.environ, PYTHONPATH=ROOT), timeout=1200).stdout.splitlines()
        rows = [line.split() for line in out]
        first = rows[0]
        later = [r for r in rows[1:] if r[0] == "change"]

        def ms(values: list[float]) -> str:
            return f"{statistics.median(values) * 1000:.0f}"

        for label, group in (("first", [first]), (f"change ({len(later)}, median)", later)):
            build = [float(r[3]) for r in group]
            nft = [float(r[4]) for r in group]
            addr = [float(r[5]) for r in group]
            rules_ = [b + f for b, f in zip(build, nft, strict=True)]
            size = statistics.median(int(r[6]) for r in group)
            print(
                f"{int(first[1]):>9,}{n * replicas:>10,}  {label:<20}{ms(build):>6} ms{ms(nft):>6} ms"
                f"{ms(rules_):>6} ms{ms(addr):>8} ms{size:>11,.0f} B"
            )
        print(f"{'':>21}(addresses claimed: {int(first[2]):,}; 'rules' = build + nft -f)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark makes network namespaces and nftables tables")
    need("nginx", "nginx-light")
    need("wrk", "wrk")
    need("nft", "nftables")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_http:
            http_part(tmp, args.seconds)
        apply_part(tmp, [int(s) for s in args.sizes.split(",")], args.replicas, args.changes)


if __name__ == "__main__":
    main()
