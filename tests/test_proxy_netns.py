"""`serve --proxy` in a small cluster of network namespaces: the kernel forwards Services to pods.

A "node" namespace holds a bridge, the pod network (10.244.0.1/16), and runs clusterdns with --proxy
and its DNS on port 53 of the bridge address. Each pod clusterdns assigned an IP to is a namespace on
that bridge, at that IP, running a small HTTP server and a UDP echo that answer with the pod's name. A
client pod has the kubelet's resolv.conf naming kube-dns's cluster IP, 10.0.0.10, which only the proxy
makes lead to clusterdns. An "outside" namespace, joined to the node by a veth pair of its own, plays a
machine outside the cluster for NodePorts and load-balancer IPs. Real clients: curl, getent, Python
sockets inside the namespaces. Everything made is removed, also when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import write_files

ROOT = Path(__file__).resolve().parents[1]
NODE_IP = "10.244.0.1"  # the node's address on the pod network, where clusterdns serves DNS
NODE_IP6 = "fd00:244::1"
CLIENT_IP = "10.244.0.100"  # in the band the allocator leaves to explicit requests: no pod gets it
CLIENT_IP6 = "fd00:244::100"
CIDRS = ("--service-cidr", "10.0.0.0/16,fd00:10::/108", "--pod-cidr", "10.244.0.0/16,fd00:244::/64")
OUTSIDE_NET = "198.18.200"  # node .1, outside machine .2 (the benchmarking range, RFC 2544)
LB_CIDR = "198.19.7.0/24"

RESOLV_CONF = """\
nameserver 10.0.0.10
search default.svc.cluster.local svc.cluster.local cluster.local
options ndots:5 timeout:1 attempts:2
"""

# Each pod answers HTTP on port 80 (its container port `http`) and UDP on 9000 with its own name.
POD_SERVER = r"""
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name = sys.argv[1].encode()
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name) + 1))
        self.end_headers()
        self.wfile.write(name + b"\n")
    def log_message(self, *args):
        pass
class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 and IPv6
        super().server_bind()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", 9000))
def echo():
    while True:
        data, peer = udp.recvfrom(2048)
        udp.sendto(name + b" " + data, peer)
threading.Thread(target=echo, daemon=True).start()
Server(("::", 80), Handler).serve_forever()
"""

ZONES = {
    "my-nginx.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: my-nginx}
        spec:
          replicas: 2
          selector: {matchLabels: {run: my-nginx}}
          template:
            metadata: {labels: {run: my-nginx}}
            spec:
              containers:
                - name: nginx
                  image: nginx
                  ports:
                    - {name: http, containerPort: 80}
                    - {name: echo, containerPort: 9000, protocol: UDP}
        """,
    "services.yaml": """
        apiVersion: v1
        kind: Service
        metadata: {name: my-nginx}
        spec:
          selector: {run: my-nginx}
          ports: [{name: http, port: 80, targetPort: http}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: echo}
        spec:
          selector: {run: my-nginx}
          ports: [{name: echo, port: 53530, targetPort: echo, protocol: UDP}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: sticky}
        spec:
          selector: {run: my-nginx}
          sessionAffinity: ClientIP
          sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
          ports: [{name: http, port: 8080, targetPort: http}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web-np}
        spec:
          type: NodePort
          selector: {run: my-nginx}
          ports: [{name: http, port: 80, targetPort: 80, nodePort: 30080}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web-lb}
        spec:
          type: LoadBalancer
          selector: {run: my-nginx}
          ports: [{name: http, port: 80, targetPort: 80}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: dual}
        spec:
          ipFamilyPolicy: RequireDualStack
          selector: {run: my-nginx}
          ports: [{name: http, port: 80, targetPort: http}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: nothing}
        spec:
          selector: {run: nobody}
          ports: [{port: 80}]
        """,
    "solo.yaml": """
        apiVersion: v1
        kind: Pod
        metadata: {name: solo, labels: {run: solo}}
        spec:
          containers: [{name: web, image: nginx, ports: [{name: http, containerPort: 80}]}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: solo}
        spec:
          selector: {run: solo}
          ports: [{port: 80, targetPort: http}]
        """,
}


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


