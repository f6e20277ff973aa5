"""The registry built from a zones directory: namespaces, built-in services, duplicates, endpoints as the
endpoints controller derives them, workload Pods, pod IPs, service types and dual stack."""

from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING

import pytest

from clusterdns.registry import Config, Registry

if TYPE_CHECKING:
    from conftest import Load, WriteZones

DUAL_STACK = Config(service_cidrs=("10.0.0.0/16", "fd00::/108"))


def problems(registry: Registry) -> list[str]:
    return [str(p) for p in registry.problems]


def endpoints(registry: Registry, namespace: str, name: str) -> list[str]:
    """A Service's endpoints as `IP port,port READY [hostname] [pod]` lines, sorted by IP."""
    out = []
    for e in registry.endpoints[(namespace, name)]:
        ports = ",".join(f"{p.name or '-'}={p.port}/{p.protocol}" for p in e.ports)
        words = [e.ip, ports, "ready" if e.ready else "not-ready"]
        if e.hostname:
            words.append(f"hostname={e.hostname}")
        if e.pod:
            words.append(f"pod={e.pod}")
        out.append(" ".join(words))
    return sorted(out)


def service_line(registry: Registry, namespace: str, name: str) -> str:
    """`TYPE CLUSTER-IPS PORTS` of a Service, ports as name:port/proto->target[:nodePort]."""
    s = registry.services[(namespace, name)]
    ports = ",".join(
        f"{p.name or '-'}:{p.port}/{p.protocol}->{p.target_port}" + (f":{p.node_port}" if p.node_port else "")
        for p in s.ports
    )
    return f"{s.type} {','.join(s.cluster_ips) or s.cluster_ip or '-'} {ports or '-'}"


# --- namespaces ---------------------------------------------------------------------------------------


def test_namespaces(write_zones: WriteZones, load: Load) -> None:
    """Namespaces exist when declared or when any object lives in them; the three system ones always do."""
    write_zones(
        {
            "ns.yaml": """
                apiVersion: v1
                kind: Namespace
                metadata:
                  name: team
                  labels:
                    owner: me
                """,
            "objs.yaml": """
                kind: ConfigMap
                metadata:
                  name: cm
                  namespace: cfg
                data:
                  a: b
                ---
                kind: Service
                metadata:
                  name: web
                  namespace: shop
                spec:
                  ports:
                  - port: 80
                ---
                apiVersion: networking.k8s.io/v1
                kind: Ingress
                metadata:
                  name: web
                  namespace: ingress-only
                """,
        }
    )
    registry = load()
    assert problems(registry) == []
    assert list(registry.namespaces) == ["cfg", "default", "kube-public", "kube-system", "shop", "team"]
    assert registry.namespaces["team"].labels == {"owner": "me"}


def test_system_namespaces_when_empty(write_zones: WriteZones, load: Load) -> None:
    """An empty zones directory still has default, kube-public and kube-system."""
    write_zones({})
    assert list(load().namespaces) == ["default", "kube-public", "kube-system"]


# --- built-in services --------------------------------------------------------------------------------


