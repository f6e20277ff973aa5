"""Kubernetes manifests -> typed objects, with file:line errors: each document (from documents.py)
validated field by field into a frozen object of model.py.

Parsing is pure: `parse_text` takes a file's text and returns its objects and problems; `read_file` reads
the file first (through documents.read_text). Each document is validated on its own; a document in error
is left out with a Problem naming the file, the line, the object and the field path, and everything else
in the file still loads.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import marshal
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import yaml

from clusterdns.documents import (
    CLUSTER_SCOPED,
    Piece,
    documents,
    locate,
    pieces,
    read_text,
    subject,
    syntax_error,
)
from clusterdns.labels import (
    OPERATORS,
    SAFE_ALPHABET,
    Requirement,
    Selector,
    canonical_ip,
    dns1035_label_error,
    dns1123_label_error,
    dns1123_subdomain_error,
    label_key_error,
    label_value_error,
    port_name_error,
)
from clusterdns.model import (
    CLUSTER_IP,
    EXTERNAL_NAME,
    PROTOCOLS,
    SERVICE_TYPES,
    ConfigMap,
    Container,
    ContainerPort,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    EndpointsObject,
    EnvFrom,
    EnvVar,
    KeyRef,
    Namespace,
    Object,
    Pod,
    PodSpec,
    PodTemplate,
    Secret,
    Service,
    ServiceCIDR,
    ServicePort,
    Source,
    Workload,
    families_of,
    shared_families,
)
from clusterdns.problems import FileResult, ManifestError, Path, Problem, format_path, type_name

WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet")


# Kinds that are read for what clusterdns serves; any other kind is skipped with a note.
KINDS = (
    "Namespace",
    "Service",
    "Endpoints",
    "EndpointSlice",
    "Pod",
    *WORKLOAD_KINDS,
    "ConfigMap",
    "Secret",
    "ServiceCIDR",
)


MAX_REPLICAS = 150_000  # Kubernetes' scalability thresholds: at most 150,000 Pods in a cluster


def read_file(path: str) -> FileResult:
    """Read and parse one manifest file; an unreadable file is a problem, not an exception."""
    return parse_file(path, *read_text(path))


def parse_file(path: str, text: str | Problem, stamp: tuple[float, int]) -> FileResult:
    """A whole file's result from what read_text gave for it."""
    if isinstance(text, Problem):
        return FileResult(path, problems=(text,))
    result = parse_text(text, path)
    return FileResult(path, result.objects, result.problems, result.notes, stamp)


def parse_piece(path: str, piece: Piece, raw: list[Any] | None = None) -> FileResult:
    """The objects and problems of one piece of a file (with its raw documents when known), lines
    counted from the start of the file."""
    offset, text = piece
    part = parse_text(text, path, raw, offset)
    if not offset:
        return part
    problems = tuple(_shift(p, offset) for p in part.problems)
    return FileResult(path, part.objects, problems, tuple(_shift(p, offset) for p in part.notes))


def join_pieces(path: str, parts: Iterable[FileResult], stamp: tuple[float, int]) -> FileResult:
    """One file's result from its pieces' results, in file order."""
    objects: list[Object] = []
    problems: list[Problem] = []
    notes: list[Problem] = []
    for part in parts:
        objects.extend(part.objects)
        problems.extend(part.problems)
        notes.extend(part.notes)
    return FileResult(path, tuple(objects), tuple(problems), tuple(notes), stamp)


def parse_text(text: str, path: str, raw: list[Any] | None = None, offset: int = 0) -> FileResult:
    """Parse one file's text into objects and problems; `raw` is its raw_documents when known; objects'
    lines are counted `offset` lines further (a piece of a file). Whatever the text holds, the answer is a
    result: a failure nobody foresaw is a problem of this file alone."""
    try:
        return _parse_text(text, path, raw, offset)
    except Exception as exc:
        reason = f"could not be read: {type(exc).__name__}: {exc} (a bug in clusterdns: please report it)"
        return FileResult(path, problems=(Problem(path, 0, "", "", reason),))


def _parse_text(text: str, path: str, raw: list[Any] | None, offset: int) -> FileResult:
    objects: list[Object] = []
    problems: list[Problem] = []
    notes: list[Problem] = []
    try:
        docs = list(documents(text, path, raw))
    except (yaml.YAMLError, ValueError) as exc:
        chunks = pieces(text, path, 0)
        if len(chunks) < 2:
            line, reason = syntax_error(exc, text, path)
            return FileResult(path, problems=(Problem(path, line, "", "", reason),))
        return join_pieces(path, [parse_piece(path, chunk) for chunk in chunks], (0.0, 0))
    for doc in docs:
        try:
            obj = parse_object(doc.data, Source(path, doc.line + offset))
        except ManifestError as exc:
            line = locate(text, path, doc, exc.path)
            problems.append(Problem(path, line, subject(doc.data), format_path(exc.path), exc.message))
            continue
        if obj is None:
            kind = doc.data.get("kind")
            notes.append(Problem(path, doc.line, subject(doc.data), "", f"kind {kind} is not used; skipped", True))
            continue
        objects.append(obj)
    return FileResult(path, tuple(objects), tuple(problems), tuple(notes))


