"""kubectl's views of the registry: `get` tables, `-o yaml|json` objects and `describe service`.

Does no I/O and never reads the clock: `now` is passed in and ages come from the registry. The formats
are kubectl's, a fixed contract a kubectl user must recognise: the API server's table printers
(kubernetes pkg/printers/internalversion/printers.go, always run with Wide set server-side), kubectl
describe.go, apimachinery's duration.HumanDuration, and Go's text/tabwriter for the alignment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from clusterdns.labels import format_labels, is_ip
from clusterdns.model import (
    EXTERNAL_NAME,
    LOAD_BALANCER,
    NODE_PORT,
    Endpoint,
    EndpointPort,
    Namespace,
    Pod,
    Service,
)
from clusterdns.registry import Registry

__all__ = [
    "RESOURCES",
    "KubectlError",
    "describe_service",
    "get_objects",
    "get_table",
    "human_duration",
    "resolve",
]

# Resource words kubectl accepts -> canonical resource.
RESOURCES: Mapping[str, str] = {
    "services": "services",
    "service": "services",
    "svc": "services",
    "endpoints": "endpoints",
    "ep": "endpoints",
    "pods": "pods",
    "pod": "pods",
    "po": "pods",
    "namespaces": "namespaces",
    "namespace": "namespaces",
    "ns": "namespaces",
}

# The kind whose first-seen time is a resource's age; Endpoints are as old as their Service.
_AGE_KIND: Mapping[str, str] = {
    "services": "Service",
    "endpoints": "Service",
    "pods": "Pod",
    "namespaces": "Namespace",
}

_HEADERS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # (columns, wide-only columns)
    "services": (("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"), ("SELECTOR",)),
    "endpoints": (("NAME", "ENDPOINTS", "AGE"), ()),
    "pods": (
        ("NAME", "READY", "STATUS", "RESTARTS", "AGE"),
        ("IP", "NODE", "NOMINATED NODE", "READINESS GATES"),
    ),
    "namespaces": (("NAME", "STATUS", "AGE"), ()),
}

# kubectl describe.go: annotations longer than this are folded; last-applied-configuration is hidden.
_MAX_ANNOTATION_LEN = 140
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_HEADLESS_LABEL = "service.kubernetes.io/headless"


class KubectlError(Exception):
    """What kubectl prints on stderr before exiting 1; the message is the whole line."""


def resolve(word: str) -> str:
    """The canonical resource for a word kubectl accepts (`svc` -> `services`)."""
    try:
        return RESOURCES[word.lower()]
    except KeyError:
        raise KubectlError(f'error: the server doesn\'t have a resource type "{word}"') from None


# --- selection ----------------------------------------------------------------------------------------


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_T = TypeVar("_T", bound=_Named)


def _named(items: list[_T], resource: str, name: str | None) -> list[_T]:
    """All of `items`, or the one called `name` (kubectl's NotFound when there is none)."""
    if name is None:
        return items
    found = [item for item in items if item.name == name]
    if not found:
        raise KubectlError(f'Error from server (NotFound): {resource} "{name}" not found')
    return found


def _check_scope(resource: str, name: str | None, namespace: str | None) -> None:
    if name is not None and namespace is None and resource != "namespaces":
        raise KubectlError("error: a resource cannot be retrieved by name across all namespaces")


def _services(registry: Registry, resource: str, name: str | None, namespace: str | None) -> list[Service]:
    """Services, or for `endpoints` the Services that have an Endpoints object."""
    services = registry.services_in(namespace)
    if resource == "endpoints":
        services = [s for s in services if _has_endpoints_object(registry, s)]
    return _named(services, resource, name)


def _has_endpoints_object(registry: Registry, svc: Service) -> bool:
    """The endpoints controller writes one for every Service with a selector (ExternalName has none);
    a selectorless Service has one only when a manifest gave it addresses."""
    return svc.selector is not None or bool(registry.endpoints.get(svc.key))


def _namespaces(registry: Registry, name: str | None) -> list[Namespace]:
    return _named(sorted(registry.namespaces.values(), key=lambda n: n.name), "namespaces", name)


# --- get ----------------------------------------------------------------------------------------------


def get_table(
    registry: Registry,
    resource: str,
    name: str | None,
    namespace: str | None,
    wide: bool,
    now: float,
) -> str:
    """`kubectl get RESOURCE [NAME] [-n NS | -A] [-o wide]` as kubectl prints it.

    `namespace` None means all namespaces (a leading NAMESPACE column). With nothing to show this is
    kubectl's stderr line, `No resources found in NS namespace.` (or `No resources found` with -A).
    """
    resource = resolve(resource)
    _check_scope(resource, name, namespace)
    kind = _AGE_KIND[resource]
    rows: list[list[str]] = []
    keys: list[tuple[str, str]] = []  # (namespace, name) of each row
    if resource == "namespaces":
        for ns in _namespaces(registry, name):
            rows.append([ns.name, "Active", _age(registry.age_of(kind, "", ns.name), now)])
            keys.append(("", ns.name))
    elif resource == "pods":
        for pod in _named(registry.pods_in(namespace), resource, name):
            rows.append(_pod_cells(pod, _age(registry.age_of(kind, *pod.key), now), wide))
            keys.append(pod.key)
    else:
        for svc in _services(registry, resource, name, namespace):
            age = _age(registry.age_of(kind, *svc.key), now)
            if resource == "services":
                rows.append(_service_cells(svc, age, wide))
            else:
                rows.append(_endpoints_cells(registry, svc, age))
            keys.append(svc.key)
    if not rows:
        if namespace is None or resource == "namespaces":
            return "No resources found\n"
        return f"No resources found in {namespace} namespace.\n"
    columns, wide_columns = _HEADERS[resource]
    header = [*columns, *(wide_columns if wide else ())]
    if namespace is None and resource != "namespaces":
        header.insert(0, "NAMESPACE")
        rows = [[ns, *cells] for cells, (ns, _) in zip(rows, keys, strict=True)]
    return _align([header, *rows], minwidth=6, padding=3)


def _age(created: float | None, now: float) -> str:
    return "<unknown>" if created is None else human_duration(now - created)


def _service_cells(svc: Service, age: str, wide: bool) -> list[str]:
    """printService: NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE [SELECTOR]."""
    ips = _cluster_ips(svc)
    ports = ",".join(
        f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else f"{p.port}/{p.protocol}" for p in svc.ports
    )
    cells = [svc.name, svc.type, ips[0] if ips else "<none>", _external_ip(svc), ports or "<none>", age]
    if wide:
        cells.append(format_labels(svc.selector or {}) or "<none>")
    return cells


def _external_ip(svc: Service) -> str:
    """getServiceExternalIP. Load-balancer ingress is sorted and deduplicated (a string set) and,
    since the API server always prints wide, never clipped."""
    if svc.type == EXTERNAL_NAME:
        return svc.external_name
    if svc.type != LOAD_BALANCER:
        return ",".join(svc.external_ips) or "<none>"
    ingress = sorted(set(svc.load_balancer_ingress))
    if svc.external_ips:
        return ",".join([*ingress, *svc.external_ips])
    return ",".join(ingress) or "<pending>"


def _endpoints_cells(registry: Registry, svc: Service, age: str) -> list[str]:
    """printEndpoints: NAME ENDPOINTS AGE, the endpoints as formatEndpoints lists them (port-major)."""
    subsets = _subsets(registry, svc)
    if not subsets:
        return [svc.name, "<none>", age]
    items: list[str] = []
    for subset in subsets:
        if not subset.ports:  # a headless Service without ports: bare addresses
            items.extend(ep.ip for ep in subset.addresses)
        for port in subset.ports:
            items.extend(_join_host_port(ep.ip, port.port) for ep in subset.addresses)
    return [svc.name, _at_most_three(items), age]


def _pod_cells(pod: Pod, age: str, wide: bool) -> list[str]:
    """printPod: NAME READY STATUS RESTARTS AGE [IP NODE NOMINATED NODE READINESS GATES]."""
    total = len(pod.spec.containers)
    ready = total if pod.ready and pod.phase == "Running" else 0
    cells = [pod.name, f"{ready}/{total}", pod.phase, "0", age]
    if wide:
        cells += [pod.ip or "<none>", pod.spec.node_name or "<none>", "<none>", "<none>"]
    return cells


def _at_most_three(items: Sequence[str]) -> str:
    """kubectl's list cell: at most three entries, then ` + N more...`."""
    if len(items) > 3:
        return f"{','.join(items[:3])} + {len(items) - 3} more..."
    return ",".join(items)


def _join_host_port(ip: str, port: int) -> str:
    """net.JoinHostPort: IPv6 addresses in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# --- v1 Endpoints -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Subset:
    """One EndpointSubset: the ports offered by exactly these addresses, with this readiness."""

    addresses: tuple[Endpoint, ...]
    not_ready: tuple[Endpoint, ...]
    ports: tuple[EndpointPort, ...]


def _subsets(registry: Registry, svc: Service) -> list[_Subset]:
    """The Service's v1 Endpoints subsets, packed as the endpoints controller's RepackSubsets does.

    The controller publishes only addresses of the Service's primary IP family; each port is mapped to
    the addresses offering it, and ports offered by the same addresses (with the same readiness) share
    a subset. Kubernetes orders subsets and ports by hash; here they keep the Service's port order.
    Addresses are sorted by IP string, as Kubernetes sorts them.
    """
    eps = registry.endpoints.get(svc.key, ())
    if svc.selector is not None:
        primary = _families(registry, svc)[0]
        eps = tuple(ep for ep in eps if _family(ep.ip) == primary)
    by_port: dict[EndpointPort | None, dict[tuple[str, str], bool]] = {}
    found: dict[tuple[str, str], Endpoint] = {}
    for ep in eps:
        key = (ep.ip, ep.pod)
        found.setdefault(key, ep)
        for port in ep.ports or (None,):
            addresses = by_port.setdefault(port, {})
            addresses[key] = addresses.get(key, True) and ep.ready  # once not ready, not ready
    groups: dict[tuple[tuple[str, str, bool], ...], list[EndpointPort]] = {}
    for port, addresses in by_port.items():
        group = groups.setdefault(tuple(sorted((ip, pod, ready) for (ip, pod), ready in addresses.items())), [])
        if port is not None:
            group.append(port)
    return [
        _Subset(
            tuple(found[(ip, pod)] for ip, pod, ready in members if ready),
            tuple(found[(ip, pod)] for ip, pod, ready in members if not ready),
            tuple(ports),
        )
        for members, ports in groups.items()
    ]


def _families(registry: Registry, svc: Service) -> tuple[str, ...]:
    """spec.ipFamilies as the API server fills it: as allocated, else the primary service CIDR's."""
    if svc.type == EXTERNAL_NAME:
        return ()
    return svc.ip_families or (_family(registry.service_cidrs[0]),)


def _family(address: str) -> str:
    return "IPv6" if ":" in address else "IPv4"


def _cluster_ips(svc: Service) -> tuple[str, ...]:
    """spec.clusterIPs: ("None",) for a headless Service, () for ExternalName."""
    if svc.type == EXTERNAL_NAME:
        return ()
    return ("None",) if svc.headless else svc.cluster_ips


# --- -o yaml|json -------------------------------------------------------------------------------------


def get_objects(registry: Registry, resource: str, name: str | None, namespace: str | None) -> dict[str, Any]:
    """`kubectl get RESOURCE [NAME] -o yaml|json`: one v1 object when `name` is given, else a v1 List.

    The result is JSON-shaped data for the caller to serialise, with the fields the API server would
    have defaulted (internalTrafficPolicy, ipFamilies, the Ready condition, ...).
    """
    resource = resolve(resource)
    _check_scope(resource, name, namespace)
    items: list[dict[str, Any]]
    if resource == "namespaces":
        items = [_namespace_object(registry, ns) for ns in _namespaces(registry, name)]
    elif resource == "pods":
        items = [_pod_object(registry, pod) for pod in _named(registry.pods_in(namespace), resource, name)]
    elif resource == "services":
        items = [_service_object(registry, svc) for svc in _services(registry, resource, name, namespace)]
    else:
        items = [_endpoints_object(registry, svc) for svc in _services(registry, resource, name, namespace)]
    if name is not None:
        return items[0]
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def _metadata(
    registry: Registry,
    kind: str,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    created = registry.age_of(kind, namespace, name)
    if created is not None:
        meta["creationTimestamp"] = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _service_object(registry: Registry, svc: Service) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if svc.type == LOAD_BALANCER:
        spec["allocateLoadBalancerNodePorts"] = True
    ips = _cluster_ips(svc)
    if ips:
        spec["clusterIP"] = ips[0]
        spec["clusterIPs"] = list(ips)
    if svc.external_ips:
        spec["externalIPs"] = list(svc.external_ips)
    if svc.type == EXTERNAL_NAME:
        spec["externalName"] = svc.external_name
    if svc.type in (NODE_PORT, LOAD_BALANCER):
        spec["externalTrafficPolicy"] = "Cluster"
    if svc.type != EXTERNAL_NAME:
        spec["internalTrafficPolicy"] = "Cluster"
        spec["ipFamilies"] = list(_families(registry, svc))
        spec["ipFamilyPolicy"] = svc.ip_family_policy
    ports: list[dict[str, Any]] = []
    for p in svc.ports:
        port: dict[str, Any] = {"name": p.name} if p.name else {}
        if p.node_port:
            port["nodePort"] = p.node_port
        port |= {"port": p.port, "protocol": p.protocol, "targetPort": p.target_port or p.port}
        ports.append(port)
    if ports:
        spec["ports"] = ports
    if svc.publish_not_ready_addresses:
        spec["publishNotReadyAddresses"] = True
    if svc.selector:
        spec["selector"] = dict(svc.selector)
    spec["sessionAffinity"] = svc.session_affinity
    if svc.session_affinity == "ClientIP":
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.session_affinity_timeout}}
    spec["type"] = svc.type
    ingress: list[dict[str, Any]] = []
    for entry in svc.load_balancer_ingress:
        if is_ip(entry):
            ingress.append({"ip": entry, "ipMode": "VIP"} if svc.type == LOAD_BALANCER else {"ip": entry})
        else:
            ingress.append({"hostname": entry})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(registry, "Service", svc.namespace, svc.name, svc.labels, svc.annotations),
        "spec": spec,
        "status": {"loadBalancer": {"ingress": ingress} if ingress else {}},
    }


