"""The zones/ directory as shipped: it loads clean and holds every example the README promises, and
`get svc -A` and `env` give what a kubectl user expects from them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from clusterdns.cli import main
from clusterdns.model import Service
from clusterdns.registry import Registry

if TYPE_CHECKING:
    from conftest import Load

SHIPPED = Path(__file__).resolve().parents[1] / "zones"


def cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--zones", str(SHIPPED), *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def shipped(load: Load) -> Registry:
    return load(SHIPPED)


def zone_services(registry: Registry) -> list[Service]:
    return [s for s in registry.services.values() if s.source is not None and s.source.line]


def ports(service: Service) -> list[tuple[str, int, str, int | str]]:
    return [(p.name, p.port, p.protocol, p.target_port) for p in service.ports]


def test_check_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`clusterdns check` on the shipped zones/ exits 0 with no problems and no notes."""
    code, out, err = cli(["check", "--state", str(tmp_path / "state")], capsys)
    assert (code, err) == (0, "")
    assert out.startswith("ok: ")
    assert len(out.splitlines()) == 1


def test_loads_clean(shipped: Registry) -> None:
    """The registry of the shipped zones/ has no problems and no notes."""
    assert [str(p) for p in shipped.problems] == []
    assert [str(n) for n in shipped.notes] == []


def test_my_nginx(shipped: Registry) -> None:
    """my-nginx from the Kubernetes docs: 2 replicas (run: my-nginx, port 80) behind a Service on port 80."""
    deployment = shipped.workloads[("Deployment", "default", "my-nginx")]
    assert deployment.replicas == 2
    assert deployment.template.labels == {"run": "my-nginx"}
    assert [(p.container_port, p.protocol) for c in deployment.template.spec.containers for p in c.ports] == [
        (80, "TCP")
    ]
    service = shipped.services[("default", "my-nginx")]
    assert (service.type, service.selector) == ("ClusterIP", {"run": "my-nginx"})
    assert ports(service) == [("", 80, "TCP", 80)]
    pods = [p for p in shipped.pods_in("default") if p.owner == "Deployment/my-nginx"]
    assert len(pods) == 2
    assert sorted((e.ip, e.ready, [p.port for p in e.ports]) for e in shipped.endpoints[service.key]) == sorted(
        (p.ip, True, [80]) for p in pods
    )


def test_nodeport_variant(shipped: Registry) -> None:
    """The NodePort variant from the same docs page: http 8080->80 and https 443, each with a node port."""
    (service,) = [s for s in zone_services(shipped) if s.type == "NodePort"]
    assert service.name == "my-nginx"
    assert ports(service) == [("http", 8080, "TCP", 80), ("https", 443, "TCP", 443)]
    assert all(p.node_port is not None and 30000 <= p.node_port <= 32767 for p in service.ports)
    assert shipped.endpoints[service.key] != ()


def test_headless_with_statefulset(shipped: Registry) -> None:
    """A headless Service whose endpoints are a StatefulSet's Pods, with their hostnames."""
    (service,) = [s for s in zone_services(shipped) if s.headless]
    (statefulset,) = [w for w in shipped.workloads.values() if w.kind == "StatefulSet"]
    assert statefulset.service_name == service.name
    assert sorted(e.hostname for e in shipped.endpoints[service.key]) == [
        f"{statefulset.name}-{i}" for i in range(statefulset.replicas)
    ]
    assert statefulset.replicas >= 2


def test_external_name(shipped: Registry) -> None:
    """An ExternalName Service."""
    (service,) = [s for s in zone_services(shipped) if s.type == "ExternalName"]
    assert (service.name, service.external_name, service.cluster_ip) == ("my-service", "my.database.example.com", "")


def test_selectorless_with_endpoints(shipped: Registry) -> None:
    """A Service without a selector backed by a hand-written Endpoints object."""
    (service,) = [s for s in zone_services(shipped) if s.selector is None and s.type != "ExternalName"]
    assert [(e.ip, [(p.name, p.port) for p in e.ports], e.ready) for e in shipped.endpoints[service.key]] == [
        ("192.0.2.42", [("http", 9376)], True)
    ]


def test_dual_stack(shipped: Registry) -> None:
    """A dual-stack Service: an IPv4 and an IPv6 cluster IP with the default flags."""
    (service,) = [s for s in zone_services(shipped) if len(s.cluster_ips) == 2]
    assert service.ip_families == ("IPv4", "IPv6")
    assert service.cluster_ips[0].count(".") == 3
    assert ":" in service.cluster_ips[1]


def test_get_services_stable_across_restarts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`get svc -A` prints a kubectl table, with the same cluster IPs after a restart (same state)."""
    state = str(tmp_path / "state")

    def table() -> list[list[str]]:
        code, out, err = cli(["get", "svc", "-A", "--state", state], capsys)
        assert (code, err) == (0, "")
        return [line.split()[:-1] for line in out.splitlines()]  # every column but AGE

    first = table()
    assert first[0] == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
    assert ["default", "kubernetes", "ClusterIP", "10.0.0.1", "<none>", "443/TCP"] in first
    assert ["kube-system", "kube-dns", "ClusterIP", "10.0.0.10", "<none>", "53/UDP,53/TCP,9153/TCP"] in first
    assert ["default", "nginx", "ClusterIP", "None", "<none>", "80/TCP"] in first
    assert ["prod", "my-service", "ExternalName", "<none>", "my.database.example.com", "<none>"] in first
    assert table() == first


def test_env_docs_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The example from the Kubernetes docs: a pod in `default` beside my-nginx gets these variables."""
    state = str(tmp_path / "state")
    code, out, _ = cli(["get", "svc", "my-nginx", "-o", "json", "--state", state], capsys)
    assert code == 0
    ip = json.loads(out)["spec"]["clusterIP"]
    code, out, err = cli(["env", "--namespace", "default", "--state", state], capsys)
    assert (code, err) == (0, "")
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert {k: env.get(k) for k in EXPECTED_DOCS_ENV} == {
        k: v.replace("<my-nginx>", ip) for k, v in EXPECTED_DOCS_ENV.items()
    }


EXPECTED_DOCS_ENV = {
    "MY_NGINX_SERVICE_HOST": "<my-nginx>",
    "MY_NGINX_SERVICE_PORT": "80",
    "MY_NGINX_PORT": "tcp://<my-nginx>:80",
    "MY_NGINX_PORT_80_TCP": "tcp://<my-nginx>:80",
    "MY_NGINX_PORT_80_TCP_PROTO": "tcp",
    "MY_NGINX_PORT_80_TCP_PORT": "80",
    "MY_NGINX_PORT_80_TCP_ADDR": "<my-nginx>",
    "KUBERNETES_SERVICE_HOST": "10.0.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.0.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.0.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.0.0.1",
}


def test_env_test_pod(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`env --pod zones/test-pod.yaml` renders the shipped test Pod's whole environment."""
    state = str(tmp_path / "state")
    code, out, err = cli(["env", "--pod", str(SHIPPED / "test-pod.yaml"), "--state", state], capsys)
    assert (code, err) == (0, "")
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert {k: env[k] for k in ("APP_LOG_LEVEL", "APP_GREETING", "DB_PASSWORD", "POD_NAME")} == {
        "APP_LOG_LEVEL": "info",
        "APP_GREETING": "hello",
        "DB_PASSWORD": "s3cr3t",
        "POD_NAME": "busybox",
    }
    assert env["NGINX_URL"] == f"http://{env['MY_NGINX_SERVICE_HOST']}:80/"
