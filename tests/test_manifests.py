"""Manifests -> registry: which files are read, how documents are split, and every kind of bad input.

Each bad input is a real file in a temporary zones directory. The problem must read
`path:line: Kind ns/name: field.path: reason`, point at the failing field's line, leave the bad object
out and let everything else load.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from clusterdns.registry import Registry

if TYPE_CHECKING:
    from conftest import Load, WriteZones

# A good Service that follows the bad document in the same file: it must still load.
AFTER = """\
---
apiVersion: v1
kind: Service
metadata:
  name: after
spec:
  ports:
  - port: 80
"""


def loaded(registry: Registry) -> list[str]:
    """What the zones put in the registry (built-ins left out): objects, and non-empty endpoints."""
    out = [f"Service {ns}/{name}" for (ns, name), s in registry.services.items() if s.source and s.source.line]
    out += [f"Pod {ns}/{name}" for ns, name in registry.pods]
    out += [f"{kind} {ns}/{name}" for kind, ns, name in registry.workloads]
    out += [f"ConfigMap {ns}/{name}" for ns, name in registry.config_maps]
    out += [f"Secret {ns}/{name}" for ns, name in registry.secrets]
    for (ns, name), endpoints in registry.endpoints.items():
        if endpoints:
            out.append(f"Endpoints {ns}/{name}: " + ",".join(e.ip for e in endpoints))
    return sorted(out)


def line_at(path: str, message: str) -> str:
    """The stripped text of the line a problem message names (`path:LINE: ...`)."""
    number = int(message.split(":")[1])
    return Path(path).read_text().splitlines()[number - 1].strip()


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# (the bad document, its problem, the text of the line the problem names)
BAD_DOCUMENTS = [
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - port: "80"
        """,
        "zones/a.yaml:7: Service default/web: spec.ports[0].port: must be an integer, got a string ('80')",
        '- port: "80"',
        id="string port",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - port: true
        """,
        "zones/a.yaml:7: Service default/web: spec.ports[0].port: must be an integer, got a boolean (true)",
        "- port: true",
        id="boolean port",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
        - port: 80
        """,
        "zones/a.yaml:5: Service default/web: spec: must be a mapping, got a list",
        "spec:",
        id="list where a mapping belongs",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
            port: 80
        """,
        "zones/a.yaml:6: Service default/web: spec.ports: must be a list, got a mapping",
        "ports:",
        id="mapping where a list belongs",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata: [web]
        spec:
          ports:
          - port: 80
        """,
        "zones/a.yaml:3: Service: metadata: must be a mapping, got a list",
        "metadata: [web]",
        id="metadata a list",
    ),
    pytest.param(
        """
        just a string
        """,
        "zones/a.yaml:1: a manifest must be a mapping, got a string ('just a string')",
        "just a string",
        id="document not a mapping",
    ),
    pytest.param(
        """
        apiVersion: v1
        metadata:
          name: web
        """,
        "zones/a.yaml:1: object default/web: kind: required field is missing",
        "apiVersion: v1",
        id="missing kind",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          namespace: dev
        spec:
          ports:
          - port: 80
        """,
        "zones/a.yaml:3: Service: metadata.name: required field is missing",
        "metadata:",
        id="missing metadata.name",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          selector:
            app: web
        """,
        "zones/a.yaml:5: Service default/web: spec.ports: required field is missing "
        "(a Service needs at least one port)",
        "spec:",
        id="missing spec.ports",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        """,
        "zones/a.yaml:1: Service default/web: spec: required field is missing",
        "apiVersion: v1",
        id="missing spec",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          hostname: web
        """,
        "zones/a.yaml:5: Pod default/web: spec.containers: required field is missing "
        "(a Pod needs at least one container)",
        "spec:",
        id="missing containers",
    ),
    pytest.param(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          selector:
            matchLabels:
              app: web
          template:
            metadata:
              labels:
                app: web
            spec:
              containers: []
        """,
        "zones/a.yaml:14: Deployment default/web: spec.template.spec.containers: required field is missing "
        "(a Pod needs at least one container)",
        "containers: []",
        id="empty template containers",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: My_Svc
        spec:
          ports:
          - port: 80
        """,
        "zones/a.yaml:4: Service default/My_Svc: metadata.name: must be a DNS-1035 label (lower-case letters, "
        "digits and '-', starting with a letter and ending with a letter or digit), got 'My_Svc'",
        "name: My_Svc",
        id="Service name not a DNS-1035 label",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: 1web
        spec:
          ports:
          - port: 80
        """,
        "zones/a.yaml:4: Service default/1web: metadata.name: must be a DNS-1035 label (lower-case letters, "
        "digits and '-', starting with a letter and ending with a letter or digit), got '1web'",
        "name: 1web",
        id="Service name starting with a digit",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: Dev_NS
        spec:
          ports:
          - port: 80
        """,
        "zones/a.yaml:5: Service Dev_NS/web: metadata.namespace: must be a DNS-1123 label (lower-case letters, "
        "digits and '-', starting and ending with a letter or digit), got 'Dev_NS'",
        "namespace: Dev_NS",
        id="namespace not a DNS-1123 label",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - name: http
            port: 80
          - name: http
            port: 8080
        """,
        "zones/a.yaml:9: Service default/web: spec.ports[1].name: duplicate port name 'http'",
        "- name: http",
        id="duplicate port name",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - name: http
            port: 80
          - name: alt
            port: 80
        """,
        "zones/a.yaml:10: Service default/web: spec.ports[1].port: duplicate port 80/TCP",
        "port: 80",
        id="duplicate port and protocol",
    ),
    pytest.param(
        """
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
            protocol: HTTP
        """,
        "zones/a.yaml:11: Service default/web: spec.ports[1].protocol: must be one of TCP, UDP, SCTP, got 'HTTP'",
        "protocol: HTTP",
        id="unknown protocol",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - port: 80
          - port: 81
        """,
        "zones/a.yaml:7: Service default/web: spec.ports[0].name: required when a Service has more than one port",
        "- port: 80",
        id="unnamed ports",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          selector:
            app: web
          ports:
          - port: 0
        """,
        "zones/a.yaml:9: Service default/web: spec.ports[0].port: must be 1-65535, got 0",
        "- port: 0",
        id="port 0",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - port: 70000
        """,
        "zones/a.yaml:7: Service default/web: spec.ports[0].port: must be 1-65535, got 70000",
        "- port: 70000",
        id="port 70000",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - port: 80
            targetPort: Http_Port
        """,
        "zones/a.yaml:8: Service default/web: spec.ports[0].targetPort: must be an IANA service name (lower-case "
        "letters, digits and single '-', with at least one letter), got 'Http_Port'",
        "targetPort: Http_Port",
        id="targetPort bad name",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - port: 80
            targetPort: 70000
        """,
        "zones/a.yaml:8: Service default/web: spec.ports[0].targetPort: must be 1-65535 or a port name, got 70000",
        "targetPort: 70000",
        id="targetPort out of range",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - port: 80
            nodePort: 30080
        """,
        "zones/a.yaml:8: Service default/web: spec.ports[0].nodePort: may not be used when type is ClusterIP",
        "nodePort: 30080",
        id="nodePort on ClusterIP",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          clusterIP: 10.0.0.300
          ports:
          - port: 80
        """,
        "zones/a.yaml:6: Service default/web: spec.clusterIP: must be a valid IP address, got '10.0.0.300'",
        "clusterIP: 10.0.0.300",
        id="invalid clusterIP",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
          - port: 80
          externalIPs:
          - 192.0.2.1
          - nope
        """,
        "zones/a.yaml:10: Service default/web: spec.externalIPs[1]: must be a valid IP address, got 'nope'",
        "- nope",
        id="invalid externalIP",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Endpoints
        metadata:
          name: after
        subsets:
        - addresses:
          - ip: 192.0.2.1
          - ip: 999.1.1.1
          ports:
          - port: 80
        """,
        "zones/a.yaml:8: Endpoints default/after: subsets[0].addresses[1].ip: must be a valid IP address, "
        "got '999.1.1.1'",
        "- ip: 999.1.1.1",
        id="invalid Endpoints ip",
    ),
    pytest.param(
        """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: after-abcde
          labels:
            kubernetes.io/service-name: after
        addressType: IPv4
        endpoints:
        - addresses: ["192.0.2.1"]
        - addresses: ["fd00::1"]
        """,
        "zones/a.yaml:10: EndpointSlice default/after-abcde: endpoints[1].addresses[0]: must be an IPv4 address, "
        "got fd00::1",
        '- addresses: ["fd00::1"]',
        id="EndpointSlice address of the wrong family",
    ),
    pytest.param(
        """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: after-abcde
        addressType: IPv4
        endpoints:
        - addresses: ["192.0.2.1"]
        """,
        "zones/a.yaml:3: EndpointSlice default/after-abcde: metadata.labels: needs the label "
        "kubernetes.io/service-name",
        "metadata:",
        id="EndpointSlice without service-name label",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          containers:
          - name: web
        status:
          podIP: 10.244.1.300
        """,
        "zones/a.yaml:9: Pod default/web: status.podIP: must be a valid IP address, got '10.244.1.300'",
        "podIP: 10.244.1.300",
        id="invalid podIP",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          containers:
          - name: web
            ports:
            - containerPort: 80
              name: Web_Port
        """,
        "zones/a.yaml:10: Pod default/web: spec.containers[0].ports[0].name: must be an IANA service name "
        "(lower-case letters, digits and single '-', with at least one letter), got 'Web_Port'",
        "name: Web_Port",
        id="container port name",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          type: Magic
          ports:
          - port: 80
        """,
        "zones/a.yaml:6: Service default/web: spec.type: must be one of ClusterIP, NodePort, LoadBalancer, "
        "ExternalName, got 'Magic'",
        "type: Magic",
        id="unknown service type",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          type: ExternalName
          externalName: not_a_dns..name
        """,
        "zones/a.yaml:7: Service default/web: spec.externalName: must be a DNS-1123 subdomain (lower-case labels "
        "of letters, digits and '-' separated by '.'), got 'not_a_dns..name'",
        "externalName: not_a_dns..name",
        id="externalName not a DNS name",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          type: ExternalName
        """,
        "zones/a.yaml:5: Service default/web: spec.externalName: required field is missing",
        "spec:",
        id="externalName missing",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          type: NodePort
          clusterIP: None
          ports:
          - port: 80
        """,
        "zones/a.yaml:7: Service default/web: spec.clusterIP: may not be 'None' for type NodePort",
        "clusterIP: None",
        id="headless NodePort",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          selector:
            app: "bad value!"
          ports:
          - port: 80
        """,
        "zones/a.yaml:7: Service default/web: spec.selector.app: label value must be empty or 63 characters or "
        "less of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, got 'bad value!'",
        'app: "bad value!"',
        id="Service selector bad label value",
    ),
    pytest.param(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          selector:
            matchExpressions:
            - key: app
              operator: Equals
              values: [web]
          template:
            metadata:
              labels:
                app: web
            spec:
              containers:
              - name: web
        """,
        "zones/a.yaml:9: Deployment default/web: spec.selector.matchExpressions[0].operator: must be one of In, "
        "NotIn, Exists, DoesNotExist, got 'Equals'",
        "operator: Equals",
        id="selector bad operator",
    ),
    pytest.param(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          selector:
            matchExpressions:
            - key: app
              operator: In
          template:
            metadata:
              labels:
                app: web
            spec:
              containers:
              - name: web
        """,
        "zones/a.yaml:8: Deployment default/web: spec.selector.matchExpressions[0].values: must be non-empty for "
        "operator In",
        "- key: app",
        id="selector In without values",
    ),
    pytest.param(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          selector:
            matchExpressions:
            - key: app
              operator: Exists
              values: [web]
          template:
            metadata:
              labels:
                app: web
            spec:
              containers:
              - name: web
        """,
        "zones/a.yaml:10: Deployment default/web: spec.selector.matchExpressions[0].values: must be empty for "
        "operator Exists",
        "values: [web]",
        id="selector Exists with values",
    ),
    pytest.param(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          selector:
            matchLabels:
              app: db
          template:
            metadata:
              labels:
                app: web
            spec:
              containers:
              - name: web
        """,
        "zones/a.yaml:11: Deployment default/web: spec.template.metadata.labels: do not match spec.selector (app=db)",
        "labels:",
        id="selector not matching template labels",
    ),
    pytest.param(
        """
        apiVersion: apps/v1
        kind: StatefulSet
        metadata:
          name: web
        spec:
          serviceName: web
          selector:
            matchLabels:
              app: -web
          template:
            metadata:
              labels:
                app: web
            spec:
              containers:
              - name: web
        """,
        "zones/a.yaml:9: StatefulSet default/web: spec.selector.matchLabels.app: label value must be empty or 63 "
        "characters or less of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, "
        "got '-web'",
        "app: -web",
        id="matchLabels bad label value",
    ),
    pytest.param(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          template:
            spec:
              containers:
              - name: web
        """,
        "zones/a.yaml:5: Deployment default/web: spec.selector: required field is missing",
        "spec:",
        id="workload without selector",
    ),
    pytest.param(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          replicas: -1
          selector:
            matchLabels:
              app: web
          template:
            metadata:
              labels:
                app: web
            spec:
              containers:
              - name: web
        """,
        "zones/a.yaml:6: Deployment default/web: spec.replicas: must be 0 or more, got -1",
        "replicas: -1",
        id="negative replicas",
    ),
    pytest.param(
        """
        apiVersion: v1
        kind: Secret
        metadata:
          name: web
        data:
          password: "not base64!"
        """,
        "zones/a.yaml:6: Secret default/web: data.password: must be base64-encoded",
        'password: "not base64!"',
        id="Secret data not base64",
    ),
]


