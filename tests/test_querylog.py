"""--log-queries: one JSON line per answered query, filtered by mode, written off the answer path."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from clusterdns.querylog import QueryLog
from tests.test_serve import ROOT, free_port, service_env, until


def reply_for(name: str, rcode: int, answers: int) -> tuple[bytes, bytes]:
    query = dns.message.make_query(name, "A")
    query.id = 7
    wire = bytearray(query.to_wire())
    reply = bytearray(wire)
    reply[2] |= 0x80
    reply[3] = rcode
    reply[6:8] = answers.to_bytes(2, "big")
    return bytes(wire), bytes(reply)


@pytest.mark.parametrize(
    ("mode", "rcode", "answers", "logged"),
    [
        ("all", dns.rcode.NOERROR, 1, True),
        ("all", dns.rcode.NXDOMAIN, 0, True),
        ("denial", dns.rcode.NOERROR, 1, False),
        ("denial", dns.rcode.NOERROR, 0, True),  # NODATA
        ("denial", dns.rcode.NXDOMAIN, 0, True),
        ("denial", dns.rcode.SERVFAIL, 0, False),
        ("error", dns.rcode.SERVFAIL, 0, True),
        ("error", dns.rcode.REFUSED, 0, True),
        ("error", dns.rcode.NXDOMAIN, 0, False),
    ],
)
def test_modes(mode: str, rcode: int, answers: int, logged: bool) -> None:
    """all logs every answer, denial only NXDOMAIN and NODATA, error only FORMERR/SERVFAIL/NOTIMP/REFUSED."""
    log = QueryLog(mode, io.StringIO())
    query, reply = reply_for("My-Nginx.default.svc.cluster.local", rcode, answers)
    line = log.format(("127.0.0.1", 5353), query, reply, "udp", 1500, 1.5)
    log.close()
    assert (line is not None) == logged
    if line is not None:
        entry = json.loads(line)
        assert entry["client"] == "127.0.0.1:5353"
        assert entry["name"] == "My-Nginx.default.svc.cluster.local."  # as asked
        assert (entry["type"], entry["rcode"], entry["proto"]) == ("A", dns.rcode.to_text(rcode), "udp")
        assert entry["duration"] == 1.5e-06


def test_bad_mode() -> None:
    """An unknown mode is refused with the choices."""
    with pytest.raises(ValueError, match="all, denial, error"):
        QueryLog("everything", io.StringIO())


@pytest.mark.skipif(not shutil.which("dig"), reason="dig (bind9-dnsutils) is not installed")
def test_serve_logs_each_query(tmp_path: Path) -> None:
    """`serve --log-queries all` writes one JSON line per query to stdout, with name, type and rcode."""
    zones = tmp_path / "zones"
    shutil.copytree(ROOT / "zones", zones)
    port = free_port()
    argv = [sys.executable, "-m", "clusterdns", "serve", "--zones", str(zones), "--state", str(tmp_path / "st")]
    argv += ["--port", str(port), "--http", "off", "--upstream", "off", "--log-queries", "all", "--lameduck", "0"]
    out = tmp_path / "queries.jsonl"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(argv, cwd=ROOT, env=service_env(), stdout=stdout, stderr=subprocess.DEVNULL)
        try:
            names = ["my-nginx.default.svc.cluster.local", "nope.default.svc.cluster.local"]

            def answered() -> bool:
                dig = ["dig", "+short", "+time=1", "+tries=1", "-p", str(port), "@127.0.0.1", names[0]]
                lines = subprocess.run(dig, capture_output=True, text=True).stdout.split()
                return any(line.count(".") == 3 and line.replace(".", "").isdigit() for line in lines)

            until(lambda: answered() or None, 10, "the first answer")
            for name in names:
                subprocess.run(["dig", "+time=1", "+tries=1", "-p", str(port), "@127.0.0.1", name], capture_output=True)

            def logged() -> list[dict[str, object]]:
                return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]

            until(
                lambda: {e["name"] for e in logged()} >= {n + "." for n in names} or None, 5, f"the log lines in {out}"
            )
        finally:
            proc.terminate()
            proc.wait(10)
    entries = {str(e["name"]): e for e in logged()}
    assert entries["my-nginx.default.svc.cluster.local."]["rcode"] == "NOERROR"
    assert entries["nope.default.svc.cluster.local."]["rcode"] == "NXDOMAIN"
    assert all(isinstance(e["duration"], float) for e in entries.values())
