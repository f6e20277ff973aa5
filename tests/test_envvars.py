"""Tests for clusterdns.envvars: service variables, a container's whole environment, output formats."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from clusterdns import envvars
from clusterdns.allocate import Store
from clusterdns.envvars import EnvError, container_env, format_env, service_env
from clusterdns.manifests import parse_text
from clusterdns.registry import Config, Registry, build

DUAL_STACK = Config(service_cidrs=("10.0.0.0/16", "fd00:10::/108"), pod_cidrs=("10.244.0.0/16", "fd00:244::/64"))


def registry_of(tmp_path: Path, text: str, config: Config | None = None) -> Registry:
    """Parse `text` as one manifest file and build a registry from it, insisting on no problems."""
    files = [parse_text(text, str(tmp_path / "a.yaml"))]
    assert files[0].problems == ()
    registry = build(files, config or Config(), Store(None), now=0.0)
    assert registry.problems == ()
    return registry


def lines(text: str) -> dict[str, str]:
    """KEY=VALUE lines (blank lines ignored) as a dict, for writing expected environments."""
    return dict(line.strip().split("=", 1) for line in text.strip().splitlines() if line.strip())


def with_prefix(env: dict[str, str], prefix: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(prefix)}


def services_of(env: dict[str, str]) -> set[str]:
    """The variable-name prefixes of the Services an environment links."""
    return {k.removesuffix("_SERVICE_HOST") for k in env if k.endswith("_SERVICE_HOST")}


KUBERNETES = lines(
    """
    KUBERNETES_PORT=tcp://10.0.0.1:443
    KUBERNETES_PORT_443_TCP=tcp://10.0.0.1:443
    KUBERNETES_PORT_443_TCP_ADDR=10.0.0.1
    KUBERNETES_PORT_443_TCP_PORT=443
    KUBERNETES_PORT_443_TCP_PROTO=tcp
    KUBERNETES_SERVICE_HOST=10.0.0.1
    KUBERNETES_SERVICE_PORT=443
    KUBERNETES_SERVICE_PORT_HTTPS=443
    """
)


def test_public_surface() -> None:
    """__all__ lists exactly the public API, and each name exists."""
    assert sorted(envvars.__all__) == [
        "EnvError",
        "FORMATS",
        "NODE_ALLOCATABLE",
        "container_env",
        "format_env",
        "service_env",
    ]
    assert all(hasattr(envvars, name) for name in envvars.__all__)


# --- service variables ------------------------------------------------------------------------------

DOCS_EXAMPLE = """
apiVersion: v1
kind: Service
metadata:
  name: my-nginx
  labels:
    run: my-nginx
spec:
  clusterIP: 10.0.162.149
  ports:
  - port: 80
    protocol: TCP
  selector:
    run: my-nginx
"""


def test_docs_example(tmp_path: Path) -> None:
    """The Kubernetes docs' my-nginx example comes out exactly, beside default/kubernetes."""
    env = service_env(registry_of(tmp_path, DOCS_EXAMPLE), "default")
    assert env == KUBERNETES | lines(
        """
        MY_NGINX_SERVICE_HOST=10.0.162.149
        MY_NGINX_SERVICE_PORT=80
        MY_NGINX_PORT=tcp://10.0.162.149:80
        MY_NGINX_PORT_80_TCP=tcp://10.0.162.149:80
        MY_NGINX_PORT_80_TCP_PROTO=tcp
        MY_NGINX_PORT_80_TCP_PORT=80
        MY_NGINX_PORT_80_TCP_ADDR=10.0.162.149
        """
    )
    assert list(env) == sorted(env)


