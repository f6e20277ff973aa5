"""Live operation of a running `clusterdns serve`: hot reload of zones/ edits, SIGHUP, files that turn bad,
/health, /ready and /metrics, the SIGTERM lameduck, and no query lost or answered wrongly while the zones
are rewritten under load."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import dns.rcode
import dns.rdatatype
import pytest
from conftest import write_files
from dns_helpers import check, lines, zone_line
from test_serve import Served, metric, until

from clusterdns.allocate import Store
from clusterdns.daemon import Daemon, Options
from clusterdns.health import REASONS, serve_http
from clusterdns.registry import Config
from clusterdns.respond import Responder
from clusterdns.server import DNSServer, _WorkerReload
from clusterdns.zones import Zones

ZONE = "cluster.local"
ALPHA = f"alpha.default.svc.{ZONE}"
FLIP = f"flip.default.svc.{ZONE}"
AUTO = f"auto.default.svc.{ZONE}"
MISSING = f"missing.default.svc.{ZONE}"
SOA_RDATA = "ns.dns.cluster.local. hostmaster.cluster.local."
DEBOUNCE_SETTLE = 0.5  # watch.DEBOUNCE is 0.1 s: a reload still to come has started by then


def service(name: str, ip: str | None = None, port: int = 80, labels: str = "") -> str:
    """A ClusterIP Service document; `port` is on line 7 (line 6 without an `ip`)."""
    cluster_ip = f"  clusterIP: {ip}\n" if ip else ""
    return (
        "apiVersion: v1\n"
        "kind: Service\n"
        f"metadata: {{name: {name}, labels: {{{labels}}}}}\n"
        "spec:\n"
        f"{cluster_ip}"
        "  ports:\n"
        f"  - {{name: http, port: {port}}}\n"
    )


FILES = {
    "alpha.yaml": service("alpha", "10.0.1.1"),
    "flip.yaml": service("flip", "10.0.2.1"),
    "auto.yaml": service("auto"),
}


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    root = tmp_path / "zones"
    root.mkdir()
    write_files(root, FILES)
    return root


@pytest.fixture
def start(tmp_path: Path, zones: Path) -> Iterator[Callable[..., Served]]:
    """`start(*flags)`: `clusterdns serve` on `zones`, ready (/ready 200); ended and checked after the test."""
    running: list[Served] = []

    def run(*extra: str) -> Served:
        served = Served(tmp_path, zones, *extra)
        running.append(served)
        served.wait_ready()
        return served

    yield run
    for served in running:
        served.close()


def reloads(served: Served) -> float:
    return served.metric("clusterdns_reloads_total", result="success")


def serial(served: Served) -> int:
    msg = served.ask(ZONE, "SOA")
    assert msg is not None and msg.rcode() == dns.rcode.NOERROR
    (rrset,) = msg.answer
    return int(rrset[0].serial)


# --- hot reload ----------------------------------------------------------------------------------------


def test_new_file_answers(start: Callable[..., Served], zones: Path) -> None:
    """A file that appears in zones/ is served: its Service answers soon after the write."""
    served = start()
    assert served.addresses(f"new.default.svc.{ZONE}") == set()
    written = time.monotonic()
    (zones / "new.yaml").write_text(service("new", "10.0.3.1"))
    until(lambda: served.addresses(f"new.default.svc.{ZONE}") == {"10.0.3.1"}, 5, "new.yaml's Service answers")
    took = time.monotonic() - written
    print(f"write to first correct answer: {took * 1000:.0f} ms")


def test_workers_reload_and_agree(start: Callable[..., Served], zones: Path) -> None:
    """With --workers 2 every process reloads (the worker with a database connection of its own): a new
    Service with an automatically allocated address answers the same address from both processes."""
    served = start("--workers", "2")
    assert len(served.children()) == 1
    (zones / "new.yaml").write_text(service("new"))
    name = f"new.default.svc.{ZONE}"
    until(lambda: served.addresses(name) not in (None, set()), 5, "new.yaml's Service answers")
    first = served.addresses(name)
    until(lambda: all(served.addresses(name) == first for _ in range(40)), 5, "40 answers in a row agree")
    answers = [served.addresses(name) for _ in range(200)]
    assert all(a == first for a in answers), {frozenset(a or ()) for a in answers}
    until(
        lambda: all(served.metric("clusterdns_process_queries_total", process=p) > 0 for p in ("0", "1")),
        5,
        "both processes answered",
        every=0.2,
    )
    (zones / "new.yaml").write_text(service("new", "10.0.4.4"))  # a second reload, on the worker's own store
    until(lambda: all(served.addresses(name) == {"10.0.4.4"} for _ in range(40)), 5, "both processes moved")


def test_modified_file_answers_the_new_address(start: Callable[..., Served], zones: Path) -> None:
    """A file rewritten in place (same size, new address) answers with the new address."""
    served = start()
    assert served.addresses(ALPHA) == {"10.0.1.1"}
    (zones / "alpha.yaml").write_text(service("alpha", "10.0.1.2"))
    served.wait_addresses(ALPHA, {"10.0.1.2"})


def test_deleted_file_is_nxdomain(start: Callable[..., Served], zones: Path) -> None:
    """A deleted file's Service is NXDOMAIN, with the zone's SOA in authority."""
    served = start()
    assert served.addresses(ALPHA) == {"10.0.1.1"}
    (zones / "alpha.yaml").unlink()
    served.wait_addresses(ALPHA, set())
    msg = served.ask(ALPHA, "A")
    assert msg is not None
    (soa,) = msg.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == f"{ZONE}."
    assert served.addresses(FLIP) == {"10.0.2.1"}


def test_renamed_file_still_answers(start: Callable[..., Served], zones: Path) -> None:
    """`mv alpha.yaml beta.yml`: after the reload the Service still answers, and edits to the new name count."""
    served = start()
    before = reloads(served)
    (zones / "alpha.yaml").rename(zones / "beta.yml")
    until(lambda: reloads(served) > before, 5, "a reload after the rename")
    assert served.addresses(ALPHA) == {"10.0.1.1"}
    (zones / "beta.yml").write_text(service("alpha", "10.0.1.2"))
    served.wait_addresses(ALPHA, {"10.0.1.2"})


def test_editor_write_is_one_reload(start: Callable[..., Served], zones: Path) -> None:
    """An editor's save (temporary file written in pieces, chmod, renamed over the file) is one reload."""
    served = start()
    before = reloads(served)
    text = service("alpha", "10.0.1.2")
    temp = zones / "alpha.yaml.tmp"
    with open(temp, "w") as f:
        for i in range(0, len(text), 16):
            f.write(text[i : i + 16])
            f.flush()
            os.fsync(f.fileno())
    temp.chmod(0o644)
    os.replace(temp, zones / "alpha.yaml")
    served.wait_addresses(ALPHA, {"10.0.1.2"})
    time.sleep(DEBOUNCE_SETTLE)  # waiting for reloads that must not come: no event to await
    after = reloads(served)
    assert 1 <= after - before <= 2, f"one save made {after - before:g} reloads"