@pytest.mark.parametrize(("document", "message", "at"), BAD_DOCUMENTS)
def test_bad_document(write_zones: WriteZones, load: Load, document: str, message: str, at: str) -> None:
    """A bad document gives exactly one problem at its failing field's line, and is left out alone."""
    write_zones({"a.yaml": dedent(document) + AFTER})
    registry = load()
    assert [str(p) for p in registry.problems] == [message]
    assert line_at("zones/a.yaml", message) == at
    assert loaded(registry) == ["Service default/after"]


def test_yaml_syntax_error(write_zones: WriteZones, load: Load) -> None:
    """A YAML syntax error names the line and column; the file's other documents and other files load."""
    write_zones(
        {
            "a.yaml": """
                apiVersion: v1
                kind: Service
                metadata:
                  name: first
                spec:
                  ports:
                  - port: 80
                ---
                apiVersion: v1
                kind: Service
                metadata:
                  name: broken
                   bad: indent
                ---
                apiVersion: v1
                kind: Service
                metadata:
                  name: third
                spec:
                  ports:
                  - port: 80
                """,
            "b.yaml": "kind: Service\nmetadata:\n  name: other\nspec:\n  ports:\n  - port: 80\n",
        }
    )
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/a.yaml:13: invalid YAML: mapping values are not allowed in this context (column 7)"
    ]
    assert loaded(registry) == ["Service default/first", "Service default/other", "Service default/third"]


