"""Real clients against the running server: `dig` (short and full output, UDP and TCP) and `nslookup`
(UDP and TCP), for every record kind; their parsed output must match what the server answers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest
from dns_helpers import CLUSTER, CLUSTER_CONFIG, DNS, SERIAL, lines, servers, zone_line

NGINX = "my-nginx.default.svc.cluster.local"


def need(tool: str) -> str:
    """The path of a client tool; the test is skipped without it, except in CI (which installs it)."""
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed (apt-get install bind9-dnsutils)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DNS]:
    with servers(Path(tmp_path_factory.mktemp("dns-clients"))) as pool:
        yield pool.start(CLUSTER, config=CLUSTER_CONFIG)


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def dig(server: DNS, *args: str, tcp: bool = False) -> str:
    """dig's output for one question; one try with a short timeout, so a missing reply fails fast."""
    done = run(
        [
            need("dig"),
            f"@{server.host}",
            "-p",
            str(server.port),
            "+time=2",
            "+tries=1",
            "+tcp" if tcp else "+notcp",
            *args,
        ]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --- dig +short ---------------------------------------------------------------------------------------

DIG_SHORT = [
    # (dig arguments, the +short lines)
    ([NGINX, "A"], ["10.0.0.50"]),
    (["dual.default.svc.cluster.local", "AAAA"], ["fd00:10:96::60"]),
    (["hdls.default.svc.cluster.local", "A"], ["10.244.3.1", "10.244.3.2", "10.244.3.3"]),
    (["web-0.nginx.default.svc.cluster.local", "A"], ["10.244.2.10"]),
    ([f"_http._tcp.{NGINX}", "SRV"], [f"0 100 80 {NGINX}."]),
    (
        ["_web._tcp.nginx.default.svc.cluster.local", "SRV"],
        ["0 50 80 web-0.nginx.default.svc.cluster.local.", "0 50 80 web-1.nginx.default.svc.cluster.local."],
    ),
    (["-x", "10.0.0.50"], [f"{NGINX}."]),
    (["-x", "fd00:10:96::60"], ["dual.default.svc.cluster.local."]),
    (["-x", "10.244.2.10"], ["web-0.nginx.default.svc.cluster.local."]),
    (["ext.default.svc.cluster.local", "CNAME"], ["my.database.example.com."]),
    (["alias.default.svc.cluster.local", "A"], [f"{NGINX}.", "10.0.0.50"]),
    (["dns-version.cluster.local", "TXT"], ['"1.1.0"']),
    (["cluster.local", "SOA"], [f"ns.dns.cluster.local. hostmaster.cluster.local. {SERIAL} 7200 1800 86400 5"]),
    (["cluster.local", "NS"], ["kube-dns.kube-system.svc.cluster.local."]),
    (["10-99-0-1.default.pod.cluster.local", "A"], ["10.99.0.1"]),
    (["nosuch.default.svc.cluster.local", "A"], []),
    ([NGINX, "AAAA"], []),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(("args", "expected"), DIG_SHORT, ids=[" ".join(a) for a, _ in DIG_SHORT])
def test_dig_short(server: DNS, args: list[str], expected: list[str], tcp: bool) -> None:
    """`dig +short` prints exactly the records of each kind, over UDP and over TCP."""
    out = dig(server, "+short", *args, tcp=tcp)
    assert sorted(out.split("\n")[:-1]) == sorted(expected)


# --- dig, full output ---------------------------------------------------------------------------------


def parse_dig(out: str) -> dict[str, object]:
    """dig's full output: status, header flags, transport, and each section as zone-file lines."""
    status = re.search(r"status: (\w+),", out)
    flags = re.search(r";; flags:([^;]*);", out)
    transport = re.search(r";; SERVER: .*\((UDP|TCP)\)", out)
    assert status and flags and transport, out
    sections: dict[str, list[str]] = {"ANSWER": [], "AUTHORITY": [], "ADDITIONAL": []}
    current = None
    for line in out.splitlines():
        head = re.fullmatch(r";; (\w+) SECTION:", line)
        if head:
            current = head.group(1)
        elif not line.strip():
            current = None
        elif current in sections:
            sections[current].append(zone_line(line))
    return {
        "status": status.group(1),
        "flags": set(flags.group(1).split()),
        "transport": transport.group(1),
        **{k: sorted(v) for k, v in sections.items()},
    }


DIG_FULL = [
    (NGINX, "A"),
    (NGINX, "AAAA"),
    ("dual.default.svc.cluster.local", "AAAA"),
    (f"_http._tcp.{NGINX}", "SRV"),
    ("_http._tcp.hdls.default.svc.cluster.local", "SRV"),
    ("50.0.0.10.in-addr.arpa", "PTR"),
    ("5.1.244.10.in-addr.arpa", "PTR"),
    ("ext.default.svc.cluster.local", "CNAME"),
    ("alias.default.svc.cluster.local", "A"),
    ("dns-version.cluster.local", "TXT"),
    ("cluster.local", "SOA"),
    ("cluster.local", "NS"),
    ("nosuch.default.svc.cluster.local", "A"),
    ("my-nginx.default.default.svc.cluster.local", "A"),
    ("default.svc.cluster.local", "A"),
    ("example.com", "A"),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(("name", "rdtype"), DIG_FULL, ids=[" ".join(q) for q in DIG_FULL])
def test_dig_full(server: DNS, name: str, rdtype: str, tcp: bool) -> None:
    """dig reads the same status, flags and sections that dnspython and dnslib decode; over the asked
    transport; authoritative (aa), no recursion offered (no ra), not truncated."""
    got = parse_dig(dig(server, name, rdtype, tcp=tcp))
    msg = server.query(name + ".", rdtype, tcp=tcp)
    assert got == {
        "status": dns.rcode.to_text(msg.rcode()),
        "flags": {"qr", "rd"} | ({"aa"} if msg.flags & dns.flags.AA else set()),
        "transport": "TCP" if tcp else "UDP",
        "ANSWER": sorted(lines(msg.answer)),
        "AUTHORITY": sorted(lines(msg.authority)),
        "ADDITIONAL": sorted(lines(msg.additional)),
    }
    if got["status"] != "REFUSED":
        assert "aa" in got["flags"]  # type: ignore[operator]


def test_dig_nxdomain_and_nodata(server: DNS) -> None:
    """dig shows NXDOMAIN for a missing name and NOERROR with no answer for a missing type, the SOA in
    authority both times."""
    soa = zone_line(
        f"cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. {SERIAL} 7200 1800 86400 5"
    )
    missing = parse_dig(dig(server, "nosuch.default.svc.cluster.local", "A"))
    assert (missing["status"], missing["ANSWER"], missing["AUTHORITY"]) == ("NXDOMAIN", [], [soa])
    nodata = parse_dig(dig(server, NGINX, "AAAA"))
    assert (nodata["status"], nodata["ANSWER"], nodata["AUTHORITY"]) == ("NOERROR", [], [soa])


def test_dig_retries_truncated_over_tcp(server: DNS) -> None:
    """A 100-address answer is truncated over UDP without EDNS; dig retries over TCP and gets it all."""
    out = dig(server, "+noedns", "big.default.svc.cluster.local", "A")
    assert ";; Truncated, retrying in TCP mode." in out
    parsed = parse_dig(out)
    assert parsed["transport"] == "TCP"
    assert len(parsed["ANSWER"]) == 100  # type: ignore[arg-type]
    ignored = parse_dig(dig(server, "+noedns", "+ignore", "big.default.svc.cluster.local", "A"))
    assert "tc" in ignored["flags"]  # type: ignore[operator]
    assert ignored["transport"] == "UDP"


# --- nslookup -----------------------------------------------------------------------------------------


def nslookup(server: DNS, *args: str, tcp: bool = False) -> tuple[int, list[str]]:
    """nslookup's exit status and its output lines after the server banner, whitespace collapsed."""
    extra = ["-vc"] if tcp else []
    done = run([need("nslookup"), f"-port={server.port}", "-timeout=2", "-retry=1", *extra, *args, server.host])
    out = [" ".join(line.split()) for line in done.stdout.splitlines() if line.strip()]
    banner = ["Server: " + server.host, f"Address: {server.host}#{server.port}"]
    if out[:2] == banner:
        out = out[2:]
    return done.returncode, out


NSLOOKUP = [
    # (nslookup arguments, exit status, output lines)
    ([f"{NGINX}."], 0, [f"Name: {NGINX}", "Address: 10.0.0.50"]),
    (
        ["dual.default.svc.cluster.local."],
        0,
        [
            "Name: dual.default.svc.cluster.local",
            "Address: 10.0.0.60",
            "Name: dual.default.svc.cluster.local",
            "Address: fd00:10:96::60",
        ],
    ),
    (
        ["-type=AAAA", "dual.default.svc.cluster.local."],
        0,
        ["Name: dual.default.svc.cluster.local", "Address: fd00:10:96::60"],
    ),
    (
        ["-type=SRV", f"_http._tcp.{NGINX}."],
        0,
        [f"_http._tcp.{NGINX} service = 0 100 80 {NGINX}."],
    ),
    (["10.0.0.50"], 0, [f"50.0.0.10.in-addr.arpa name = {NGINX}."]),
    (
        ["-type=PTR", "11.2.244.10.in-addr.arpa."],
        0,
        ["11.2.244.10.in-addr.arpa name = web-1.nginx.default.svc.cluster.local."],
    ),
    (
        ["-type=CNAME", "ext.default.svc.cluster.local."],
        0,
        ["ext.default.svc.cluster.local canonical name = my.database.example.com."],
    ),
    (["-type=TXT", "dns-version.cluster.local."], 0, ['dns-version.cluster.local text = "1.1.0"']),
    (
        ["-type=SOA", "cluster.local."],
        0,
        [
            "cluster.local",
            "origin = ns.dns.cluster.local",
            "mail addr = hostmaster.cluster.local",
            f"serial = {SERIAL}",
            "refresh = 7200",
            "retry = 1800",
            "expire = 86400",
            "minimum = 5",
        ],
    ),
    (["-type=NS", "cluster.local."], 0, ["cluster.local nameserver = kube-dns.kube-system.svc.cluster.local."]),
    (
        ["nosuch.default.svc.cluster.local."],
        1,
        ["** server can't find nosuch.default.svc.cluster.local: NXDOMAIN"],
    ),
    (["-type=AAAA", f"{NGINX}."], 0, [f"*** Can't find {NGINX}.: No answer"]),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(("args", "status", "expected"), NSLOOKUP, ids=[" ".join(a) for a, _, _ in NSLOOKUP])
def test_nslookup(server: DNS, args: list[str], status: int, expected: list[str], tcp: bool) -> None:
    """nslookup (with -port=) prints each record kind, NXDOMAIN and "No answer", over UDP and TCP (-vc)."""
    code, out = nslookup(server, *args, tcp=tcp)
    assert (code, out) == (status, expected)
