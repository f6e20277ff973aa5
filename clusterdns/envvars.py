"""The environment variables the kubelet gives a container: service links, envFrom and env. Does no I/O.

Sources: kubernetes/kubernetes `pkg/kubelet/envvars/envvars.go` (FromServices), `pkg/kubelet/kubelet_pods.go`
(getServiceEnvVarMap, makeEnvironmentVariables, podFieldSelectorRuntimeValue) and
`third_party/forked/golang/expansion/expand.go`.

Service variables (`service_env`). A container sees the Services of its own namespace that have a cluster
IP (not headless, not ExternalName), and `default/kubernetes`, which the kubelet adds even with service
links off (`enableServiceLinks: false`, or the CLI's --no-service-links), when it is all there is. A
`kubernetes` Service with a cluster IP in the container's own namespace replaces `default/kubernetes` while
service links are on. Each Service NAME (upper-cased, `-` -> `_`) gives, in this order:

    NAME_SERVICE_HOST            the primary cluster IP, bare
    NAME_SERVICE_PORT            the first port
    NAME_SERVICE_PORT_<PORT>     each named port (name converted the same way)
    NAME_PORT                    <proto>://<ip>:<port> of the first port (Docker links)
    NAME_PORT_<port>_<PROTO>     for each port: that URL, and the same name with _PROTO, _PORT, _ADDR

Protocols are lower-case in values and upper-case in names; an IPv6 address is bracketed inside URLs only
(Go's net.JoinHostPort); ports are always the Service's port, never targetPort or nodePort.

Collisions. Different Services can produce the same name: `foo` writes FOO_SERVICE_PORT=80 while
`foo-service` writes its Docker link FOO_SERVICE_PORT=tcp://<ip>:80; `foo` with port 80/TCP writes
FOO_PORT_80_TCP_PORT=80 while `foo-port-80-tcp` writes FOO_PORT_80_TCP_PORT=tcp://.... The kubelet collects
the Services in a Go map and writes their variables in that map's iteration order, later ones overwriting
earlier ones; Go randomizes that order, so on a real node the winner can change from one container start to
the next. We process Services sorted by name and let later ones overwrite (within a Service, the order
above), so the Service whose name sorts last wins: `foo-service` over `foo`.

A container's environment (`container_env`), in the kubelet's order, later sources winning: service
variables, then `envFrom` (each ConfigMap or Secret in turn, keys with `prefix`), then `env` in order.
- envFrom: a missing source is an error unless `optional`. A key is left out when it is not a valid
  variable name by the kubelet's current rule (printable ASCII other than `=`; RelaxedEnvironmentVariable-
  Validation, default since 1.32, GA in 1.34). Kubelets before 1.32 also dropped keys failing the old
  C-identifier-like rule (`1KEY`); we do not.
- env[].value: `$(VAR)` is replaced by VAR from the variables set so far (envFrom and earlier env entries)
  or else from the service variables; `$$` is a literal `$`; a reference to an unknown variable, or an
  unclosed `$(`, is left as written. Only values are expanded, never valueFrom results.
- configMapKeyRef / secretKeyRef: a missing object or key is an error unless `optional`, in which case the
  variable is not set at all (an envFrom value of that name stays).
- fieldRef: metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k']
  (empty when absent), spec.nodeName, spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP,
  status.podIPs (comma-separated). Without a node, status.hostIP(s) is the Pod's own status.hostIP and
  empty when the manifest has none; spec.nodeName and metadata.uid are likewise what the manifest says.
  status.podIPs keeps the Pod's order (the kubelet sorts it by the node's IP family preference).
- resourceFieldRef: limits/requests of cpu, memory, ephemeral-storage and hugepages-<size>, of the
  container itself or of `containerName`; the value is ceil(quantity / divisor), divisor 1 by default. As
  the API server defaults it, an unset request is the container's limit, or 0 without one. As the kubelet
  does, an unset (or zero) cpu, memory or ephemeral-storage limit is the node's allocatable; there is no
  node, so `allocatable` stands in (NODE_ALLOCATABLE unless given).

Errors are EnvError, naming the Pod, the container and the field:
`Pod default/web: container app: env[2].valueFrom.configMapKeyRef: ConfigMap default/cfg not found`.

Output (`format_env`), always sorted by name:
- dotenv: KEY=VALUE lines for a Docker Compose (v2) `env_file`. A value made only of letters, digits and
  `_ . / : @ % + , = - [ ]` is written bare. Any other is single-quoted, which compose takes literally (no
  `$` interpolation; backslashes and newlines kept), unless it holds a `'` or ends with a backslash: then it
  is double-quoted with the escapes `\\\\`, `\\"`, `\\n`, `\\r` and `\\$`. Names compose cannot read
  (anything but letters, digits and `_ . - [ ]`) are left out with a `# left out` comment. (The old Python
  docker-compose 1.x reads env files with python-dotenv, which expands `${VAR}` even in single quotes.)
- shell: `export KEY=VALUE` lines, values quoted with shlex.quote; names that are not shell identifiers
  are left out with a `# left out` comment.
- json: one object with sorted keys, and a trailing newline.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from types import MappingProxyType

from clusterdns.model import Container, EnvVar, KeyRef, Pod, Service, display_name
from clusterdns.registry import Registry

__all__ = ["FORMATS", "NODE_ALLOCATABLE", "EnvError", "container_env", "format_env", "service_env"]

# pkg/kubelet/kubelet_pods.go: masterServices, always taken from the default namespace.
MASTER_NAMESPACE = "default"
MASTER_SERVICES = ("kubernetes",)

FORMATS = ("dotenv", "shell", "json")

# The stand-in node's allocatable, used for unset limits in resourceFieldRef (see the module docstring).
NODE_ALLOCATABLE: Mapping[str, str] = MappingProxyType({"cpu": "2", "memory": "4Gi", "ephemeral-storage": "20Gi"})


class EnvError(ValueError):
    """A container's environment can't be built: which Pod, container and field, and why."""

    def __init__(self, subject: str, container: str, field: str, reason: str) -> None:
        parts = (subject, f"container {container}" if container else "", field, reason)
        super().__init__(": ".join(p for p in parts if p))
        self.subject = subject
        self.container = container
        self.field = field
        self.reason = reason


class _Refused(Exception):
    """Raised by a valueFrom resolver: which source (`fieldRef`, ...) and why; container_env adds the rest."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(reason)
        self.source = source
        self.reason = reason


