"""Each Service's endpoints, as Kubernetes' endpoints and EndpointSlice controllers derive them. Pure.

A Service with a selector gets the ready Pods its selector matches, with each port's targetPort resolved
in the Pod; EndpointSlices that the EndpointSlice controller does not manage are served beside them. A
Service without a selector takes its Endpoints objects and EndpointSlices as written.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Protocol

from clusterdns.model import (
    EXTERNAL_NAME,
    SLICE_CONTROLLER,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    EndpointsObject,
    Object,
    Pod,
    Service,
    ServicePort,
    Source,
    display_name,
)
from clusterdns.problems import Problem


class Previous(Protocol):
    """What derive_endpoints reads of the previous snapshot (a Registry)."""

    @property
    def services(self) -> Mapping[tuple[str, str], Service]: ...

    @property
    def endpoints(self) -> Mapping[tuple[str, str], tuple[Endpoint, ...]]: ...


def sort_slices(
    services: Mapping[tuple[str, str], Service], slices: Sequence[EndpointSlice], notes: list[Problem]
) -> tuple[set[tuple[str, str]], dict[tuple[str, str], tuple[Endpoint, ...]]]:
    """Which EndpointSlices join a selector's endpoints, noted for `check`, and those of missing Services.

    A Service with a selector gets its endpoints from the EndpointSlice controller; clusterdns derives
    those, so slices the controller manages are ignored. Any other slice labelled with the Service's name
    is served beside them, as CoreDNS serves every slice of a Service.
    """
    sliced: set[tuple[str, str]] = set()
    orphans: dict[tuple[str, str], list[Endpoint]] = {}
    for sl in slices:
        key = (sl.namespace, sl.service_name)
        svc = services.get(key)
        if svc is None:
            orphans.setdefault(key, []).extend(sl.endpoints)
            notes.append(note(sl, "", f"Service {sl.service_name} does not exist: only its PTR records are served"))
        elif svc.selector is None:
            continue
        elif sl.managed_by == SLICE_CONTROLLER:
            notes.append(
                note(
                    sl,
                    "",
                    f"ignored: managed by {SLICE_CONTROLLER}, and Service {svc.name}'s endpoints are derived "
                    "from its selector",
                )
            )
        else:
            sliced.add(key)
            notes.append(
                note(sl, "", f"merged into the endpoints of Service {svc.name}, beside those its selector finds")
            )
    return sliced, {k: tuple(v) for k, v in orphans.items()}


def note(obj: Object, field_path: str, message: str) -> Problem:
    src = obj.source or Source("<unknown>", 0)
    return Problem(src.path, src.line, display_name(obj), field_path, message, True)


def derive_endpoints(
    services: Mapping[tuple[str, str], Service],
    pods: Iterable[Pod],
    endpoints_objects: Sequence[EndpointsObject],
    slices: Sequence[EndpointSlice],
    previous: Previous | None = None,
    changed: Set[str] = frozenset(),
    sliced: Set[tuple[str, str]] = frozenset(),
) -> dict[tuple[str, str], tuple[Endpoint, ...]]:
    """Each Service's endpoints (by the keys of `services`), as the endpoints and EndpointSlice
    controllers derive them.

    A Service with a selector gets the Pods of its namespace whose labels match: ready when the Pod is
    (or always, with publishNotReadyAddresses), each port's targetPort resolved in that Pod (a named
    port the Pod lacks leaves that port out), and a hostname only when the Pod's subdomain is the
    Service's name. Terminated Pods and Pods without an IP are left out. A Service without a selector
    takes Endpoints objects of its name and EndpointSlices labelled with it. A Service with a selector
    also takes the EndpointSlices labelled with it that the EndpointSlice controller does not manage
    (`sliced`: the Services that have such slices now or had them before).

    Given the `previous` snapshot (its Services and endpoints) and the namespaces whose Pods `changed`
    since, a Service with a selector that is the very object it was then, in an unchanged namespace, keeps
    its endpoints; so does
    any Service whose endpoints, derived again, equal those it had: the previous tuple itself is kept, so
    that what was built from it (the ruleset) can tell unchanged endpoints by identity.
    """
    kept: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
    if previous is not None:
        for key, svc in services.items():
            if (
                svc.selector is not None
                and svc.namespace not in changed
                and key not in sliced
                and previous.services.get(key) is svc
            ):
                kept[key] = previous.endpoints[key]
    needed = {svc.namespace for key, svc in services.items() if svc.selector is not None and key not in kept}
    index: dict[tuple[str, str, str], list[Pod]] = defaultdict(list)
    for pod in pods:
        if not pod.ips or pod.phase in ("Succeeded", "Failed") or pod.namespace not in needed:
            continue
        for k, v in pod.labels.items():
            index[(pod.namespace, k, v)].append(pod)
    manual: dict[tuple[str, str], list[Endpoint]] = defaultdict(list)
    unmanaged: dict[tuple[str, str], list[Endpoint]] = defaultdict(list)  # for Services with a selector
    for sl in slices:
        manual[(sl.namespace, sl.service_name)].extend(sl.endpoints)
        if sl.managed_by != SLICE_CONTROLLER:
            unmanaged[(sl.namespace, sl.service_name)].extend(sl.endpoints)
    for eo in endpoints_objects:
        manual[eo.key].extend(eo.endpoints)

    before = previous.endpoints if previous is not None else {}
    out: dict[tuple[str, str], tuple[Endpoint, ...]] = dict.fromkeys(services, ())
    for key, svc in services.items():
        if svc.selector is None and (not manual or key not in manual):  # none written (many): () as it is
            continue
        if kept and key in kept:
            out[key] = kept[key]
            continue
        if svc.type == EXTERNAL_NAME:
            derived: tuple[Endpoint, ...] = ()
        elif svc.selector is None:
            written = manual.get(key) if manual else None
            derived = tuple(_unique(svc, [], written)) if written else ()
        else:
            selected = _selected_endpoints(svc, index)
            extra = unmanaged.get(key)
            derived = tuple(_unique(svc, selected, extra) if extra else selected)
        if derived:  # () is one object: nothing to keep
            old = before.get(key)
            if old is not None and old == derived:
                derived = old
        out[key] = derived
    return out


def _unique(svc: Service, first: list[Endpoint], more: Iterable[Endpoint]) -> list[Endpoint]:
    """`first`, then those of `more` whose IP is not yet there; ready with publishNotReadyAddresses."""
    seen = {ep.ip for ep in first}
    for ep in more:
        if ep.ip not in seen:
            seen.add(ep.ip)
            first.append(dataclasses.replace(ep, ready=True) if svc.publish_not_ready_addresses else ep)
    return first


def _selected_endpoints(svc: Service, index: Mapping[tuple[str, str, str], list[Pod]]) -> list[Endpoint]:
    assert svc.selector is not None
    candidates: list[Pod] | None = None
    for k, v in svc.selector.items():
        found = index.get((svc.namespace, k, v), [])
        if candidates is None or len(found) < len(candidates):
            candidates = found
    versions = {4 if f == "IPv4" else 6 for f in svc.ip_families}
    others = [(k, v) for k, v in svc.selector.items() if candidates is not index.get((svc.namespace, k, v))]
    eps: list[Endpoint] = []
    shared: dict[tuple[int | None, ...], tuple[EndpointPort, ...]] = {}  # one tuple per distinct resolution
    resolved: dict[int, tuple[int | None, ...]] = {}  # by id of the PodSpec, which replicas share
    for pod in sorted(candidates or (), key=_by_name):
        labels = pod.labels
        if others and any(labels.get(k) != v for k, v in others):
            continue
        numbers = resolved.get(id(pod.spec))
        if numbers is None:
            numbers = resolved[id(pod.spec)] = tuple([_resolve_target_port(sp, pod) for sp in svc.ports])
        ports = shared.get(numbers)
        if ports is None:
            ports = tuple(
                EndpointPort(sp.name, n, sp.protocol) for sp, n in zip(svc.ports, numbers, strict=True) if n is not None
            )
            shared[numbers] = ports
        if svc.ports and not ports:
            continue
        hostname = pod.spec.hostname if pod.spec.subdomain == svc.name else ""
        ready = pod.ready or svc.publish_not_ready_addresses
        for ip in pod.ips:
            if versions and (6 if ":" in ip else 4) not in versions:
                continue
            eps.append(Endpoint(ip, ports, ready, hostname, pod.spec.node_name, pod.name))
    return eps


def _by_name(pod: Pod) -> str:
    return pod.name


def _resolve_target_port(port: ServicePort, pod: Pod) -> int | None:
    target = port.target_port
    if isinstance(target, int):
        return target or port.port
    for container in pod.spec.containers:
        for cp in container.ports:
            if cp.name == target and cp.protocol == port.protocol:
                return cp.container_port
    return None