def test_yaml_syntax_error_other_files_load(write_zones: WriteZones, load: Load) -> None:
    """A file that is not YAML at all is one problem; the other files still load."""
    write_zones(
        {
            "a.yaml": "kind: Service\nmetadata:\n  name: a\n  labels: {x: [\n",
            "b.yaml": "kind: Service\nmetadata:\n  name: b\nspec:\n  ports:\n  - port: 80\n",
        }
    )
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/a.yaml:5: invalid YAML: did not find expected node content (column 1)"
    ]
    assert loaded(registry) == ["Service default/b"]


def test_json_syntax_error(write_zones: WriteZones, load: Load) -> None:
    """A JSON syntax error names the line and column; the other files still load."""
    write_zones(
        {
            "a.json": '{"kind": "Service",\n "metadata": {"name": "a"},\n}\n',
            "b.json": '{"kind": "Service", "metadata": {"name": "b"}, "spec": {"ports": [{"port": 80}]}}\n',
        }
    )
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/a.json:3: invalid JSON: Expecting property name enclosed in double quotes (column 1)"
    ]
    assert loaded(registry) == ["Service default/b"]


def test_json_bad_field(write_zones: WriteZones, load: Load) -> None:
    """A bad field in a .json file is located on its line like in YAML."""
    write_zones(
        {
            "a.json": """
                {
                  "apiVersion": "v1",
                  "kind": "Service",
                  "metadata": {"name": "web"},
                  "spec": {
                    "ports": [
                      {"port": "http"}
                    ]
                  }
                }
                """
        }
    )
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/a.json:7: Service default/web: spec.ports[0].port: must be an integer, got a string ('http')"
    ]
    assert loaded(registry) == []