def _shift(problem: Problem, offset: int) -> Problem:
    return Problem(
        problem.path,
        problem.line + offset if problem.line else 0,
        problem.subject,
        problem.field,
        problem.message,
        problem.note,
    )


# What an absent mapping reads as: one dict, never mutated, rather than a new empty dict per object (a
# Service without labels or annotations would hold two).
_NO_MAP: dict[str, Any] = {}


def _map(d: Mapping[str, Any], key: str, path: Path, required: bool = False) -> dict[str, Any]:
    value = d.get(key)
    if value is None:
        if required:
            raise ManifestError((*path, key), "required field is missing")
        return _NO_MAP
    if not isinstance(value, dict):
        raise ManifestError((*path, key), f"must be a mapping, got {type_name(value)}")
    return value


def _list(d: Mapping[str, Any], key: str, path: Path, required: bool = False) -> list[Any]:
    value = d.get(key)
    if value is None:
        if required:
            raise ManifestError((*path, key), "required field is missing")
        return []
    if not isinstance(value, list):
        raise ManifestError((*path, key), f"must be a list, got {type_name(value)}")
    return value


def _items(d: Mapping[str, Any], key: str, path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each element of the list `key`, which must be a mapping, with its path."""
    for i, item in enumerate(_list(d, key, path)):
        p = (*path, key, i)
        if not isinstance(item, dict):
            raise ManifestError(p, f"must be a mapping, got {type_name(item)}")
        yield p, item


def _str(d: Mapping[str, Any], key: str, path: Path, required: bool = False, default: str = "") -> str:
    value = d.get(key)
    if value is None or (required and value == ""):
        if required:
            raise ManifestError((*path, key), "required field is missing")
        return default
    if not isinstance(value, str):
        raise ManifestError((*path, key), f"must be a string, got {type_name(value)}")
    return value


def _int(d: Mapping[str, Any], key: str, path: Path) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError((*path, key), f"must be an integer, got {type_name(value)}")
    return value


def _bool(d: Mapping[str, Any], key: str, path: Path, default: bool) -> bool:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ManifestError((*path, key), f"must be true or false, got {type_name(value)}")
    return value


def _str_map(d: Mapping[str, Any], key: str, path: Path) -> dict[str, str]:
    m = _map(d, key, path)
    for k, v in m.items():
        if not isinstance(v, str):
            raise ManifestError((*path, key, str(k)), f"must be a string, got {type_name(v)}")
    return m


def _labels(d: Mapping[str, Any], key: str, path: Path) -> dict[str, str]:
    labels = _str_map(d, key, path)
    for k, v in labels.items():
        problem = label_key_error(str(k)) or label_value_error(v)
        if problem:
            raise ManifestError((*path, key, str(k)), problem)
    return labels


def _check(path: Path, problem: str | None) -> None:
    if problem:
        raise ManifestError(path, problem)


def _port_number(d: Mapping[str, Any], key: str, path: Path, required: bool = True) -> int:
    value = _int(d, key, path)
    if value is None:
        if required:
            raise ManifestError((*path, key), "required field is missing")
        return 0
    if not 1 <= value <= 65535:
        raise ManifestError((*path, key), f"must be 1-65535, got {value}")
    return value


_PROTOCOLS = {p: p for p in PROTOCOLS}


def _protocol(d: Mapping[str, Any], path: Path) -> str:
    """The protocol, as the one shared string of its name."""
    protocol = _str(d, "protocol", path, default="TCP")
    shared = _PROTOCOLS.get(protocol)
    if shared is None:
        raise ManifestError((*path, "protocol"), f"must be one of TCP, UDP, SCTP, got {protocol!r}")
    return shared


# Namespace names already validated, each one string that every object of the namespace shares (not
# one string per manifest); emptied when it grows large.
_NAMESPACES: dict[str, str] = {}


def _ip(value: Any, path: Path) -> str:
    """A valid IP address, in its canonical text form."""
    if not isinstance(value, str):
        raise ManifestError(path, f"must be an IP address, got {type_name(value)}")
    try:
        return canonical_ip(value)
    except ValueError:
        raise ManifestError(path, f"must be a valid IP address, got {value!r}") from None


def parse_object(data: Any, source: Source | None = None) -> Object | None:
    """Validate one document (declared at `source`) into a typed object; None for a kind clusterdns does
    not use.

    Raises ManifestError naming the field path (relative to the document) and the reason.
    """
    if not isinstance(data, dict):
        raise ManifestError((), f"a manifest must be a mapping, got {type_name(data)}")
    # Each field is taken as it is when it has the plain type asked for (nearly always), and otherwise
    # checked (and refused) by _str and _map: the same result, without a call per field.
    kind = data.get("kind")
    if type(kind) is not str or not kind:
        kind = _str(data, "kind", (), required=True)
    if kind not in KINDS:
        return None
    meta = data.get("metadata")
    if type(meta) is not dict:
        meta = _map(data, "metadata", (), required=True)
    name = meta.get("name")
    if type(name) is not str or not name:
        name = _str(meta, "name", ("metadata",), required=True)
    if kind in CLUSTER_SCOPED:
        namespace = ""
    else:
        stated = meta.get("namespace")
        namespace = (stated if type(stated) is str else _str(meta, "namespace", ("metadata",))) or "default"
        known = _NAMESPACES.get(namespace)
        if known is None:
            _check(("metadata", "namespace"), dns1123_label_error(namespace))
            if len(_NAMESPACES) >= 50_000:
                _NAMESPACES.clear()
            known = _NAMESPACES[namespace] = namespace
        namespace = known
    obj: Object = _PARSERS[kind](data, meta, namespace, name, source)
    return obj


def _parse_namespace(
    data: dict[str, Any], meta: dict[str, Any], _ns: str, name: str, source: Source | None
) -> Namespace:
    _check(("metadata", "name"), dns1123_label_error(name))
    return Namespace(name, _labels(meta, "labels", ("metadata",)), source=source)


def _parse_service_cidr(
    data: dict[str, Any], meta: dict[str, Any], _ns: str, name: str, source: Source | None
) -> ServiceCIDR:
    spec = _map(data, "spec", (), required=True)
    cidrs = []
    for i, value in enumerate(_list(spec, "cidrs", ("spec",), required=True)):
        cidrs.append(parse_cidr(value, ("spec", "cidrs", i)))
    if not cidrs or len(cidrs) > 2:
        raise ManifestError(("spec", "cidrs"), f"must hold one or two CIDRs, got {len(cidrs)}")
    return ServiceCIDR(name, tuple(cidrs), source=source)


def parse_cidr(value: Any, path: Path) -> str:
    """A CIDR such as 10.0.0.0/16 with no host bits set, in canonical form."""
    if not isinstance(value, str):
        raise ManifestError(path, f"must be a CIDR, got {type_name(value)}")
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ManifestError(path, f"must be a CIDR such as 10.0.0.0/16, got {value!r} ({exc})") from None


_SERVICE_TYPES = {t: t for t in SERVICE_TYPES}


def _parse_service(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> Service:
    _check(("metadata", "name"), dns1035_label_error(name))
    spec = data.get("spec")
    if type(spec) is not dict:  # as in parse_object: the plain case taken as it is, any other checked
        spec = _map(data, "spec", (), required=True)
    sp: Path = ("spec",)
    stated_type = spec.get("type")
    type_ = CLUSTER_IP if stated_type is None else _SERVICE_TYPES.get(_str(spec, "type", sp), "")
    if not type_:
        raise ManifestError(("spec", "type"), f"must be one of {', '.join(SERVICE_TYPES)}, got {spec['type']!r}")
    external_name = ""
    if type_ == EXTERNAL_NAME:
        external_name = _str(spec, "externalName", sp, required=True)
        _check(("spec", "externalName"), dns1123_subdomain_error(external_name.removesuffix(".")))
    headless, cluster_ips = _cluster_ips(spec, type_)
    families, policy = _ip_families(spec, cluster_ips)
    ports = _service_ports(spec, type_, required=not headless and type_ != EXTERNAL_NAME)
    # Fields a Service seldom has are only looked into when present (most Services: none of them).
    selector = (_labels(spec, "selector", sp) or None) if spec.get("selector") is not None else None
    external_ips: tuple[str, ...] = ()
    if spec.get("externalIPs") is not None:
        external_ips = tuple(_ip(v, ("spec", "externalIPs", i)) for i, v in enumerate(_list(spec, "externalIPs", sp)))
    ingress: list[str] = []
    if data.get("status") is not None:
        status = _map(data, "status", ())
        for p, item in _items(_map(status, "loadBalancer", ("status",)), "ingress", ("status", "loadBalancer")):
            if item.get("ip") is not None:
                ingress.append(_ip(item["ip"], (*p, "ip")))
            elif hostname := _str(item, "hostname", p):
                ingress.append(hostname)
    affinity, timeout = "None", 10800  # the API server's defaults
    if spec.get("sessionAffinity") is not None:
        affinity, timeout = _session_affinity(spec)
    return Service(
        namespace=namespace,
        name=name,
        type=type_,
        ports=ports,
        selector=selector if type_ != EXTERNAL_NAME else None,
        headless=headless,
        cluster_ips=cluster_ips,
        ip_families=families,
        ip_family_policy=policy,
        external_name=external_name,
        external_ips=external_ips,
        load_balancer_ingress=tuple(ingress),
        publish_not_ready_addresses=(
            False
            if spec.get("publishNotReadyAddresses") is None
            else _bool(spec, "publishNotReadyAddresses", sp, False)
        ),
        session_affinity=affinity,
        session_affinity_timeout=timeout,
        labels=_labels(meta, "labels", ("metadata",)) if meta.get("labels") is not None else _NO_MAP,
        annotations=_str_map(meta, "annotations", ("metadata",)) if meta.get("annotations") is not None else _NO_MAP,
        source=source,
    )


def _session_affinity(spec: dict[str, Any]) -> tuple[str, int]:
    """(sessionAffinity, its timeout) of a Service that states sessionAffinity."""
    sp: Path = ("spec",)
    affinity = _str(spec, "sessionAffinity", sp, default="None")
    if affinity not in ("None", "ClientIP"):
        raise ManifestError(("spec", "sessionAffinity"), f"must be None or ClientIP, got {affinity!r}")
    timeout = 10800  # the API server's default
    if affinity == "ClientIP":
        cp: Path = ("spec", "sessionAffinityConfig", "clientIP")
        given = _int(_map(_map(spec, "sessionAffinityConfig", sp), "clientIP", cp[:2]), "timeoutSeconds", cp)
        if given is not None:
            _check((*cp, "timeoutSeconds"), None if 0 < given <= 86400 else f"must be 1-86400, got {given}")
            timeout = given
    return affinity, timeout


def _cluster_ips(spec: dict[str, Any], type_: str) -> tuple[bool, tuple[str, ...]]:
    """(headless, requested cluster IPs) from clusterIP and clusterIPs, which must agree."""
    single = spec.get("clusterIP")
    if spec.get("clusterIPs") is None and type_ != EXTERNAL_NAME and type(single) is str and single not in ("", "None"):
        return False, (_ip(single, ("spec", "clusterIP")),)  # one address (most Services): what the rules come to
    sp: Path = ("spec",)
    single = _str(spec, "clusterIP", sp)
    many = _list(spec, "clusterIPs", sp)
    for i, v in enumerate(many):
        if not isinstance(v, str):
            raise ManifestError(("spec", "clusterIPs", i), f"must be a string, got {type_name(v)}")
    if single and many and many[0] != single:
        raise ManifestError(("spec", "clusterIPs", 0), f"must equal spec.clusterIP ({single!r}), got {many[0]!r}")
    requested = list(many) or ([single] if single else [])
    if type_ == EXTERNAL_NAME:
        if requested and requested != ["None"]:
            raise ManifestError(("spec", "clusterIP"), "must not be set for type ExternalName")
        return False, ()
    if "None" in requested:
        if requested != ["None"]:
            raise ManifestError(("spec", "clusterIPs"), "'None' must be the only value")
        if type_ != CLUSTER_IP:
            raise ManifestError(("spec", "clusterIP"), f"may not be 'None' for type {type_}")
        return True, ()
    if len(requested) > 2:
        raise ManifestError(("spec", "clusterIPs"), f"must hold at most two addresses, got {len(requested)}")
    key = ("clusterIPs", 0) if many else ("clusterIP",)
    ips = []
    for i, v in enumerate(requested):
        ips.append(_ip(v, ("spec", "clusterIPs", i) if many else ("spec", *key)))
    if len(ips) == 2 and (":" in ips[0]) == (":" in ips[1]):  # canonical: only IPv6 has a colon
        raise ManifestError(("spec", "clusterIPs", 1), "a dual-stack service needs one IPv4 and one IPv6 address")
    return False, tuple(ips)


_POLICIES = {p: p for p in ("SingleStack", "PreferDualStack", "RequireDualStack")}


def _ip_families(spec: dict[str, Any], cluster_ips: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """(ipFamilies, ipFamilyPolicy), with the API server's defaults: without ipFamilies, the families of the
    cluster IPs it states (the registry gives a Service no other order), and a policy for their number."""
    if spec.get("ipFamilies") is None and spec.get("ipFamilyPolicy") is None:  # most Services: the defaults
        return families_of(cluster_ips), "RequireDualStack" if len(cluster_ips) == 2 else "SingleStack"
    sp: Path = ("spec",)
    families = []
    for i, v in enumerate(_list(spec, "ipFamilies", sp)):
        if v not in ("IPv4", "IPv6"):
            raise ManifestError(("spec", "ipFamilies", i), f"must be IPv4 or IPv6, got {type_name(v)}")
        if v in families:
            raise ManifestError(("spec", "ipFamilies", i), f"duplicate family {v}")
        families.append(v)
    policy = _str(spec, "ipFamilyPolicy", sp)
    if policy:
        policy = _POLICIES.get(policy, "")
        if not policy:
            raise ManifestError(
                ("spec", "ipFamilyPolicy"),
                f"must be SingleStack, PreferDualStack or RequireDualStack, got {spec['ipFamilyPolicy']!r}",
            )
    if not policy:
        policy = "RequireDualStack" if len(families) == 2 or len(cluster_ips) == 2 else "SingleStack"
    if policy == "SingleStack" and (len(families) > 1 or len(cluster_ips) > 1):
        raise ManifestError(("spec", "ipFamilyPolicy"), "SingleStack allows one IP family, got two")
    for i, ip in enumerate(cluster_ips):
        fam = "IPv6" if ":" in ip else "IPv4"
        if i < len(families) and families[i] != fam:
            raise ManifestError(
                ("spec", "ipFamilies", i), f"must match clusterIPs[{i}] ({ip} is {fam}), got {families[i]}"
            )
    return shared_families(tuple(families)) if families else families_of(cluster_ips), policy


# Services' ports by their data (marshalled, with the type and whether ports are required): most
# Services of a zone have one of a few port lists, which they share, parsed once; errors are not kept.
_PORTS: dict[tuple[str, bool, bytes], tuple[ServicePort, ...]] = {}


def _service_ports(spec: dict[str, Any], type_: str, required: bool) -> tuple[ServicePort, ...]:
    try:
        key = (type_, required, marshal.dumps(spec.get("ports"), 2))  # version 2: equal data, equal bytes
    except ValueError:  # a YAML timestamp, say
        return _parse_service_ports(spec, type_, required)
    found = _PORTS.get(key)
    if found is None:
        found = _parse_service_ports(spec, type_, required)
        if len(_PORTS) >= 20_000:
            _PORTS.clear()
        _PORTS[key] = found
    return found


def _parse_service_ports(spec: dict[str, Any], type_: str, required: bool) -> tuple[ServicePort, ...]:
    ports: list[ServicePort] = []
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    items = list(_items(spec, "ports", ("spec",)))
    if required and not items:
        raise ManifestError(("spec", "ports"), "required field is missing (a Service needs at least one port)")
    for p, item in items:
        name = _str(item, "name", p)
        if name:
            _check((*p, "name"), dns1123_label_error(name))
            if name in seen_names:
                raise ManifestError((*p, "name"), f"duplicate port name {name!r}")
            seen_names.add(name)
        elif len(items) > 1:
            raise ManifestError((*p, "name"), "required when a Service has more than one port")
        port = _port_number(item, "port", p)
        protocol = _protocol(item, p)
        if (port, protocol) in seen_ports:
            raise ManifestError((*p, "port"), f"duplicate port {port}/{protocol}")
        seen_ports.add((port, protocol))
        target: int | str = port
        raw_target = item.get("targetPort")
        if isinstance(raw_target, str) and raw_target.isascii() and raw_target.isdigit() and len(raw_target) < 10:
            raw_target = int(raw_target)
        if isinstance(raw_target, str):
            _check((*p, "targetPort"), port_name_error(raw_target))
            target = raw_target
        elif raw_target is not None:
            target = _port_number(item, "targetPort", p) if not isinstance(raw_target, int) else raw_target
            if isinstance(raw_target, bool) or not 1 <= target <= 65535:
                raise ManifestError((*p, "targetPort"), f"must be 1-65535 or a port name, got {raw_target!r}")
        node_port = _int(item, "nodePort", p)
        if node_port is not None and node_port != 0:
            if type_ not in ("NodePort", "LoadBalancer"):
                raise ManifestError((*p, "nodePort"), f"may not be used when type is {type_}")
        else:
            node_port = None
        ports.append(ServicePort(name, port, protocol, target, node_port))
    return tuple(ports)


def _parse_pod(data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None) -> Pod:
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    spec = _pod_spec(_map(data, "spec", (), required=True), ("spec",))
    status = _map(data, "status", ())
    st: Path = ("status",)
    ips: list[str] = []
    for i, item in enumerate(_list(status, "podIPs", st)):
        p: Path = ("status", "podIPs", i)
        if not isinstance(item, dict):
            raise ManifestError(p, f"must be a mapping, got {type_name(item)}")
        ips.append(_ip(item.get("ip"), (*p, "ip")))
    if status.get("podIP") is not None:
        ip = _ip(status["podIP"], ("status", "podIP"))
        if ips and ips[0] != ip:
            raise ManifestError(("status", "podIPs", 0), f"must equal status.podIP ({ip}), got {ips[0]}")
        ips = ips or [ip]
    phase = _str(status, "phase", st, default="Running")
    ready = phase == "Running"
    for p, cond in _items(status, "conditions", st):
        if _str(cond, "type", p) == "Ready":
            ready = _str(cond, "status", p) == "True"
    host_ip = _ip(status["hostIP"], ("status", "hostIP")) if status.get("hostIP") is not None else ""
    return Pod(
        namespace=namespace,
        name=name,
        spec=spec,
        labels=_labels(meta, "labels", ("metadata",)),
        annotations=_str_map(meta, "annotations", ("metadata",)),
        ips=tuple(ips),
        host_ip=host_ip,
        ready=ready,
        phase=phase,
        uid=_str(meta, "uid", ("metadata",)),
        source=source,
    )


_SPECS: dict[bytes | str, PodSpec] = {}


def _pod_spec(spec: dict[str, Any], path: Path) -> PodSpec:
    """A Pod spec. Pods often repeat one spec (replicas written out one by one, exports), so equal specs
    (by their data, marshalled, or its repr when marshal can't take it) are parsed once and share one
    immutable PodSpec; errors are not kept."""
    try:
        key: bytes | str = marshal.dumps(spec, 2)  # version 2: no back-references, so equal data, equal bytes
    except ValueError:  # a YAML timestamp, say
        key = repr(spec)
    found = _SPECS.get(key)
    if found is None:
        found = _parse_pod_spec(spec, path)
        if len(_SPECS) >= 20_000:
            _SPECS.clear()
        _SPECS[key] = found
    return found


def _parse_pod_spec(spec: dict[str, Any], path: Path) -> PodSpec:
    containers = _containers(spec, "containers", path, required=True)
    init = _containers(spec, "initContainers", path, required=False)
    ports: set[str] = set()
    for c_index, c in enumerate(containers):
        for p_index, port in enumerate(c.ports):
            if port.name and port.name in ports:
                raise ManifestError(
                    (*path, "containers", c_index, "ports", p_index, "name"),
                    f"duplicate port name {port.name!r}",
                )
            ports.add(port.name)
    hostname = _str(spec, "hostname", path)
    subdomain = _str(spec, "subdomain", path)
    if hostname:
        _check((*path, "hostname"), dns1123_label_error(hostname))
    if subdomain:
        _check((*path, "subdomain"), dns1123_label_error(subdomain))
    return PodSpec(
        containers=containers,
        init_containers=init,
        hostname=hostname,
        subdomain=subdomain,
        enable_service_links=_bool(spec, "enableServiceLinks", path, True),
        host_network=_bool(spec, "hostNetwork", path, False),
        node_name=_str(spec, "nodeName", path),
        service_account_name=_str(spec, "serviceAccountName", path) or _str(spec, "serviceAccount", path) or "default",
    )


def _containers(spec: dict[str, Any], key: str, path: Path, required: bool) -> tuple[Container, ...]:
    if key not in spec and not required:
        return ()
    out: list[Container] = []
    names: set[str] = set()
    items = list(_items(spec, key, path))
    if required and not items:
        raise ManifestError((*path, key), "required field is missing (a Pod needs at least one container)")
    for p, item in items:
        name = _str(item, "name", p, required=True)
        _check((*p, "name"), dns1123_label_error(name))
        if name in names:
            raise ManifestError((*p, "name"), f"duplicate container name {name!r}")
        names.add(name)
        ports = []
        if "ports" in item:
            for pp, port in _items(item, "ports", p):
                port_name = _str(port, "name", pp)
                if port_name:
                    _check((*pp, "name"), port_name_error(port_name))
                ports.append(ContainerPort(port_name, _port_number(port, "containerPort", pp), _protocol(port, pp)))
        out.append(
            Container(
                name,
                _str(item, "image", p),
                tuple(ports),
                tuple(_env_var(ep, e) for ep, e in _items(item, "env", p)) if "env" in item else (),
                tuple(_env_from(ep, e) for ep, e in _items(item, "envFrom", p)) if "envFrom" in item else (),
                _resources(item, p) if "resources" in item else _NO_RESOURCES,
            )
        )
    return tuple(out)


_NO_RESOURCES: Mapping[str, Mapping[str, str]] = {"limits": {}, "requests": {}}


def _resources(item: dict[str, Any], path: Path) -> dict[str, dict[str, str]]:
    resources = _map(item, "resources", path)
    return {
        k: {str(rk): str(rv) for rk, rv in _map(resources, k, (*path, "resources")).items()}
        for k in ("limits", "requests")
    }


def _env_var(path: Path, item: dict[str, Any]) -> EnvVar:
    name = _str(item, "name", path, required=True)
    if "=" in name:
        raise ManifestError((*path, "name"), f"must not contain '=', got {name!r}")
    value = _str(item, "value", path)
    source = _map(item, "valueFrom", path)
    if not source:
        return EnvVar(name, value)
    if value:
        raise ManifestError((*path, "valueFrom"), "may not be set when value is not empty")
    vp = (*path, "valueFrom")
    if "fieldRef" in source:
        ref = _map(source, "fieldRef", vp)
        return EnvVar(name, field_path=_str(ref, "fieldPath", (*vp, "fieldRef"), required=True))
    if "resourceFieldRef" in source:
        ref = _map(source, "resourceFieldRef", vp)
        rp = (*vp, "resourceFieldRef")
        divisor = ref.get("divisor")
        return EnvVar(
            name,
            resource=_str(ref, "resource", rp, required=True),
            divisor="" if divisor is None else str(divisor),
            value=_str(ref, "containerName", rp),
        )
    for key in ("configMapKeyRef", "secretKeyRef"):
        if key in source:
            ref = _map(source, key, vp)
            rp = (*vp, key)
            key_ref = KeyRef(
                _str(ref, "name", rp, required=True),
                _str(ref, "key", rp, required=True),
                _bool(ref, "optional", rp, False),
            )
            if key == "configMapKeyRef":
                return EnvVar(name, config_map_key=key_ref)
            return EnvVar(name, secret_key=key_ref)
    raise ManifestError(vp, "must set one of fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef")


def _env_from(path: Path, item: dict[str, Any]) -> EnvFrom:
    prefix = _str(item, "prefix", path)
    for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
        if key in item:
            ref = _map(item, key, path)
            rp = (*path, key)
            return EnvFrom(kind, _str(ref, "name", rp, required=True), prefix, _bool(ref, "optional", rp, False))
    raise ManifestError(path, "must set configMapRef or secretRef")


def parse_selector(value: Any, path: Path) -> Selector:
    """A workload's `spec.selector` (matchLabels and matchExpressions)."""
    if not isinstance(value, dict):
        raise ManifestError(path, f"must be a mapping, got {type_name(value)}")
    match_labels = _labels(value, "matchLabels", path)
    expressions: list[Requirement] = []
    for p, item in _items(value, "matchExpressions", path):
        key = _str(item, "key", p, required=True)
        _check((*p, "key"), label_key_error(key))
        op = _str(item, "operator", p, required=True)
        if op not in OPERATORS:
            raise ManifestError((*p, "operator"), f"must be one of {', '.join(OPERATORS)}, got {op!r}")
        values = _list(item, "values", p)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise ManifestError((*p, "values", i), f"must be a string, got {type_name(v)}")
            _check((*p, "values", i), label_value_error(v))
        if op in ("In", "NotIn") and not values:
            raise ManifestError((*p, "values"), f"must be non-empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and values:
            raise ManifestError((*p, "values"), f"must be empty for operator {op}")
        expressions.append(Requirement(key, op, frozenset(values)))
    return Selector(match_labels, tuple(expressions))


def _parse_workload(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> Workload:
    kind = data["kind"]
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    spec = _map(data, "spec", (), required=True)
    sp: Path = ("spec",)
    replicas = _int(spec, "replicas", sp)
    if replicas is None:
        replicas = 1
    if replicas < 0:
        raise ManifestError(("spec", "replicas"), f"must be 0 or more, got {replicas}")
    if replicas > MAX_REPLICAS:  # each replica becomes a Pod: a bound on memory and time
        raise ManifestError(
            ("spec", "replicas"),
            f"must be at most {MAX_REPLICAS:,} (the most Pods Kubernetes supports in a cluster), got {replicas:,}",
        )
    template = _map(spec, "template", sp, required=True)
    tp: Path = ("spec", "template")
    tmeta = _map(template, "metadata", tp)
    labels = _labels(tmeta, "labels", (*tp, "metadata"))
    if "selector" not in spec or spec["selector"] is None:
        raise ManifestError(("spec", "selector"), "required field is missing")
    selector = parse_selector(spec["selector"], ("spec", "selector"))
    if selector.empty:
        raise ManifestError(("spec", "selector"), "must not be empty")
    if not selector.matches(labels):
        raise ManifestError(("spec", "template", "metadata", "labels"), f"do not match spec.selector ({selector})")
    pod_spec = _pod_spec(_map(template, "spec", tp, required=True), (*tp, "spec"))
    service_name = ""
    if kind == "StatefulSet":
        service_name = _str(spec, "serviceName", sp)
        if service_name:
            _check(("spec", "serviceName"), dns1035_label_error(service_name))
    annotations = _str_map(tmeta, "annotations", (*tp, "metadata"))
    return Workload(
        kind=kind,
        namespace=namespace,
        name=name,
        replicas=replicas,
        selector=selector,
        template=PodTemplate(labels, annotations, pod_spec),
        service_name=service_name,
        template_hash=template_hash(template) if kind == "Deployment" else "",
        labels=_labels(meta, "labels", ("metadata",)),
        source=source,
    )


def safe_encode(text: str) -> str:
    """rand.SafeEncodeString: map each character into an alphabet without vowels or look-alikes."""
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in text)


def template_hash(template: Mapping[str, Any]) -> str:
    """A pod-template-hash: a 32-bit hash of the pod template, safe-encoded as the Deployment
    controller encodes its FNV-32a hash (the bytes hashed differ from Go's object dump, so the values
    differ from a real cluster's; what matters is that they are stable and change with the template)."""
    digest = zlib.crc32(json.dumps(template, sort_keys=True, default=str).encode())
    return safe_encode(str(digest))


def _endpoint_ports(item: dict[str, Any], path: Path) -> tuple[EndpointPort, ...]:
    ports = []
    for p, port in _items(item, "ports", path):
        name = _str(port, "name", p)
        ports.append(EndpointPort(name, _port_number(port, "port", p), _protocol(port, p)))
    return tuple(ports)


def _parse_endpoints(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> EndpointsObject:
    _check(("metadata", "name"), dns1035_label_error(name))
    endpoints: list[Endpoint] = []
    for sp, subset in _items(data, "subsets", ()):
        ports = _endpoint_ports(subset, sp)
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for ap, address in _items(subset, key, sp):
                hostname = _str(address, "hostname", ap)
                if hostname:
                    _check((*ap, "hostname"), dns1123_label_error(hostname))
                target = _map(address, "targetRef", ap)
                endpoints.append(
                    Endpoint(
                        ip=_ip(address.get("ip"), (*ap, "ip")),
                        ports=ports,
                        ready=ready,
                        hostname=hostname,
                        node_name=_str(address, "nodeName", ap),
                        pod=_str(target, "name", (*ap, "targetRef")),
                    )
                )
    return EndpointsObject(namespace, name, tuple(endpoints), source=source)


def _parse_endpoint_slice(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> EndpointSlice:
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    labels = _labels(meta, "labels", ("metadata",))
    service_name = labels.get("kubernetes.io/service-name", "")
    if not service_name:
        raise ManifestError(("metadata", "labels"), "needs the label kubernetes.io/service-name")
    address_type = _str(data, "addressType", (), required=True)
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        raise ManifestError(("addressType",), f"must be IPv4, IPv6 or FQDN, got {address_type!r}")
    ports = _endpoint_ports(data, ())
    endpoints: list[Endpoint] = []
    for ep, item in _items(data, "endpoints", ()):
        conditions = _map(item, "conditions", ep)
        ready = _bool(conditions, "ready", (*ep, "conditions"), True)
        hostname = _str(item, "hostname", ep)
        if hostname:
            _check((*ep, "hostname"), dns1123_label_error(hostname))
        target = _map(item, "targetRef", ep)
        addresses = _list(item, "addresses", ep, required=True)
        if not addresses:
            raise ManifestError((*ep, "addresses"), "must hold at least one address")
        for i, address in enumerate(addresses):
            if address_type == "FQDN":
                continue
            ip = _ip(address, (*ep, "addresses", i))
            if (":" in ip) != (address_type == "IPv6"):
                raise ManifestError((*ep, "addresses", i), f"must be an {address_type} address, got {ip}")
            endpoints.append(
                Endpoint(
                    ip,
                    ports,
                    ready,
                    hostname,
                    _str(item, "nodeName", ep),
                    _str(target, "name", (*ep, "targetRef")),
                )
            )
    managed_by = labels.get("endpointslice.kubernetes.io/managed-by", "")
    return EndpointSlice(
        namespace, name, service_name, address_type, tuple(endpoints), managed_by=managed_by, source=source
    )


def _parse_config_map(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> ConfigMap:
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    return ConfigMap(namespace, name, _str_map(data, "data", ()), source=source)


def _parse_secret(
    data: dict[str, Any], meta: dict[str, Any], namespace: str, name: str, source: Source | None
) -> Secret:
    _check(("metadata", "name"), dns1123_subdomain_error(name))
    values: dict[str, str] = {}
    for key, encoded in _str_map(data, "data", ()).items():
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            raise ManifestError(("data", key), "must be base64-encoded") from None
    values.update(_str_map(data, "stringData", ()))
    return Secret(namespace, name, values, _str(data, "type", (), default="Opaque"), source=source)


_PARSERS: dict[str, Any] = {
    "Namespace": _parse_namespace,
    "Service": _parse_service,
    "Endpoints": _parse_endpoints,
    "EndpointSlice": _parse_endpoint_slice,
    "Pod": _parse_pod,
    "Deployment": _parse_workload,
    "ReplicaSet": _parse_workload,
    "StatefulSet": _parse_workload,
    "ConfigMap": _parse_config_map,
    "Secret": _parse_secret,
    "ServiceCIDR": _parse_service_cidr,
}