def test_invalid_file_keeps_its_last_good_objects(start: Callable[..., Served], zones: Path) -> None:
    """A file that turns invalid keeps serving its last good version; /ready, the log and
    clusterdns_zone_errors show the file:line problem; fixing the file clears it."""
    served = start()
    assert served.addresses(ALPHA) == {"10.0.1.1"}
    assert served.metric("clusterdns_zone_errors") == 0
    path = zones / "alpha.yaml"
    path.write_text(service("alpha", "10.0.1.9", port=0))  # port on line 7
    problem = f"{path}:7: Service default/alpha: spec.ports[0].port: must be 1-65535, got 0"
    status, detail = until(lambda: (r := served.http("/ready")) and problem in r[1] and r, 5, f"/ready lists {problem}")
    assert status == 200, detail
    assert served.metric("clusterdns_zone_errors") == 1
    assert served.addresses(ALPHA) == {"10.0.1.1"}, "the last good version must stay"
    assert served.addresses(ALPHA, tcp=True) == {"10.0.1.1"}
    assert problem in served.stderr()

    path.write_text(service("alpha", "10.0.1.3"))
    served.wait_addresses(ALPHA, {"10.0.1.3"})
    until(lambda: served.metric("clusterdns_zone_errors") == 0, 5, "clusterdns_zone_errors back to 0")
    status, detail = served.http("/ready") or (0, "")
    assert status == 200 and "alpha.yaml" not in detail, detail


