"""The records `clusterdns serve` answers, as the Kubernetes DNS specification 1.1.0 and CoreDNS's
kubernetes plugin give them: one table of questions and the expected sections written as zone-file lines,
asked over UDP of a real server with every reply decoded by both dnspython and dnslib."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import dns.flags
import dns.rcode
import pytest
from dns_helpers import CLUSTER, CLUSTER_CONFIG, DNS, SERIAL, check, lines, servers, zone_line

NOERROR, NXDOMAIN, REFUSED = dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED
SOA = f"cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. {SERIAL} 7200 1800 86400 5"
REVERSE_SOA = f"in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. {SERIAL} 7200 1800 86400 5"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DNS]]:
    """One server per `--pods` mode over the same manifests, for the whole module."""
    with servers(Path(tmp_path_factory.mktemp("dns-records"))) as pool:
        yield {
            mode: pool.start(CLUSTER, config=CLUSTER_CONFIG, pods=mode) for mode in ("insecure", "verified", "disabled")
        }


def case(
    qname: str,
    qtype: str,
    rcode: int,
    answer: Sequence[str] = (),
    authority: Sequence[str] = (),
    additional: Sequence[str] = (),
    id: str | None = None,
) -> object:
    return pytest.param(qname, qtype, rcode, answer, authority, additional, id=id or f"{qname} {qtype}")


def nxdomain(qname: str, qtype: str = "A", id: str | None = None) -> object:
    """A name that does not exist: NXDOMAIN, the zone's SOA in authority."""
    return case(qname, qtype, NXDOMAIN, authority=[SOA], id=id)


def nodata(qname: str, qtype: str, id: str | None = None) -> object:
    """A name that exists without records of this type: NOERROR, empty answer, the zone's SOA in authority."""
    return case(qname, qtype, NOERROR, authority=[SOA], id=id)


NGINX = "my-nginx.default.svc.cluster.local."
HDLS = "hdls.default.svc.cluster.local."
V6 = "v6.default.svc.cluster.local."