# --- service variables ------------------------------------------------------------------------------


def service_env(registry: Registry, namespace: str, service_links: bool = True) -> dict[str, str]:
    """The service variables of a container in `namespace`, sorted by name."""
    linked: dict[str, Service] = {}
    if service_links:
        linked = {s.name: s for s in registry.services_in(namespace) if s.has_cluster_ip}
    for name in MASTER_SERVICES:
        master = registry.services.get((MASTER_NAMESPACE, name))
        if name not in linked and master is not None and master.has_cluster_ip:
            linked[name] = master
    env: dict[str, str] = {}
    for name in sorted(linked):  # the collision rule: see the module docstring
        env.update(_service_vars(linked[name]))
    return dict(sorted(env.items()))


def _service_vars(svc: Service) -> list[tuple[str, str]]:
    """One Service's variables in FromServices order (a later duplicate overwrites an earlier one)."""
    prefix = _variable_name(svc.name)
    ip = svc.cluster_ip
    out = [(f"{prefix}_SERVICE_HOST", ip)]
    if not svc.ports:
        return out
    out.append((f"{prefix}_SERVICE_PORT", str(svc.ports[0].port)))
    out += [(f"{prefix}_SERVICE_PORT_{_variable_name(p.name)}", str(p.port)) for p in svc.ports if p.name]
    host = f"[{ip}]" if ":" in ip else ip
    for i, port in enumerate(svc.ports):
        proto = port.protocol.lower()
        url = f"{proto}://{host}:{port.port}"
        if i == 0:
            out.append((f"{prefix}_PORT", url))
        link = f"{prefix}_PORT_{port.port}_{port.protocol.upper()}"
        out += [(link, url), (f"{link}_PROTO", proto), (f"{link}_PORT", str(port.port)), (f"{link}_ADDR", ip)]
    return out


def _variable_name(name: str) -> str:
    """envvars.go makeEnvVariableName: upper case, `-` -> `_`."""
    return name.upper().replace("-", "_")


# --- a container's environment ----------------------------------------------------------------------


def container_env(
    registry: Registry,
    pod: Pod,
    container: str | None = None,
    *,
    allocatable: Mapping[str, str] = NODE_ALLOCATABLE,
) -> dict[str, str]:
    """The whole environment of one container of `pod` (the first when None), sorted by name.

    Pass the registry's copy of the Pod when it has one: status.podIP comes from `pod.ips`.
    """
    subject = display_name(pod)
    target = _find_container(pod, container)
    services = service_env(registry, pod.namespace, pod.spec.enable_service_links)
    env: dict[str, str] = {}

    for i, source in enumerate(target.env_from):
        ref = "configMapRef" if source.kind == "ConfigMap" else "secretRef"
        data = _data(registry, source.kind, pod.namespace, source.name)
        if data is None:
            if source.optional:
                continue
            reason = f"{source.kind} {pod.namespace}/{source.name} not found"
            raise EnvError(subject, target.name, f"envFrom[{i}].{ref}", reason)
        for key, text in data.items():
            if _is_variable_name(source.prefix + key):
                env[source.prefix + key] = text

    def lookup(name: str) -> str | None:
        return env[name] if name in env else services.get(name)

    for i, var in enumerate(target.env):
        try:
            value = _resolve(registry, pod, target, var, lookup, allocatable)
        except _Refused as exc:
            raise EnvError(subject, target.name, f"env[{i}].valueFrom.{exc.source}", exc.reason) from None
        if value is not None:
            env[var.name] = value
    return dict(sorted({**services, **env}.items()))


