"""names.parse: the shapes of a name below the cluster zone, as CoreDNS's kubernetes plugin reads them
(plugin/kubernetes/parse.go), one row per shape; and the name helpers around it."""

from __future__ import annotations

import pytest

from clusterdns import names
from clusterdns.names import Request


def labels(name: str) -> tuple[str, ...]:
    return tuple(name.split(".")) if name else ()


@pytest.mark.parametrize(
    ("name", "request_"),
    [
        ("", Request(names.APEX)),
        ("svc", Request(names.SERVICE_TREE)),
        ("pod", Request(names.SERVICE_TREE)),
        ("dns-version", Request(names.DNS_VERSION)),
        ("ns.dns", Request(names.NAMESERVER)),
        ("other", Request(names.NONE)),
        ("default.svc", Request(names.NAMESPACE, namespace="default")),
        ("default.pod", Request(names.NAMESPACE, namespace="default")),
        ("web.default.svc", Request(names.SERVICE, namespace="default", service="web")),
        ("10-244-1-5.default.pod", Request(names.POD, namespace="default", pod="10-244-1-5")),
        ("web-0.web.default.svc", Request(names.ENDPOINT, namespace="default", service="web", endpoint="web-0")),
        (
            "_http._tcp.web.default.svc",
            Request(names.PORT, namespace="default", service="web", port="http", protocol="tcp"),
        ),
        (
            "http.tcp.web.default.svc",  # as CoreDNS: the underscores are optional
            Request(names.PORT, namespace="default", service="web", port="http", protocol="tcp"),
        ),
        ("a.b.c.d.e.f.svc", Request(names.NONE)),  # longer than any shape
        ("a.b.default.pod", Request(names.NONE)),
        ("web.default.other", Request(names.NONE)),
    ],
)
def test_parse(name: str, request_: Request) -> None:
    """Each shape of name is read into what it asks for."""
    assert names.parse(labels(name)) == request_


@pytest.mark.parametrize(
    ("ip", "hostname", "label"),
    [
        ("10.244.1.5", "", "10-244-1-5"),
        ("fd00::1", "", "fd00--1"),
        ("2001:db8::", "", "2001-db8--0"),  # a trailing dash gets a 0 (CoreDNS PR #7431)
        ("10.244.1.5", "web-0", "web-0"),
    ],
)
def test_endpoint_name(ip: str, hostname: str, label: str) -> None:
    """An endpoint's label: its hostname, else its dashed IP."""
    assert names.endpoint_name(ip, hostname) == label


@pytest.mark.parametrize(
    ("label", "ip"),
    [
        ("10-244-1-5", "10.244.1.5"),
        ("fd00--1", "fd00::1"),
        ("010-244-1-5", None),  # Go's ParseIP refuses leading zeros
        ("not-an-ip", None),
    ],
)
def test_pod_ip(label: str, ip: str | None) -> None:
    """A pod label's address, as CoreDNS reads it."""
    assert names.pod_ip(label) == ip


@pytest.mark.parametrize(
    ("name", "ip"),
    [
        ("5.1.244.10.in-addr.arpa", "10.244.1.5"),
        ("05.1.244.10.in-addr.arpa", None),
        ("\u00b2.1.244.10.in-addr.arpa", None),  # a digit only to str.isdigit
        ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", "fd00::1"),
        ("1.0.ip6.arpa", None),
    ],
)
def test_reverse_ip(name: str, ip: str | None) -> None:
    """A full reverse name's address; anything else is None."""
    assert names.reverse_ip(labels(name)) == ip
