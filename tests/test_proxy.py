"""What --proxy needs and what it adds to the registry: its flags, the privilege check at start, load-balancer
addresses from --loadbalancer-cidr (kept like cluster IPs), and the session affinity timeout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from clusterdns.allocate import Store
from clusterdns.cli import main
from clusterdns.registry import Config
from clusterdns.zones import Zones

if TYPE_CHECKING:
    from conftest import Load, WriteZones

ROOT = Path(__file__).resolve().parents[1]

LB = """
    apiVersion: v1
    kind: Service
    metadata: {name: web-lb}
    spec:
      type: LoadBalancer
      ports: [{port: 80}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: has-status}
    spec:
      type: LoadBalancer
      ports: [{port: 80}]
    status: {loadBalancer: {ingress: [{ip: 203.0.113.4}]}}
    """

LB_CONFIG = Config(loadbalancer_cidrs=("198.19.7.0/24",))


def test_load_balancer_gets_an_address_from_the_pool(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """A LoadBalancer Service without status gets an address of --loadbalancer-cidr, the same after a restart
    and from a fresh state (hashed from its name); one with status keeps its own; without the flag none."""
    write_zones({"lb.yaml": LB})
    first = load(state=tmp_path / "state", config=LB_CONFIG).services[("default", "web-lb")]
    assert len(first.load_balancer_ingress) == 1 and first.load_balancer_ingress[0].startswith("198.19.7.")
    again = load(state=tmp_path / "state", config=LB_CONFIG).services[("default", "web-lb")]
    fresh = load(state=tmp_path / "other", config=LB_CONFIG).services[("default", "web-lb")]
    assert again.load_balancer_ingress == fresh.load_balancer_ingress == first.load_balancer_ingress
    registry = load(state=tmp_path / "state", config=LB_CONFIG)
    assert registry.services[("default", "has-status")].load_balancer_ingress == ("203.0.113.4",)
    assert load(state=tmp_path / "state").services[("default", "web-lb")].load_balancer_ingress == ()


def test_load_balancer_address_released_with_the_service(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """When the Service goes, its address goes back to the pool: in a pool of two usable addresses, a new
    Service takes the one the removed Service had."""
    config = Config(loadbalancer_cidrs=("198.19.7.0/30",))
    two = LB.replace("has-status", "web-2").replace("status: {loadBalancer: {ingress: [{ip: 203.0.113.4}]}}", "")
    write_zones({"lb.yaml": two})
    registry = load(state=tmp_path / "state", config=config)
    given = {k[1]: s.load_balancer_ingress for k, s in registry.services.items() if s.type == "LoadBalancer"}
    assert sorted(given.values()) == [("198.19.7.1",), ("198.19.7.2",)]
    write_zones({"lb.yaml": two.replace("web-lb", "web-3")})
    registry = load(state=tmp_path / "state", config=config)
    assert registry.services[("default", "web-3")].load_balancer_ingress == given["web-lb"]


def test_load_balancer_pool_full(write_zones: WriteZones, load: Load, tmp_path: Path) -> None:
    """Services the pool has no address left for stay <pending>, with a problem saying why."""
    config = Config(loadbalancer_cidrs=("198.19.7.0/30",))  # two usable addresses, three Services
    two = LB.replace("status: {loadBalancer: {ingress: [{ip: 203.0.113.4}]}}", "")
    write_zones({"lb.yaml": two, "lb3.yaml": two.replace("web-lb", "web-3").replace("has-status", "web-4")})
    registry = load(state=tmp_path / "state", config=config)
    pending = [s for s in registry.services.values() if s.type == "LoadBalancer" and not s.load_balancer_ingress]
    assert len(pending) == 2
    assert any("no load-balancer IP" in str(p) for p in registry.problems)


def test_load_balancer_pool_full_is_reported_on_every_reload(write_zones: WriteZones) -> None:
    """A reload that reuses the pending Services (nothing changed) still says why they have no address."""
    config = Config(loadbalancer_cidrs=("198.19.7.0/30",))
    two = LB.replace("status: {loadBalancer: {ingress: [{ip: 203.0.113.4}]}}", "")
    zones = write_zones({"lb.yaml": two, "lb3.yaml": two.replace("web-lb", "web-3").replace("has-status", "web-4")})
    loader = Zones(str(zones), config, Store(None))
    first, again = loader.load(0.0), loader.load(1.0)
    assert [str(p) for p in again.problems] == [str(p) for p in first.problems]
    assert sum("no load-balancer IP" in str(p) for p in again.problems) == 2


def test_get_svc_shows_external_ip(write_zones: WriteZones, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`get svc` shows the pool's address as EXTERNAL-IP, and <pending> without --loadbalancer-cidr."""
    write_zones({"lb.yaml": LB})
    state = ["--state", str(tmp_path / "state")]
    assert main(["get", "svc", "web-lb", *state, "--loadbalancer-cidr", "198.19.7.0/24"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:2] == ["web-lb", "LoadBalancer"] and row[3].startswith("198.19.7.")
    assert main(["get", "svc", "web-lb", *state]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[3] == "<pending>"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("10.0.0.0/33", "--loadbalancer-cidr: must be a CIDR"),
        ("10.1.0.0/24,10.2.0.0/24", "--loadbalancer-cidr: give one CIDR, or one IPv4 and one IPv6"),
    ],
)
def test_bad_loadbalancer_cidr(
    write_zones: WriteZones, capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, message: str
) -> None:
    """A bad --loadbalancer-cidr is a usage error naming the flag."""
    write_zones({"lb.yaml": LB})
    assert main(["check", "--state", str(tmp_path / "s"), "--loadbalancer-cidr", flag]) == 2
    assert message in capsys.readouterr().err