@dataclass
class Cluster:
    tag: str
    root: Path
    node: str
    outside: str
    pods: dict[str, str] = field(default_factory=dict)  # pod name -> namespace
    pod_ips: dict[str, str] = field(default_factory=dict)  # pod name -> IP
    pod_ips6: dict[str, str] = field(default_factory=dict)  # pod name -> IPv6
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    server: subprocess.Popen[str] | None = None

    @property
    def client(self) -> str:
        return f"cdc{self.tag}"

    def run(self, ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *argv, check=False, timeout=timeout)

    def clusterdns(self, *argv: str) -> str:
        flags = ["--zones", str(self.root / "zones"), "--state", str(self.root / "state")]
        done = sh(sys.executable, "-m", "clusterdns", *argv, *flags, *CIDRS, "--loadbalancer-cidr", LB_CIDR)
        return done.stdout

    def add_namespace(self, ns: str, ip: str, ip6: str, resolv: str = "") -> None:
        """A namespace on the node's bridge at `ip` and `ip6`, default routes via the node."""
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        host_if = f"v{ns}"[:15]
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", host_if, "netns", self.node)
        sh("ip", "-n", self.node, "link", "set", host_if, "master", "br0", "up")
        # As the bridge CNI plugin's hairpinMode: a pod's packet that the node sends back to the same pod
        # (hairpin through its own Service) may leave by the bridge port it came in on. Needed where
        # br_netfilter is loaded (Docker loads it), which bridges a DNATed packet instead of routing it.
        sh("ip", "-n", self.node, "link", "set", host_if, "type", "bridge_slave", "hairpin", "on")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/16", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", NODE_IP)
        sh("ip", "-n", ns, "-6", "route", "add", "default", "via", NODE_IP6)
        if resolv:
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(resolv)

    def start_pod(self, name: str) -> None:
        ns = f"cdp{self.tag}{len(self.pods)}"
        self.add_namespace(ns, self.pod_ips[name], self.pod_ips6[name])
        self.pods[name] = ns
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", POD_SERVER, name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(proc)

    def curl(self, ns: str, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run(ns, "curl", "-sS", "--max-time", "5", *extra, url)

    def start_server(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.server = subprocess.Popen(
            [
                *("ip", "netns", "exec", self.node, sys.executable, "-m", "clusterdns", "serve"),
                *("--zones", str(self.root / "zones"), "--state", str(self.root / "state")),
                *("--host", NODE_IP, "--port", "53", "--upstream", "off", "--lameduck", "0"),
                *("--http", "127.0.0.1:9153", "--proxy", "--node-ip", NODE_IP, "--node-ip", f"{OUTSIDE_NET}.1"),
                *("--loadbalancer-cidr", LB_CIDR, *CIDRS),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise AssertionError(f"clusterdns exited {self.server.returncode}: {self.server.stdout.read()}")  # type: ignore[union-attr]
            if self.run(self.node, "curl", "-sf", "http://127.0.0.1:9153/ready").returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("clusterdns --proxy did not become ready within 30 s")

    def stop_server(self) -> str:
        assert self.server is not None
        self.server.send_signal(signal.SIGTERM)
        out, _ = self.server.communicate(timeout=30)
        self.server = None
        return out


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """The node, the outside machine, one namespace per pod clusterdns assigned an IP, a client pod and
    clusterdns serving with --proxy; all of it removed afterwards."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root and must be able to make network namespaces")
        pytest.skip("network namespaces and nftables need root")
    tag = str(os.getpid() % 10000)
    c = Cluster(tag, tmp_path, f"cdn{tag}", f"cdo{tag}")
    write_files(tmp_path / "zones", ZONES)
    try:
        sh("ip", "netns", "add", c.node)
        c.namespaces.append(c.node)
        sh("ip", "-n", c.node, "link", "set", "lo", "up")
        sh("ip", "-n", c.node, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", c.node, "addr", "add", f"{NODE_IP}/16", "dev", "br0")
        sh("ip", "-n", c.node, "addr", "add", f"{NODE_IP6}/64", "dev", "br0", "nodad")
        sh("ip", "-n", c.node, "link", "set", "br0", "up")
        sh("ip", "netns", "add", c.outside)
        c.namespaces.append(c.outside)
        sh("ip", "link", "add", f"cdx{tag}", "type", "veth", "peer", "name", "eth0", "netns", c.outside)
        sh("ip", "link", "set", f"cdx{tag}", "netns", c.node)
        sh("ip", "-n", c.node, "addr", "add", f"{OUTSIDE_NET}.1/30", "dev", f"cdx{tag}")
        sh("ip", "-n", c.node, "link", "set", f"cdx{tag}", "up")
        sh("ip", "-n", c.outside, "addr", "add", f"{OUTSIDE_NET}.2/30", "dev", "eth0")
        sh("ip", "-n", c.outside, "link", "set", "eth0", "up")
        sh("ip", "-n", c.outside, "route", "add", LB_CIDR, "via", f"{OUTSIDE_NET}.1")
        pods = json.loads(c.clusterdns("get", "pods", "-o", "json"))["items"]
        c.pod_ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
        c.pod_ips6 = {p["metadata"]["name"]: p["status"]["podIPs"][1]["ip"] for p in pods}
        for name in sorted(c.pod_ips):
            c.start_pod(name)
        c.add_namespace(c.client, CLIENT_IP, CLIENT_IP6, RESOLV_CONF)
        c.start_server()
        yield c
    finally:
        if c.server is not None:
            c.server.kill()
            c.server.communicate()
        for proc in c.processes:
            proc.kill()
            proc.wait()
        for ns in reversed(c.namespaces):
            sh("ip", "netns", "delete", ns, check=False)
            etc = Path("/etc/netns") / ns
            if etc.exists():
                for child in etc.iterdir():
                    child.unlink()
                etc.rmdir()


def nginx_pods(c: Cluster) -> set[str]:
    return {name for name in c.pod_ips if name.startswith("my-nginx-")}


def answers(c: Cluster, url: str, times: int = 30, ns: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """Who answered each of `times` requests."""
    out = []
    for _ in range(times):
        done = c.curl(ns or c.client, url, *extra)
        assert done.returncode == 0, f"curl {url}: exit {done.returncode}: {done.stderr}"
        out.append(done.stdout.strip())
    return out


def test_short_name_through_kube_dns_reaches_both_endpoints(cluster: Cluster) -> None:
    """`curl http://my-nginx` from a pod (the short name through the search path, resolved by kube-dns's
    cluster IP, which the proxy leads to clusterdns) is answered by both nginx pods over repeated requests."""
    got = answers(cluster, "http://my-nginx/")
    assert set(got) == nginx_pods(cluster)


def test_ipv6_cluster_ip(cluster: Cluster) -> None:
    """A dual-stack Service's IPv6 cluster IP (its AAAA record, through the search path) reaches both pods
    over IPv6, and its IPv4 one too."""
    got = answers(cluster, "http://dual/", times=20, ns=None, extra=("-6",))
    assert set(got) == nginx_pods(cluster)
    assert set(answers(cluster, "http://dual/", times=10, extra=("-4",))) <= nginx_pods(cluster)


def test_service_env_address_connects(cluster: Cluster) -> None:
    """The address in the kubelet's variables, MY_NGINX_SERVICE_HOST:MY_NGINX_SERVICE_PORT, connects."""
    env = dict(line.split("=", 1) for line in cluster.clusterdns("env", "--namespace", "default").splitlines())
    url = f"http://{env['MY_NGINX_SERVICE_HOST']}:{env['MY_NGINX_SERVICE_PORT']}/"
    assert set(answers(cluster, url, times=20)) <= nginx_pods(cluster)


def test_udp_service(cluster: Cluster) -> None:
    """A UDP Service's cluster IP and port reach the pods' UDP echo on their named target port."""
    script = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3);"
        "ip = socket.gethostbyname('echo');"
        "s.sendto(b'ping', (ip, 53530)); print(s.recv(100).decode())"
    )
    done = cluster.run(cluster.client, sys.executable, "-c", script)
    assert done.returncode == 0, done.stderr
    name, payload = done.stdout.split()
    assert name in nginx_pods(cluster) and payload == "ping"


def test_node_port_and_load_balancer_from_outside(cluster: Cluster) -> None:
    """From a machine outside the cluster, the NodePort on the node's address and the LoadBalancer Service's
    address (from --loadbalancer-cidr, shown by `get svc` as EXTERNAL-IP) reach the pods."""
    got = answers(cluster, f"http://{OUTSIDE_NET}.1:30080/", times=20, ns=cluster.outside)
    assert set(got) == nginx_pods(cluster)
    table = cluster.clusterdns("get", "svc", "web-lb")
    lb_ip = table.splitlines()[1].split()[3]
    assert lb_ip.startswith("198.19.7."), table
    got = answers(cluster, f"http://{lb_ip}/", times=20, ns=cluster.outside)
    assert set(got) == nginx_pods(cluster)


def test_client_ip_affinity_sticks(cluster: Cluster) -> None:
    """With sessionAffinity ClientIP one client stays on one endpoint; the plain Service spreads."""
    assert len(set(answers(cluster, "http://sticky:8080/", times=15))) == 1


def test_no_endpoints_rejects_at_once(cluster: Cluster) -> None:
    """A Service without endpoints, and another port of a cluster IP, refuse the connection at once."""
    for url in ("http://nothing/", "http://my-nginx:81/"):
        started = time.monotonic()
        done = cluster.curl(cluster.client, url)
        assert done.returncode == 7, f"{url}: {done.stderr}"  # curl: failed to connect (refused)
        assert time.monotonic() - started < 2


def test_pod_reaches_itself_through_its_service(cluster: Cluster) -> None:
    """A pod that is its Service's only endpoint reaches itself through the cluster IP (hairpin)."""
    ns = cluster.pods["solo"]
    Path("/etc/netns", ns).mkdir(parents=True, exist_ok=True)
    Path("/etc/netns", ns, "resolv.conf").write_text(RESOLV_CONF)
    assert answers(cluster, "http://solo/", times=3, ns=ns) == ["solo"] * 3


def test_scale_to_zero_and_back(cluster: Cluster) -> None:
    """Scaling the Deployment to 0 in zones/ makes connections fail fast (refused, not a timeout) within a
    second of the edit; scaling back to 2 brings both pods back."""
    path = cluster.root / "zones" / "my-nginx.yaml"
    text = path.read_text()
    path.write_text(text.replace("replicas: 2", "replicas: 0"))
    edited = time.monotonic()
    while True:
        done = cluster.curl(cluster.client, "http://my-nginx/")
        if done.returncode != 0:
            break
        assert time.monotonic() - edited < 5, "still answered 5 s after scaling to 0"
    assert done.returncode == 7, done.stderr
    assert time.monotonic() - edited < 1.0
    path.write_text(text)
    deadline = time.monotonic() + 5
    while cluster.curl(cluster.client, "http://my-nginx/").returncode != 0:
        assert time.monotonic() < deadline, "not answered again 5 s after scaling back"
        time.sleep(0.05)
    assert set(answers(cluster, "http://my-nginx/")) == nginx_pods(cluster)


def test_exit_removes_table_and_addresses(cluster: Cluster) -> None:
    """While serving, the table exists and the service addresses are on the bridge; after SIGTERM both
    are gone."""
    listed = cluster.run(cluster.node, "nft", "list", "table", "inet", "clusterdns")
    assert listed.returncode == 0 and "service-ips" in listed.stdout
    addrs = cluster.run(cluster.node, "ip", "-o", "addr", "show", "dev", "br0").stdout
    assert " 10.0.0.10/32 " in addrs
    out = cluster.stop_server()
    assert cluster.run(cluster.node, "nft", "list", "table", "inet", "clusterdns").returncode != 0, out
    addrs = cluster.run(cluster.node, "ip", "-o", "addr", "show", "dev", "br0").stdout
    assert "/32 " not in addrs and NODE_IP in addrs


def test_start_after_crash_removes_leftovers(cluster: Cluster) -> None:
    """After `kill -9`, the table and addresses stay; the next start replaces the table and takes the
    addresses over, and its exit leaves nothing."""
    assert cluster.server is not None
    cluster.server.kill()
    cluster.server.communicate()
    cluster.server = None
    assert " 10.0.0.10/32 " in cluster.run(cluster.node, "ip", "-o", "addr", "show", "dev", "br0").stdout
    cluster.start_server()
    assert set(answers(cluster, "http://my-nginx/", times=20)) == nginx_pods(cluster)
    cluster.stop_server()
    assert cluster.run(cluster.node, "nft", "list", "table", "inet", "clusterdns").returncode != 0
    assert "/32 " not in cluster.run(cluster.node, "ip", "-o", "addr", "show", "dev", "br0").stdout


CLAIM_IN_NAMESPACE = r"""
import sys, time
from clusterdns.allocate import Store
from clusterdns.proxy import Proxy, place
from clusterdns.registry import Config
from clusterdns.zones import Zones
registry = Zones(sys.argv[1], Config(service_cidrs=("10.0.0.0/16", "fd00:10::/108")), Store(None)).load(time.time())
proxy = Proxy(place("10.244.0.1", 53, [], None))
proxy.start()
proxy.sync(registry)
print(" ".join(sorted(proxy.claimed)))
print(" ".join(sorted(proxy.unclaimable)))
proxy.stop()
"""


def test_interface_without_ipv6(tmp_path: Path) -> None:
    """On an interface with IPv6 disabled (a container without IPv6), the IPv4 service addresses are claimed,
    the IPv6 ones are reported as unclaimable rather than counted, and the sync succeeds."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root and must be able to make network namespaces")
        pytest.skip("network namespaces need root")
    write_files(
        tmp_path / "zones",
        {
            "dual.yaml": """
                apiVersion: v1
                kind: Service
                metadata: {name: dual}
                spec:
                  ipFamilyPolicy: RequireDualStack
                  clusterIPs: [10.0.0.60, "fd00:10::60"]
                  ports: [{port: 80}]
                """
        },
    )
    ns = f"cd6{os.getpid() % 10000}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", ns, "addr", "add", f"{NODE_IP}/16", "dev", "br0")
        sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.br0.disable_ipv6=1")
        done = sh(
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-c",
            CLAIM_IN_NAMESPACE,
            str(tmp_path / "zones"),
        )
        claimed, unclaimable = done.stdout.splitlines()
        assert "10.0.0.60" in claimed.split() and "fd00:10::60" not in claimed
        assert unclaimable.split() == ["fd00:10::60"]
        assert "could not claim 1 address(es) on br0 (ipv6: IPv6 is disabled on this device)" in done.stderr
    finally:
        sh("ip", "netns", "delete", ns, check=False)