def test_builtin_services(write_zones: WriteZones, load: Load) -> None:
    """default/kubernetes is .1 with https 443/TCP; kube-system/kube-dns is .10 with dns, dns-tcp, metrics."""
    write_zones({})
    registry = load()
    assert [f"{ns}/{name}" for ns, name in registry.services] == ["default/kubernetes", "kube-system/kube-dns"]
    kubernetes = registry.services[("default", "kubernetes")]
    assert (kubernetes.type, kubernetes.cluster_ips) == ("ClusterIP", ("10.0.0.1",))
    assert [(p.name, p.port, p.protocol) for p in kubernetes.ports] == [("https", 443, "TCP")]
    dns = registry.services[("kube-system", "kube-dns")]
    assert (dns.type, dns.cluster_ips) == ("ClusterIP", ("10.0.0.10",))
    assert [(p.name, p.port, p.protocol) for p in dns.ports] == [
        ("dns", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
        ("metrics", 9153, "TCP"),
    ]


def test_builtin_services_follow_the_service_cidr(write_zones: WriteZones, load: Load) -> None:
    """The built-in services take the first and tenth address of the (first) service CIDR."""
    write_zones({})
    registry = load(config=Config(service_cidrs=("10.96.0.0/12", "fd00::/108")))
    assert registry.services[("default", "kubernetes")].cluster_ips == ("10.96.0.1",)
    assert registry.services[("kube-system", "kube-dns")].cluster_ips == ("10.96.0.10",)


def test_builtin_replaced_by_manifest(write_zones: WriteZones, load: Load) -> None:
    """A manifest of the same namespace/name replaces a built-in service; the other built-in stays."""
    write_zones(
        {
            "dns.yaml": """
                apiVersion: v1
                kind: Service
                metadata:
                  name: kube-dns
                  namespace: kube-system
                spec:
                  clusterIP: 10.0.0.10
                  selector:
                    k8s-app: coredns
                  ports:
                  - name: dns
                    port: 53
                    protocol: UDP
                """
        }
    )
    registry = load()
    assert problems(registry) == []
    assert service_line(registry, "kube-system", "kube-dns") == "ClusterIP 10.0.0.10 dns:53/UDP->53"
    assert registry.services[("kube-system", "kube-dns")].selector == {"k8s-app": "coredns"}
    assert str(registry.services[("kube-system", "kube-dns")].source) == "zones/dns.yaml:1"
    assert service_line(registry, "default", "kubernetes") == "ClusterIP 10.0.0.1 https:443/TCP->6443"


# --- duplicates ---------------------------------------------------------------------------------------


def test_duplicate_objects_first_wins(write_zones: WriteZones, load: Load) -> None:
    """The first of two objects with the same kind, namespace and name is used; the problem names both."""
    write_zones(
        {
            "a.yaml": """
                kind: Service
                metadata:
                  name: web
                spec:
                  ports:
                  - port: 80
                """,
            "b.yaml": """
                kind: ConfigMap
                metadata:
                  name: web
                ---
                kind: Service
                metadata:
                  name: web
                spec:
                  ports:
                  - port: 8080
                ---
                kind: Service
                metadata:
                  name: web
                  namespace: other
                spec:
                  ports:
                  - port: 8080
                """,
        }
    )
    registry = load()
    assert problems(registry) == [
        "zones/b.yaml:5: Service default/web: duplicate object; the one at zones/a.yaml:1 is used"
    ]
    assert [p.port for p in registry.services[("default", "web")].ports] == [80]
    assert [p.port for p in registry.services[("other", "web")].ports] == [8080]
    assert ("default", "web") in registry.config_maps


def test_duplicate_pod_name_from_workload(write_zones: WriteZones, load: Load) -> None:
    """A Pod manifest and a StatefulSet replica of the same name: the Pod manifest (first) is used."""
    write_zones(
        {
            "a.yaml": """
                apiVersion: apps/v1
                kind: StatefulSet
                metadata:
                  name: db
                spec:
                  replicas: 2
                  selector:
                    matchLabels:
                      app: db
                  template:
                    metadata:
                      labels:
                        app: db
                    spec:
                      containers:
                      - name: db
                ---
                apiVersion: v1
                kind: Pod
                metadata:
                  name: db-1
                spec:
                  containers:
                  - name: db
                status:
                  podIP: 10.244.0.99
                """
        }
    )
    registry = load()
    assert problems(registry) == [
        "zones/a.yaml:1: Pod default/db-1: duplicate Pod name; the one at zones/a.yaml:18 is used"
    ]
    assert registry.pods[("default", "db-1")].ips == ("10.244.0.99",)
    assert registry.pods[("default", "db-1")].owner == ""


# --- endpoints ----------------------------------------------------------------------------------------

WEB_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
  - name: metrics
    port: 9000
    targetPort: 9100
"""


READY = 'conditions:\n- {type: Ready, status: "True"}'
NOT_READY = 'conditions:\n- {type: Ready, status: "False"}'
HTTP_8080 = "- name: http\n  containerPort: 8080"


def pod(
    name: str, ip: str, labels: str = "app: web", status: str = READY, spec: str = "", ports: str = HTTP_8080
) -> str:
    """A Pod document (`---` first) with a stated IP; `status`, `spec` and `ports` are YAML blocks added to
    its status, its spec and its container's ports."""
    return (
        "---\n"
        "apiVersion: v1\n"
        "kind: Pod\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  labels: {{{labels}}}\n"
        "spec:\n"
        f"{textwrap.indent(spec, '  ')}\n"
        "  containers:\n"
        "  - name: c\n"
        "    ports:\n"
        f"{textwrap.indent(ports, '    ')}\n"
        "status:\n"
        f"  podIP: {ip}\n"
        f"{textwrap.indent(status, '  ')}\n"
    )


ENDPOINT_CASES = [
    pytest.param(
        pod("a", "10.244.1.1"),
        ["10.244.1.1 http=8080/TCP,metrics=9100/TCP ready pod=a"],
        id="ready pod, named and numeric targetPort",
    ),
    pytest.param(
        pod("a", "10.244.1.1", status=NOT_READY),
        ["10.244.1.1 http=8080/TCP,metrics=9100/TCP not-ready pod=a"],
        id="Ready condition False",
    ),
    pytest.param(
        pod("a", "10.244.1.1", labels="app: web, tier: front"),
        ["10.244.1.1 http=8080/TCP,metrics=9100/TCP ready pod=a"],
        id="extra labels still match",
    ),
    pytest.param(pod("a", "10.244.1.1", labels="app: db"), [], id="other label value"),
    pytest.param(pod("a", "10.244.1.1", labels="tier: web"), [], id="label missing"),
    pytest.param(
        pod("a", "10.244.1.1", spec="hostname: h\nsubdomain: web"),
        ["10.244.1.1 http=8080/TCP,metrics=9100/TCP ready hostname=h pod=a"],
        id="hostname when subdomain is the service name",
    ),
    pytest.param(
        pod("a", "10.244.1.1", spec="hostname: h\nsubdomain: other"),
        ["10.244.1.1 http=8080/TCP,metrics=9100/TCP ready pod=a"],
        id="no hostname when subdomain is another name",
    ),
    pytest.param(
        pod("a", "10.244.1.1", spec="hostname: h"),
        ["10.244.1.1 http=8080/TCP,metrics=9100/TCP ready pod=a"],
        id="no hostname without subdomain",
    ),
    pytest.param(
        pod("a", "10.244.1.1") + pod("b", "10.244.1.2", ports="- name: http\n  containerPort: 9090"),
        [
            "10.244.1.1 http=8080/TCP,metrics=9100/TCP ready pod=a",
            "10.244.1.2 http=9090/TCP,metrics=9100/TCP ready pod=b",
        ],
        id="named targetPort resolved per Pod",
    ),
    pytest.param(
        pod("a", "10.244.1.1", ports="- name: web\n  containerPort: 8080"),
        ["10.244.1.1 metrics=9100/TCP ready pod=a"],
        id="named port missing leaves that port out",
    ),
    pytest.param(
        pod("a", "10.244.1.1", ports="- name: http\n  containerPort: 8080\n  protocol: UDP"),
        ["10.244.1.1 metrics=9100/TCP ready pod=a"],
        id="named port of another protocol does not resolve",
    ),
]


@pytest.mark.parametrize(("pods", "expected"), ENDPOINT_CASES)
def test_selector_endpoints(write_zones: WriteZones, load: Load, pods: str, expected: list[str]) -> None:
    """A Service with a selector gets the matching Pods of its namespace as the endpoints controller does."""
    write_zones({"a.yaml": WEB_SERVICE + pods})
    registry = load()
    assert problems(registry) == []
    assert endpoints(registry, "default", "web") == expected


def test_pod_missing_named_port_excluded(write_zones: WriteZones, load: Load) -> None:
    """With a single named targetPort, a Pod lacking that port is not an endpoint at all."""
    service = """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          selector:
            app: web
          ports:
          - port: 80
            targetPort: http
        """
    write_zones(
        {
            "a.yaml": textwrap.dedent(service)
            + pod("has", "10.244.1.1")
            + pod("lacks", "10.244.1.2", ports="- name: https\n  containerPort: 8443")
        }
    )
    registry = load()
    assert problems(registry) == []
    assert endpoints(registry, "default", "web") == ["10.244.1.1 -=8080/TCP ready pod=has"]


def test_selector_same_namespace_only(write_zones: WriteZones, load: Load) -> None:
    """Only Pods of the Service's own namespace are selected."""
    other = pod("b", "10.244.1.2").replace("  name: b\n", "  name: b\n  namespace: dev\n")
    write_zones({"a.yaml": WEB_SERVICE + pod("a", "10.244.1.1") + other})
    registry = load()
    assert problems(registry) == []
    assert [f"{ns}/{name}" for ns, name in registry.pods] == ["default/a", "dev/b"]
    assert endpoints(registry, "default", "web") == ["10.244.1.1 http=8080/TCP,metrics=9100/TCP ready pod=a"]


@pytest.mark.parametrize(
    ("status", "publish", "expected"),
    [
        (READY, "false", "ready"),
        (NOT_READY, "false", "not-ready"),
        (NOT_READY, "true", "ready"),
        ("phase: Pending", "false", "not-ready"),
        ("phase: Pending", "true", "ready"),
        ("phase: Running", "false", "ready"),
        ("", "false", "ready"),
    ],
)
def test_readiness(write_zones: WriteZones, load: Load, status: str, publish: str, expected: str) -> None:
    """An endpoint is ready when its Pod's Ready condition is True or the Service publishes not-ready addresses."""
    service = WEB_SERVICE.replace("spec:\n", f"spec:\n  publishNotReadyAddresses: {publish}\n")
    write_zones({"a.yaml": service + pod("a", "10.244.1.1", status=status)})
    registry = load()
    assert problems(registry) == []
    assert endpoints(registry, "default", "web") == [f"10.244.1.1 http=8080/TCP,metrics=9100/TCP {expected} pod=a"]


def test_finished_pods_are_not_endpoints(write_zones: WriteZones, load: Load) -> None:
    """Succeeded and Failed Pods are not endpoints."""
    docs = WEB_SERVICE
    for name, ip, phase in (
        ("ok", "10.244.1.1", "Running"),
        ("done", "10.244.1.2", "Succeeded"),
        ("dead", "10.244.1.3", "Failed"),
    ):
        docs += pod(name, ip, status=f"phase: {phase}")
    write_zones({"a.yaml": docs})
    registry = load()
    assert problems(registry) == []
    assert endpoints(registry, "default", "web") == ["10.244.1.1 http=8080/TCP,metrics=9100/TCP ready pod=ok"]


def test_endpoints_objects(write_zones: WriteZones, load: Load) -> None:
    """A Service without a selector takes Endpoints objects: addresses ready, notReadyAddresses not."""
    write_zones(
        {
            "a.yaml": """
                apiVersion: v1
                kind: Service
                metadata:
                  name: db
                spec:
                  ports:
                  - name: sql
                    port: 5432
                ---
                apiVersion: v1
                kind: Endpoints
                metadata:
                  name: db
                subsets:
                - addresses:
                  - ip: 192.0.2.1
                    hostname: primary
                  notReadyAddresses:
                  - ip: 192.0.2.2
                  ports:
                  - name: sql
                    port: 15432
                - addresses:
                  - ip: 192.0.2.3
                  ports:
                  - name: sql
                    port: 25432
                """
        }
    )
    registry = load()
    assert problems(registry) == []
    assert endpoints(registry, "default", "db") == [
        "192.0.2.1 sql=15432/TCP ready hostname=primary",
        "192.0.2.2 sql=15432/TCP not-ready",
        "192.0.2.3 sql=25432/TCP ready",
    ]


def test_endpoint_slices(write_zones: WriteZones, load: Load) -> None:
    """EndpointSlices labelled kubernetes.io/service-name feed that Service, ready unless conditions.ready is false."""
    write_zones(
        {
            "a.yaml": """
                apiVersion: v1
                kind: Service
                metadata:
                  name: api
                spec:
                  ports:
                  - name: http
                    port: 80
                ---
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata:
                  name: api-abc12
                  labels:
                    kubernetes.io/service-name: api
                addressType: IPv4
                ports:
                - name: http
                  port: 8080
                  protocol: TCP
                endpoints:
                - addresses: ["192.0.2.10"]
                - addresses: ["192.0.2.11"]
                  conditions:
                    ready: false
                - addresses: ["192.0.2.12"]
                  conditions:
                    ready: true
                  hostname: api-2
                ---
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata:
                  name: other-abc12
                  labels:
                    kubernetes.io/service-name: other
                addressType: IPv4
                endpoints:
                - addresses: ["192.0.2.99"]
                """
        }
    )
    registry = load()
    assert problems(registry) == []
    assert endpoints(registry, "default", "api") == [
        "192.0.2.10 http=8080/TCP ready",
        "192.0.2.11 http=8080/TCP not-ready",
        "192.0.2.12 http=8080/TCP ready hostname=api-2",
    ]


def test_selector_service_ignores_endpoints_objects(write_zones: WriteZones, load: Load) -> None:
    """A Service with a selector gets its endpoints from Pods only, not from an Endpoints object."""
    endpoints_object = """
        ---
        apiVersion: v1
        kind: Endpoints
        metadata:
          name: web
        subsets:
        - addresses:
          - ip: 192.0.2.1
          ports:
          - name: http
            port: 80
        """
    write_zones({"a.yaml": WEB_SERVICE + pod("a", "10.244.1.1") + textwrap.dedent(endpoints_object)})
    registry = load()
    assert problems(registry) == []
    assert endpoints(registry, "default", "web") == ["10.244.1.1 http=8080/TCP,metrics=9100/TCP ready pod=a"]


# --- workloads ----------------------------------------------------------------------------------------


def workload(kind: str, name: str, replicas: int, selector: str, labels: str, extra: str = "") -> str:
    return textwrap.dedent(
        """
        ---
        apiVersion: apps/v1
        kind: {kind}
        metadata:
          name: {name}
        spec:
          replicas: {replicas}
        {extra}
          selector:
        {selector}
          template:
            metadata:
              labels: {{{labels}}}
            spec:
              containers:
              - name: c
                ports:
                - name: http
                  containerPort: 8080
        """
    ).format(
        kind=kind,
        name=name,
        replicas=replicas,
        extra=textwrap.indent(extra, "  "),
        selector=textwrap.indent(selector, "    "),
        labels=labels,
    )


def test_deployment_pods(write_zones: WriteZones, load: Load) -> None:
    """A Deployment runs N ready Pods `<deployment>-<hash>-<5 chars>` labelled with pod-template-hash."""
    write_zones({"a.yaml": workload("Deployment", "web", 3, "matchLabels: {app: web}", "app: web, tier: front")})
    registry = load()
    assert problems(registry) == []
    pods = registry.pods_in("default")
    assert len(pods) == 3
    hashes = {p.labels["pod-template-hash"] for p in pods}
    assert len(hashes) == 1
    (template_hash,) = hashes
    assert re.fullmatch(r"[bcdfghjklmnpqrstvwxz2456789]{1,10}", template_hash)
    for p in pods:
        assert re.fullmatch(rf"web-{template_hash}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", p.name)
        assert dict(p.labels) == {"app": "web", "tier": "front", "pod-template-hash": template_hash}
        assert (p.ready, p.phase, p.owner) == (True, "Running", "Deployment/web")
        assert p.ip.startswith("10.244.")
    assert len({p.name for p in pods}) == 3
    assert len({p.ip for p in pods}) == 3


def test_template_hash_follows_the_template(write_zones: WriteZones, load: Load) -> None:
    """The pod-template-hash changes with the pod template and not with the replica count."""

    def hash_of(replicas: int, image: str) -> str:
        text = workload("Deployment", "web", replicas, "matchLabels: {app: web}", "app: web")
        write_zones({"a.yaml": text.replace("- name: c\n", f"- name: c\n        image: {image}\n")})
        (first, *_) = load().pods_in("default")
        return first.labels["pod-template-hash"]

    assert hash_of(1, "nginx:1") == hash_of(3, "nginx:1")
    assert hash_of(1, "nginx:1") != hash_of(1, "nginx:2")


def test_replicaset_pods(write_zones: WriteZones, load: Load) -> None:
    """A ReplicaSet's Pods are `<replicaset>-<5 chars>`, without a pod-template-hash label."""
    write_zones({"a.yaml": workload("ReplicaSet", "cache", 2, "matchLabels: {app: cache}", "app: cache")})
    registry = load()
    assert problems(registry) == []
    pods = registry.pods_in("default")
    assert len(pods) == 2
    for p in pods:
        assert re.fullmatch(r"cache-[bcdfghjklmnpqrstvwxz2456789]{5}", p.name)
        assert dict(p.labels) == {"app": "cache"}
        assert p.owner == "ReplicaSet/cache"


def test_statefulset_pods(write_zones: WriteZones, load: Load) -> None:
    """A StatefulSet runs `<name>-0..N-1` with hostname = Pod name and subdomain = serviceName."""
    headless = """
        apiVersion: v1
        kind: Service
        metadata:
          name: db
        spec:
          clusterIP: None
          selector:
            app: db
          ports:
          - name: http
            port: 80
            targetPort: http
        """
    write_zones(
        {
            "a.yaml": textwrap.dedent(headless)
            + workload("StatefulSet", "pg", 3, "matchLabels: {app: db}", "app: db", extra="serviceName: db")
        }
    )
    registry = load()
    assert problems(registry) == []
    pods = registry.pods_in("default")
    assert [(p.name, p.spec.hostname, p.spec.subdomain, p.owner) for p in pods] == [
        ("pg-0", "pg-0", "db", "StatefulSet/pg"),
        ("pg-1", "pg-1", "db", "StatefulSet/pg"),
        ("pg-2", "pg-2", "db", "StatefulSet/pg"),
    ]
    by_ip = {p.ip: p.name for p in pods}
    assert sorted(e.split(" ", 1)[1] for e in endpoints(registry, "default", "db")) == [
        "http=8080/TCP ready hostname=pg-0 pod=pg-0",
        "http=8080/TCP ready hostname=pg-1 pod=pg-1",
        "http=8080/TCP ready hostname=pg-2 pod=pg-2",
    ]
    assert sorted(by_ip.values()) == ["pg-0", "pg-1", "pg-2"]
    assert registry.services[("default", "db")].cluster_ip == "None"


def test_zero_replicas(write_zones: WriteZones, load: Load) -> None:
    """A workload with replicas: 0 runs no Pods; without replicas it runs one."""
    write_zones(
        {
            "a.yaml": workload("Deployment", "idle", 0, "matchLabels: {app: idle}", "app: idle")
            + workload("Deployment", "one", 1, "matchLabels: {app: one}", "app: one").replace("  replicas: 1\n", "")
        }
    )
    registry = load()
    assert problems(registry) == []
    assert [p.owner for p in registry.pods_in(None)] == ["Deployment/one"]


SELECTOR_CASES = [
    pytest.param("matchExpressions:\n- {key: app, operator: In, values: [web, api]}", "app: web", None, id="In"),
    pytest.param(
        "matchExpressions:\n- {key: app, operator: In, values: [api]}",
        "app: web",
        "spec.template.metadata.labels: do not match spec.selector (app in (api))",
        id="In fails",
    ),
    pytest.param(
        "matchExpressions:\n- {key: tier, operator: NotIn, values: [back]}", "app: web, tier: front", None, id="NotIn"
    ),
    pytest.param(
        "matchExpressions:\n- {key: tier, operator: NotIn, values: [back]}", "app: web", None, id="NotIn key absent"
    ),
    pytest.param(
        "matchExpressions:\n- {key: tier, operator: NotIn, values: [back]}",
        "app: web, tier: back",
        "spec.template.metadata.labels: do not match spec.selector (tier notin (back))",
        id="NotIn fails",
    ),
    pytest.param("matchExpressions:\n- {key: app, operator: Exists}", "app: web", None, id="Exists"),
    pytest.param(
        "matchExpressions:\n- {key: track, operator: Exists}",
        "app: web",
        "spec.template.metadata.labels: do not match spec.selector (track)",
        id="Exists fails",
    ),
    pytest.param("matchExpressions:\n- {key: legacy, operator: DoesNotExist}", "app: web", None, id="DoesNotExist"),
    pytest.param(
        "matchExpressions:\n- {key: legacy, operator: DoesNotExist}",
        "app: web, legacy: 'yes'",
        "spec.template.metadata.labels: do not match spec.selector (!legacy)",
        id="DoesNotExist fails",
    ),
    pytest.param(
        "matchLabels: {app: web}\nmatchExpressions:\n- {key: tier, operator: In, values: [front]}",
        "app: web, tier: front",
        None,
        id="matchLabels and matchExpressions",
    ),
    pytest.param(
        "matchLabels: {app: web}\nmatchExpressions:\n- {key: tier, operator: In, values: [front]}",
        "app: web",
        "spec.template.metadata.labels: do not match spec.selector (app=web,tier in (front))",
        id="all requirements must hold",
    ),
]


@pytest.mark.parametrize(("selector", "labels", "problem"), SELECTOR_CASES)
def test_workload_selector(
    write_zones: WriteZones, load: Load, selector: str, labels: str, problem: str | None
) -> None:
    """Workload selectors (matchLabels, In, NotIn, Exists, DoesNotExist) must select the template's labels."""
    write_zones({"a.yaml": workload("ReplicaSet", "rs", 1, selector, labels)})
    registry = load()
    if problem is None:
        assert problems(registry) == []
        assert [p.owner for p in registry.pods_in("default")] == ["ReplicaSet/rs"]
    else:
        assert [f"{p.field}: {p.message}" for p in registry.problems] == [problem]
        assert registry.pods == {}


# --- pod IPs ------------------------------------------------------------------------------------------


def test_pod_ips(write_zones: WriteZones, load: Load) -> None:
    """Pods get IPs from the pod CIDR unless the manifest gives status.podIP, which is kept."""
    write_zones(
        {
            "a.yaml": """
                apiVersion: v1
                kind: Pod
                metadata:
                  name: given
                spec:
                  containers:
                  - name: c
                status:
                  podIP: 10.244.7.7
                ---
                apiVersion: v1
                kind: Pod
                metadata:
                  name: allocated
                spec:
                  containers:
                  - name: c
                """
        }
    )
    registry = load(config=Config(pod_cidrs=("10.244.0.0/16",)))
    assert problems(registry) == []
    assert registry.pods[("default", "given")].ips == ("10.244.7.7",)
    assert registry.pods[("default", "allocated")].ip.startswith("10.244.")
    assert registry.pods[("default", "allocated")].ip != "10.244.7.7"


def test_pod_cidr_flag(write_zones: WriteZones, load: Load) -> None:
    """Allocated pod IPs come from the configured pod CIDR."""
    write_zones({"a.yaml": workload("ReplicaSet", "rs", 4, "matchLabels: {app: a}", "app: a")})
    registry = load(config=Config(pod_cidrs=("192.168.100.0/24",)))
    assert problems(registry) == []
    ips = [p.ip for p in registry.pods_in(None)]
    assert len(set(ips)) == 4
    assert all(re.fullmatch(r"192\.168\.100\.\d+", ip) for ip in ips)


def test_pod_ip_given_outside_pod_cidr(write_zones: WriteZones, load: Load) -> None:
    """A Pod manifest's status.podIP is used as given, even outside the pod CIDR."""
    write_zones(
        {
            "a.yaml": """
                apiVersion: v1
                kind: Pod
                metadata:
                  name: docker
                spec:
                  containers:
                  - name: c
                status:
                  podIP: 172.17.0.5
                """
        }
    )
    registry = load()
    assert problems(registry) == []
    assert registry.pods[("default", "docker")].ips == ("172.17.0.5",)


# --- service types ------------------------------------------------------------------------------------

SERVICE_TYPES = """
apiVersion: v1
kind: Service
metadata:
  name: cip
spec:
  clusterIP: 10.0.1.1
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: np
spec:
  type: NodePort
  clusterIP: 10.0.1.2
  ports:
  - name: http
    port: 8080
    targetPort: 80
    nodePort: 30080
  - name: dns
    port: 53
    protocol: UDP
    nodePort: 30053
---
apiVersion: v1
kind: Service
metadata:
  name: lb
spec:
  type: LoadBalancer
  clusterIP: 10.0.1.3
  externalIPs: [198.51.100.1]
  ports:
  - port: 443
    protocol: SCTP
    nodePort: 30443
status:
  loadBalancer:
    ingress:
    - ip: 203.0.113.5
    - hostname: lb.example.com
---
apiVersion: v1
kind: Service
metadata:
  name: ext
spec:
  type: ExternalName
  externalName: my.database.example.com
---
apiVersion: v1
kind: Service
metadata:
  name: headless
spec:
  clusterIP: None
  selector:
    app: db
"""


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("cip", "ClusterIP 10.0.1.1 -:80/TCP->8080"),
        ("np", "NodePort 10.0.1.2 http:8080/TCP->80:30080,dns:53/UDP->53:30053"),
        ("lb", "LoadBalancer 10.0.1.3 -:443/SCTP->443:30443"),
        ("ext", "ExternalName - -"),
        ("headless", "ClusterIP None -"),
    ],
)
def test_service_types(write_zones: WriteZones, load: Load, name: str, line: str) -> None:
    """ClusterIP, NodePort, LoadBalancer, ExternalName and headless Services, with their fields."""
    write_zones({"a.yaml": SERVICE_TYPES})
    registry = load()
    assert problems(registry) == []
    assert service_line(registry, "default", name) == line