RECORDS = [
    # --- ClusterIP services (spec 2.3.1) ---
    case(NGINX, "A", NOERROR, [f"{NGINX} 5 IN A 10.0.0.50"]),
    nodata(NGINX, "AAAA", id="AAAA of an IPv4 service is NODATA"),
    case("dual.default.svc.cluster.local.", "A", NOERROR, ["dual.default.svc.cluster.local. 5 IN A 10.0.0.60"]),
    case(
        "dual.default.svc.cluster.local.",
        "AAAA",
        NOERROR,
        ["dual.default.svc.cluster.local. 5 IN AAAA fd00:10:96::60"],
    ),
    case(
        "kubernetes.default.svc.cluster.local.", "A", NOERROR, ["kubernetes.default.svc.cluster.local. 5 IN A 10.0.0.1"]
    ),
    nodata(NGINX, "TXT"),
    nodata(NGINX, "CNAME", id="CNAME of a ClusterIP service is NODATA"),
    # --- headless services (spec 2.4.1): one record per ready endpoint ---
    case(
        HDLS,
        "A",
        NOERROR,
        [f"{HDLS} 5 IN A 10.244.3.1", f"{HDLS} 5 IN A 10.244.3.2", f"{HDLS} 5 IN A 10.244.3.3"],
        id="headless A: ready endpoints only",
    ),
    nodata(HDLS, "AAAA", id="headless AAAA with only IPv4 endpoints is NODATA"),
    nxdomain("empty.default.svc.cluster.local.", "A", id="headless without ready endpoints is NXDOMAIN"),
    nxdomain("empty.default.svc.cluster.local.", "AAAA", id="headless without ready endpoints is NXDOMAIN (AAAA)"),
    nxdomain("empty.default.svc.cluster.local.", "SRV", id="headless without ready endpoints is NXDOMAIN (SRV)"),
    nxdomain("_http._tcp.empty.default.svc.cluster.local.", "SRV"),
    case(
        "nginx.default.svc.cluster.local.",
        "A",
        NOERROR,
        ["nginx.default.svc.cluster.local. 5 IN A 10.244.2.10", "nginx.default.svc.cluster.local. 5 IN A 10.244.2.11"],
    ),
    case(V6, "AAAA", NOERROR, [f"{V6} 5 IN AAAA fd00::1", f"{V6} 5 IN AAAA 2001:db8::"]),
    nodata(V6, "A", id="headless A with only IPv6 endpoints is NODATA"),
    # --- endpoint names: hostname, else the dashed IP ---
    case(
        "web-0.nginx.default.svc.cluster.local.",
        "A",
        NOERROR,
        ["web-0.nginx.default.svc.cluster.local. 5 IN A 10.244.2.10"],
        id="endpoint by hostname (StatefulSet)",
    ),
    nxdomain("10-244-2-10.nginx.default.svc.cluster.local.", id="an endpoint with a hostname has no dashed-IP name"),
    case(
        f"10-244-3-1.{HDLS}",
        "A",
        NOERROR,
        [f"10-244-3-1.{HDLS} 5 IN A 10.244.3.1"],
        id="endpoint by dashed IPv4",
    ),
    nodata(f"10-244-3-1.{HDLS}", "AAAA"),
    nxdomain(f"10-244-3-4.{HDLS}", id="a not-ready endpoint has no name"),
    nxdomain(f"bogus.{HDLS}", id="unknown endpoint"),
    case(f"fd00--1.{V6}", "AAAA", NOERROR, [f"fd00--1.{V6} 5 IN AAAA fd00::1"], id="endpoint by dashed IPv6"),
    case(
        f"2001-db8--0.{V6}",
        "AAAA",
        NOERROR,
        [f"2001-db8--0.{V6} 5 IN AAAA 2001:db8::"],
        id="dashed IPv6 with a trailing dash gets a 0",
    ),
    nxdomain(f"2001-db8--.{V6}", "AAAA", id="dashed IPv6 without the trailing 0 does not exist"),
    # --- SRV (spec 2.3.2, 2.4.2; weights as CoreDNS) ---
    case(
        f"_http._tcp.{NGINX}",
        "SRV",
        NOERROR,
        [f"_http._tcp.{NGINX} 5 IN SRV 0 100 80 {NGINX}"],
        additional=[f"{NGINX} 5 IN A 10.0.0.50"],
        id="ClusterIP named port: service name and service port",
    ),
    case(
        NGINX,
        "SRV",
        NOERROR,
        [f"{NGINX} 5 IN SRV 0 50 80 {NGINX}", f"{NGINX} 5 IN SRV 0 50 443 {NGINX}"],
        additional=[f"{NGINX} 5 IN A 10.0.0.50"],
        id="bare service SRV lists every port",
    ),
    case(
        "unnamed.default.svc.cluster.local.",
        "SRV",
        NOERROR,
        ["unnamed.default.svc.cluster.local. 5 IN SRV 0 100 8000 unnamed.default.svc.cluster.local."],
        additional=["unnamed.default.svc.cluster.local. 5 IN A 10.0.0.52"],
        id="bare SRV includes an unnamed port",
    ),
    nxdomain(f"_http._udp.{NGINX}", "SRV", id="protocol does not match"),
    nxdomain(f"_nope._tcp.{NGINX}", "SRV", id="no such port"),
    case(
        "_http._tcp.dual.default.svc.cluster.local.",
        "SRV",
        NOERROR,
        ["_http._tcp.dual.default.svc.cluster.local. 5 IN SRV 0 50 80 dual.default.svc.cluster.local."],
        additional=[
            "dual.default.svc.cluster.local. 5 IN A 10.0.0.60",
            "dual.default.svc.cluster.local. 5 IN AAAA fd00:10:96::60",
        ],
        id="dual-stack SRV: one record, weight 100/2, both addresses",
    ),
    case(
        "_web._tcp.nginx.default.svc.cluster.local.",
        "SRV",
        NOERROR,
        [
            "_web._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 50 80 web-0.nginx.default.svc.cluster.local.",
            "_web._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 50 80 web-1.nginx.default.svc.cluster.local.",
        ],
        additional=[
            "web-0.nginx.default.svc.cluster.local. 5 IN A 10.244.2.10",
            "web-1.nginx.default.svc.cluster.local. 5 IN A 10.244.2.11",
        ],
        id="headless SRV: endpoint hostnames, 2 endpoints weigh 50",
    ),
    case(
        f"_http._tcp.{HDLS}",
        "SRV",
        NOERROR,
        [
            f"_http._tcp.{HDLS} 5 IN SRV 0 33 8080 10-244-3-1.{HDLS}",
            f"_http._tcp.{HDLS} 5 IN SRV 0 33 8080 10-244-3-2.{HDLS}",
            f"_http._tcp.{HDLS} 5 IN SRV 0 33 8080 10-244-3-3.{HDLS}",
        ],
        additional=[
            f"10-244-3-1.{HDLS} 5 IN A 10.244.3.1",
            f"10-244-3-2.{HDLS} 5 IN A 10.244.3.2",
            f"10-244-3-3.{HDLS} 5 IN A 10.244.3.3",
        ],
        id="headless SRV: dashed names, endpoint port, 3 endpoints weigh 33",
    ),
    case(
        HDLS,
        "SRV",
        NOERROR,
        [f"{HDLS} 5 IN SRV 0 16 {port} 10-244-3-{i}.{HDLS}" for i in (1, 2, 3) for port in (8080, 9100)],
        additional=[f"10-244-3-{i}.{HDLS} 5 IN A 10.244.3.{i}" for i in (1, 2, 3)],
        id="headless bare SRV: 3 endpoints x 2 ports weigh 16",
    ),
    case(
        f"_http._tcp.{V6}",
        "SRV",
        NOERROR,
        [f"_http._tcp.{V6} 5 IN SRV 0 50 8080 fd00--1.{V6}", f"_http._tcp.{V6} 5 IN SRV 0 50 8080 2001-db8--0.{V6}"],
        additional=[f"fd00--1.{V6} 5 IN AAAA fd00::1", f"2001-db8--0.{V6} 5 IN AAAA 2001:db8::"],
        id="headless SRV with IPv6 endpoints: AAAA in additional",
    ),
    nxdomain(f"_web._tcp.{HDLS}", "SRV", id="headless: no such port"),
    # --- ExternalName (spec 2.5) ---
    case(
        "ext.default.svc.cluster.local.",
        "CNAME",
        NOERROR,
        ["ext.default.svc.cluster.local. 5 IN CNAME my.database.example.com."],
    ),
    case(
        "ext.default.svc.cluster.local.",
        "A",
        NOERROR,
        ["ext.default.svc.cluster.local. 5 IN CNAME my.database.example.com."],
        id="ExternalName A outside the zone: the CNAME",
    ),
    case(
        "alias.default.svc.cluster.local.",
        "A",
        NOERROR,
        [
            "alias.default.svc.cluster.local. 5 IN CNAME my-nginx.default.svc.cluster.local.",
            f"{NGINX} 5 IN A 10.0.0.50",
        ],
        id="ExternalName inside the zone: CNAME and the target's A",
    ),
    nxdomain("x.ext.default.svc.cluster.local.", id="a name under an ExternalName"),
    nxdomain("_http._tcp.ext.default.svc.cluster.local.", "SRV", id="a port under an ExternalName"),
    nxdomain("_http._tcp.ext.default.svc.cluster.local.", "A", id="a port name under an ExternalName (A)"),
    # --- PTR (spec 2.3.3, 2.4.3) ---
    case("50.0.0.10.in-addr.arpa.", "PTR", NOERROR, [f"50.0.0.10.in-addr.arpa. 5 IN PTR {NGINX}"]),
    case(
        "10.0.0.10.in-addr.arpa.",
        "PTR",
        NOERROR,
        ["10.0.0.10.in-addr.arpa. 5 IN PTR kube-dns.kube-system.svc.cluster.local."],
    ),
    case(
        "60.0.0.10.in-addr.arpa.", "PTR", NOERROR, ["60.0.0.10.in-addr.arpa. 5 IN PTR dual.default.svc.cluster.local."]
    ),
    case(
        "0.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.",
        "PTR",
        NOERROR,
        [
            "0.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa. 5 IN PTR"
            " dual.default.svc.cluster.local."
        ],
        id="PTR of an IPv6 cluster IP",
    ),
    case(
        "5.1.244.10.in-addr.arpa.",
        "PTR",
        NOERROR,
        [
            f"5.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-5.{NGINX}",
            "5.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-5.metrics.default.svc.cluster.local.",
        ],
        id="endpoint IP: one PTR per service selecting it",
    ),
    case(
        "10.2.244.10.in-addr.arpa.",
        "PTR",
        NOERROR,
        ["10.2.244.10.in-addr.arpa. 5 IN PTR web-0.nginx.default.svc.cluster.local."],
        id="endpoint IP with a hostname",
    ),
    case(
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        "PTR",
        NOERROR,
        [f"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR fd00--1.{V6}"],
        id="IPv6 endpoint IP",
    ),
    case(
        "7.1.244.10.in-addr.arpa.",
        "PTR",
        NXDOMAIN,
        authority=[REVERSE_SOA],
        id="a not-ready endpoint IP has no PTR",
    ),
    # --- dns-version, apex SOA and NS ---
    case("dns-version.cluster.local.", "TXT", NOERROR, ['dns-version.cluster.local. 28800 IN TXT "1.1.0"']),
    case("cluster.local.", "SOA", NOERROR, [SOA]),
    case(
        "cluster.local.",
        "NS",
        NOERROR,
        ["cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local."],
        additional=["kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10"],
    ),
    nodata("cluster.local.", "A", id="the apex exists"),
    nodata("svc.cluster.local.", "A", id="svc exists"),
    # --- NXDOMAIN vs NODATA ---
    nodata("default.svc.cluster.local.", "A", id="a namespace name is NODATA"),
    nodata("team.svc.cluster.local.", "A", id="a namespace without services is NODATA"),
    nxdomain("nosuchns.svc.cluster.local.", id="unknown namespace"),
    nxdomain("my-nginx.nosuchns.svc.cluster.local.", id="a service in an unknown namespace"),
    nxdomain("nosuch.default.svc.cluster.local.", id="unknown service"),
    nxdomain("nosuch.default.svc.cluster.local.", "AAAA", id="unknown service (AAAA)"),
    nxdomain("my-nginx.default.default.svc.cluster.local.", id="search expansion <svc>.<ns>.<ns>.svc"),
    nxdomain("my-nginx.default.default.svc.cluster.local.", "AAAA", id="search expansion (AAAA)"),
    nxdomain("my-nginx.default.svc.cluster.local.cluster.local.", id="search expansion <fqdn>.cluster.local"),
    nxdomain("my-nginx.default.svc.cluster.local.svc.cluster.local.", id="search expansion <fqdn>.svc.cluster.local"),
    nxdomain("my-nginx.svc.cluster.local.", id="search expansion <svc>.svc.cluster.local"),
    nxdomain("my-nginx.cluster.local.", id="search expansion <svc>.cluster.local"),
    nxdomain("x.y.z.my-nginx.default.svc.cluster.local.", id="too many labels"),
    # --- outside the zone, zone transfers ---
    case("example.com.", "A", REFUSED, id="outside the zone"),
    case("cluster.local.example.com.", "A", REFUSED, id="outside the zone, ending like it"),
    case("local.", "SOA", REFUSED, id="the zone's parent"),
    case("cluster.local.", "AXFR", REFUSED, id="AXFR"),
    case("cluster.local.", "IXFR", REFUSED, id="IXFR"),
]