def test_list_with_one_bad_item(write_zones: WriteZones, load: Load) -> None:
    """In a `kind: List`, a bad item is reported at its own line; the items before and after load."""
    write_zones(
        {
            "list.yaml": """
                apiVersion: v1
                kind: List
                items:
                - apiVersion: v1
                  kind: Service
                  metadata:
                    name: one
                  spec:
                    ports:
                    - port: 80
                - apiVersion: v1
                  kind: Service
                  metadata:
                    name: two
                  spec:
                    ports:
                    - port: 0
                - apiVersion: v1
                  kind: Service
                  metadata:
                    name: three
                    namespace: dev
                  spec:
                    ports:
                    - port: 80
                """
        }
    )
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/list.yaml:17: Service default/two: spec.ports[0].port: must be 1-65535, got 0"
    ]
    assert loaded(registry) == ["Service default/one", "Service dev/three"]
    assert [str(registry.services[key].source) for key in [("default", "one"), ("dev", "three")]] == [
        "zones/list.yaml:4",
        "zones/list.yaml:18",
    ]


def test_typed_list_in_json(write_zones: WriteZones, load: Load) -> None:
    """A v1 ServiceList in JSON (as `kubectl get -o json` writes it) loads item by item."""
    write_zones(
        {
            "list.json": """
                {
                  "apiVersion": "v1",
                  "kind": "ServiceList",
                  "items": [
                    {"kind": "Service", "metadata": {"name": "j1"}, "spec": {"ports": [{"port": 80}]}},
                    {"kind": "Service",
                     "metadata": {"name": "j2"},
                     "spec": {"ports": [{"port": 70000}]}},
                    {"kind": "Service", "metadata": {"name": "j3"}, "spec": {"ports": [{"port": 80}]}}
                  ]
                }
                """
        }
    )
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/list.json:8: Service default/j2: spec.ports[0].port: must be 1-65535, got 70000"
    ]
    assert loaded(registry) == ["Service default/j1", "Service default/j3"]