def test_service_type_fields(write_zones: WriteZones, load: Load) -> None:
    """External names, external IPs and load-balancer ingress are kept; only real cluster IPs count."""
    write_zones({"a.yaml": SERVICE_TYPES})
    registry = load()
    ext, lb, headless = (registry.services[("default", n)] for n in ("ext", "lb", "headless"))
    assert (ext.external_name, ext.cluster_ip, ext.has_cluster_ip, ext.selector) == (
        "my.database.example.com",
        "",
        False,
        None,
    )
    assert (lb.external_ips, lb.load_balancer_ingress) == (("198.51.100.1",), ("203.0.113.5", "lb.example.com"))
    assert (headless.headless, headless.has_cluster_ip, headless.ports) == (True, False, ())
    assert registry.endpoints[("default", "ext")] == ()


def test_protocol_defaults_to_tcp_and_target_to_port(write_zones: WriteZones, load: Load) -> None:
    """protocol defaults to TCP, targetPort to the port; a numeric string targetPort is a number."""
    write_zones(
        {
            "a.yaml": """
                apiVersion: v1
                kind: Service
                metadata:
                  name: web
                spec:
                  ports:
                  - name: a
                    port: 80
                  - name: b
                    port: 81
                    targetPort: "8081"
                  - name: c
                    port: 82
                    targetPort: http-alt
                """
        }
    )
    registry = load()
    assert problems(registry) == []
    assert [(p.protocol, p.target_port) for p in registry.services[("default", "web")].ports] == [
        ("TCP", 80),
        ("TCP", 8081),
        ("TCP", "http-alt"),
    ]


