"""Query names -> what they ask for: a service, an endpoint, a port, a pod, a reverse address.

Does no I/O. The shapes are those of CoreDNS's kubernetes plugin (plugin/kubernetes/parse.go), read from
the right of the name once the cluster zone is removed:

  1. (apex) | svc | pod                          the zone's own structure: exists, no records
  2. <ns>.svc | <ns>.pod                         a namespace
  3. <svc>.<ns>.svc | <ip>.<ns>.pod              a service, or a pod by its dashed IP
  4. <endpoint>.<svc>.<ns>.svc                   one endpoint of a service (hostname or dashed IP)
  5. _<port>._<proto>.<svc>.<ns>.svc             a service's port; as in CoreDNS the `_` is optional
                                                 and an empty port or protocol matches any
Anything longer, or not ending in svc or pod, does not exist; `dns-version` and `ns.dns` are the two
special names at the apex.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

APEX = "apex"
SERVICE_TREE = "svc-tree"  # svc.<zone> and pod.<zone>: empty non-terminals
NAMESPACE = "namespace"
SERVICE = "service"
ENDPOINT = "endpoint"
PORT = "port"
POD = "pod"
DNS_VERSION = "dns-version"
NAMESERVER = "nameserver"  # ns.dns.<zone>, the SOA's MNAME
NONE = "none"  # in the zone, but no such name can exist


@dataclass(frozen=True, slots=True)
class Request:
    """What a name inside the cluster zone asks for. Unused fields are ""."""

    kind: str
    namespace: str = ""
    service: str = ""
    endpoint: str = ""
    port: str = ""
    protocol: str = ""
    pod: str = ""  # the dashed-IP label of a pod name


def parse(labels: tuple[str, ...]) -> Request:
    """Parse the lower-cased labels of a name below the cluster zone (nearest the root last)."""
    n = len(labels)
    if n == 0:
        return Request(APEX)
    tree = labels[-1]
    if n == 1:
        if tree in ("svc", "pod"):
            return Request(SERVICE_TREE)
        return Request(DNS_VERSION) if tree == "dns-version" else Request(NONE)
    if tree == "dns" and labels == ("ns", "dns"):
        return Request(NAMESERVER)
    if tree == "pod":
        if n == 2:
            return Request(NAMESPACE, namespace=labels[0])
        if n == 3:
            return Request(POD, namespace=labels[1], pod=labels[0])
        return Request(NONE)
    if tree != "svc":
        return Request(NONE)
    if n == 2:
        return Request(NAMESPACE, namespace=labels[0])
    if n == 3:
        return Request(SERVICE, namespace=labels[1], service=labels[0])
    if n == 4:
        return Request(ENDPOINT, namespace=labels[2], service=labels[1], endpoint=labels[0])
    if n == 5:
        return Request(
            PORT,
            namespace=labels[3],
            service=labels[2],
            port=labels[0].removeprefix("_"),
            protocol=labels[1].removeprefix("_"),
        )
    return Request(NONE)


def endpoint_name(ip: str, hostname: str = "") -> str:
    """An endpoint's DNS label: its hostname, else its IP with dashes as CoreDNS writes it.

    IPv4 `10.244.1.5` -> `10-244-1-5`; IPv6 `fd00::1` -> `fd00--1`, and a trailing `-` gets a `0`
    (`2001:db8::` -> `2001-db8--0`) so that the label is valid (CoreDNS PR #7431).
    """
    if hostname:
        return hostname
    if ":" in ip:
        name = ip.replace(":", "-")
        return name + "0" if name.endswith("-") else name
    return ip.replace(".", "-")


def pod_ip(label: str) -> str | None:
    """The IP in a pod name label (`10-244-1-5`, `fd00--1`), or None when it is not one.

    As CoreDNS: exactly three dashes and no `--` make IPv4, anything else is read as IPv6.
    """
    if label.count("-") == 3 and "--" not in label:
        text = label.replace("-", ".")
    else:
        text = label.replace("-", ":")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 4 and any(len(part) > 1 and part.startswith("0") for part in text.split(".")):
        return None  # Go's net.ParseIP refuses leading zeros
    return str(ip)


def _is_octet(label: str) -> bool:
    """A decimal octet as an address label writes it: 1-3 ASCII digits, at most 255, no leading zero."""
    return (
        0 < len(label) <= 3
        and label.isascii()
        and label.isdigit()
        and int(label) <= 255
        and (label == "0" or label[0] != "0")
    )


def reverse_ip(labels: tuple[str, ...]) -> str | None:
    """The address of a full reverse name (`5.1.244.10.in-addr.arpa` labels), or None."""
    if len(labels) == 6 and labels[4:] == ("in-addr", "arpa"):
        octets = labels[:4]
        # ASCII digits only: str.isdigit also accepts '²' (byte 0xB2 read as Latin-1), which int() refuses.
        if all(_is_octet(o) for o in octets):
            return ".".join(reversed(octets))
        return None
    if len(labels) == 34 and labels[32:] == ("ip6", "arpa"):
        nibbles = labels[:32]
        if all(len(x) == 1 and x in "0123456789abcdef" for x in nibbles):
            hexed = "".join(reversed(nibbles))
            return str(ipaddress.IPv6Address(int(hexed, 16)))
    return None