def test_list_items_not_a_list(write_zones: WriteZones, load: Load) -> None:
    """A List whose items is not a list is a problem of the file."""
    write_zones({"a.yaml": "apiVersion: v1\nkind: List\nitems: {a: b}\n", "b.yaml": AFTER})
    registry = load()
    assert [str(p) for p in registry.problems] == ["zones/a.yaml:1: items: must be a list, got a mapping"]
    assert loaded(registry) == ["Service default/after"]


def test_multi_document_lines(write_zones: WriteZones, load: Load) -> None:
    """Documents separated by `---` (with comments, empty documents, a leading marker) keep their lines."""
    write_zones(
        {
            "a.yaml": """
                # leading comment
                ---
                apiVersion: v1
                kind: Service
                metadata:
                  name: one
                spec:
                  ports:
                  - port: 80
                ---
                ---
                # an empty document above, a comment here
                apiVersion: v1
                kind: Service
                metadata:
                  name: two
                spec:
                  ports:
                  - port: 80
                ...
                ---
                apiVersion: v1
                kind: Service
                metadata:
                  name: three
                spec:
                  ports:
                  - port: 80
                    nodePort: 30000
                """
        }
    )
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/a.yaml:29: Service default/three: spec.ports[0].nodePort: may not be used when type is ClusterIP"
    ]
    assert [str(registry.services[("default", name)].source) for name in ("one", "two")] == [
        "zones/a.yaml:3",
        "zones/a.yaml:13",
    ]


def test_files_found(write_zones: WriteZones, load: Load) -> None:
    """*.yaml, *.yml and *.json load recursively; hidden files and folders and other suffixes are ignored."""
    service = "kind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: 80\n"
    as_json = '{{"kind": "Service", "metadata": {{"name": "{name}"}}, "spec": {{"ports": [{{"port": 80}}]}}}}'
    write_zones(
        {
            "a.yaml": service.format(name="a-yaml"),
            "b.yml": service.format(name="b-yml"),
            "c.json": as_json.format(name="c-json"),
            "deep/er/d.yaml": service.format(name="d-nested"),
            "deep/e.YAML": service.format(name="e-upper"),
            ".hidden.yaml": service.format(name="hidden-file"),
            ".git/f.yaml": service.format(name="hidden-dir"),
            "notes.txt": service.format(name="txt"),
            "g.yaml.bak": service.format(name="bak"),
            "empty.yaml": "",
            "comments.yaml": "# nothing here\n---\n",
        }
    )
    registry = load()
    assert registry.problems == ()
    assert loaded(registry) == [
        "Service default/a-yaml",
        "Service default/b-yml",
        "Service default/c-json",
        "Service default/d-nested",
    ]