# --- dual stack ---------------------------------------------------------------------------------------

DUAL_STACK_SERVICES = """
apiVersion: v1
kind: Service
metadata:
  name: single
spec:
  ports:
  - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: prefer
spec:
  ipFamilyPolicy: PreferDualStack
  ports:
  - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: require
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  ports:
  - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: v6
spec:
  ipFamilies: [IPv6]
  ports:
  - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: explicit
spec:
  clusterIPs: [10.0.7.7, "fd00::7"]
  ports:
  - port: 80
"""


def families(registry: Registry) -> dict[str, str]:
    """Each zone Service's `policy families` and whether each cluster IP is of the family it says."""
    out = {}
    for (_, name), s in registry.services.items():
        if s.source and s.source.line:
            assert [("IPv6" if ":" in ip else "IPv4") for ip in s.cluster_ips] == list(s.ip_families)
            out[name] = f"{s.ip_family_policy} {','.join(s.ip_families)}"
    return out


EXPECTED_FAMILIES = {
    "single": "SingleStack IPv4",
    "prefer": "PreferDualStack IPv4,IPv6",
    "require": "RequireDualStack IPv6,IPv4",
    "v6": "SingleStack IPv6",
    "explicit": "RequireDualStack IPv4,IPv6",
}


def test_dual_stack_flag(write_zones: WriteZones, load: Load) -> None:
    """With an IPv4 and an IPv6 service CIDR, Services get one or two families by their policy."""
    write_zones({"a.yaml": DUAL_STACK_SERVICES})
    registry = load(config=DUAL_STACK)
    assert problems(registry) == []
    assert families(registry) == EXPECTED_FAMILIES
    assert registry.services[("default", "explicit")].cluster_ips == ("10.0.7.7", "fd00::7")
    assert all(ip.startswith("fd00::") for ip in registry.services[("default", "v6")].cluster_ips)


