"""kubectl's views of the registry: get tables, -o yaml|json objects, describe service, ages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from clusterdns import kubectl
from clusterdns.allocate import Store
from clusterdns.kubectl import KubectlError, describe_service, get_objects, get_table, human_duration, resolve
from clusterdns.manifests import parse_text
from clusterdns.model import Service
from clusterdns.registry import Config, Registry, build

T0 = 1_700_000_000.0  # every object is first seen at T0 (2023-11-14T22:13:20Z)...
NOW = T0 + 300  # ...and is five minutes old when printed
CREATED = "2023-11-14T22:13:20Z"
CONFIG = Config(pod_cidrs=("10.244.0.0/16", "fd00:244::/64"))

# A namespace with every Service type but LoadBalancer (in `edge`, whose table is wider), dual-stack and
# IPv6 Services, Pods that are ready, not ready, pending and missing a named port, and selectorless
# Services with and without an Endpoints object.
SHOP = """\
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: v6}
spec: {cidrs: ["fd00:10::/108"]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: store}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: frontend}
  annotations:
    owner: web-team
    note: |
      line one
      line two
spec:
  clusterIP: 10.0.0.50
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.0.0.51
  selector: {app: api}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: metrics, port: 9090, nodePort: 30090}
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: edge}
spec:
  type: LoadBalancer
  clusterIP: 10.0.0.52
  externalIPs: [198.51.100.9]
  ports: [{port: 443, targetPort: 8443, nodePort: 31443}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.20}, {ip: 203.0.113.10}, {hostname: lb.example.com}]
---
apiVersion: v1
kind: Service
metadata: {name: pending, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.0.0.54
  ports: [{port: 80, nodePort: 30001}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: peers, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  type: ExternalName
  externalName: db.example.com
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: shop}
spec:
  ipFamilyPolicy: RequireDualStack
  clusterIPs: [10.0.0.53, "fd00:10::53"]
  selector: {app: web}
  externalIPs: [198.51.100.7]
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: v6, namespace: shop}
spec:
  ipFamilies: [IPv6]
  clusterIP: "fd00:10::60"
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: shop}
spec:
  clusterIP: 10.0.0.55
  selector: {app: web}
  ports: [{name: a, port: 80, targetPort: 8080}, {name: b, port: 81, targetPort: 8081}]
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: shop}
spec:
  clusterIP: 10.0.0.56
  ports: [{name: http, port: 80, targetPort: 9376}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual, namespace: shop}
subsets:
- addresses: [{ip: 192.0.2.42}]
  notReadyAddresses: [{ip: 192.0.2.43}]
  ports: [{name: http, port: 9376}]
---
apiVersion: v1
kind: Service
metadata: {name: orphan, namespace: shop}
spec:
  clusterIP: 10.0.0.57
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-a
  containers: [{name: app, image: nginx, ports: [{containerPort: 8080}]}]