def test_session_affinity_timeout(write_zones: WriteZones, load: Load) -> None:
    """sessionAffinityConfig.clientIP.timeoutSeconds is read (default 10800) and must be 1-86400."""
    svc = """
        apiVersion: v1
        kind: Service
        metadata: {name: NAME}
        spec:
          sessionAffinity: ClientIP
          TIMEOUT
          ports: [{port: 80}]
        """
    write_zones(
        {
            "a.yaml": svc.replace("NAME", "a").replace(
                "TIMEOUT", "sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}"
            ),
            "b.yaml": svc.replace("NAME", "b").replace("TIMEOUT", ""),
            "c.yaml": svc.replace("NAME", "c").replace(
                "TIMEOUT", "sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}"
            ),
        }
    )
    registry = load()
    assert registry.services[("default", "a")].session_affinity_timeout == 60
    assert registry.services[("default", "b")].session_affinity_timeout == 10800
    assert [str(p) for p in registry.problems] == [
        "zones/c.yaml:6: Service default/c: spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be 1-86400, got 0"
    ]


def test_proxy_flags_need_proxy(write_zones: WriteZones, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--node-ip and --proxy-interface without --proxy are a usage error, never silently ignored."""
    write_zones({"lb.yaml": LB})
    assert main(["serve", "--state", str(tmp_path / "s"), "--node-ip", "192.0.2.1", "--upstream", "off"]) == 2
    assert "--node-ip and --proxy-interface only mean something with --proxy" in capsys.readouterr().err


def test_proxy_without_net_admin_exits_at_start(tmp_path: Path) -> None:
    """Without CAP_NET_ADMIN, `serve --proxy` exits 2 at once with one line saying what is missing and how to
    grant it (here: root with the capability dropped from its bounding set)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root with setpriv (util-linux)")
        pytest.skip("needs root and setpriv to drop the capability")
    argv = [
        *("setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"),
        *(sys.executable, "-m", "clusterdns", "serve", "--proxy", "--zones", str(ROOT / "zones")),
        *("--state", str(tmp_path / "s"), "--upstream", "off", "--port", "0", "--http", "off"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("clusterdns: error: --proxy needs the CAP_NET_ADMIN capability")
    assert "--cap-add NET_ADMIN" in lines[0] and "root" in lines[0]
