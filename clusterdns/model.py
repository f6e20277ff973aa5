"""The typed objects of the service registry: what manifests become once validated.

Every class is a frozen dataclass; mappings they hold are never mutated after construction. Field
names follow the Kubernetes API (camelCase turned snake_case). Does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

from clusterdns.labels import Selector

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Give a frozen dataclass with slots an __init__ that stores through the slot descriptors.

    dataclasses' frozen __init__ goes through object.__setattr__ for every field, which makes a
    frozen Pod cost twice as much to build; a large zone builds hundreds of thousands of these. The
    instances are exactly as frozen as before (assignment still raises FrozenInstanceError).
    """
    made: Any = cls
    params, body = [], []
    ns: dict[str, Any] = {"_MISSING": MISSING}
    for f in fields(made):
        ns[f"_s_{f.name}"] = made.__dict__[f.name].__set__
        value = f.name
        if f.default is not MISSING:
            ns[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not MISSING:
            ns[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            value = f"_f_{f.name}() if {f.name} is _MISSING else {f.name}"
        else:
            params.append(f.name)
        body.append(f"    _s_{f.name}(self, {value})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n", ns)
    init: Callable[..., None] = ns["__init__"]
    init.__qualname__ = f"{made.__qualname__}.__init__"
    made.__init__ = init
    return made  # type: ignore[no-any-return]


# The EndpointSlice controller's managed-by label value: slices it writes are derived from a selector.
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"

# Service types, as the API server spells them.
CLUSTER_IP = "ClusterIP"
NODE_PORT = "NodePort"
LOAD_BALANCER = "LoadBalancer"
EXTERNAL_NAME = "ExternalName"
SERVICE_TYPES = (CLUSTER_IP, NODE_PORT, LOAD_BALANCER, EXTERNAL_NAME)
PROTOCOLS = ("TCP", "UDP", "SCTP")

# A Service's ip_families: one shared tuple per combination, not one per Service (a large zone has
# 100,000s of Services, nearly all with the same families).
_FAMILIES: dict[tuple[str, ...], tuple[str, ...]] = {
    f: f for f in (("IPv4",), ("IPv6",), ("IPv4", "IPv6"), ("IPv6", "IPv4"))
}
_IPV4, _IPV6 = _FAMILIES[("IPv4",)], _FAMILIES[("IPv6",)]


def families_of(ips: tuple[str, ...]) -> tuple[str, ...]:
    """The IP families of addresses in canonical text, in their order: ("IPv4",), ("IPv6", "IPv4"), ..."""
    if len(ips) == 1:
        return _IPV6 if ":" in ips[0] else _IPV4
    families = tuple(["IPv6" if ":" in ip else "IPv4" for ip in ips])
    return _FAMILIES.get(families, families)


def shared_families(families: tuple[str, ...]) -> tuple[str, ...]:
    """`families` as the shared tuple of the same families."""
    return _FAMILIES.get(families, families)


@fast_init
@dataclass(frozen=True, slots=True)
class Source:
    """Where an object was declared: a file and the line its document (or List item) starts on."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@fast_init
@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    source: Source | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" when unnamed
    port: int
    protocol: str = "TCP"
    target_port: int | str = 0  # number, or a container port name; 0 means "same as port"
    node_port: int | None = None  # requested or allocated


@fast_init
@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str = CLUSTER_IP
    ports: tuple[ServicePort, ...] = ()
    selector: Mapping[str, str] | None = None  # None: endpoints come from Endpoints / EndpointSlices
    headless: bool = False  # clusterIP: None
    cluster_ips: tuple[str, ...] = ()  # requested (may be empty) or allocated; primary first
    ip_families: tuple[str, ...] = ()  # "IPv4" / "IPv6", as requested or as the clusterIPs imply
    ip_family_policy: str = "SingleStack"
    external_name: str = ""
    external_ips: tuple[str, ...] = ()
    load_balancer_ingress: tuple[str, ...] = ()  # IPs or hostnames from status.loadBalancer.ingress
    publish_not_ready_addresses: bool = False
    session_affinity: str = "None"
    session_affinity_timeout: int = 10800  # sessionAffinityConfig.clientIP.timeoutSeconds
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    source: Source | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def cluster_ip(self) -> str:
        """The primary cluster IP; "None" for headless, "" for ExternalName (kubectl's rendering)."""
        if self.type == EXTERNAL_NAME:
            return ""
        if self.headless:
            return "None"
        return self.cluster_ips[0] if self.cluster_ips else ""

    @property
    def has_cluster_ip(self) -> bool:
        return self.type != EXTERNAL_NAME and not self.headless and bool(self.cluster_ips)


@fast_init
@dataclass(frozen=True, slots=True)
class ContainerPort:
    name: str
    container_port: int
    protocol: str = "TCP"


@fast_init
@dataclass(frozen=True, slots=True)
class KeyRef:
    """configMapKeyRef / secretKeyRef."""

    name: str
    key: str
    optional: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    value: str = ""
    field_path: str = ""  # valueFrom.fieldRef.fieldPath
    config_map_key: KeyRef | None = None
    secret_key: KeyRef | None = None
    resource: str = ""  # valueFrom.resourceFieldRef.resource
    divisor: str = ""


@fast_init
@dataclass(frozen=True, slots=True)
class EnvFrom:
    """One envFrom source: a ConfigMap or a Secret, with an optional prefix."""

    kind: str  # "ConfigMap" or "Secret"
    name: str
    prefix: str = ""
    optional: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str = ""
    ports: tuple[ContainerPort, ...] = ()
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFrom, ...] = ()
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # limits / requests


@fast_init
@dataclass(frozen=True, slots=True)
class PodSpec:
    """The parts of a Pod's spec (or a workload's pod template) that clusterdns uses."""

    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    hostname: str = ""
    subdomain: str = ""
    enable_service_links: bool = True
    host_network: bool = False
    node_name: str = ""
    service_account_name: str = "default"


@fast_init
@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    spec: PodSpec = field(default_factory=PodSpec)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    ips: tuple[str, ...] = ()  # status.podIPs, requested or allocated; primary first
    host_ip: str = ""
    ready: bool = True
    phase: str = "Running"
    owner: str = ""  # "Deployment/web", "StatefulSet/db", ... for generated Pods
    uid: str = ""
    source: Source | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ip(self) -> str:
        return self.ips[0] if self.ips else ""


@fast_init
@dataclass(frozen=True, slots=True)
class PodTemplate:
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    spec: PodSpec = field(default_factory=PodSpec)


@fast_init
@dataclass(frozen=True, slots=True)
class Workload:
    """A Deployment, ReplicaSet or StatefulSet: a recipe for `replicas` Pods."""

    kind: str
    namespace: str
    name: str
    replicas: int
    selector: Selector
    template: PodTemplate
    service_name: str = ""  # StatefulSet spec.serviceName
    template_hash: str = ""  # pod-template-hash (Deployment) computed from the template
    labels: Mapping[str, str] = field(default_factory=dict)
    source: Source | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def pod_prefix(self) -> str:
        """What its Pods' names start with: `<deployment>-<pod-template-hash>`, else its own name."""
        return f"{self.name}-{self.template_hash}" if self.template_hash else self.name


@fast_init
@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: str = "TCP"


@fast_init
@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address serving a Service: what the Endpoints controller (or a manifest) says."""

    ip: str
    ports: tuple[EndpointPort, ...]
    ready: bool = True
    hostname: str = ""
    node_name: str = ""
    pod: str = ""  # the target Pod's name, when known


@fast_init
@dataclass(frozen=True, slots=True)
class EndpointsObject:
    """A v1 Endpoints manifest, flattened: every address with its subset's ports."""

    namespace: str
    name: str
    endpoints: tuple[Endpoint, ...]
    source: Source | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@fast_init
@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str  # label kubernetes.io/service-name
    address_type: str
    endpoints: tuple[Endpoint, ...]
    source: Source | None = None
    managed_by: str = ""  # label endpointslice.kubernetes.io/managed-by

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@fast_init
@dataclass(frozen=True, slots=True)
class ConfigMap:
    namespace: str
    name: str
    data: Mapping[str, str]
    source: Source | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@fast_init
@dataclass(frozen=True, slots=True)
class Secret:
    namespace: str
    name: str
    data: Mapping[str, str]  # decoded from base64 (data) merged with stringData
    type: str = "Opaque"
    source: Source | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@fast_init
@dataclass(frozen=True, slots=True)
class ServiceCIDR:
    """networking.k8s.io ServiceCIDR: extra ranges cluster IPs may come from."""

    name: str
    cidrs: tuple[str, ...]
    source: Source | None = None


# Everything a manifest can turn into.
Object = Namespace | Service | Pod | Workload | EndpointsObject | EndpointSlice | ConfigMap | Secret | ServiceCIDR


_KINDS: dict[type, str] = {
    cls: cls.__name__ for cls in (Namespace, Service, Pod, EndpointSlice, ConfigMap, Secret, ServiceCIDR)
}
_KINDS[EndpointsObject] = "Endpoints"


def kind_of(obj: Object) -> str:
    """The Kubernetes kind of a typed object, as errors and tables print it."""
    kind = _KINDS.get(type(obj))
    if kind is None:
        return obj.kind if isinstance(obj, Workload) else type(obj).__name__
    return kind


def display_name(obj: Object) -> str:
    """`Service default/web`, or `Namespace dev` for cluster-scoped objects."""
    if isinstance(obj, Namespace | ServiceCIDR):
        return f"{kind_of(obj)} {obj.name}"
    return f"{kind_of(obj)} {obj.namespace}/{obj.name}"