def _endpoints_object(registry: Registry, svc: Service) -> dict[str, Any]:
    labels: dict[str, str] = {}
    if svc.selector is not None:  # written by the endpoints controller, which copies the labels
        labels = dict(svc.labels) | ({_HEADLESS_LABEL: ""} if svc.headless else {})

    def address(ep: Endpoint) -> dict[str, Any]:
        out: dict[str, Any] = {"ip": ep.ip}
        if ep.hostname:
            out["hostname"] = ep.hostname
        if ep.node_name:
            out["nodeName"] = ep.node_name
        if ep.pod:
            out["targetRef"] = {"kind": "Pod", "name": ep.pod, "namespace": svc.namespace}
        return out

    subsets: list[dict[str, Any]] = []
    for subset in _subsets(registry, svc):
        entry: dict[str, Any] = {}
        if subset.addresses:
            entry["addresses"] = [address(ep) for ep in subset.addresses]
        if subset.not_ready:
            entry["notReadyAddresses"] = [address(ep) for ep in subset.not_ready]
        if subset.ports:
            entry["ports"] = [
                ({"name": p.name} if p.name else {}) | {"port": p.port, "protocol": p.protocol} for p in subset.ports
            ]
        subsets.append(entry)
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": _metadata(registry, "Service", svc.namespace, svc.name, labels),
    }
    if subsets:
        obj["subsets"] = subsets
    return obj


