#!/usr/bin/env python3
"""Benchmark: load a generated cluster of N Services and M selector-matched Pods; print time and memory.

    python tests/bench/bench_load.py [--services 10000] [--pods 50000] [--as pods|deployments]

`--as pods` (default) writes every Pod as its own Pod manifest (the heaviest case: M documents to
parse); `--as deployments` writes one Deployment per Service with M/N replicas. Each Service selects its
Pods by label and names a container port, so endpoint derivation does real work. Each load runs in a
fresh subprocess, `--runs` times: on an empty state directory (every cluster IP, pod name and pod IP
allocated and stored), and again with the state kept (a restart: everything read back). The median
and every run's time are printed (the machines are shared and noisy); peak RSS is the largest child's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import sys, time, resource
t0 = time.perf_counter()
from clusterdns.allocate import Store
from clusterdns.registry import Config
from clusterdns.zones import Zones
store = Store(sys.argv[2])
registry = Zones(sys.argv[1], Config(), store).load(time.time())
elapsed = time.perf_counter() - t0
eps = sum(len(e) for e in registry.endpoints.values())
print(f"{elapsed:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
      f"{len(registry.services)} {len(registry.pods)} {eps} {len(registry.problems)}")
"""


def generate(directory: str, services: int, pods: int, shape: str) -> None:
    per_service = max(1, pods // services)
    namespaces = max(1, services // 50)
    chunk = 1000  # services per file
    for start in range(0, services, chunk):
        out = []
        for i in range(start, min(services, start + chunk)):
            ns = f"ns-{i % namespaces}"
            out.append(
                f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\n"
                f"spec:\n  selector:\n    app: app-{i}\n  ports:\n  - name: http\n    port: 80\n"
                f"    targetPort: http\n"
            )
            if shape == "deployments":
                out.append(
                    f"---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{i}\n  namespace: {ns}\n"
                    f"spec:\n  replicas: {per_service}\n  selector:\n    matchLabels:\n      app: app-{i}\n"
                    f"  template:\n    metadata:\n      labels:\n        app: app-{i}\n    spec:\n"
                    f"      containers:\n      - name: app\n        image: registry.example/app-{i}:1.{i % 7}\n"
                    f"        ports:\n"
                    f"        - name: http\n          containerPort: 8080\n"
                )
            else:
                for j in range(per_service):
                    out.append(
                        f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: app-{i}-{j}\n  namespace: {ns}\n"
                        f"  labels:\n    app: app-{i}\nspec:\n  containers:\n  - name: app\n"
                        f"    image: registry.example/app-{i}:1.{i % 7}\n"
                        f"    ports:\n    - name: http\n      containerPort: 8080\n"
                    )
        with open(os.path.join(directory, f"cluster-{start // chunk:03d}.yaml"), "w") as f:
            f.write("".join(out))


def run(zones: str, state: str) -> list[str]:
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    out = subprocess.run([sys.executable, "-c", CHILD, zones, state], capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(out.stderr)
    return out.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--pods", type=int, default=50000)
    parser.add_argument("--as", dest="shape", choices=["pods", "deployments"], default="deployments")
    parser.add_argument("--runs", type=int, default=3, help="loads of each kind; the median is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zones, state = os.path.join(tmp, "zones"), os.path.join(tmp, "state")
        os.makedirs(zones)
        t0 = time.perf_counter()
        generate(zones, args.services, args.pods, args.shape)
        size = sum(os.path.getsize(os.path.join(zones, f)) for f in os.listdir(zones))
        print(
            f"generated {args.services} services, {args.pods} pods as {args.shape} "
            f"({size / 1e6:.1f} MB of YAML) in {time.perf_counter() - t0:.1f} s"
        )
        print(
            f"{'load':<22}{'seconds (median, all runs)':>34}{'peak RSS MB':>13}{'services':>10}{'pods':>8}"
            f"{'endpoints':>11}{'problems':>10}"
        )
        for label in ("first (empty state)", "restart (state kept)"):
            runs = []
            for _ in range(args.runs):
                if label.startswith("first"):
                    shutil.rmtree(state, ignore_errors=True)
                runs.append(run(zones, state))
            seconds = sorted(float(r[0]) for r in runs)
            median = statistics.median(seconds)
            rss = max(int(r[1]) for r in runs)
            _, _, svcs, pods, eps, problems = runs[-1]
            shown = f"{median:.2f} ({', '.join(f'{x:.2f}' for x in seconds)})"
            print(f"{label:<22}{shown:>34}{rss:>13}{svcs:>10}{pods:>8}{eps:>11}{problems:>10}")


if __name__ == "__main__":
    main()