def test_invalid_yaml_keeps_its_last_good_objects(start: Callable[..., Served], zones: Path) -> None:
    """A file that stops being YAML at all keeps serving its last good version, and /ready says where."""
    served = start()
    path = zones / "alpha.yaml"
    path.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: alpha\nspec: [\n")
    until(lambda: (r := served.http("/ready")) and f"{path}:4: " in r[1], 5, f"/ready lists {path}:4")
    assert served.metric("clusterdns_zone_errors") == 1
    assert served.addresses(ALPHA) == {"10.0.1.1"}


def test_sighup_reloads(start: Callable[..., Served], zones: Path) -> None:
    """With --no-watch, SIGHUP reloads the zones: the edited file's new address answers."""
    served = start("--no-watch")
    assert served.addresses(ALPHA) == {"10.0.1.1"}
    (zones / "alpha.yaml").write_text(service("alpha", "10.0.1.2"))
    served.signal(signal.SIGHUP)
    served.wait_addresses(ALPHA, {"10.0.1.2"})
    assert reloads(served) == 1


def test_soa_serial_grows_after_a_reload(start: Callable[..., Served], zones: Path) -> None:
    """The apex SOA's serial is larger after a reload that changed the registry."""
    served = start()
    first = serial(served)
    soa = served.ask(ZONE, "SOA")
    assert soa is not None
    check(soa, dns.rcode.NOERROR, [f"{ZONE}. 5 IN SOA {SOA_RDATA} {first} 7200 1800 86400 5"])
    (zones / "alpha.yaml").write_text(service("alpha", "10.0.1.2"))
    served.wait_addresses(ALPHA, {"10.0.1.2"})
    assert serial(served) > first
    msg = served.ask(MISSING, "A")
    assert msg is not None
    (soa,) = msg.authority
    assert soa[0].serial == serial(served), "the negative answer's SOA carries the new serial too"


def test_allocations_stay_stable_through_reloads(start: Callable[..., Served], zones: Path) -> None:
    """A Service without a clusterIP keeps its allocated address when other files change and when its own does."""
    served = start()
    allocated = served.addresses(AUTO)
    assert allocated is not None and len(allocated) == 1
    (zones / "gamma.yaml").write_text(service("gamma"))
    gamma = until(lambda: served.addresses(f"gamma.default.svc.{ZONE}") or None, 5, "gamma answers")
    assert gamma != allocated
    assert served.addresses(AUTO) == allocated
    before = reloads(served)
    (zones / "auto.yaml").write_text(service("auto", labels="tier: web"))
    until(lambda: reloads(served) > before, 5, "a reload after auto.yaml changed")
    assert served.addresses(AUTO) == allocated
    assert served.addresses(f"gamma.default.svc.{ZONE}") == gamma


def test_reload_reaches_every_worker(start: Callable[..., Served], zones: Path) -> None:
    """With --workers 2 a change is answered by each process alike (the other stopped), allocations included."""
    served = start("--workers", "2")
    (worker,) = served.children()
    (zones / "alpha.yaml").write_text(service("alpha", "10.0.1.2"))
    (zones / "gamma.yaml").write_text(service("gamma"))
    gamma = f"gamma.default.svc.{ZONE}"
    served.wait_addresses(ALPHA, {"10.0.1.2"})
    allocated = until(lambda: served.addresses(gamma) or None, 5, "gamma answers")
    for stopped in (served.proc.pid, worker):
        os.kill(stopped, signal.SIGSTOP)
        try:  # the worker reloads on the SIGHUP the parent sends after its own reload: allow it a moment
            served.wait_addresses(ALPHA, {"10.0.1.2"}, within=10)
            for _ in range(10):
                assert served.addresses(ALPHA) == {"10.0.1.2"}, f"PID {stopped} stopped: the old address"
                assert served.addresses(gamma) == allocated, f"PID {stopped} stopped: another allocation"
        finally:
            os.kill(stopped, signal.SIGCONT)


def test_worker_reloads_do_not_nest() -> None:
    """SIGHUPs that reach a worker during its reload (Python runs the handler between two bytecodes of the
    load) start no load inside the running one: it goes round once more when it ends, and the worker serves
    the last load."""
    server = DNSServer(cast(Responder, None))
    depth = [0, 0]  # loads running now, and the most ever running at once
    loads: list[Responder] = []

    def slow_load() -> Responder:
        depth[0] += 1
        depth[1] = max(depth)
        try:
            loads.append(cast(Responder, object()))
            if len(loads) < 3:  # two SIGHUPs during each of the first two loads
                for _ in range(2):
                    os.kill(os.getpid(), signal.SIGHUP)
                    time.sleep(0.05)  # the handler has run by the end of this sleep, inside this load
            return loads[-1]
        finally:
            depth[0] -= 1

    reload = _WorkerReload(server, slow_load)
    previous = signal.signal(signal.SIGHUP, reload)
    try:
        reload(signal.SIGHUP, None)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert depth[1] == 1, f"{depth[1]} loads ran at once"
    assert len(loads) == 3 and server.responder is loads[-1]
    assert not reload.running


def test_worker_ends_on_the_newest_files_after_a_sighup_burst(start: Callable[..., Served], zones: Path) -> None:
    """A burst of SIGHUPs to a running worker while the files change: no reload fails, and the worker ends on
    the newest files."""
    served = start("--workers", "2")
    (worker,) = served.children()
    for i in range(5):
        (zones / "alpha.yaml").write_text(service("alpha", f"10.0.1.{10 + i}"))
        for _ in range(10):
            os.kill(worker, signal.SIGHUP)
    # each SIGHUP that finds no reload running starts one: on a loaded machine they take a while to drain
    served.wait_addresses(ALPHA, {"10.0.1.14"}, within=30)
    os.kill(served.proc.pid, signal.SIGSTOP)  # only the worker answers now
    try:
        served.wait_addresses(ALPHA, {"10.0.1.14"}, within=30)
    finally:
        os.kill(served.proc.pid, signal.SIGCONT)
    assert "reload failed" not in served.stderr()


# --- health and metrics --------------------------------------------------------------------------------


def test_health_and_ready(start: Callable[..., Served]) -> None:
    """/health is 200; /ready is 200 with a short detail once loaded; an unknown path is 404."""
    served = start()
    assert served.http("/health") == (200, "OK\n")
    status, detail = served.http("/ready") or (0, "")
    assert status == 200
    assert detail.splitlines()[0] == "ready"
    assert (served.http("/nope") or (0, ""))[0] == 404


def test_metrics_count_the_queries_sent(start: Callable[..., Served]) -> None:
    """/metrics has CoreDNS's and clusterdns' metrics, counting exactly the queries sent (7 A answered
    over UDP and TCP, 3 NXDOMAIN) by type, protocol and rcode; no label carries a query name."""
    served = start()
    for name, tcp in [(ALPHA, False)] * 3 + [(FLIP, False)] * 2 + [(ALPHA, True)] * 2:
        assert served.addresses(name, tcp=tcp)
    for _ in range(3):
        assert served.addresses(MISSING, "AAAA") == set()
    samples = served.samples()

    def value(name: str, **labels: str) -> float:
        return metric(samples, name, **labels)

    names = {n for n, _, _ in samples}
    for wanted in (
        "coredns_dns_requests_total",
        "coredns_dns_responses_total",
        "coredns_dns_request_duration_seconds_bucket",
        "coredns_dns_request_duration_seconds_count",
        "coredns_dns_request_duration_seconds_sum",
        "coredns_cache_entries",
        "coredns_cache_hits_total",
        "coredns_cache_misses_total",
        "clusterdns_registry_objects",
        "clusterdns_reloads_total",
        "clusterdns_zone_errors",
    ):
        assert wanted in names, f"/metrics lacks {wanted}"
    zone = f"{ZONE}."
    requests = "coredns_dns_requests_total"
    assert value(requests) == 10
    assert value(requests, zone=zone, proto="udp", type="A", family="1") == 5
    assert value(requests, zone=zone, proto="tcp", type="A", family="1") == 2
    assert value(requests, zone=zone, proto="udp", type="AAAA") == 3
    assert value("coredns_dns_responses_total") == 10
    assert value("coredns_dns_responses_total", zone=zone, rcode="NOERROR") == 7
    assert value("coredns_dns_responses_total", zone=zone, rcode="NXDOMAIN") == 3
    assert value("coredns_dns_request_duration_seconds_count", zone=zone, type="A") == 7
    assert value("coredns_dns_request_duration_seconds_count", zone=zone, type="AAAA") == 3
    assert value("coredns_dns_request_duration_seconds_bucket", zone=zone, type="A", le="+Inf") == 7
    # Every question is a Service's name, answered straight from the snapshot (clusterdns/direct.py): found,
    # not built, so no cache miss and no entry in the answer cache.
    assert value("coredns_cache_misses_total") == 0
    assert value("coredns_cache_hits_total") == 10
    assert value("coredns_cache_entries", type="success") == 0
    assert value("coredns_cache_entries", type="denial") == 0
    # Three Services of ours and the built-in default/kubernetes and kube-system/kube-dns.
    assert value("clusterdns_registry_objects", kind="Service") == 5
    assert value("clusterdns_registry_objects", kind="Pod") == 0
    assert value("clusterdns_reloads_total", result="success") == 0
    assert value("clusterdns_reloads_total", result="failure") == 0
    assert value("clusterdns_zone_errors") == 0
    for name, labels, _ in samples:
        for label_value in labels.values():
            for word in ("alpha", "flip", "missing", "svc"):
                assert word not in label_value, f"{name}{labels} carries a query name"


# --- shutdown ------------------------------------------------------------------------------------------


def test_sigterm_lameduck(start: Callable[..., Served]) -> None:
    """SIGTERM: /ready turns 503 at once while queries are still answered for --lameduck 2 s, then exit 0."""
    served = start("--lameduck", "2")
    signalled = time.monotonic()
    served.signal(signal.SIGTERM)
    _, detail = until(lambda: (r := served.http("/ready")) and r[0] == 503 and r, 1, "/ready 503 after SIGTERM")
    assert detail.splitlines()[0] == "not ready"
    answered = 0
    while time.monotonic() - signalled < 1.5:
        tcp = answered % 2 == 1
        assert served.addresses(ALPHA, tcp=tcp) == {"10.0.1.1"}, f"not answered {time.monotonic() - signalled:.2f} s"
        answered += 1
    code = served.wait()
    took = time.monotonic() - signalled
    assert code == 0, served.stderr()
    assert 1.8 <= took <= 3.5, f"exited {took:.2f} s after SIGTERM with --lameduck 2"


# --- reloads under load --------------------------------------------------------------------------------

# (name, type, answer, additional) as zone-file lines, the same in every version of the zones. The authority
# section is left out: a NODATA answer's SOA carries the serial, which every reload changes.
STABLE = [
    (ALPHA, "A", [f"{ALPHA}. 5 IN A 10.0.1.1"], []),
    (ALPHA, "AAAA", [], []),
    (f"_http._tcp.{ALPHA}", "SRV", [f"_http._tcp.{ALPHA}. 5 IN SRV 0 100 80 {ALPHA}."], [f"{ALPHA}. 5 IN A 10.0.1.1"]),
    ("1.1.0.10.in-addr.arpa", "PTR", [f"1.1.0.10.in-addr.arpa. 5 IN PTR {ALPHA}."], []),
    (f"kubernetes.default.svc.{ZONE}", "A", [f"kubernetes.default.svc.{ZONE}. 5 IN A 10.0.0.1"], []),
]
FLIPS = ({"10.0.2.1"}, {"10.0.2.2"})
REWRITES = 30


def perf_count(summary: str, what: str) -> int:
    """A count from dnsperf's statistics: `Queries sent:   1234`."""
    found = re.search(rf"Queries {what}:\s+(\d+)", summary)
    assert found is not None, f"dnsperf printed no 'Queries {what}':\n{summary}"
    return int(found.group(1))


def test_no_query_lost_or_wrong_during_reloads(start: Callable[..., Served], zones: Path, tmp_path: Path) -> None:
    """dnsperf (5 s) and a checking client run while the zones are rewritten 30 times: no query is lost, every
    stable name keeps its exact answer, NXDOMAIN stays NXDOMAIN, and the flipping Service is always one of
    its two versions."""
    served = start()
    queries = tmp_path / "queries.txt"
    mix = [(name, rdtype) for name, rdtype, _, _ in STABLE] + [(FLIP, "A"), (MISSING, "A")]
    queries.write_text("".join(f"{name} {rdtype}\n" for name, rdtype in mix))
    stop = threading.Event()
    problems: list[str] = []
    seen_flips: Counter[str] = Counter()
    checked = [0]

    def client() -> None:
        """Real queries over UDP and TCP, each answer checked in full."""
        while not stop.is_set():
            for name, rdtype, answer, additional in STABLE:
                for tcp in (False, True):
                    msg = served.ask(name, rdtype, tcp=tcp, timeout=2)
                    checked[0] += 1
                    if msg is None:
                        problems.append(f"no reply: {name} {rdtype} tcp={tcp}")
                        continue
                    got = (dns.rcode.to_text(msg.rcode()), sorted(lines(msg.answer)), sorted(lines(msg.additional)))
                    want = ("NOERROR", sorted(map(zone_line, answer)), sorted(map(zone_line, additional)))
                    if got != want:
                        problems.append(f"{name} {rdtype} tcp={tcp}: got {got}, want {want}")
            flip = served.addresses(FLIP)
            if flip not in FLIPS:
                problems.append(f"{FLIP}: {flip}")
            seen_flips[str(sorted(flip or ()))] += 1
            if served.addresses(MISSING) != set():
                problems.append(f"{MISSING} is not NXDOMAIN")

    def rewrite() -> None:
        """Flip the second Service between two addresses and rewrite an unrelated file, paced past the debounce."""
        for i in range(REWRITES):
            if stop.is_set():
                return
            ip = "10.0.2.2" if i % 2 == 0 else "10.0.2.1"
            (zones / "flip.yaml").write_text(service("flip", ip))
            (zones / "other.yaml").write_text(service("other", labels=f"round: r{i}"))
            time.sleep(0.13)

    before = reloads(served)
    perf = subprocess.Popen(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(served.port), "-d", str(queries), "-l", "5", "-v", "-S", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    threads = [threading.Thread(target=client), threading.Thread(target=rewrite)]
    for t in threads:
        t.start()
    try:
        out, _ = perf.communicate(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert perf.returncode == 0, out[-2000:]
    summary = out[out.rfind("Statistics:") :]
    sent, completed, lost = (perf_count(summary, what) for what in ("sent", "completed", "lost"))
    print(f"dnsperf: {sent} sent, {completed} completed, {lost} lost; checker: {checked[0]} queries; ", end="")
    print(f"reloads: {reloads(served) - before:g}; flip answers seen: {dict(seen_flips)}")
    assert sent > 1000, summary
    timeline = "\n".join(line for line in out.splitlines() if not line.startswith("> "))
    assert (lost, completed) == (0, sent), f"{timeline[-3000:]}\nthe server's log:\n{served.stderr()[-3000:]}"
    # Every reply's rcode, by name: NXDOMAIN only for the name that never exists.
    rcodes: Counter[tuple[str, str, str]] = Counter()
    for line in out.splitlines():
        if line.startswith("> "):
            rcode, name, rdtype = line.split()[1:4]
            rcodes[(name, rdtype, rcode)] += 1
    assert sum(rcodes.values()) == completed
    wrong = {k: n for k, n in rcodes.items() if k[2] != ("NXDOMAIN" if k[0] == MISSING else "NOERROR")}
    assert wrong == {}, f"wrong rcodes: {wrong}"
    assert problems == [], "\n".join(problems[:20])
    assert len(seen_flips) == 2, f"the checker should see both versions of {FLIP}: {dict(seen_flips)}"
    assert reloads(served) - before >= 10, "the rewrites should have reloaded the zones many times"
    assert served.metric("clusterdns_reloads_total", result="failure") == 0


async def test_reload_failing_for_any_reason_is_counted_shown_and_survived(
    tmp_path: Path, zones: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that fails with an unexpected exception (the state database closed under it) is counted in
    clusterdns_reloads_total{result="failure"}, shown in /ready's detail and logged once; the previous
    registry stays, and the next reload runs, succeeds and clears the detail."""
    monkeypatch.setenv("CLUSTERDNS_NO_GC_FREEZE", "1")
    store = Store(str(tmp_path / "state"))
    daemon = Daemon(Zones(str(zones), Config(), store), Options(http=None))
    daemon.load()
    daemon.ready = True
    store.db.close()
    (zones / "beta.yaml").write_text(service("beta", "10.0.3.1"))
    await daemon.reload()
    assert daemon.registry is not None and ("default", "beta") not in daemon.registry.services
    reloads_metric = dict(daemon._gauges()["clusterdns_reloads"][3])
    assert reloads_metric == {("success",): 0, ("failure",): 1}
    status, _, body = daemon._ready()
    assert status == 200
    assert body.decode().splitlines()[:2] == [
        "ready",
        "last reload failed, serving the registry loaded before it: "
        "ProgrammingError: Cannot operate on a closed database.",
    ]
    failed = [r for r in caplog.records if "reload failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None

    daemon.zones.store = Store(str(tmp_path / "state"))
    await daemon.reload()
    assert daemon.reloads == {"success": 1, "failure": 1}
    assert ("default", "beta") in daemon.registry.services
    assert daemon._ready()[2] == b"ready\n"
    daemon.zones.store.close()


def test_serve_starts_with_a_deeply_nested_file(start: Callable[..., Served], zones: Path) -> None:
    """A file nested 400 levels deep (and a 50,000-deep JSON array) does not stop serve from starting: the
    other files answer and /ready names the files and lines; a live edit to such a file is a problem too."""
    deep = "kind: ConfigMap\ndata:\n" + "".join(" " * (2 * i + 2) + f"k{i}:\n" for i in range(400))
    (zones / "deep.yaml").write_text(deep)
    (zones / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    served = start()
    assert served.addresses(ALPHA) == {"10.0.1.1"}
    status, detail = served.http("/ready") or (0, "")
    assert status == 200
    assert f"{zones}/deep.yaml:102: collections nested more than 100 deep" in detail
    assert f"{zones}/deep.json:1: collections nested more than 100 deep" in detail
    (zones / "alpha.yaml").write_text(deep.replace("k1:", "k1:", 1))
    until(lambda: (r := served.http("/ready")) and f"{zones}/alpha.yaml:102: " in r[1], 5, "/ready lists alpha.yaml")
    assert served.metric("clusterdns_reloads_total", result="failure") == 0
    assert "Traceback" not in served.stderr()


async def http_raw(port: int, request: bytes) -> bytes:
    """Send `request` to 127.0.0.1:port as it is and read the whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return response


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, id="request line of 20 kB"),
        pytest.param(b"GET /health HTTP/1.1\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", 431, id="one header of 20 kB"),
        pytest.param(b"GET /health HTTP/1.1\r\n" + b"X-H: 1234567890\r\n" * 600 + b"\r\n", 431, id="600 headers"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 200, id="a plain request"),
        pytest.param(b"GET /health HTTP/1.0\r\n\r\n", 200, id="no headers"),
    ],
)
async def test_http_oversized_requests_get_414_or_431(request_bytes: bytes, status: int) -> None:
    """A request line longer than 8 kB is answered 414, headers past 8 kB 431 (not closed unanswered)."""
    server = await serve_http("127.0.0.1", 0, {"/health": lambda: (200, "text/plain", b"OK\n")})
    try:
        port = server.sockets[0].getsockname()[1]
        response = await http_raw(port, request_bytes)
        assert response.split(b"\r\n", 1)[0].decode() == f"HTTP/1.1 {status} {REASONS[status]}"
    finally:
        server.close()


def test_workload_larger_than_its_pool_does_not_stop_reloads(start: Callable[..., Served], zones: Path) -> None:
    """A Deployment with more replicas than the pod network holds is loaded in a live reload (the Pods
    beyond it are problems in /ready), and an edit made after it is answered: reloads go on."""
    served = start("--pod-cidr", "10.244.0.0/18")  # 16,382 addresses
    before = reloads(served)
    (zones / "huge.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: huge\nspec:\n  replicas: 20000\n"
        "  selector:\n    matchLabels: {app: huge}\n  template:\n    metadata:\n      labels: {app: huge}\n"
        "    spec:\n      containers:\n      - name: c\n        image: nginx\n"
    )
    until(lambda: reloads(served) > before, 30, "the reload with 20,000 replicas")
    status, detail = served.http("/ready") or (0, "")
    assert status == 200
    assert detail.count("pod network 10.244.0.0/18 is full: 20,000 Pods need addresses, 16,382 available") == 3618
    (zones / "alpha.yaml").write_text(service("alpha", "10.0.1.7"))
    served.wait_addresses(ALPHA, {"10.0.1.7"}, within=30)
    assert served.metric("clusterdns_reloads_total", result="failure") == 0