def _pod_object(registry: Registry, pod: Pod) -> dict[str, Any]:
    containers: list[dict[str, Any]] = []
    for c in pod.spec.containers:
        container: dict[str, Any] = {"image": c.image, "name": c.name} if c.image else {"name": c.name}
        if c.ports:
            container["ports"] = [
                {"containerPort": p.container_port} | ({"name": p.name} if p.name else {}) | {"protocol": p.protocol}
                for p in c.ports
            ]
        containers.append(container)
    spec: dict[str, Any] = {"containers": containers}
    if not pod.spec.enable_service_links:
        spec["enableServiceLinks"] = False
    if pod.spec.host_network:
        spec["hostNetwork"] = True
    if pod.spec.hostname:
        spec["hostname"] = pod.spec.hostname
    if pod.spec.node_name:
        spec["nodeName"] = pod.spec.node_name
    spec["serviceAccountName"] = pod.spec.service_account_name
    if pod.spec.subdomain:
        spec["subdomain"] = pod.spec.subdomain
    status: dict[str, Any] = {"conditions": [{"status": "True" if pod.ready else "False", "type": "Ready"}]}
    if pod.host_ip:
        status["hostIP"] = pod.host_ip
    status["phase"] = pod.phase
    if pod.ips:
        status["podIP"] = pod.ip
        status["podIPs"] = [{"ip": ip} for ip in pod.ips]
    meta = _metadata(registry, "Pod", pod.namespace, pod.name, pod.labels, pod.annotations)
    if pod.uid:
        meta["uid"] = pod.uid
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def _namespace_object(registry: Registry, ns: Namespace) -> dict[str, Any]:
    labels = {"kubernetes.io/metadata.name": ns.name} | dict(ns.labels)  # set by the API server
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _metadata(registry, "Namespace", "", ns.name, labels),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