def test_unknown_kind_is_a_note(write_zones: WriteZones, load: Load) -> None:
    """An Ingress (any kind not used) is skipped with a note, never an error."""
    write_zones(
        {
            "a.yaml": dedent(
                """
                apiVersion: networking.k8s.io/v1
                kind: Ingress
                metadata:
                  name: web
                  namespace: shop
                spec:
                  rules: [1, 2, 3]
                """
            )
            + AFTER
        }
    )
    registry = load()
    assert registry.problems == ()
    assert [str(n) for n in registry.notes] == ["zones/a.yaml:1: Ingress shop/web: kind Ingress is not used; skipped"]
    assert all(n.note for n in registry.notes)
    assert loaded(registry) == ["Service default/after"]


@pytest.mark.parametrize(
    ("metadata", "namespace"),
    [
        ("name: web", "default"),
        ("name: web\n  namespace: ''", "default"),
        ("name: web\n  namespace: shop", "shop"),
    ],
)
def test_namespace_defaults_to_default(write_zones: WriteZones, load: Load, metadata: str, namespace: str) -> None:
    """metadata.namespace defaults to `default`."""
    write_zones({"a.yaml": f"kind: Service\nmetadata:\n  {metadata}\nspec:\n  ports:\n  - port: 80\n"})
    registry = load()
    assert registry.problems == ()
    assert loaded(registry) == [f"Service {namespace}/web"]


def test_every_problem_reported(write_zones: WriteZones, load: Load) -> None:
    """Problems in several files and documents are all reported, in file order."""
    write_zones(
        {
            "b.yaml": "kind: Service\nmetadata:\n  name: b\nspec:\n  ports:\n  - port: 0\n",
            "a.yaml": "kind: Pod\nmetadata:\n  name: a\nspec: {}\n---\nkind: Service\nmetadata:\n  name: A\n",
        }
    )
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/a.yaml:4: Pod default/a: spec.containers: required field is missing "
        "(a Pod needs at least one container)",
        "zones/a.yaml:8: Service default/A: metadata.name: must be a DNS-1035 label (lower-case letters, digits "
        "and '-', starting with a letter and ending with a letter or digit), got 'A'",
        "zones/b.yaml:6: Service default/b: spec.ports[0].port: must be 1-65535, got 0",
    ]


def test_unreadable_file(write_zones: WriteZones, load: Load) -> None:
    """A file that is not UTF-8 is a problem of that file naming the line, column and byte offset where
    decoding failed; the others load."""
    zones = write_zones({"b.yaml": AFTER})
    (zones / "a.yaml").write_bytes(b"kind: Service\nmetadata:\n  name: \xff\xfe\n")
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/a.yaml:3: not UTF-8: byte 0xff at offset 32 (column 9): invalid start byte"
    ]
    assert loaded(registry) == ["Service default/after"]


def test_crlf_file_reads_as_before(write_zones: WriteZones, load: Load) -> None:
    """Line ends CRLF or CR read as LF, as files opened in text mode read them."""
    zones = write_zones({})
    text = "kind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 0\n"
    (zones / "a.yaml").write_bytes(text.replace("\n", "\r\n").encode())
    (zones / "b.yaml").write_bytes(text.replace("web", "old").replace("\n", "\r").encode())
    registry = load()
    assert [str(p) for p in registry.problems] == [
        "zones/a.yaml:6: Service default/web: spec.ports[0].port: must be 1-65535, got 0",
        "zones/b.yaml:6: Service default/old: spec.ports[0].port: must be 1-65535, got 0",
    ]


