"""A test pod: a Linux network namespace whose resolv.conf points at the server on port 53 of a veth
address, with the search path and ndots of a Kubernetes Pod, so that glibc's resolver and nslookup
resolve short Service names through the search path exactly as inside a cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dns_helpers import CLUSTER, CLUSTER_CONFIG, DNS, servers

# A Pod's resolv.conf as the kubelet writes it for namespace `default` (ClusterFirst DNS policy).
RESOLV_CONF = """\
nameserver {nameserver}
search default.svc.cluster.local svc.cluster.local cluster.local
options ndots:5
"""


@dataclass(frozen=True)
class Netns:
    name: str
    host_ip: str  # the root-namespace end of the veth pair, where the server listens
    pod_ip: str  # the end inside the namespace

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (with its /etc/netns/<name>/resolv.conf bind-mounted)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *args], capture_output=True, text=True, timeout=60, check=False
        )


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


def cannot(reason: str) -> None:
    """Namespaces can't be made here: skip with the reason, but fail in CI, which must be able to."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to create network namespaces: {reason}")
    pytest.skip(reason)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A namespace `cdns<pid>` joined to the root namespace by a veth pair in a /30 of 198.18.0.0/15
    (the benchmarking range, RFC 2544), and its resolv.conf; all removed afterwards."""
    if shutil.which("ip") is None:
        cannot("ip (iproute2) is not installed")
    tag = os.getpid() % 16384
    name, host_if, pod_if = f"cdns{tag}", f"cdns{tag}h", f"cdns{tag}p"
    block, first = f"198.18.{tag // 64}", tag % 64 * 4  # one /30 per tag
    ns = Netns(name, f"{block}.{first + 1}", f"{block}.{first + 2}")
    etc = Path("/etc/netns") / name
    had_etc_netns = etc.parent.exists()
    cleanup: list[list[str]] = []
    try:
        added = ip("netns", "add", name)
        if added.returncode != 0:
            cannot(f"can't create a network namespace: {added.stderr.strip()}")
        cleanup.append(["netns", "delete", name])
        steps = [
            ["link", "add", host_if, "type", "veth", "peer", "name", pod_if],
            ["link", "set", pod_if, "netns", name],
            ["addr", "add", f"{ns.host_ip}/30", "dev", host_if],
            ["link", "set", host_if, "up"],
            ["-n", name, "addr", "add", f"{ns.pod_ip}/30", "dev", pod_if],
            ["-n", name, "link", "set", pod_if, "up"],
            ["-n", name, "link", "set", "lo", "up"],
        ]
        for step in steps:
            done = ip(*step)
            if done.returncode != 0:
                cannot(f"ip {' '.join(step)}: {done.stderr.strip()}")
            if step[0] == "link" and step[1] == "add":
                cleanup.append(["link", "delete", host_if])
        try:
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(RESOLV_CONF.format(nameserver=ns.host_ip))
        except OSError as exc:
            cannot(f"can't write {etc}/resolv.conf: {exc.strerror}")
        yield ns
    finally:
        for step in reversed(cleanup):
            ip(*step)
        if etc.exists():
            for child in etc.iterdir():
                child.unlink()
            etc.rmdir()
        if not had_etc_netns and etc.parent.exists() and not any(etc.parent.iterdir()):
            etc.parent.rmdir()


@pytest.fixture
def cluster_dns(netns: Netns, tmp_path: Path) -> Iterator[DNS]:
    """The server on port 53 of the namespace's nameserver address, for as long as the namespace lives."""
    with servers(tmp_path) as pool:
        yield pool.start(CLUSTER, config=CLUSTER_CONFIG, host=netns.host_ip, port=53)


def test_pod_resolves_through_search_path(netns: Netns, cluster_dns: DNS) -> None:
    """Inside the namespace, glibc (`getent hosts`) and nslookup find `my-nginx` and `my-nginx.default`
    through the Pod search path and ndots:5, at the Service's cluster IP."""
    for name in ("my-nginx", "my-nginx.default"):
        done = netns.run("getent", "hosts", name)
        assert done.returncode == 0, f"getent hosts {name}: exit {done.returncode} {done.stderr}"
        assert done.stdout.split() == ["10.0.0.50", "my-nginx.default.svc.cluster.local"]
    done = netns.run("nslookup", "my-nginx")
    assert done.returncode == 0, done.stdout + done.stderr
    # nslookup notes that the server offers no recursion, as it does against CoreDNS (RA is clear there too)
    note = f";; Got recursion not available from {netns.host_ip}"
    out = [" ".join(line.split()) for line in done.stdout.splitlines() if line.strip() and line != note]
    assert out == [
        f"Server: {netns.host_ip}",
        f"Address: {netns.host_ip}#53",
        "Name: my-nginx.default.svc.cluster.local",
        "Address: 10.0.0.50",
    ]


def test_pod_resolves_other_kinds(netns: Netns, cluster_dns: DNS) -> None:
    """The same resolver finds a headless Service's endpoints, a StatefulSet Pod by `<pod>.<service>`, a
    Service of another namespace by `<service>.<namespace>`, and fails for an unknown name."""
    done = netns.run("getent", "ahostsv4", "hdls")
    assert done.returncode == 0, done.stderr
    assert {line.split()[0] for line in done.stdout.splitlines()} == {"10.244.3.1", "10.244.3.2", "10.244.3.3"}
    done = netns.run("getent", "hosts", "web-0.nginx")
    assert done.stdout.split() == ["10.244.2.10", "web-0.nginx.default.svc.cluster.local"]
    done = netns.run("getent", "hosts", "kube-dns.kube-system")
    assert done.stdout.split() == ["10.0.0.10", "kube-dns.kube-system.svc.cluster.local"]
    done = netns.run("getent", "hosts", "no-such-service")
    assert (done.returncode, done.stdout) == (2, "")
