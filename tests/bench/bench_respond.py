#!/usr/bin/env python3
"""Benchmark: the time of Responder.respond() per query, in processes forked as `serve --workers` forks them,
without sockets, so that what the table's size costs is seen without the kernel's and dnsperf's share.

    python tests/bench/bench_respond.py [--sizes 1000,100000] [--rounds 6] [--processes 2] [--baseline DIR]

For each size, bench_dns's cluster and query mix are generated; then, `--rounds` times, a child process
loads the zones, builds the Responder and forks `--processes` processes that each call touch() (as workers
do) and answer their share of the queries (every other one) three times over: pass 1 is each name's first
question after the fork, passes 2 and 3 are repeats. The figures are the medians over the rounds of the
processes' mean time per query. With `--baseline DIR` (a git worktree of an earlier commit), its clusterdns
is measured in the same rounds, alternating with this one, and this / before is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dns import ROOT, generate

CHILD = """
import os, pathlib, statistics, sys, time
import dns.message
fx, processes = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))  # the checkout's own, as its tests load zones
from dns_helpers import load_zone
from clusterdns.registry import Config
from clusterdns.respond import Responder
responder = Responder(load_zone(pathlib.Path(fx, "zones"), Config(service_cidrs=("10.0.0.0/12",))))
queries = []
with open(os.path.join(fx, "queries.txt")) as f:
    for i, line in enumerate(f):
        name, qtype = line.split()
        query = dns.message.make_query(name, qtype, use_edns=False)
        query.id = i & 0xFFFF
        queries.append(query.to_wire())
children = []
for k in range(processes):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        responder.touch()
        mine, times = queries[k::processes], []
        for _ in range(3):
            start = time.perf_counter()
            for query in mine:
                responder.respond(query)
            times.append((time.perf_counter() - start) / len(mine) * 1e9)
        os.write(write, " ".join(f"{t:.1f}" for t in times).encode())
        os._exit(0)
    os.close(write)
    children.append((pid, read))
runs = []
for pid, read in children:
    runs.append([float(x) for x in os.read(read, 200).split()])
    os.waitpid(pid, 0)
print(" ".join(f"{statistics.mean(r[p] for r in runs):.1f}" for p in range(3)))
"""


def measure(root: str, fx: str, processes: int) -> list[float]:
    """ns per query for passes 1-3, from one child process of the checkout `root`."""
    env = dict(os.environ, PYTHONPATH=root)
    cmd = [sys.executable, "-c", CHILD, fx, str(processes)]
    out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise SystemExit(f"bench_respond: the child of {root} failed:\n{out.stderr[-2000:]}")
    return [float(x) for x in out.stdout.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--baseline", help="a checkout of an earlier clusterdns, measured alternately")
    args = parser.parse_args()
    roots = {"clusterdns": ROOT}
    if args.baseline:
        roots["before"] = os.path.abspath(args.baseline)
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as fx:
            generate(fx, size, peers=False)
            got: dict[str, list[list[float]]] = {name: [] for name in roots}
            for r in range(args.rounds):
                for name in list(roots) if r % 2 == 0 else list(roots)[::-1]:
                    got[name].append(measure(roots[name], fx, args.processes))
                    print(f"{size:,} round {r + 1} {name}: " + " ".join(f"{t:.0f}" for t in got[name][-1]), flush=True)
            medians = {name: [statistics.median(run[p] for run in r) for p in range(3)] for name, r in got.items()}
            for name, m in medians.items():
                print(f"{size:,} Services, {name}: ns per query, passes 1-3: {m[0]:.0f} {m[1]:.0f} {m[2]:.0f}")
            if "before" in medians:
                ratios = " ".join(f"{a / b:.3f}" for a, b in zip(medians["clusterdns"], medians["before"], strict=True))
                print(f"{size:,} Services, clusterdns / before (time: lower is faster): {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