SELECTION = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.0.1.10
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  type: ExternalName
  externalName: example.com
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: other}
spec:
  clusterIP: 10.0.1.30
  ports: [{port: 6379}]
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: tenant}
spec:
  clusterIP: 10.0.9.9
  ports: [{name: https, port: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: headless}
spec:
  clusterIP: None
  ports: [{name: https, port: 8443}]
"""


@pytest.mark.parametrize(
    ("namespace", "service_links", "linked"),
    [
        ("shop", True, {"KUBERNETES", "WEB"}),  # headless db and ExternalName ext have no cluster IP
        ("shop", False, {"KUBERNETES"}),
        ("other", True, {"KUBERNETES", "CACHE"}),
        ("no-such-namespace", True, {"KUBERNETES"}),
        ("kube-system", True, {"KUBERNETES", "KUBE_DNS"}),
        ("default", False, {"KUBERNETES"}),
    ],
)
def test_which_services(tmp_path: Path, namespace: str, service_links: bool, linked: set[str]) -> None:
    """Services of the namespace with a cluster IP are linked, and default/kubernetes always."""
    env = service_env(registry_of(tmp_path, SELECTION), namespace, service_links)
    assert services_of(env) == linked


@pytest.mark.parametrize(
    ("namespace", "service_links", "host", "port"),
    [
        ("tenant", True, "10.0.9.9", "8443"),  # the namespace's own kubernetes Service wins
        ("tenant", False, "10.0.0.1", "443"),  # with links off only default/kubernetes is seen
        ("headless", True, "10.0.0.1", "443"),  # a headless kubernetes Service has no cluster IP
        ("shop", True, "10.0.0.1", "443"),
    ],
)
def test_kubernetes_precedence(tmp_path: Path, namespace: str, service_links: bool, host: str, port: str) -> None:
    """The namespace's own kubernetes Service (with a cluster IP) replaces default/kubernetes, links on."""
    env = service_env(registry_of(tmp_path, SELECTION), namespace, service_links)
    assert env["KUBERNETES_SERVICE_HOST"] == host
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == port
    assert env["KUBERNETES_PORT"] == f"tcp://{host}:{port}"


PORTS = """
apiVersion: v1
kind: Service
metadata: {name: dns-cache, namespace: net}
spec:
  type: NodePort
  clusterIP: 10.0.3.3
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30053}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 5353, nodePort: 30054}
  - {name: assoc-web, port: 9999, protocol: SCTP, targetPort: assoc, nodePort: 30055}
"""


def test_udp_sctp_and_named_ports(tmp_path: Path) -> None:
    """Every port gets link variables; named ports get SERVICE_PORT_<NAME>; never targetPort or nodePort."""
    env = service_env(registry_of(tmp_path, PORTS), "net")
    assert with_prefix(env, "DNS_CACHE_") == lines(
        """
        DNS_CACHE_SERVICE_HOST=10.0.3.3
        DNS_CACHE_SERVICE_PORT=53
        DNS_CACHE_SERVICE_PORT_DNS=53
        DNS_CACHE_SERVICE_PORT_DNS_TCP=53
        DNS_CACHE_SERVICE_PORT_ASSOC_WEB=9999
        DNS_CACHE_PORT=udp://10.0.3.3:53
        DNS_CACHE_PORT_53_UDP=udp://10.0.3.3:53
        DNS_CACHE_PORT_53_UDP_PROTO=udp
        DNS_CACHE_PORT_53_UDP_PORT=53
        DNS_CACHE_PORT_53_UDP_ADDR=10.0.3.3
        DNS_CACHE_PORT_53_TCP=tcp://10.0.3.3:53
        DNS_CACHE_PORT_53_TCP_PROTO=tcp
        DNS_CACHE_PORT_53_TCP_PORT=53
        DNS_CACHE_PORT_53_TCP_ADDR=10.0.3.3
        DNS_CACHE_PORT_9999_SCTP=sctp://10.0.3.3:9999
        DNS_CACHE_PORT_9999_SCTP_PROTO=sctp
        DNS_CACHE_PORT_9999_SCTP_PORT=9999
        DNS_CACHE_PORT_9999_SCTP_ADDR=10.0.3.3
        """
    )


DUAL = """
apiVersion: v1
kind: Service
metadata: {name: v6, namespace: dual}
spec:
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv6, IPv4]
  clusterIPs: [fd00:10::1:2, 10.0.4.4]
  ports: [{name: web, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: v4, namespace: dual}
spec:
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIPs: [10.0.4.5, fd00:10::1:3]
  ports: [{port: 53, protocol: UDP}]
"""


def test_dual_stack(tmp_path: Path) -> None:
    """The primary cluster IP is used; an IPv6 one is bracketed only inside the URLs."""
    env = service_env(registry_of(tmp_path, DUAL, DUAL_STACK), "dual")
    assert with_prefix(env, "V6_") == lines(
        """
        V6_SERVICE_HOST=fd00:10::1:2
        V6_SERVICE_PORT=8080
        V6_SERVICE_PORT_WEB=8080
        V6_PORT=tcp://[fd00:10::1:2]:8080
        V6_PORT_8080_TCP=tcp://[fd00:10::1:2]:8080
        V6_PORT_8080_TCP_PROTO=tcp
        V6_PORT_8080_TCP_PORT=8080
        V6_PORT_8080_TCP_ADDR=fd00:10::1:2
        """
    )
    assert with_prefix(env, "V4_") == lines(
        """
        V4_SERVICE_HOST=10.0.4.5
        V4_SERVICE_PORT=53
        V4_PORT=udp://10.0.4.5:53
        V4_PORT_53_UDP=udp://10.0.4.5:53
        V4_PORT_53_UDP_PROTO=udp
        V4_PORT_53_UDP_PORT=53
        V4_PORT_53_UDP_ADDR=10.0.4.5
        """
    )


COLLISIONS = """
apiVersion: v1
kind: Service
metadata: {name: foo, namespace: col}
spec:
  clusterIP: 10.0.5.1
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: foo-service, namespace: col}
spec:
  clusterIP: 10.0.5.2
  ports: [{port: 81}]
---
apiVersion: v1
kind: Service
metadata: {name: foo-port-80-tcp, namespace: col}
spec:
  clusterIP: 10.0.5.3
  ports: [{port: 82}]
"""


def test_collisions_later_name_wins(tmp_path: Path) -> None:
    """Where Services write the same variable, the one whose name sorts last wins."""
    env = service_env(registry_of(tmp_path, COLLISIONS), "col")
    assert env["FOO_SERVICE_HOST"] == "10.0.5.1"  # only foo writes it
    assert env["FOO_SERVICE_PORT"] == "tcp://10.0.5.2:81"  # foo says 80; foo-service's Docker link wins
    assert env["FOO_PORT_80_TCP_PORT"] == "tcp://10.0.5.3:82"  # foo says 80; foo-port-80-tcp's link wins
    assert env["FOO_SERVICE_SERVICE_PORT"] == "81"


# --- a container's environment ----------------------------------------------------------------------

SOURCES = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.0.1.10
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data:
  MODE: production
  LOG_LEVEL: info
  1ST: digit-first
  a=b: has-equals
  naïve: not-ascii
  TEMPLATE: $(WEB_SERVICE_HOST)
---
apiVersion: v1
kind: ConfigMap
metadata: {name: more}
data:
  LOG_LEVEL: debug
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
data:
  TOKEN: dG9rZW4=
stringData:
  USER: admin
  PASSWORD: s3cr$t
"""


def pod(spec: str, extra: str = "") -> str:
    """Pod default/web: container app with body `spec` (env, envFrom, ...), then `extra` spec YAML."""
    body = "\n".join(f"    {line}" for line in spec.strip("\n").splitlines())
    return f"""
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  uid: 6a1b2c3d-0000-4000-8000-000000000001
  labels: {{app: web, tier: front}}
  annotations: {{team: payments}}
spec:
  nodeName: node-1
  serviceAccountName: web-sa
  containers:
  - name: app
{body}
{extra}
status:
  hostIP: 192.168.1.10
  podIPs: [{{ip: 10.244.1.5}}, {{ip: "fd00:244::5"}}]
"""


def env_of(tmp_path: Path, spec: str, extra: str = "", allocatable: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of container app of Pod default/web built from `spec` (and `extra`) beside SOURCES."""
    registry = registry_of(tmp_path, SOURCES + pod(spec, extra), DUAL_STACK)
    web = registry.pods[("default", "web")]
    if allocatable is None:
        return container_env(registry, web)
    return container_env(registry, web, allocatable=allocatable)


def test_whole_environment(tmp_path: Path) -> None:
    """Service variables, then envFrom in order (with prefix), then env; later sources win."""
    env = env_of(
        tmp_path,
        """
envFrom:
- configMapRef: {name: cfg}
- configMapRef: {name: more}
- secretRef: {name: creds}
  prefix: DB_
- configMapRef: {name: absent, optional: true}
env:
- {name: MODE, value: debug}
- {name: WEB_SERVICE_HOST, value: overridden}
""",
    )
    assert env == KUBERNETES | lines(
        """
        WEB_SERVICE_HOST=overridden
        WEB_SERVICE_PORT=80
        WEB_SERVICE_PORT_HTTP=80
        WEB_PORT=tcp://10.0.1.10:80
        WEB_PORT_80_TCP=tcp://10.0.1.10:80
        WEB_PORT_80_TCP_PROTO=tcp
        WEB_PORT_80_TCP_PORT=80
        WEB_PORT_80_TCP_ADDR=10.0.1.10
        MODE=debug
        LOG_LEVEL=debug
        1ST=digit-first
        TEMPLATE=$(WEB_SERVICE_HOST)
        DB_TOKEN=token
        DB_USER=admin
        DB_PASSWORD=s3cr$t
        """
    )
    assert list(env) == sorted(env)


def test_envfrom_skips_invalid_names(tmp_path: Path) -> None:
    """envFrom keys that are not printable ASCII without '=' are left out; others, even 1ST, are kept."""
    env = env_of(tmp_path, "envFrom: [{configMapRef: {name: cfg}}]")
    assert "1ST" in env
    assert "a=b" not in env
    assert "naïve" not in env


def test_service_links_off(tmp_path: Path) -> None:
    """enableServiceLinks: false leaves only default/kubernetes beside the container's own variables."""
    spec = "env: [{name: A, value: $(WEB_SERVICE_HOST)}, {name: B, value: $(KUBERNETES_SERVICE_HOST)}]"
    text = SOURCES + pod(spec).replace("  nodeName: node-1", "  enableServiceLinks: false")
    registry = registry_of(tmp_path, text)
    env = container_env(registry, registry.pods[("default", "web")])
    assert env == KUBERNETES | {"A": "$(WEB_SERVICE_HOST)", "B": "10.0.0.1"}


def test_expansion(tmp_path: Path) -> None:
    """$(VAR) takes earlier env and envFrom variables, then service ones; $$ escapes; unknowns stay."""
    env = env_of(
        tmp_path,
        """
envFrom: [{configMapRef: {name: cfg}}]
env:
- {name: HOST, value: "$(WEB_SERVICE_HOST)"}
- {name: URL, value: "http://$(HOST):$(WEB_SERVICE_PORT_HTTP)/"}
- {name: FROM_ENVFROM, value: "$(LOG_LEVEL)"}
- {name: MODE, value: "$(MODE)-2"}
- {name: LATER, value: "$(DEFINED_LATER)"}
- {name: DEFINED_LATER, value: "x"}
- {name: SELF, value: "$(SELF)"}
- {name: ESCAPED, value: "$$(HOST)"}
- {name: DOLLARS, value: "a$$b$c$"}
- {name: UNCLOSED, value: "$(HOST"}
- {name: EMPTY_NAME, value: "$()"}
- {name: UNKNOWN, value: "$(NOPE)-x"}
- {name: NESTED, value: "$($(HOST))"}
- {name: BLANK, value: ""}
- {name: USES_BLANK, value: "[$(BLANK)]"}
- name: NOT_EXPANDED
  valueFrom: {configMapKeyRef: {name: cfg, key: TEMPLATE}}
- {name: WEB_SERVICE_PORT, value: "8080"}
- {name: OWN_WINS, value: "$(WEB_SERVICE_PORT)"}
""",
    )
    expected = {
        "HOST": "10.0.1.10",
        "URL": "http://10.0.1.10:80/",
        "FROM_ENVFROM": "info",
        "MODE": "production-2",
        "LATER": "$(DEFINED_LATER)",
        "SELF": "$(SELF)",
        "ESCAPED": "$(HOST)",
        "DOLLARS": "a$b$c$",
        "UNCLOSED": "$(HOST",
        "EMPTY_NAME": "$()",
        "UNKNOWN": "$(NOPE)-x",
        "NESTED": "$($(HOST))",
        "BLANK": "",
        "USES_BLANK": "[]",
        "NOT_EXPANDED": "$(WEB_SERVICE_HOST)",
        "WEB_SERVICE_PORT": "8080",
        "OWN_WINS": "8080",
    }
    assert {k: env[k] for k in expected} == expected


def test_field_refs(tmp_path: Path) -> None:
    """fieldRef paths resolve from the Pod; an absent label or annotation is empty."""
    refs = {
        "NAME": "metadata.name",
        "NAMESPACE": "metadata.namespace",
        "UID": "metadata.uid",
        "APP": "metadata.labels['app']",
        "TEAM": "metadata.annotations['team']",
        "NO_LABEL": "metadata.labels['absent']",
        "NODE": "spec.nodeName",
        "ACCOUNT": "spec.serviceAccountName",
        "HOST_IP": "status.hostIP",
        "HOST_IPS": "status.hostIPs",
        "POD_IP": "status.podIP",
        "POD_IPS": "status.podIPs",
    }
    spec = "env:\n" + "".join(
        f'- {{name: {k}, valueFrom: {{fieldRef: {{fieldPath: "{v}"}}}}}}\n' for k, v in refs.items()
    )
    env = env_of(tmp_path, spec)
    assert {k: env[k] for k in refs} == {
        "NAME": "web",
        "NAMESPACE": "default",
        "UID": "6a1b2c3d-0000-4000-8000-000000000001",
        "APP": "web",
        "TEAM": "payments",
        "NO_LABEL": "",
        "NODE": "node-1",
        "ACCOUNT": "web-sa",
        "HOST_IP": "192.168.1.10",
        "HOST_IPS": "192.168.1.10",
        "POD_IP": "10.244.1.5",
        "POD_IPS": "10.244.1.5,fd00:244::5",
    }


def test_key_refs(tmp_path: Path) -> None:
    """configMapKeyRef and secretKeyRef read one key; an optional missing one leaves the variable unset."""
    env = env_of(
        tmp_path,
        """
envFrom: [{configMapRef: {name: cfg}}]
env:
- name: LEVEL
  valueFrom: {configMapKeyRef: {name: more, key: LOG_LEVEL}}
- name: PASSWORD
  valueFrom: {secretKeyRef: {name: creds, key: PASSWORD}}
- name: MODE
  valueFrom: {configMapKeyRef: {name: cfg, key: ABSENT, optional: true}}
- name: OPTIONAL_MAP
  valueFrom: {configMapKeyRef: {name: absent, key: K, optional: true}}
- name: OPTIONAL_SECRET
  valueFrom: {secretKeyRef: {name: creds, key: ABSENT, optional: true}}
""",
    )
    assert (env["LEVEL"], env["PASSWORD"], env["MODE"]) == ("debug", "s3cr$t", "production")
    assert "OPTIONAL_MAP" not in env
    assert "OPTIONAL_SECRET" not in env


RESOURCES = """
resources:
  limits: {cpu: 500m, memory: 256Mi, hugepages-2Mi: 4Mi}
  requests: {cpu: 250m}
env:
- {name: CPU_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
- {name: CPU_LIMIT_M, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}
- {name: CPU_REQUEST_M, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}
- {name: MEMORY, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
- {name: MEMORY_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
- {name: MEMORY_REQUEST_MI, valueFrom: {resourceFieldRef: {resource: requests.memory, divisor: 1Mi}}}
- {name: STORAGE_GI, valueFrom: {resourceFieldRef: {resource: limits.ephemeral-storage, divisor: 1Gi}}}
- {name: STORAGE_REQUEST, valueFrom: {resourceFieldRef: {resource: requests.ephemeral-storage}}}
- {name: HUGE_MI, valueFrom: {resourceFieldRef: {resource: limits.hugepages-2Mi, divisor: 1Mi}}}
- name: SIDE_MEM_MI
  valueFrom: {resourceFieldRef: {containerName: side, resource: limits.memory, divisor: 1Mi}}
- {name: SIDE_CPU, valueFrom: {resourceFieldRef: {containerName: side, resource: limits.cpu, divisor: 1}}}
"""
SIDECAR = """  - name: side
    resources: {limits: {memory: 1Gi}}"""


def test_resource_field_refs(tmp_path: Path) -> None:
    """ceil(quantity / divisor); an unset request is the limit; an unset limit is the node's allocatable."""
    env = env_of(tmp_path, RESOURCES, SIDECAR)
    expected = {
        "CPU_LIMIT": "1",
        "CPU_LIMIT_M": "500",
        "CPU_REQUEST_M": "250",
        "MEMORY": "268435456",
        "MEMORY_MI": "256",
        "MEMORY_REQUEST_MI": "256",
        "STORAGE_GI": "20",
        "STORAGE_REQUEST": "0",
        "HUGE_MI": "4",
        "SIDE_MEM_MI": "1024",
        "SIDE_CPU": "2",
    }
    assert {k: env[k] for k in expected} == expected


def test_allocatable_stand_in(tmp_path: Path) -> None:
    """The node allocatable used for unset limits can be given."""
    env = env_of(tmp_path, RESOURCES, SIDECAR, {"cpu": "7500m"})
    assert (env["SIDE_CPU"], env["STORAGE_GI"]) == ("8", "0")


MULTI = """  - name: side
    image: busybox
    env: [{name: WHO, value: side}]
  initContainers:
  - name: setup
    env: [{name: WHO, value: setup}]"""


@pytest.mark.parametrize(("name", "who"), [(None, "app"), ("app", "app"), ("side", "side"), ("setup", "setup")])
def test_container_choice(tmp_path: Path, name: str | None, who: str) -> None:
    """The first container by default, else the one named, init containers included."""
    registry = registry_of(tmp_path, SOURCES + pod("env: [{name: WHO, value: app}]", MULTI))
    assert container_env(registry, registry.pods[("default", "web")], name)["WHO"] == who


def test_unknown_container(tmp_path: Path) -> None:
    """An unknown container name is an EnvError listing the Pod's containers."""
    registry = registry_of(tmp_path, SOURCES + pod("image: nginx", MULTI))
    with pytest.raises(EnvError) as info:
        container_env(registry, registry.pods[("default", "web")], "nope")
    assert str(info.value) == "Pod default/web: no container named 'nope'; its containers are app, side, setup (init)"


FIELD_PATHS = (
    "metadata.name, metadata.namespace, metadata.uid, spec.nodeName, spec.serviceAccountName, status.hostIP, "
    "status.hostIPs, status.podIP, status.podIPs, metadata.labels['KEY'], metadata.annotations['KEY']"
)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "envFrom: [{configMapRef: {name: nope}}]",
            "envFrom[0].configMapRef: ConfigMap default/nope not found",
        ),
        (
            "envFrom: [{configMapRef: {name: cfg}}, {secretRef: {name: nope}}]",
            "envFrom[1].secretRef: Secret default/nope not found",
        ),
        (
            """
env:
- {name: A, value: a}
- {name: B, value: b}
- {name: C, valueFrom: {configMapKeyRef: {name: cfg, key: MODE}}}
- {name: D, valueFrom: {configMapKeyRef: {name: nope, key: MODE}}}
""",
            "env[3].valueFrom.configMapKeyRef: ConfigMap default/nope not found",
        ),
        (
            "env: [{name: A, valueFrom: {configMapKeyRef: {name: cfg, key: NOPE}}}]",
            "env[0].valueFrom.configMapKeyRef: key 'NOPE' not found in ConfigMap default/cfg",
        ),
        (
            "env: [{name: A, valueFrom: {secretKeyRef: {name: nope, key: USER}}}]",
            "env[0].valueFrom.secretKeyRef: Secret default/nope not found",
        ),
        (
            "env: [{name: A, valueFrom: {secretKeyRef: {name: creds, key: NOPE}}}]",
            "env[0].valueFrom.secretKeyRef: key 'NOPE' not found in Secret default/creds",
        ),
        (
            "env: [{name: A, valueFrom: {fieldRef: {fieldPath: status.phase}}}]",
            f"env[0].valueFrom.fieldRef: fieldPath 'status.phase' is not supported; use one of {FIELD_PATHS}",
        ),
        (
            "env: [{name: A, valueFrom: {resourceFieldRef: {resource: limits.gpu}}}]",
            "env[0].valueFrom.resourceFieldRef: resource 'limits.gpu' is not supported; use limits.* or "
            "requests.* of cpu, memory, ephemeral-storage or hugepages-<size>",
        ),
        (
            "env: [{name: A, valueFrom: {resourceFieldRef: {resource: limits.cpu, containerName: nope}}}]",
            "env[0].valueFrom.resourceFieldRef: containerName: no container named 'nope' in the Pod",
        ),
        (
            "env: [{name: A, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 0}}}]",
            "env[0].valueFrom.resourceFieldRef: divisor must be a positive quantity such as 1, 1m or 1Mi, got '0'",
        ),
        (
            "resources: {limits: {cpu: lots}}\n"
            "env: [{name: A, valueFrom: {resourceFieldRef: {resource: requests.cpu}}}]",
            "env[0].valueFrom.resourceFieldRef: resources.limits.cpu of container app must be a quantity "
            "such as 500m or 1Gi, got 'lots'",
        ),
    ],
)
def test_errors(tmp_path: Path, spec: str, message: str) -> None:
    """A missing non-optional source or a bad reference is an EnvError naming Pod, container and field."""
    with pytest.raises(EnvError) as info:
        env_of(tmp_path, spec)
    assert str(info.value) == f"Pod default/web: container app: {message}"
    assert isinstance(info.value, ValueError)
    assert (info.value.subject, info.value.container) == ("Pod default/web", "app")