@pytest.mark.parametrize(("qname", "qtype", "rcode", "answer", "authority", "additional"), RECORDS)
def test_records(
    cluster: dict[str, DNS],
    qname: str,
    qtype: str,
    rcode: int,
    answer: list[str],
    authority: list[str],
    additional: list[str],
) -> None:
    """Each question gets exactly the rcode and records of the table; in-zone answers are authoritative."""
    tcp = qtype in ("AXFR", "IXFR")  # zone transfers are asked over TCP
    msg = cluster["insecure"].query(qname, qtype, tcp=tcp)
    check(msg, rcode, answer, authority, additional)
    assert bool(msg.flags & dns.flags.AA) == (rcode != REFUSED)


def test_cname_first(cluster: dict[str, DNS]) -> None:
    """An ExternalName whose target is in the zone answers the CNAME first, then the target's records."""
    msg = cluster["insecure"].query("alias.default.svc.cluster.local.", "A")
    assert lines(msg.answer) == [
        zone_line("alias.default.svc.cluster.local. 5 IN CNAME my-nginx.default.svc.cluster.local."),
        zone_line(f"{NGINX} 5 IN A 10.0.0.50"),
    ]


POD_CASES = [
    # (pods mode, qname, qtype, rcode, answer)
    ("insecure", "10-244-1-5.default.pod.cluster.local.", "A", NOERROR, ["10.244.1.5"]),
    ("insecure", "10-99-0-1.default.pod.cluster.local.", "A", NOERROR, ["10.99.0.1"]),
    ("insecure", "10-99-0-1.team.pod.cluster.local.", "A", NOERROR, ["10.99.0.1"]),
    ("insecure", "10-99-0-1.default.pod.cluster.local.", "AAAA", NOERROR, []),
    ("insecure", "fd00-10-244--5.default.pod.cluster.local.", "AAAA", NOERROR, ["fd00:10:244::5"]),
    ("insecure", "10-99-0-1.nosuchns.pod.cluster.local.", "A", NXDOMAIN, []),
    ("insecure", "not-an-ip.default.pod.cluster.local.", "A", NXDOMAIN, []),
    ("insecure", "10-244-1-300.default.pod.cluster.local.", "A", NXDOMAIN, []),
    ("insecure", "default.pod.cluster.local.", "A", NOERROR, []),
    ("verified", "10-244-1-5.default.pod.cluster.local.", "A", NOERROR, ["10.244.1.5"]),
    ("verified", "10-244-1-7.default.pod.cluster.local.", "A", NOERROR, ["10.244.1.7"]),
    ("verified", "10-99-0-1.default.pod.cluster.local.", "A", NXDOMAIN, []),
    ("verified", "10-244-1-5.team.pod.cluster.local.", "A", NXDOMAIN, []),
    ("verified", "default.pod.cluster.local.", "A", NOERROR, []),
    ("disabled", "10-244-1-5.default.pod.cluster.local.", "A", NXDOMAIN, []),
    ("disabled", "10-99-0-1.default.pod.cluster.local.", "A", NXDOMAIN, []),
    ("disabled", "default.pod.cluster.local.", "A", NXDOMAIN, []),
    ("disabled", "pod.cluster.local.", "A", NOERROR, []),
]