def test_dual_stack_service_cidr_object(write_zones: WriteZones, load: Load) -> None:
    """A ServiceCIDR object adds an IPv6 range, as --service-cidr does."""
    service_cidr = """
        ---
        apiVersion: networking.k8s.io/v1
        kind: ServiceCIDR
        metadata:
          name: v6
        spec:
          cidrs: ["fd00::/108"]
        """
    write_zones({"a.yaml": DUAL_STACK_SERVICES + textwrap.dedent(service_cidr)})
    registry = load()
    assert problems(registry) == []
    assert registry.service_cidrs == ("10.0.0.0/16", "fd00::/108")
    assert families(registry) == EXPECTED_FAMILIES


def test_single_stack_cluster(write_zones: WriteZones, load: Load) -> None:
    """On an IPv4-only cluster PreferDualStack falls back to IPv4; RequireDualStack and IPv6 are errors."""
    write_zones({"a.yaml": DUAL_STACK_SERVICES})
    registry = load()
    assert problems(registry) == [
        "zones/a.yaml:23: Service default/require: spec.ipFamilyPolicy: RequireDualStack needs a service CIDR "
        "of each IP family (add one with --service-cidr)",
        "zones/a.yaml:33: Service default/v6: spec.ipFamilies[0]: IPv6 is not served: no IPv6 service CIDR is "
        "configured",
        "zones/a.yaml:41: Service default/explicit: spec.ipFamilyPolicy: RequireDualStack needs a service CIDR "
        "of each IP family (add one with --service-cidr)",
    ]
    assert families(registry) == {"single": "SingleStack IPv4", "prefer": "PreferDualStack IPv4"}


def test_dual_stack_pods(write_zones: WriteZones, load: Load) -> None:
    """With an IPv4 and an IPv6 pod CIDR, Pods get an address of each; dual-stack Services list both."""
    write_zones(
        {
            "a.yaml": workload("ReplicaSet", "rs", 1, "matchLabels: {app: a}", "app: a")
            + textwrap.dedent(
                """
                ---
                apiVersion: v1
                kind: Service
                metadata:
                  name: a
                spec:
                  ipFamilyPolicy: PreferDualStack
                  selector:
                    app: a
                  ports:
                  - port: 80
                    targetPort: http
                """
            )
        }
    )
    registry = load(config=Config(service_cidrs=DUAL_STACK.service_cidrs, pod_cidrs=("10.244.0.0/16", "fd00:244::/64")))
    assert problems(registry) == []
    (only,) = registry.pods_in(None)
    assert [ip.split(".")[0].split(":")[0] for ip in only.ips] == ["10", "fd00"]
    assert sorted(e.ip for e in registry.endpoints[("default", "a")]) == sorted(only.ips)
