"""Three behaviours of CoreDNS's kubernetes plugin for objects a real API server accepts: EndpointSlices that
the EndpointSlice controller does not manage join a selector Service's endpoints; an ExternalName that is an
IPv4 address is not served; ready addresses of EndpointSlices whose Service is missing still have PTRs.
Asked over UDP of a real server, every reply decoded by dnspython and dnslib, and `check` says what it did."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dns.rcode
import pytest
from dns_helpers import DNS, SERIAL, check, servers

from clusterdns.cli import main

if TYPE_CHECKING:
    from conftest import WriteZones

NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN
SOA = f"cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. {SERIAL} 7200 1800 86400 5"
REVERSE_SOA = f"in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. {SERIAL} 7200 1800 86400 5"

ZONE = {
    "web.yaml": """
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          clusterIP: None
          selector: {app: web}
          ports: [{name: http, port: 80}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web-a, labels: {app: web}}
        spec: {containers: [{name: c}]}
        status: {podIP: 10.244.7.1}
        ---
        # Written by hand (or by another controller): served beside what the selector finds.
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: web-extra
          labels: {kubernetes.io/service-name: web}
        addressType: IPv4
        ports: [{name: http, port: 80}]
        endpoints:
        - addresses: [10.244.7.9]
          hostname: web-0
        ---
        # The controller's own slice: clusterdns derives those from the selector, so this one is ignored.
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: web-abcde
          labels:
            kubernetes.io/service-name: web
            endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
        addressType: IPv4
        ports: [{name: http, port: 80}]
        endpoints:
        - addresses: [10.244.7.8]
        """,
    "ghost.yaml": """
        # Slices of a Service that does not exist, one address named by two of them.
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: ghost-1
          labels: {kubernetes.io/service-name: ghost}
        addressType: IPv4
        ports: [{port: 80}]
        endpoints:
        - addresses: [10.244.7.20]
        - addresses: [10.244.7.21]
          conditions: {ready: false}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: phantom-1
          labels: {kubernetes.io/service-name: phantom}
        addressType: IPv4
        ports: [{port: 80}]
        endpoints:
        - addresses: [10.244.7.20]
        """,
    "ip-name.yaml": """
        apiVersion: v1
        kind: Service
        metadata: {name: ip-name}
        spec:
          type: ExternalName
          externalName: 10.1.2.3
        """,
}

WEB = "web.default.svc.cluster.local."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DNS]:
    with servers(Path(tmp_path_factory.mktemp("parity"))) as pool:
        yield pool.start(ZONE)


@pytest.mark.parametrize(
    ("qname", "qtype", "rcode", "answer", "authority"),
    [
        pytest.param(
            WEB,
            "A",
            NOERROR,
            [f"{WEB} 5 IN A 10.244.7.1", f"{WEB} 5 IN A 10.244.7.9"],
            [],
            id="a selector Service serves an unmanaged slice beside its Pods, not the controller's slice",
        ),
        pytest.param(
            f"web-0.{WEB}",
            "A",
            NOERROR,
            [f"web-0.{WEB} 5 IN A 10.244.7.9"],
            [],
            id="the unmanaged slice's hostname names its endpoint",
        ),
        pytest.param(f"10-244-7-8.{WEB}", "A", NXDOMAIN, [], [SOA], id="the controller-managed slice is ignored"),
        pytest.param(
            "ip-name.default.svc.cluster.local.",
            "A",
            NXDOMAIN,
            [],
            [SOA],
            id="an ExternalName that is an IPv4 address is not served",
        ),
        pytest.param(
            "ip-name.default.svc.cluster.local.",
            "CNAME",
            NXDOMAIN,
            [],
            [SOA],
            id="nor is its CNAME",
        ),
        pytest.param(
            "20.7.244.10.in-addr.arpa.",
            "PTR",
            NOERROR,
            [
                "20.7.244.10.in-addr.arpa. 5 IN PTR 10-244-7-20.ghost.default.svc.cluster.local.",
                "20.7.244.10.in-addr.arpa. 5 IN PTR 10-244-7-20.phantom.default.svc.cluster.local.",
            ],
            [],
            id="a ready slice address of missing Services has one PTR per slice's Service",
        ),
        pytest.param(
            "21.7.244.10.in-addr.arpa.",
            "PTR",
            NXDOMAIN,
            [],
            [REVERSE_SOA],
            id="a not-ready slice address has none",
        ),
        pytest.param(
            "9.7.244.10.in-addr.arpa.",
            "PTR",
            NOERROR,
            [f"9.7.244.10.in-addr.arpa. 5 IN PTR web-0.{WEB}"],
            [],
            id="the merged slice's address names its endpoint",
        ),
    ],
)
def test_answers(server: DNS, qname: str, qtype: str, rcode: int, answer: list[str], authority: list[str]) -> None:
    """Each question answered as CoreDNS answers it."""
    check(server.query(qname, qtype), rcode, answer, authority)


def test_check_says_what_it_did(write_zones: WriteZones, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`check` notes which slices were merged or ignored, the slices of missing Services, and the ExternalName
    that is an IP address; none of them is an error."""
    write_zones(ZONE)
    assert main(["check", "--state", str(tmp_path / "state")]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "EndpointSlice default/web-extra: merged into the endpoints of Service web" in text
    assert "EndpointSlice default/web-abcde: ignored: managed by endpointslice-controller.k8s.io" in text
    assert "EndpointSlice default/ghost-1: Service ghost does not exist: only its PTR records are served" in text
    assert "Service default/ip-name: spec.externalName: 10.1.2.3 is an IP address, not a name: not served" in text
