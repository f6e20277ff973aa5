"""Label selectors with Kubernetes semantics, and the name rules labels and objects follow.

Does no I/O. Selector semantics follow k8s.io/apimachinery/pkg/labels: every requirement must hold;
`In` needs the key present with one of the values, `NotIn` holds when the key is absent or has none of
them, `Exists` / `DoesNotExist` test the key only. An empty selector matches everything.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

# k8s.io/apimachinery/pkg/util/validation
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# The characters Kubernetes generates names from (k8s.io/apimachinery/pkg/util/rand): no vowels, no
# look-alikes such as 0/o and 1/l.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def dns1035_label_error(value: str) -> str | None:
    """Why `value` is not a DNS-1035 label (Service names), or None."""
    if len(value) > 63:
        return f"must be no more than 63 characters, got {len(value)}"
    if not DNS1035_LABEL.match(value):
        return (
            "must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter "
            f"and ending with a letter or digit), got {value!r}"
        )
    return None


def dns1123_label_error(value: str) -> str | None:
    """Why `value` is not a DNS-1123 label (Namespace names, hostnames), or None."""
    if len(value) > 63:
        return f"must be no more than 63 characters, got {len(value)}"
    if not DNS1123_LABEL.match(value):
        return (
            "must be a DNS-1123 label (lower-case letters, digits and '-', starting and ending with "
            f"a letter or digit), got {value!r}"
        )
    return None


def dns1123_subdomain_error(value: str) -> str | None:
    """Why `value` is not a DNS-1123 subdomain (Pod, ConfigMap, ... names; external names), or None."""
    if len(value) > 253:
        return f"must be no more than 253 characters, got {len(value)}"
    if not DNS1123_SUBDOMAIN.match(value):
        return (
            "must be a DNS-1123 subdomain (lower-case labels of letters, digits and '-' separated by "
            f"'.'), got {value!r}"
        )
    return None


def port_name_error(value: str) -> str | None:
    """Why `value` is not an IANA service name (container port names, named targetPorts), or None."""
    if len(value) > 15:
        return f"must be no more than 15 characters, got {value!r}"
    if not _IANA_SVC_NAME.match(value) or "--" in value or not re.search("[a-z]", value):
        return (
            "must be an IANA service name (lower-case letters, digits and single '-', with at least "
            f"one letter), got {value!r}"
        )
    return None


def label_key_error(key: str) -> str | None:
    """Why `key` is not a label key (`[prefix/]name`), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and dns1123_subdomain_error(prefix):
        return f"label key prefix must be a DNS-1123 subdomain, got {key!r}"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (
            "label key must be 63 characters or less of letters, digits, '-', '_' and '.', starting and "
            f"ending with a letter or digit, got {key!r}"
        )
    return None


def label_value_error(value: str) -> str | None:
    """Why `value` is not a label value, or None."""
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return (
            "label value must be empty or 63 characters or less of letters, digits, '-', '_' and '.', "
            f"starting and ending with a letter or digit, got {value!r}"
        )
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # one of OPERATORS
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector: matchLabels plus matchExpressions, all of which must hold."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        return all(r.matches(labels) for r in self.expressions)

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.expressions

    def __str__(self) -> str:
        """kubectl's rendering: `app=web,tier in (a,b),!legacy`."""
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        for r in self.expressions:
            if r.operator == "In":
                parts.append(f"{r.key} in ({','.join(sorted(r.values))})")
            elif r.operator == "NotIn":
                parts.append(f"{r.key} notin ({','.join(sorted(r.values))})")
            elif r.operator == "Exists":
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts)


def format_labels(labels: Mapping[str, str]) -> str:
    """`a=b,c=d` sorted by key, as kubectl prints selectors and labels."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def looks_like_ipv4(name: str) -> bool:
    """An ExternalName such as `10.1.2.3`: CoreDNS serves no CNAME to it (kubernetes plugin, external.go)."""
    parts = name.rstrip(".").split(".")
    return len(parts) == 4 and all(p.isascii() and p.isdigit() and int(p) < 256 for p in parts)


def canonical_ip(text: str) -> str:
    """`text` as an IP address in its canonical form; ValueError if it is not one. An IPv4 address that
    inet_pton accepts (four decimal octets, no leading zeros) is already canonical: no ipaddress object
    (5 us) for the common case, which a load of 100,000 Services meets twice per Service."""
    try:
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, TypeError, ValueError):
        return str(ipaddress.ip_address(text))
    return text


def is_ip(text: str) -> bool:
    """Whether `text` is an IPv4 or IPv6 address (a load-balancer ingress entry may be a hostname instead)."""
    try:
        canonical_ip(text)
    except ValueError:
        return False
    return True