# --- describe -----------------------------------------------------------------------------------------


def describe_service(registry: Registry, namespace: str, name: str) -> str:
    """`kubectl describe service NAME -n NAMESPACE`, laid out as kubectl's describe.go does."""
    svc = registry.services.get((namespace, name))
    if svc is None:
        raise KubectlError(f'Error from server (NotFound): services "{name}" not found')
    rows: list[list[str]] = [["Name:", svc.name], ["Namespace:", svc.namespace]]
    rows += _multiline("Labels:", [f"{k}={v}" for k, v in sorted(svc.labels.items())])
    rows += _annotation_rows(svc.annotations)
    rows.append(["Selector:", format_labels(svc.selector or {}) or "<none>"])
    rows.append(["Type:", svc.type])
    if svc.type != EXTERNAL_NAME:  # the API server leaves the policy unset for ExternalName
        rows.append(["IP Family Policy:", svc.ip_family_policy])
    rows.append(["IP Families:", ",".join(_families(registry, svc)) or "<none>"])
    ips = _cluster_ips(svc)
    rows.append(["IP:", ips[0] if ips else ""])
    rows.append(["IPs:", ",".join(ips) or "<none>"])
    if svc.external_ips:
        rows.append(["External IPs:", ",".join(svc.external_ips)])
    if svc.external_name:
        rows.append(["External Name:", svc.external_name])
    if svc.load_balancer_ingress:
        vip = " (VIP)" if svc.type == LOAD_BALANCER else ""  # ipMode, defaulted by the API server
        entries = [f"{e}{vip}" if is_ip(e) else e for e in svc.load_balancer_ingress]
        rows.append(["LoadBalancer Ingress:", ", ".join(entries)])
    for p in svc.ports:
        port_name = p.name or "<unset>"
        rows.append(["Port:", port_name, f"{p.port}/{p.protocol}"])
        rows.append(["TargetPort:", f"{p.target_port or p.port}/{p.protocol}"])
        if p.node_port:
            rows.append(["NodePort:", port_name, f"{p.node_port}/{p.protocol}"])
        rows.append(["Endpoints:", _slice_endpoints(registry, svc, p.name)])
    rows.append(["Session Affinity:", svc.session_affinity])
    if svc.type in (NODE_PORT, LOAD_BALANCER):
        rows.append(["External Traffic Policy:", "Cluster"])
    if svc.type != EXTERNAL_NAME:
        rows.append(["Internal Traffic Policy:", "Cluster"])
    rows.append(["Events:", "<none>"])
    return _align(rows, minwidth=0, padding=2)