status: {podIPs: [{ip: 10.244.1.1}, {ip: "fd00:244::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: app, image: nginx}, {name: sidecar, image: envoy}]
status: {podIPs: [{ip: 10.244.1.2}, {ip: "fd00:244::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-3, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: app, image: nginx}]
status:
  podIP: 10.244.1.3
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop, labels: {app: api}}
spec:
  containers: [{name: app, image: api, ports: [{name: http, containerPort: 8000}]}]
status: {podIP: 10.244.2.1}
---
apiVersion: v1
kind: Pod
metadata: {name: api-2, namespace: shop, labels: {app: api}}
spec:
  containers: [{name: app, image: api}]
status: {podIP: 10.244.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  containers: [{name: pg, image: postgres}]
status: {podIP: 10.244.3.1, phase: Pending}
"""

# One Service and one Pod, for -A tables (the built-in Services appear too).
TINY = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.0.0.50
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: app, image: nginx}]
status: {podIP: 10.244.1.1}
"""


def _build(tmp_path: Path, text: str) -> Registry:
    path = tmp_path / "a.yaml"
    path.write_text(text)
    registry = build([parse_text(path.read_text(), str(path))], CONFIG, Store(None), now=T0)
    assert registry.problems == ()
    return registry


@pytest.fixture
def shop(tmp_path: Path) -> Registry:
    return _build(tmp_path, SHOP)


@pytest.fixture
def tiny(tmp_path: Path) -> Registry:
    return _build(tmp_path, TINY)


def _lines(text: str) -> str:
    """Expected output; `$` ends a line whose trailing spaces kubectl prints (tabwriter pads the cell)."""
    return text.replace("$\n", "\n")


def test_public_api() -> None:
    """The module exports exactly its documented surface."""
    assert sorted(kubectl.__all__) == [
        "KubectlError",
        "RESOURCES",
        "describe_service",
        "get_objects",
        "get_table",
        "human_duration",
        "resolve",
    ]


@pytest.mark.parametrize(
    ("word", "resource"),
    [
        ("services", "services"),
        ("service", "services"),
        ("svc", "services"),
        ("SVC", "services"),
        ("endpoints", "endpoints"),
        ("ep", "endpoints"),
        ("pods", "pods"),
        ("pod", "pods"),
        ("po", "pods"),
        ("namespaces", "namespaces"),
        ("namespace", "namespaces"),
        ("ns", "namespaces"),
    ],
)
def test_resolve(word: str, resource: str) -> None:
    """Every kubectl alias resolves to its canonical resource, case-insensitively."""
    assert resolve(word) == resource


def test_resolve_unknown() -> None:
    """An unknown resource word fails with kubectl's message."""
    with pytest.raises(KubectlError, match=r'^error: the server doesn\'t have a resource type "foo"$'):
        resolve("foo")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "<invalid>"),
        (-2, "<invalid>"),
        (-1.5, "0s"),
        (-1, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (599, "9m59s"),
        (600, "10m"),
        (10_799, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 59 * 60 + 59, "3h59m"),
        (8 * 3600, "8h"),
        (48 * 3600 - 1, "47h"),
        (48 * 3600, "2d"),
        (2 * 86400 + 5 * 3600, "2d5h"),
        (8 * 86400 - 1, "7d23h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        ((3 * 365 + 20) * 86400, "3y20d"),
        (8 * 365 * 86400, "8y"),
        (10 * 365 * 86400, "10y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    """Ages follow apimachinery's HumanDuration, boundary by boundary."""
    assert human_duration(seconds) == text


SERVICES = """\
NAME      TYPE           CLUSTER-IP    EXTERNAL-IP      PORT(S)                       AGE
api       NodePort       10.0.0.51     <none>           80:30080/TCP,9090:30090/TCP   5m
db        ClusterIP      None          <none>           5432/TCP                      5m
dual      ClusterIP      10.0.0.53     198.51.100.7     80/TCP                        5m
ext       ExternalName   <none>        db.example.com   <none>                        5m
manual    ClusterIP      10.0.0.56     <none>           80/TCP                        5m
multi     ClusterIP      10.0.0.55     <none>           80/TCP,81/TCP                 5m
orphan    ClusterIP      10.0.0.57     <none>           80/TCP                        5m
peers     ClusterIP      None          <none>           <none>                        5m
pending   LoadBalancer   10.0.0.54     <pending>        80:30001/TCP                  5m
v6        ClusterIP      fd00:10::60   <none>           80/TCP                        5m
web       ClusterIP      10.0.0.50     <none>           80/TCP                        5m
"""

LOAD_BALANCER = """\
NAME   TYPE           CLUSTER-IP   EXTERNAL-IP                                             PORT(S)         AGE
lb     LoadBalancer   10.0.0.52    203.0.113.10,203.0.113.20,lb.example.com,198.51.100.9   443:31443/TCP   5m
"""

SERVICES_WIDE = """\
NAME   TYPE       CLUSTER-IP   EXTERNAL-IP   PORT(S)                       AGE   SELECTOR
api    NodePort   10.0.0.51    <none>        80:30080/TCP,9090:30090/TCP   5m    app=api
"""

SERVICE_NO_SELECTOR_WIDE = """\
NAME     TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE   SELECTOR
orphan   ClusterIP   10.0.0.57    <none>        80/TCP    5m    <none>
"""

# db and peers: only a not-ready (Pending) Pod, so subsets exist but list no ready address.
ENDPOINTS = """\
NAME     ENDPOINTS                                                     AGE
api      10.244.2.1:8000,10.244.2.1:9090,10.244.2.2:9090               5m
db                                                                     5m
dual     10.244.1.1:8080,10.244.1.2:8080                               5m
manual   192.0.2.42:9376                                               5m
multi    10.244.1.1:8080,10.244.1.2:8080,10.244.1.1:8081 + 1 more...   5m
peers                                                                  5m
v6       [fd00:244::1]:8080,[fd00:244::2]:8080                         5m
web      10.244.1.1:8080,10.244.1.2:8080                               5m
"""

PODS = """\
NAME    READY   STATUS    RESTARTS   AGE
api-1   1/1     Running   0          5m
api-2   1/1     Running   0          5m
db-0    0/1     Pending   0          5m
web-1   1/1     Running   0          5m
web-2   2/2     Running   0          5m
web-3   0/1     Running   0          5m
"""

PODS_WIDE = """\
NAME    READY   STATUS    RESTARTS   AGE   IP           NODE     NOMINATED NODE   READINESS GATES
web-1   1/1     Running   0          5m    10.244.1.1   node-a   <none>           <none>
"""

# Namespaces that were never declared have no first-seen time.
NAMESPACES = """\
NAME          STATUS   AGE
default       Active   <unknown>
edge          Active   <unknown>
kube-public   Active   <unknown>
kube-system   Active   <unknown>
shop          Active   5m
"""


@pytest.mark.parametrize(
    ("resource", "name", "namespace", "wide", "expected"),
    [
        ("svc", None, "shop", False, SERVICES),
        ("svc", None, "edge", False, LOAD_BALANCER),
        ("svc", "api", "shop", True, SERVICES_WIDE),
        ("svc", "orphan", "shop", True, SERVICE_NO_SELECTOR_WIDE),
        ("ep", None, "shop", False, ENDPOINTS),
        ("pods", None, "shop", False, PODS),
        ("po", "web-1", "shop", True, PODS_WIDE),
        ("ns", None, "shop", False, NAMESPACES),
        ("ns", None, None, True, NAMESPACES),
    ],
    ids=[
        "services",
        "load-balancer",
        "service-wide",
        "selectorless-wide",
        "endpoints",
        "pods",
        "pod-wide",
        "ns",
        "ns-all-wide",
    ],
)
def test_get_table(
    shop: Registry, resource: str, name: str | None, namespace: str | None, wide: bool, expected: str
) -> None:
    """`kubectl get` tables in one namespace: every column rule, aligned as kubectl's tabwriter does."""
    assert get_table(shop, resource, name, namespace, wide, NOW) == expected


SERVICES_ALL = """\
NAMESPACE     NAME         TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)                  AGE
default       kubernetes   ClusterIP   10.0.0.1     <none>        443/TCP                  5m
kube-system   kube-dns     ClusterIP   10.0.0.10    <none>        53/UDP,53/TCP,9153/TCP   5m
shop          web          ClusterIP   10.0.0.50    <none>        80/TCP                   5m
"""

ENDPOINTS_ALL = """\
NAMESPACE     NAME       ENDPOINTS         AGE
kube-system   kube-dns   <none>            5m
shop          web        10.244.1.1:8080   5m
"""

PODS_ALL_WIDE = """\
NAMESPACE   NAME    READY   STATUS    RESTARTS   AGE   IP           NODE     NOMINATED NODE   READINESS GATES
shop        web-1   1/1     Running   0          5m    10.244.1.1   <none>   <none>           <none>
"""

NAMESPACES_ALL = """\
NAME          STATUS   AGE
default       Active   <unknown>
kube-public   Active   <unknown>
kube-system   Active   <unknown>
shop          Active   <unknown>
"""


@pytest.mark.parametrize(
    ("resource", "wide", "expected"),
    [
        ("services", False, SERVICES_ALL),
        ("endpoints", False, ENDPOINTS_ALL),
        ("pods", True, PODS_ALL_WIDE),
        ("namespaces", False, NAMESPACES_ALL),
    ],
)
def test_get_table_all_namespaces(tiny: Registry, resource: str, wide: bool, expected: str) -> None:
    """-A adds a leading NAMESPACE column, except for cluster-scoped namespaces."""
    assert get_table(tiny, resource, None, None, wide, NOW) == expected


def test_get_table_ages(tiny: Registry) -> None:
    """AGE is measured from the first-seen time to the `now` passed in."""
    table = get_table(tiny, "svc", "web", "shop", False, T0 + 3 * 86400 + 4 * 3600)
    assert table.splitlines()[1].endswith("   3d4h")


@pytest.mark.parametrize(
    ("resource", "namespace", "message"),
    [
        ("pods", "empty", "No resources found in empty namespace.\n"),
        ("services", "empty", "No resources found in empty namespace.\n"),
        ("endpoints", "empty", "No resources found in empty namespace.\n"),
        ("pods", None, "No resources found\n"),
    ],
)
def test_get_table_nothing_found(tmp_path: Path, resource: str, namespace: str | None, message: str) -> None:
    """With nothing to list, get says so as kubectl does (per namespace, or plainly with -A)."""
    registry = _build(tmp_path, TINY.split("---")[0])
    assert get_table(registry, resource, None, namespace, False, NOW) == message


@pytest.mark.parametrize(
    ("resource", "name", "namespace", "message"),
    [
        ("svc", "nope", "shop", 'Error from server (NotFound): services "nope" not found'),
        ("svc", "web", "default", 'Error from server (NotFound): services "web" not found'),
        ("ep", "ext", "shop", 'Error from server (NotFound): endpoints "ext" not found'),
        ("ep", "orphan", "shop", 'Error from server (NotFound): endpoints "orphan" not found'),
        ("po", "nope", "shop", 'Error from server (NotFound): pods "nope" not found'),
        ("ns", "nope", None, 'Error from server (NotFound): namespaces "nope" not found'),
        ("svc", "web", None, "error: a resource cannot be retrieved by name across all namespaces"),
        ("foo", None, "shop", 'error: the server doesn\'t have a resource type "foo"'),
    ],
)
def test_get_errors(shop: Registry, resource: str, name: str | None, namespace: str | None, message: str) -> None:
    """Unknown names and resources fail with kubectl's messages, for tables and objects alike."""
    with pytest.raises(KubectlError) as table_error:
        get_table(shop, resource, name, namespace, False, NOW)
    with pytest.raises(KubectlError) as objects_error:
        get_objects(shop, resource, name, namespace)
    assert str(table_error.value) == str(objects_error.value) == message


def test_service_object(shop: Registry) -> None:
    """A NodePort Service as a v1 Service, with the fields the API server defaults."""
    assert get_objects(shop, "svc", "api", "shop") == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "namespace": "shop", "creationTimestamp": CREATED},
        "spec": {
            "clusterIP": "10.0.0.51",
            "clusterIPs": ["10.0.0.51"],
            "externalTrafficPolicy": "Cluster",
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [
                {"name": "http", "nodePort": 30080, "port": 80, "protocol": "TCP", "targetPort": "http"},
                {"name": "metrics", "nodePort": 30090, "port": 9090, "protocol": "TCP", "targetPort": 9090},
            ],
            "selector": {"app": "api"},
            "sessionAffinity": "None",
            "type": "NodePort",
        },
        "status": {"loadBalancer": {}},
    }


@pytest.mark.parametrize(
    ("namespace", "name", "spec", "status"),
    [
        (
            "edge",
            "lb",
            {
                "allocateLoadBalancerNodePorts": True,
                "clusterIP": "10.0.0.52",
                "externalIPs": ["198.51.100.9"],
                "type": "LoadBalancer",
            },
            {
                "loadBalancer": {
                    "ingress": [
                        {"ip": "203.0.113.20", "ipMode": "VIP"},
                        {"ip": "203.0.113.10", "ipMode": "VIP"},
                        {"hostname": "lb.example.com"},
                    ]
                }
            },
        ),
        (
            "shop",
            "ext",
            {"externalName": "db.example.com", "sessionAffinity": "None", "type": "ExternalName"},
            None,
        ),
        ("shop", "db", {"clusterIP": "None", "clusterIPs": ["None"], "ipFamilies": ["IPv4"]}, None),
        (
            "shop",
            "dual",
            {
                "clusterIPs": ["10.0.0.53", "fd00:10::53"],
                "ipFamilies": ["IPv4", "IPv6"],
                "ipFamilyPolicy": "RequireDualStack",
            },
            None,
        ),
    ],
)
def test_service_object_by_type(
    shop: Registry, namespace: str, name: str, spec: dict[str, object], status: dict[str, object] | None
) -> None:
    """Each Service type shows its own fields; ExternalName has no cluster IP or IP families."""
    obj = get_objects(shop, "service", name, namespace)
    assert {k: obj["spec"].get(k) for k in spec} == spec
    if status is not None:
        assert obj["status"] == status
    if name == "ext":
        assert not {"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "ports"} & obj["spec"].keys()


@pytest.mark.parametrize(
    "key",
    [
        ("shop", "web"),
        ("shop", "api"),
        ("edge", "lb"),
        ("shop", "pending"),
        ("shop", "ext"),
        ("shop", "dual"),
        ("shop", "v6"),
        ("shop", "manual"),
    ],
)
def test_service_yaml_round_trip(shop: Registry, key: tuple[str, str]) -> None:
    """A Service's YAML, parsed again as a manifest, gives back the same Service."""
    text = yaml.safe_dump(get_objects(shop, "svc", key[1], key[0]))
    parsed = parse_text(text, "round-trip.yaml")
    assert parsed.problems == ()
    (again,) = parsed.objects
    assert isinstance(again, Service)
    assert dataclasses.replace(again, source=None) == dataclasses.replace(shop.services[key], source=None)


def test_endpoints_object(shop: Registry) -> None:
    """v1 Endpoints: ready and not-ready addresses, sorted by IP; labels copied from the Service."""
    assert get_objects(shop, "ep", "web", "shop") == {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "creationTimestamp": CREATED,
            "labels": {"app": "web", "tier": "frontend"},
        },
        "subsets": [
            {
                "addresses": [
                    {
                        "ip": "10.244.1.1",
                        "nodeName": "node-a",
                        "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
                    },
                    {"ip": "10.244.1.2", "targetRef": {"kind": "Pod", "name": "web-2", "namespace": "shop"}},
                ],
                "notReadyAddresses": [
                    {"ip": "10.244.1.3", "targetRef": {"kind": "Pod", "name": "web-3", "namespace": "shop"}}
                ],
                "ports": [{"port": 8080, "protocol": "TCP"}],
            }
        ],
    }


@pytest.mark.parametrize(
    ("name", "subsets"),
    [
        (  # api-2 has no `http` container port: it serves only metrics, in a subset of its own
            "api",
            [
                (["10.244.2.1"], [], [("http", 8000)]),
                (["10.244.2.1", "10.244.2.2"], [], [("metrics", 9090)]),
            ],
        ),
        ("db", [([], ["10.244.3.1"], [("pg", 5432)])]),
        ("peers", [([], ["10.244.3.1"], [])]),
        ("manual", [(["192.0.2.42"], ["192.0.2.43"], [("http", 9376)])]),
        ("dual", [(["10.244.1.1", "10.244.1.2"], ["10.244.1.3"], [("", 8080)])]),  # primary family only
        ("v6", [(["fd00:244::1", "fd00:244::2"], [], [("", 8080)])]),
        ("multi", [(["10.244.1.1", "10.244.1.2"], ["10.244.1.3"], [("a", 8080), ("b", 8081)])]),
    ],
)
def test_endpoints_subsets(
    shop: Registry, name: str, subsets: list[tuple[list[str], list[str], list[tuple[str, int]]]]
) -> None:
    """Subsets group the addresses that offer the same ports, as the endpoints controller packs them."""
    obj = get_objects(shop, "endpoints", name, "shop")
    got = [
        (
            [a["ip"] for a in s.get("addresses", [])],
            [a["ip"] for a in s.get("notReadyAddresses", [])],
            [(p.get("name", ""), p["port"]) for p in s.get("ports", [])],
        )
        for s in obj["subsets"]
    ]
    assert got == subsets


def test_pod_object(shop: Registry) -> None:
    """A Pod as a v1 Pod: containers, node, IPs of both families and the Ready condition."""
    assert get_objects(shop, "pod", "web-1", "shop") == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "creationTimestamp": CREATED,
            "labels": {"app": "web"},
        },
        "spec": {
            "containers": [{"image": "nginx", "name": "app", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}],
            "nodeName": "node-a",
            "serviceAccountName": "default",
        },
        "status": {
            "conditions": [{"status": "True", "type": "Ready"}],
            "phase": "Running",
            "podIP": "10.244.1.1",
            "podIPs": [{"ip": "10.244.1.1"}, {"ip": "fd00:244::1"}],
        },
    }


def test_pod_object_hostname_and_readiness(shop: Registry) -> None:
    """A pending Pod keeps its hostname and subdomain and reports Ready False."""
    obj = get_objects(shop, "po", "db-0", "shop")
    assert (obj["spec"]["hostname"], obj["spec"]["subdomain"]) == ("db-0", "db")
    assert obj["status"]["phase"] == "Pending"
    assert obj["status"]["conditions"] == [{"status": "False", "type": "Ready"}]


def test_namespace_list(shop: Registry) -> None:
    """Without a name the result is a v1 List; namespaces carry the metadata.name label and phase Active."""
    listed = get_objects(shop, "ns", None, None)
    assert listed.keys() == {"apiVersion", "kind", "items", "metadata"}
    assert (listed["apiVersion"], listed["kind"]) == ("v1", "List")
    assert listed["metadata"] == {"resourceVersion": ""}
    names = [item["metadata"]["name"] for item in listed["items"]]
    assert names == ["default", "edge", "kube-public", "kube-system", "shop"]
    assert listed["items"][4] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "shop",
            "creationTimestamp": CREATED,
            "labels": {"kubernetes.io/metadata.name": "shop", "team": "store"},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


@pytest.mark.parametrize(
    ("resource", "namespace", "names"),
    [
        ("pods", "shop", ["api-1", "api-2", "db-0", "web-1", "web-2", "web-3"]),
        ("endpoints", "shop", ["api", "db", "dual", "manual", "multi", "peers", "v6", "web"]),
        ("services", "empty", []),
    ],
)
def test_object_lists(shop: Registry, resource: str, namespace: str, names: list[str]) -> None:
    """Lists hold the same objects, in the same order, as the tables; an empty List is still a List."""
    listed = get_objects(shop, resource, None, namespace)
    assert listed["kind"] == "List"
    assert [item["metadata"]["name"] for item in listed["items"]] == names


def test_objects_are_json(shop: Registry) -> None:
    """Every object is plain JSON data, so -o json and -o yaml can print it."""
    for resource in ("services", "endpoints", "pods", "namespaces"):
        listed = get_objects(shop, resource, None, None)
        assert json.loads(json.dumps(listed)) == listed


DESCRIBE_CLUSTER_IP = """\
Name:                     web
Namespace:                shop
Labels:                   app=web
                          tier=frontend
Annotations:              note:
                            line one
                            line two
                          owner: web-team
Selector:                 app=web
Type:                     ClusterIP
IP Family Policy:         SingleStack
IP Families:              IPv4
IP:                       10.0.0.50
IPs:                      10.0.0.50
Port:                     <unset>  80/TCP
TargetPort:               8080/TCP
Endpoints:                10.244.1.1:8080,10.244.1.2:8080
Session Affinity:         None
Internal Traffic Policy:  Cluster
Events:                   <none>
"""

DESCRIBE_NODE_PORT = """\
Name:                     api
Namespace:                shop
Labels:                   <none>
Annotations:              <none>
Selector:                 app=api
Type:                     NodePort
IP Family Policy:         SingleStack
IP Families:              IPv4
IP:                       10.0.0.51
IPs:                      10.0.0.51
Port:                     http  80/TCP
TargetPort:               http/TCP
NodePort:                 http  30080/TCP
Endpoints:                10.244.2.1:8000
Port:                     metrics  9090/TCP
TargetPort:               9090/TCP
NodePort:                 metrics  30090/TCP
Endpoints:                10.244.2.1:9090,10.244.2.2:9090
Session Affinity:         None
External Traffic Policy:  Cluster
Internal Traffic Policy:  Cluster
Events:                   <none>
"""

DESCRIBE_LOAD_BALANCER = """\
Name:                     lb
Namespace:                edge
Labels:                   <none>
Annotations:              <none>
Selector:                 <none>
Type:                     LoadBalancer
IP Family Policy:         SingleStack
IP Families:              IPv4
IP:                       10.0.0.52
IPs:                      10.0.0.52
External IPs:             198.51.100.9
LoadBalancer Ingress:     203.0.113.20 (VIP), 203.0.113.10 (VIP), lb.example.com
Port:                     <unset>  443/TCP
TargetPort:               8443/TCP
NodePort:                 <unset>  31443/TCP
Endpoints:                <none>
Session Affinity:         None
External Traffic Policy:  Cluster
Internal Traffic Policy:  Cluster
Events:                   <none>
"""

DESCRIBE_EXTERNAL_NAME = _lines("""\
Name:              ext
Namespace:         shop
Labels:            <none>
Annotations:       <none>
Selector:          <none>
Type:              ExternalName
IP Families:       <none>
IP:                $
IPs:               <none>
External Name:     db.example.com
Session Affinity:  None
Events:            <none>
""")

# The only Pod is not ready: the Service's (placeholder) EndpointSlice lists nothing.
DESCRIBE_HEADLESS = _lines("""\
Name:                     db
Namespace:                shop
Labels:                   <none>
Annotations:              <none>
Selector:                 app=db
Type:                     ClusterIP
IP Family Policy:         SingleStack
IP Families:              IPv4
IP:                       None
IPs:                      None
Port:                     pg  5432/TCP
TargetPort:               5432/TCP
Endpoints:                $
Session Affinity:         None
Internal Traffic Policy:  Cluster
Events:                   <none>
""")

DESCRIBE_DUAL_STACK = """\
Name:                     dual
Namespace:                shop
Labels:                   <none>
Annotations:              <none>
Selector:                 app=web
Type:                     ClusterIP
IP Family Policy:         RequireDualStack
IP Families:              IPv4,IPv6
IP:                       10.0.0.53
IPs:                      10.0.0.53,fd00:10::53
External IPs:             198.51.100.7
Port:                     <unset>  80/TCP
TargetPort:               8080/TCP
Endpoints:                10.244.1.1:8080,10.244.1.2:8080,[fd00:244::1]:8080 + 1 more...
Session Affinity:         None
Internal Traffic Policy:  Cluster
Events:                   <none>
"""


@pytest.mark.parametrize(
    ("namespace", "name", "expected"),
    [
        ("shop", "web", DESCRIBE_CLUSTER_IP),
        ("shop", "api", DESCRIBE_NODE_PORT),
        ("edge", "lb", DESCRIBE_LOAD_BALANCER),
        ("shop", "ext", DESCRIBE_EXTERNAL_NAME),
        ("shop", "db", DESCRIBE_HEADLESS),
        ("shop", "dual", DESCRIBE_DUAL_STACK),
    ],
)
def test_describe_service(shop: Registry, namespace: str, name: str, expected: str) -> None:
    """describe's layout per Service type: aligned labels, ports with their endpoints, traffic policies."""
    assert describe_service(shop, namespace, name) == expected


def test_describe_long_annotation(tmp_path: Path) -> None:
    """An annotation too long for one line is folded under its key and cut at kubectl's limit."""
    metadata = "{name: web, namespace: shop, annotations: {a: %s}}" % ("x" * 150)
    registry = _build(tmp_path, TINY.replace("{name: web, namespace: shop}", metadata, 1))
    lines = describe_service(registry, "shop", "web").splitlines()
    assert lines[3:5] == ["Annotations:              a:", "                            " + "x" * 138 + "..."]


def test_describe_unknown_service(shop: Registry) -> None:
    """Describing a Service that does not exist fails as kubectl does."""
    with pytest.raises(KubectlError, match=r'^Error from server \(NotFound\): services "nope" not found$'):
        describe_service(shop, "shop", "nope")
