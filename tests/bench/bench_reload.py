#!/usr/bin/env python3
"""Benchmark: how fast a change to zones/ is answered, with N Services loaded.

    python tests/bench/bench_reload.py [--services 10000] [--pods 0] [--changes 10]

Two figures, each over several changes:
1. reload cost: in this process, the time to re-read one changed file and build and index the new
   snapshot (Zones.load + Zone), as `serve` does after the debounce;
2. write to answer: a real `clusterdns serve` on loopback; a file with a new Service is written and
   the Service is queried in a loop until the answer is right; the time from the write to that answer
   (this includes the watcher's debounce, 0.1 s).
With --pods N the zones are bench_load.py's cluster instead (N selector-matched Pod manifests, each
Service with endpoints). Servers listen on 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import dns.message
import dns.query
import dns.rcode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import bench_load  # noqa: E402 (beside this script)
from dns_helpers import free_port  # noqa: E402

from clusterdns.allocate import Store  # noqa: E402
from clusterdns.records import Zone  # noqa: E402
from clusterdns.registry import Config  # noqa: E402
from clusterdns.zones import Zones, paused_gc  # noqa: E402


def generate(zones: str, n: int) -> None:
    per_file = 500
    for start in range(0, n, per_file):
        with open(os.path.join(zones, f"services-{start // per_file:03d}.yaml"), "w") as f:
            for i in range(start, min(n, start + per_file)):
                f.write(
                    f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: ns-{i % 200}\n"
                    f"spec:\n  ports:\n  - name: http\n    port: 80\n"
                )


def write_change(zones: str, k: int) -> None:
    """One small file whose Service (changed-<k>) has the cluster IP 10.0.0.<k + 20>, in the lower band
    that automatic allocation leaves to explicit addresses."""
    text = (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: changed-{k}\nspec:\n"
        f"  clusterIP: 10.0.0.{k + 20}\n  ports:\n  - port: 80\n"
    )
    path = os.path.join(zones, "change.yaml")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)  # as editors save


def reload_cost(zones: str, state: str, changes: int) -> list[float]:
    loader = Zones(zones, Config(), Store(state))
    zone = Zone(loader.load(time.time()))
    costs = []
    for k in range(changes):
        write_change(zones, 100 + k)
        started = time.perf_counter()
        with paused_gc():  # as serve builds them
            zone = Zone(loader.load(time.time()), previous=zone)
        costs.append(time.perf_counter() - started)
    return costs


def write_to_answer(zones: str, state: str, changes: int) -> tuple[float, list[float]]:
    port = free_port()
    cmd = [sys.executable, "-m", "clusterdns", "serve", "--zones", zones, "--state", state, "--port", str(port)]
    cmd += ["--http", "off", "--upstream", "off"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        ready = _wait_answer(port, "svc-1.ns-1.svc.cluster.local", None, 120) - started
        times = []
        for k in range(changes):
            write_change(zones, k)
            written = time.perf_counter()
            times.append(_wait_answer(port, f"changed-{k}.default.svc.cluster.local", f"10.0.0.{k + 20}", 10) - written)
        return ready, times
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_answer(port: int, name: str, want: str | None, seconds: float) -> float:
    deadline = time.perf_counter() + seconds
    query = dns.message.make_query(name, "A")
    while time.perf_counter() < deadline:
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
        except Exception:
            continue
        good = reply.rcode() == dns.rcode.NOERROR and reply.answer
        if good and (want is None or any(want in rr.to_text() for rr in reply.answer)):
            return time.perf_counter()
        time.sleep(0.002)
    raise SystemExit(f"no right answer for {name} within {seconds} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--pods", type=int, default=0)
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zones, state = os.path.join(tmp, "zones"), os.path.join(tmp, "state")
        os.makedirs(zones)
        if args.pods:
            bench_load.generate(zones, args.services, args.pods, "pods")
        else:
            generate(zones, args.services)
        costs = reload_cost(zones, state, args.changes)
        os.remove(os.path.join(zones, "change.yaml"))
        ready, times = write_to_answer(zones, state, args.changes)
    ms = [c * 1000 for c in costs]
    print(f"{args.services} services, {args.pods} pods; {args.changes} changes of one file each")
    print(
        "reload cost (re-read one file, build and index the snapshot): "
        f"median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms"
    )
    wt = [t * 1000 for t in times]
    print(
        "write to first correct answer (serve, incl. 100 ms debounce): "
        f"median {statistics.median(wt):.0f} ms, max {max(wt):.0f} ms"
    )
    print(f"serve start to first answer: {ready:.2f} s")


if __name__ == "__main__":
    main()