def nested_block(levels: int) -> str:
    """A ConfigMap whose data nests `levels` block mappings deep below `data:` (line 5)."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata:", "  name: deep", "data:"]
    lines += [" " * (2 * i + 2) + f"k{i}:" for i in range(levels)]
    lines.append(" " * (2 * levels + 2) + "v: 1")
    return "\n".join(lines) + "\n"


DEEP = [
    pytest.param("a.yaml", nested_block(400), 105, id="block YAML, 400 levels"),
    pytest.param("a.yaml", nested_block(5000), 105, id="block YAML, 5,000 levels"),
    pytest.param("a.yaml", "kind: ConfigMap\ndata:\n  x: " + "[" * 500 + "]" * 500 + "\n", 3, id="flow YAML, 500"),
    pytest.param("a.yaml", "kind: ConfigMap\ndata:\n  x:\n" + "    - " * 300 + "1\n", 4, id="compact sequences"),
    pytest.param(
        "a.yaml", "kind: ConfigMap\ndata:\n  x: " + "{a: " * 300 + "1" + "}" * 300 + "\n", 3, id="flow mappings"
    ),
    pytest.param(
        "a.yaml",
        "kind: ConfigMap\ndata:\n  x: |\n    text\n  y:\n" + "".join(" " * (i + 4) + "- \n" for i in range(300)),
        104,
        id="block YAML that PyYAML reads",
    ),
    pytest.param(
        "a.yaml",
        "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 400)),
        0,
        id="aliases nesting 400 deep",
    ),
    pytest.param("a.json", "[" * 50_000 + "]" * 50_000, 1, id="JSON array, 50,000 levels"),
    pytest.param("a.json", '{"a":\n' * 200 + "1" + "}" * 200, 101, id="JSON objects on lines"),
    pytest.param("a.json", '["[[[[' + "[" * 200 + '"]', 0, id="brackets in a JSON string are no nesting"),
]


@pytest.mark.parametrize(("name", "text", "line"), DEEP)
def test_deep_nesting_is_a_problem(write_zones: WriteZones, load: Load, name: str, text: str, line: int) -> None:
    """Collections nested more than 100 deep are a problem of their file naming the line where the nesting
    passes the limit (no RecursionError, whatever the reader); the other files load."""
    write_zones({name: text, "b.yaml": AFTER})
    registry = load()
    problems = [str(p) for p in registry.problems]
    if name == "a.json" and not line:  # a string, not nesting: a ConfigMap-less list of one string
        assert problems == ["zones/a.json:1: a manifest must be a mapping, got a list"]
    elif not line:  # aliases: the line of the alias that passes the limit
        assert len(problems) == 1 and problems[0].endswith(": collections nested more than 100 deep"), problems
        assert problems[0].startswith("zones/a.yaml:")
    else:
        assert problems == [f"zones/{name}:{line}: collections nested more than 100 deep"]
    assert loaded(registry) == ["Service default/after"]


def test_nesting_up_to_the_limit_loads(write_zones: WriteZones, load: Load) -> None:
    """A document nested exactly 100 deep loads, in block YAML and in JSON."""
    block = nested_block(98)  # the document, data, then 98 mappings: 100
    json_text = '{"kind": "ConfigMap", "metadata": {"name": "j"}, "data": {"a": ' + "[" * 98 + "]" * 98 + "}}"
    write_zones({"a.yaml": block, "b.json": json_text})
    registry = load()
    assert [p.message for p in registry.problems] == [
        "must be a string, got a mapping",
        "must be a string, got a list",
    ]  # deep, but read: what is wrong is the ConfigMap's data


def test_pyyaml_without_libyaml_counts_depth_first() -> None:
    """With PyYAML's pure-Python loader (no libyaml) depth is counted from events before it composes."""
    from clusterdns import documents, fastyaml

    with pytest.raises(fastyaml.TooDeep) as caught:
        documents.load_yaml(nested_block(2000), loader=__import__("yaml").SafeLoader)
    assert caught.value.line == 105
    assert documents.load_yaml(nested_block(50), loader=__import__("yaml").SafeLoader)[0]["kind"] == "ConfigMap"