def _multiline(title: str, values: Sequence[str]) -> list[list[str]]:
    """printLabelsMultiline: the first value beside the title, the rest on aligned continuation lines."""
    if not values:
        return [[title, "<none>"]]
    return [[title, values[0]], *([["", v] for v in values[1:]])]


def _annotation_rows(annotations: Mapping[str, str]) -> list[list[str]]:
    """printAnnotationsMultiline: `key: value`; long or multi-line values folded below the key."""
    rows: list[list[str]] = []
    for key in sorted(k for k in annotations if k != _LAST_APPLIED):
        title = "" if rows else "Annotations:"
        value = annotations[key].removesuffix("\n")
        if len(value) + len(key) + 2 > _MAX_ANNOTATION_LEN or "\n" in value:
            rows.append([title, f"{key}:"])
            rows += [["", "  " + _shorten(line, _MAX_ANNOTATION_LEN - 2)] for line in value.split("\n")]
        else:
            rows.append([title, f"{key}: {value}"])
    return rows or [["Annotations:", "<none>"]]


def _shorten(text: str, limit: int) -> str:
    return text[:limit] + "..." if len(text) > limit else text


def _slice_endpoints(registry: Registry, svc: Service, port_name: str) -> str:
    """formatEndpointSlices for one Service port: ready endpoints of every IP family, primary first.

    A Service with a selector always has an EndpointSlice (a placeholder when nothing matches), so
    with no ready endpoints it prints nothing; a selectorless Service without any prints `<none>`.
    """
    eps = registry.endpoints.get(svc.key, ())
    if svc.selector is None and not eps:
        return "<none>"
    primary = _families(registry, svc)[:1]
    ordered = sorted(eps, key=lambda ep: ((_family(ep.ip),) != primary, ep.ip))
    items: list[str] = []
    for ep in ordered:
        if not ep.ready:
            continue
        if not ep.ports:
            items.append(ep.ip)
        items.extend(_join_host_port(ep.ip, p.port) for p in ep.ports if p.name == port_name)
    return _at_most_three(items)