# --- output -----------------------------------------------------------------------------------------

ENV = {
    "URL": "tcp://[fd00::1]:80",
    "A": "80",
    "EMPTY": "",
    "LF": "\n",
    "X\n": "name with a newline",
    "SPACES": "two words ",
    "MULTI": "line1\nline2",
    "DOLLAR": "$(HOME) ${x} #no",
    "WINDOWS": "C:\\dir\\x",
    "TRAILING": "C:\\dir\\",
    "QUOTES": 'it\'s "$HOME"\r\n',
    "my.dotted-name": "x",
    "a:b": "y",
}


def test_format_dotenv() -> None:
    """dotenv: bare when safe, single quotes when literal is enough, else escaped double quotes."""
    assert format_env(ENV, "dotenv") == (
        "A=80\n"
        "DOLLAR='$(HOME) ${x} #no'\n"
        "EMPTY=\n"
        "LF='\n'\n"
        "MULTI='line1\nline2'\n"
        'QUOTES="it\'s \\"\\$HOME\\"\\r\\n"\n'
        "SPACES='two words '\n"
        'TRAILING="C:\\\\dir\\\\"\n'
        "URL=tcp://[fd00::1]:80\n"
        "WINDOWS='C:\\dir\\x'\n"
        '# left out, not a valid name here: "X\\n"\n'
        '# left out, not a valid name here: "a:b"\n'
        "my.dotted-name=x\n"
    )