@pytest.mark.parametrize(
    ("mode", "qname", "qtype", "rcode", "addresses"),
    [pytest.param(*c, id=f"{c[0]} {c[1]} {c[2]}") for c in POD_CASES],
)
def test_pods(cluster: dict[str, DNS], mode: str, qname: str, qtype: str, rcode: int, addresses: list[str]) -> None:
    """Pod names per --pods: insecure any IP in an existing namespace, verified only a Pod's IP, disabled none."""
    msg = cluster[mode].query(qname, qtype)
    answer = [f"{qname} 5 IN {qtype} {ip}" for ip in addresses]
    check(msg, rcode, answer, [] if addresses else [SOA])
    assert msg.flags & dns.flags.AA


CASE_CASES = [
    # (asked, qtype, answer lines as they must come back)
    ("My-Nginx.DEFAULT.svc.Cluster.Local.", "A", ["My-Nginx.DEFAULT.svc.Cluster.Local. 5 IN A 10.0.0.50"]),
    ("mY-nGiNx.dEfAuLt.SvC.cLuStEr.LoCaL.", "A", ["mY-nGiNx.dEfAuLt.SvC.cLuStEr.LoCaL. 5 IN A 10.0.0.50"]),
    ("WEB-0.NGINX.DEFAULT.SVC.CLUSTER.LOCAL.", "A", ["WEB-0.NGINX.DEFAULT.SVC.CLUSTER.LOCAL. 5 IN A 10.244.2.10"]),
    ("Dns-Version.Cluster.Local.", "TXT", ['Dns-Version.Cluster.Local. 28800 IN TXT "1.1.0"']),
    (
        "_HtTp._TcP.My-Nginx.Default.Svc.Cluster.Local.",
        "SRV",
        ["_HtTp._TcP.My-Nginx.Default.Svc.Cluster.Local. 5 IN SRV 0 100 80 my-nginx.default.svc.cluster.local."],
    ),
    ("50.0.0.10.IN-ADDR.ARPA.", "PTR", ["50.0.0.10.IN-ADDR.ARPA. 5 IN PTR my-nginx.default.svc.cluster.local."]),
]