# --- alignment and durations --------------------------------------------------------------------------


def _align(rows: Sequence[Sequence[str]], minwidth: int, padding: int) -> str:
    """Go's text/tabwriter with a space pad character: each row is its tab-terminated cells and a last,
    unterminated cell. A column's width is its widest cell plus `padding` (at least `minwidth`), taken
    over each run of consecutive rows that have a cell in that column; last cells are never padded.
    kubectl get uses (6, 3), kubectl describe (0, 2).
    """
    out: list[str] = []
    widths: list[int] = []

    def write(lo: int, hi: int) -> None:
        for row in rows[lo:hi]:
            cells = [cell.ljust(widths[j]) if j < len(widths) else cell for j, cell in enumerate(row)]
            out.append("".join(cells) + "\n")

    def block(lo: int, hi: int) -> None:
        column = len(widths)
        this = lo
        while this < hi:
            if column >= len(rows[this]) - 1:
                this += 1
                continue
            write(lo, this)
            lo = this
            width = minwidth
            while this < hi and column < len(rows[this]) - 1:
                width = max(width, len(rows[this][column]) + padding)
                this += 1
            widths.append(width)
            block(lo, this)
            widths.pop()
            lo = this
        write(lo, hi)

    block(0, len(rows))
    return "".join(out)


def human_duration(seconds: float) -> str:
    """apimachinery duration.HumanDuration: about two significant figures (`90s`, `3m20s`, `5d4h`, `2y`).

    Up to a second in the future is `0s`; further than that is `<invalid>`.
    """
    whole = int(seconds)  # truncated toward zero, as Go's int(d.Seconds())
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if minutes < 10:
        return _two(minutes, "m", whole % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return _two(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return _two(days, "d", hours % 24, "h")
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return _two(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def _two(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}{small}{small_unit}" if small else f"{big}{big_unit}"