BAD_SCALARS = [
    pytest.param(
        "a.yaml",
        'kind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: "x\x01y"\n',
        "zones/a.yaml:5: invalid YAML: control characters are not allowed: #x0001 (column 8)",
        id="a control character",
    ),
    pytest.param(
        "a.yaml",
        "kind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: " + "9" * 5000 + "\n",
        "zones/a.yaml:5: invalid YAML: an integer of more than 4300 digits (column 13)",
        id="a 5,000-digit integer",
    ),
    pytest.param(
        "a.yaml",
        "kind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: |\n    x\n  foo: " + "9" * 5000 + "\n",
        "zones/a.yaml:7: invalid YAML: an integer of more than 4300 digits (column 8)",
        id="a 5,000-digit integer, read by PyYAML",
    ),
    pytest.param(
        "a.yaml",
        "kind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: !!int http\n",
        "zones/a.yaml:6: invalid YAML: invalid literal for int() with base 10: 'http' (column 11)",
        id="a tag whose constructor refuses the value",
    ),
    pytest.param(
        "a.yaml",
        "kind: ConfigMap\nmetadata:\n  name: c\ndata:\n  when: !!timestamp 2024-13-45\n",
        "zones/a.yaml:5: invalid YAML: month must be in 1..12 (column 9)",
        id="a timestamp out of range",
    ),
    pytest.param(
        "a.json",
        '{"kind": "Deployment",\n "spec": {"replicas": ' + "9" * 5000 + "}}",
        "zones/a.json:2: invalid JSON: an integer of more than 4300 digits (column 23)",
        id="a 5,000-digit integer in JSON",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_SCALARS)
def test_bad_scalars_name_their_line(write_zones: WriteZones, load: Load, name: str, text: str, message: str) -> None:
    """Characters YAML refuses and integers too long to convert are problems naming line and column."""
    write_zones({name: text, "b.yaml": AFTER})
    registry = load()
    assert [str(p) for p in registry.problems] == [message]
    assert loaded(registry) == ["Service default/after"]


def test_many_empty_documents_load_fast(write_zones: WriteZones, load: Load) -> None:
    """10,000 empty YAML documents load in well under a second's work each way (7.6 s before: each
    document's first line was searched for to the end of the file)."""
    write_zones(
        {"empty.yaml": "---\n" * 10_000 + "kind: Service\nmetadata:\n  name: last\nspec:\n  ports:\n  - port: 0\n"}
    )
    started = time.perf_counter()
    registry = load()
    assert time.perf_counter() - started < 2.5
    assert [str(p) for p in registry.problems] == [
        "zones/empty.yaml:10006: Service default/last: spec.ports[0].port: must be 1-65535, got 0"
    ]


# --- finding a problem's line without composing its document ---

TRICKY = """\
# a comment before the document
apiVersion: v1
kind: Service
metadata:
  name: web   # a comment after a value
  labels: {app: web, tier: "front"}
  annotations:
    example.com/note: |
      spec:
        clusterIP: not this one
    "quoted key": yes
spec:

  clusterIP: 10.0.0.5
  ports:
  - name: http
    port: 80
  -
    name: dns
    port: 53
  - {name: metrics, port: 9153}
  - &anchor
    name: other
    port: 1
  selector:
    app: web
  externalIPs: [198.51.100.7,
    198.51.100.8]
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 60
status:
  loadBalancer:
    ingress:
      - ip: 203.0.113.9
      - hostname: lb.example.com
"""


def paths_into(data: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], bool]]:
    """(path, whether it is there) for every path into `data`, and for one step too far below each scalar
    and each list (paths that aren't there)."""
    out = [(prefix, True)] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out.extend(paths_into(value, (*prefix, str(key))))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out.extend(paths_into(value, (*prefix, i)))
        out.append(((*prefix, len(data)), False))
    else:
        out.append(((*prefix, "missing"), False))
    return out


@pytest.mark.parametrize(
    "name", [*sorted(p.name for p in (Path(__file__).parent.parent / "zones").glob("*.yaml")), "tricky"]
)
def test_line_scan_agrees_with_the_composer(name: str) -> None:
    """For every path into every document (shipped zones, and one with the YAML a line scan must give up on),
    the line found by scanning lines is the composer's, or the scan declines (0) and the composer is asked;
    plain block YAML is scanned without composing."""
    import yaml

    from clusterdns import documents

    path = Path(__file__).parent.parent / "zones" / name
    text = TRICKY if name == "tricky" else path.read_text(encoding="utf-8")
    scanned = total = 0
    offset, line = 0, 1
    for chunk in text.split("\n---"):
        chunk_text = chunk if offset == 0 else "\n---" + chunk
        root = yaml.compose(chunk_text, Loader=yaml.SafeLoader)
        if root is not None:
            first = root.start_mark.line + line
            pos = offset + root.start_mark.index - root.start_mark.column
            data = yaml.safe_load(chunk_text)
            for field_path, there in paths_into(data):
                expected = documents._walk(root, field_path) + line - 1
                found = documents._block_line(text, pos, first, field_path)
                total += there
                if found:
                    scanned += there
                    assert found == expected, (name, field_path)
        offset += len(chunk_text)
        line += chunk_text.count("\n")
    assert total and scanned / total > (0.4 if name == "tricky" else 0.9), (scanned, total)