def _find_container(pod: Pod, name: str | None) -> Container:
    if name is None and pod.spec.containers:
        return pod.spec.containers[0]
    for c in (*pod.spec.containers, *pod.spec.init_containers):
        if c.name == name:
            return c
    names = [c.name for c in pod.spec.containers] + [f"{c.name} (init)" for c in pod.spec.init_containers]
    reason = f"no container named {name!r}; its containers are {', '.join(names)}" if names else "no containers"
    raise EnvError(display_name(pod), "", "", reason)


def _resolve(
    registry: Registry,
    pod: Pod,
    container: Container,
    var: EnvVar,
    lookup: Callable[[str], str | None],
    allocatable: Mapping[str, str],
) -> str | None:
    """One env entry's value; None when an optional source is missing (the variable is not set)."""
    # The manifest parser keeps resourceFieldRef.containerName in `value`, so resource goes first.
    if var.resource:
        return _resource_value(pod, container, var, allocatable)
    if var.field_path:
        return _field_value(pod, var.field_path)
    if var.config_map_key:
        return _key_value(registry, "ConfigMap", pod.namespace, var.config_map_key)
    if var.secret_key:
        return _key_value(registry, "Secret", pod.namespace, var.secret_key)
    return _expand(var.value, lookup)


def _data(registry: Registry, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
    objects = registry.config_maps if kind == "ConfigMap" else registry.secrets
    obj = objects.get((namespace, name))
    return None if obj is None else obj.data


def _key_value(registry: Registry, kind: str, namespace: str, ref: KeyRef) -> str | None:
    source = "configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef"
    data = _data(registry, kind, namespace, ref.name)
    if data is None or ref.key not in data:
        if ref.optional:
            return None
        where = f"{kind} {namespace}/{ref.name}"
        raise _Refused(source, f"{where} not found" if data is None else f"key {ref.key!r} not found in {where}")
    return data[ref.key]


def _is_variable_name(name: str) -> bool:
    """validation.IsRelaxedEnvVarName: printable ASCII other than '='."""
    return bool(name) and all(" " <= ch <= "~" and ch != "=" for ch in name)


# --- $(VAR) expansion -------------------------------------------------------------------------------


def _expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """third_party/forked/golang/expansion Expand: `$(VAR)` -> lookup(VAR), `$$` -> `$`.

    An unknown VAR, an unclosed `$(` and a `$` before any other character are kept as written.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] != "$" or i + 1 == n:
            out.append(text[i])
            i += 1
        elif text[i + 1] == "(" and (close := text.find(")", i + 2)) != -1:
            name = text[i + 2 : close]
            value = lookup(name)
            out.append(f"$({name})" if value is None else value)
            i = close + 1
        else:
            out.append("$" if text[i + 1] == "$" else text[i : i + 2])
            i += 2
    return "".join(out)


# --- fieldRef ---------------------------------------------------------------------------------------

# The paths the API server allows in env[].valueFrom.fieldRef (validEnvDownwardAPIFieldPathExpressions).
_POD_FIELDS: Mapping[str, Callable[[Pod], str]] = MappingProxyType(
    {
        "metadata.name": lambda p: p.name,
        "metadata.namespace": lambda p: p.namespace,
        "metadata.uid": lambda p: p.uid,
        "spec.nodeName": lambda p: p.spec.node_name,
        "spec.serviceAccountName": lambda p: p.spec.service_account_name,
        "status.hostIP": lambda p: p.host_ip,
        "status.hostIPs": lambda p: p.host_ip,
        "status.podIP": lambda p: p.ip,
        "status.podIPs": lambda p: ",".join(p.ips),
    }
)


def _field_value(pod: Pod, path: str) -> str:
    if path in _POD_FIELDS:
        return _POD_FIELDS[path](pod)
    # fieldpath.SplitMaybeSubscriptedPath: "metadata.labels['key']"
    if path.endswith("']") and "['" in path:
        head, key = path[:-2].split("['", 1)
        if head == "metadata.labels":
            return pod.labels.get(key, "")
        if head == "metadata.annotations":
            return pod.annotations.get(key, "")
    supported = ", ".join([*_POD_FIELDS, "metadata.labels['KEY']", "metadata.annotations['KEY']"])
    raise _Refused("fieldRef", f"fieldPath {path!r} is not supported; use one of {supported}")


# --- resourceFieldRef -------------------------------------------------------------------------------

_RESOURCE = re.compile(r"(limits|requests)\.(cpu|memory|ephemeral-storage|hugepages-.+)")
_NODE_RESOURCES = ("cpu", "memory", "ephemeral-storage")  # MergeContainerResourceLimits; never hugepages
_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE])?")
_SUFFIXES: Mapping[str, Fraction] = MappingProxyType(
    {
        **{s: Fraction(1024**i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
        **{s: Fraction(10) ** e for s, e in zip("numkMGTPE", (-9, -6, -3, 3, 6, 9, 12, 15, 18), strict=True)},
    }
)


def _quantity(text: str) -> Fraction | None:
    """A resource.Quantity (500m, 1.5, 128Mi, 1e3) as an exact number; None when malformed."""
    m = _QUANTITY.fullmatch(text)
    if m is None:
        return None
    number, suffix = Fraction(m[1]), m[2] or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIXES.get(suffix, Fraction(1))


def _resource_value(pod: Pod, container: Container, var: EnvVar, allocatable: Mapping[str, str]) -> str:
    m = _RESOURCE.fullmatch(var.resource)
    if m is None:
        raise _Refused(
            "resourceFieldRef",
            f"resource {var.resource!r} is not supported; use limits.* or requests.* of cpu, memory, "
            "ephemeral-storage or hugepages-<size>",
        )
    kind, name = m[1], m[2]
    if var.value:  # resourceFieldRef.containerName
        found = [c for c in (*pod.spec.containers, *pod.spec.init_containers) if c.name == var.value]
        if not found:
            raise _Refused("resourceFieldRef", f"containerName: no container named {var.value!r} in the Pod")
        container = found[0]
    # An unset request is the limit, as the API server defaults it.
    side = "requests" if kind == "requests" and name in container.resources.get("requests", {}) else "limits"
    text = container.resources.get(side, {}).get(name)
    amount = _amount(text, f"resources.{side}.{name} of container {container.name}")
    if kind == "limits" and not amount and name in _NODE_RESOURCES:
        amount = _amount(allocatable.get(name), f"the node's allocatable {name}")
    divisor = _quantity(var.divisor or "1")
    if divisor is None or divisor <= 0:
        raise _Refused(
            "resourceFieldRef",
            f"divisor must be a positive quantity such as 1, 1m or 1Mi, got {var.divisor!r}",
        )
    return str(math.ceil(amount / divisor))


def _amount(text: str | None, what: str) -> Fraction:
    if text is None:
        return Fraction(0)
    value = _quantity(text)
    if value is None:
        raise _Refused("resourceFieldRef", f"{what} must be a quantity such as 500m or 1Gi, got {text!r}")
    return value


# --- output -----------------------------------------------------------------------------------------

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTENV_NAME = re.compile(r"[A-Za-z0-9_.\[\]-]+")  # compose-go dotenv: letters, digits, _ . - [ ]
_DOTENV_BARE = re.compile(r"[A-Za-z0-9_./:@%+,=\[\]-]*")


def format_env(env: Mapping[str, str], fmt: str) -> str:
    """`env` as dotenv, shell or json text (see the module docstring), sorted by name."""
    items = sorted(env.items())
    if fmt == "json":
        return json.dumps(dict(items), indent=2, ensure_ascii=False) + "\n"
    if fmt == "shell":
        return _lines(items, _SHELL_NAME, lambda k, v: f"export {k}={shlex.quote(v)}")
    if fmt == "dotenv":
        return _lines(items, _DOTENV_NAME, lambda k, v: f"{k}={_dotenv_value(v)}")
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _lines(items: Iterable[tuple[str, str]], valid: re.Pattern[str], line: Callable[[str, str], str]) -> str:
    out = [
        line(k, v) if valid.fullmatch(k) else f"# left out, not a valid name here: {json.dumps(k)}" for k, v in items
    ]
    return "".join(f"{text}\n" for text in out)


def _dotenv_value(value: str) -> str:
    """A value docker compose's env_file reader gives back unchanged."""
    if _DOTENV_BARE.fullmatch(value):
        return value
    if "'" not in value and not value.endswith("\\"):
        return f"'{value}'"
    for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("$", "\\$")):
        value = value.replace(raw, escaped)
    return f'"{value}"'