def test_format_shell() -> None:
    """shell: sorted export lines quoted by shlex.quote; names the shell can't take are left out."""
    assert format_env(ENV, "shell") == (
        "export A=80\n"
        "export DOLLAR='$(HOME) ${x} #no'\n"
        "export EMPTY=''\n"
        "export LF='\n'\n"
        "export MULTI='line1\nline2'\n"
        "export QUOTES='it'\"'\"'s \"$HOME\"\r\n'\n"
        "export SPACES='two words '\n"
        "export TRAILING='C:\\dir\\'\n"
        "export URL='tcp://[fd00::1]:80'\n"
        "export WINDOWS='C:\\dir\\x'\n"
        '# left out, not a valid name here: "X\\n"\n'
        '# left out, not a valid name here: "a:b"\n'
        '# left out, not a valid name here: "my.dotted-name"\n'
    )


def test_format_json() -> None:
    """json: one object with sorted keys and a trailing newline."""
    assert format_env({"B": "2", "A": "é\n"}, "json") == '{\n  "A": "é\\n",\n  "B": "2"\n}\n'
    assert format_env({}, "json") == "{}\n"


def test_format_unknown() -> None:
    """An unknown format is a ValueError naming the known ones."""
    with pytest.raises(ValueError, match="unknown format 'yaml'; use one of dotenv, shell, json"):
        format_env({}, "yaml")
