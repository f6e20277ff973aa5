"""The Pods a Deployment, ReplicaSet or StatefulSet runs, named as Kubernetes names them. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from clusterdns.allocate import Refusal
from clusterdns.model import Pod, Workload


def replica_owners(w: Workload) -> list[str]:
    """Who claims each replica's pod name: the pod name pool's owners, one per replica."""
    prefix = f"{w.namespace}/{w.kind}/{w.pod_prefix}/"
    return [f"{prefix}{i}" for i in range(w.replicas)]


def workload_pods(w: Workload, names: Sequence[str | Refusal | None]) -> list[Pod]:
    """The Pods a Deployment, ReplicaSet or StatefulSet runs, all Running and Ready; `names` are the
    allocated pod names of each replica (ignored for a StatefulSet, whose names are fixed)."""
    out = []
    owner = f"{w.kind}/{w.name}"
    labels = dict(w.template.labels)
    if w.template_hash:
        labels["pod-template-hash"] = w.template_hash
    for i in range(w.replicas):
        spec = w.template.spec
        if w.kind == "StatefulSet":
            name = f"{w.name}-{i}"
            pod_labels = {
                **labels,
                "statefulset.kubernetes.io/pod-name": name,
                "apps.kubernetes.io/pod-index": str(i),
            }
            spec = dataclasses.replace(spec, hostname=name, subdomain=w.service_name or spec.subdomain)
        else:
            got = names[i]
            if not isinstance(got, str):
                continue
            name, pod_labels = got, labels
        out.append(
            Pod(
                namespace=w.namespace,
                name=name,
                spec=spec,
                labels=pod_labels,
                annotations=w.template.annotations,
                owner=owner,
                source=w.source,
            )
        )
    return out