@pytest.mark.parametrize(("qname", "qtype", "answer"), CASE_CASES)
def test_case_insensitive(cluster: dict[str, DNS], qname: str, qtype: str, answer: list[str]) -> None:
    """Names match whatever their letter case (0x20); the question and the answer's owners keep the case asked."""
    msg = cluster["insecure"].query(qname, qtype)
    assert msg.rcode() == NOERROR
    assert msg.question[0].name.to_text() == qname
    got = lines(msg.answer)
    assert [line.split()[0] for line in got] == [qname] * len(answer)
    assert sorted(line.lower() for line in got) == sorted(zone_line(line).lower() for line in answer)


def test_case_insensitive_negative(cluster: dict[str, DNS]) -> None:
    """A mixed-case miss is the same NXDOMAIN with the SOA; the question comes back as asked."""
    qname = "My-Nginx.Default.Default.Svc.Cluster.Local."
    msg = cluster["insecure"].query(qname, "A")
    assert msg.question[0].name.to_text() == qname
    assert msg.rcode() == NXDOMAIN
    assert sorted(line.lower() for line in lines(msg.authority)) == [zone_line(SOA).lower()]


def test_zone_built_on_the_previous_answers_as_a_fresh_one(tmp_path: Path) -> None:
    """A Zone that borrows unchanged services' named endpoints from the Zone it replaces indexes exactly
    what a Zone built from nothing indexes: the same PTR targets, the same ready endpoints."""
    from clusterdns.allocate import Store
    from clusterdns.records import Zone
    from clusterdns.registry import Config
    from clusterdns.zones import Zones

    def service(name: str, ns: str) -> str:
        return (
            f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n"
            f"  clusterIP: None\n  selector:\n    app: {name}\n  ports:\n  - port: 80\n"
        )

    def pod(name: str, ns: str, app: str, ip: str) -> str:
        return (
            f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n"
            f"    app: {app}\nspec:\n  hostname: {name}\n  subdomain: {app}\n  containers:\n  - name: c\n"
            f"status:\n  podIP: {ip}\n"
        )

    zones_dir = tmp_path / "zones"
    zones_dir.mkdir()
    (zones_dir / "a.yaml").write_text(service("one", "default") + pod("p1", "default", "one", "10.244.0.5"))
    (zones_dir / "b.yaml").write_text(service("two", "other") + pod("p2", "other", "two", "10.244.0.6"))
    zones = Zones(str(zones_dir), Config(), Store(None))
    before = Zone(zones.load(0.0))
    changed = (
        service("two", "other") + pod("p2", "other", "two", "10.244.0.7") + pod("p3", "other", "two", "10.244.0.8")
    )
    (zones_dir / "b.yaml").write_text(changed)
    registry = zones.load(1.0)
    assert registry.endpoints[("default", "one")] is before.registry.endpoints[("default", "one")]  # reused
    reused, fresh = Zone(registry, previous=before), Zone(registry)
    assert reused.ptr == fresh.ptr
    assert reused.ptr["10.244.0.5"] == ["p1.one.default.svc.cluster.local"]
    assert reused.ptr["10.244.0.7"] == ["p2.two.other.svc.cluster.local"]
    assert "10.244.0.6" not in reused.ptr
    for svc in registry.services.values():
        assert [(r.name, r.ip) for r in reused.ready(svc)] == [(r.name, r.ip) for r in fresh.ready(svc)]
