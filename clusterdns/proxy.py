"""`serve --proxy`: puts the data plane into the kernel, as kube-proxy does.

The ruleset itself is built by ruleset.py (pure); this module does the I/O around it: checks the
privileges at start, finds the node's interface and networks, applies each ruleset as one `nft -f`
transaction (the first one in stages that several nft processes read at once, see ruleset.table_stage),
claims every service address as a /32 (/128) on the proxy interface with `ip -batch` (so that
neighbours on a shared network find this machine by ARP/ND), and removes the table and the addresses on
exit. The addresses it claims are written to a file in the state directory before they are added, so
that a start after a crash removes what the previous run left. Nothing here copies a connection's
bytes: the kernel forwards them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from clusterdns.registry import Registry
from clusterdns.ruleset import (
    TABLE,
    Node,
    Ruleset,
    ServiceRules,
    hooks_stage,
    rules,
    script,
    services_stage,
    table_stage,
)
from clusterdns.zones import paused_gc

log = logging.getLogger("clusterdns")

CAP_NET_ADMIN = 12
# nft processes reading a first load's elements at once: one per core, up to 4 (measured at 10,000
# Services on 2 cores: 0.55 s with 2, the same with 3 or 4, 1.0 s with one)
NFT_READERS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
GRANT = "run it as root, or grant the capability (docker run --cap-add NET_ADMIN; compose: cap_add: [NET_ADMIN])"


class ProxyError(Exception):
    """The data plane can't be set up or changed; the message says what and why."""


def missing_privileges() -> str | None:
    """Why --proxy can't work here (one line saying how to fix it), or None."""
    for tool, package in (("nft", "nftables"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"--proxy needs the `{tool}` command, which is not installed (Debian: apt-get install {package})"
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return None  # not Linux as we know it: let nft say what is wrong
    if not effective >> CAP_NET_ADMIN & 1:
        return f"--proxy needs the CAP_NET_ADMIN capability to program nftables and claim addresses: {GRANT}"
    return None


def interfaces() -> dict[str, list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    """Every interface's addresses, as `ip -json address` lists them."""
    out = _run(["ip", "-json", "address", "show"])
    found: dict[str, list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = {}
    for link in json.loads(out or "[]"):
        addrs = found.setdefault(link["ifname"], [])
        for info in link.get("addr_info", []):
            if "local" in info and "prefixlen" in info:
                addrs.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}"))
    return found


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the proxy works: its interface and the node's view of the ruleset."""

    interface: str
    node: Node


def place(host: str, dns_port: int, node_ips: Sequence[str], interface: str | None) -> Placement:
    """The proxy interface, node IPs, DNS target and local networks from the serve flags and the machine.

    NodePorts are served on `node_ips`, else on --host when it is a real address. The interface is the
    given one, else the one holding --host, else the one holding the first node IP. kube-dns's cluster
    IP leads to clusterdns's own DNS port on --host, or on the first node IP when --host is a wildcard.
    """
    found = interfaces()
    addr = ipaddress.ip_address(host)
    ips = list(node_ips) or ([host] if not (addr.is_loopback or addr.is_unspecified) else [])
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ProxyError(f"--node-ip: must be an IP address, got {ip!r}") from None

    def holding(ip: str) -> str | None:
        return next((name for name, addrs in found.items() if any(str(a.ip) == ip for a in addrs)), None)

    if interface is None:
        interface = holding(host) if not addr.is_unspecified else None
        if interface is None and ips:
            interface = holding(ips[0])
        if interface is None:
            raise ProxyError(
                "--proxy: can't tell which interface should claim the service addresses: give --proxy-interface "
                "(or --host / --node-ip with an address of this machine)"
            )
    elif interface not in found:
        raise ProxyError(f"--proxy-interface: no interface {interface!r} here (there are {', '.join(sorted(found))})")
    dns_ip = ips[0] if addr.is_unspecified and ips else host
    bridged = _bridge_netfilter(interface)
    local = sorted(
        {
            str(a.network)
            for a in found[interface]
            if a.network.prefixlen < a.network.max_prefixlen and not a.ip.is_link_local and a.version not in bridged
        }
    )
    dns = None if ipaddress.ip_address(dns_ip).is_unspecified else (dns_ip, dns_port)
    return Placement(interface, Node(tuple(ips), dns, tuple(local)))


def _bridge_netfilter(interface: str) -> set[int]:
    """The IP versions whose bridged packets pass this machine's netfilter hooks on `interface`, a bridge
    with br_netfilter's bridge-nf-call-iptables (ip6tables) on. There an endpoint's reply to a client on
    the bridge is un-NATed by conntrack on its way across the bridge, as with kubenet: masquerading such
    clients is not needed, and their replies skip this machine's routing."""
    if not os.path.isdir(f"/sys/class/net/{interface}/bridge"):
        return set()
    on = set()
    for version, name in ((4, "bridge-nf-call-iptables"), (6, "bridge-nf-call-ip6tables")):
        try:
            with open(f"/proc/sys/net/bridge/{name}", encoding="ascii") as f:
                if f.read().strip() == "1":
                    on.add(version)
        except OSError:
            pass
    return on


@dataclass
class Proxy:
    """The table and the addresses of one serving process; `sync` after every load, `stop` on exit."""

    placement: Placement
    state_dir: str | None = None
    ipv6: bool = False  # IPv6 Services exist: IPv6 forwarding is needed too
    applied: Ruleset | None = None
    claimed: set[str] = field(default_factory=set)
    foreign: set[str] = field(default_factory=set)  # addresses that were here before us: never claimed
    unclaimable: set[str] = field(default_factory=set)  # the interface refused them (IPv6 disabled, ...)
    syncs: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    last_error: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # the last good sync's parts, for benchmarks and logs

    @property
    def _ledger(self) -> str | None:
        return os.path.join(self.state_dir, "proxy-addresses.json") if self.state_dir else None

    def start(self) -> None:
        """Remove what a previous run left (its table goes with the first sync), enable IP forwarding."""
        leftover = self._read_ledger()
        if leftover:
            log.info("proxy: removing %d address(es) a previous run left on %s", len(leftover), self.interface)
            self._addresses("delete", leftover)
        present = interfaces()
        self.foreign = {str(a.ip) for addrs in present.values() for a in addrs}
        self._forwarding()
        self._no_redirects()

    @property
    def last_seconds(self) -> float:
        """How long the last good sync took, all parts together."""
        t = self.timings
        return t["build"] + t["nft"] + t["addresses"] if t else 0.0

    @property
    def interface(self) -> str:
        return self.placement.interface

    def sync(self, registry: Registry) -> None:
        """Make the kernel forward the registry's Services: one nft transaction (the first sync writes the
        table in stages, see `_first_load`), then the addresses."""
        started = time.perf_counter()
        try:
            with paused_gc():  # a whole ruleset is 100,000s of objects and no cycles, as a load is
                if self.applied is None:
                    new, build, size = _first_load(registry, self.placement.node)
                else:
                    new = rules(registry, self.placement.node, self.applied)
                    text = script(self.applied, new)
                    build, size = time.perf_counter() - started, len(text)
                    _nft(text)
            self.applied = new
            applied = time.perf_counter()
            self._claim(new.addresses() - self.foreign)
            self.timings = {
                "build": build,
                "nft": applied - started - build,
                "addresses": time.perf_counter() - applied,
                "script bytes": size,
            }
        except Exception as exc:
            self.syncs["failure"] += 1
            self.last_error = str(exc) if isinstance(exc, ProxyError) else f"{type(exc).__name__}: {exc}"
            raise
        self.syncs["success"] += 1
        self.last_error = ""

    def stop(self) -> None:
        """Remove the table and every address this process claimed."""
        try:
            _drop_table()
        except ProxyError as exc:
            log.error("proxy: %s", exc)
        if self.claimed:
            self._addresses("delete", sorted(self.claimed))
        self.claimed = set()
        if self._ledger:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._ledger)
        self.applied = None

    # --- addresses ---

    def _claim(self, wanted: set[str]) -> None:
        add = sorted(wanted - self.claimed - self.unclaimable)
        remove = sorted(self.claimed - wanted)
        if add:
            self._write_ledger(self.claimed | set(add))  # before adding: a crash must not leave unknown ones
            failed = self._addresses("add", add)
            self.claimed |= set(add) - failed
            self.unclaimable |= failed
            if failed:
                self._write_ledger(self.claimed)
        if remove:
            self._addresses("delete", remove)
            self.claimed -= set(remove)
            self._write_ledger(self.claimed)

    def _addresses(self, verb: str, addresses: Sequence[str]) -> set[str]:
        """Add or delete /32 (/128) addresses on the proxy interface in one `ip -batch`; the ones that failed.

        `-force` goes on past a line that fails; each failure is logged once, with the reason `ip` gave (an
        address already there, or gone; IPv6 disabled on the interface) and not tried again by `_claim`.
        """
        lines = []
        for a in addresses:
            v6 = ":" in a
            nodad = " nodad" if v6 and verb == "add" else ""  # usable at once, no duplicate detection wait
            lines.append(f"address {verb} {a}/{128 if v6 else 32} dev {self.interface}{nodad}")
        if not lines:
            return set()
        try:
            _run(["ip", "-force", "-batch", "-"], "\n".join(lines) + "\n")
        except ProxyError as exc:
            numbers = [int(n) for n in re.findall(r"Command failed -:(\d+)", str(exc))]
            reasons = re.findall(r"Error: ([^.]*)", str(exc))
            failed = {addresses[n - 1] for n in numbers if 0 < n <= len(addresses)}
            if failed and verb == "add":
                log.warning(
                    "proxy: could not claim %d address(es) on %s (%s): %s; they are served to clients that route "
                    "through this machine only",
                    len(failed),
                    self.interface,
                    "; ".join(sorted(set(reasons))) or "ip failed",
                    ", ".join(sorted(failed)[:5]) + (" ..." if len(failed) > 5 else ""),
                )
            elif not failed:
                log.warning("proxy: %s", exc)
            return failed
        return set()

    def _read_ledger(self) -> list[str]:
        if not self._ledger:
            return []
        try:
            with open(self._ledger, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("proxy: ignoring unreadable %s: %s", self._ledger, exc)
            return []
        if data.get("interface") != self.interface:
            return []  # claimed elsewhere: not ours to remove from this interface
        return [a for a in data.get("addresses", []) if isinstance(a, str)]

    def _write_ledger(self, addresses: set[str]) -> None:
        if not self._ledger:
            return
        tmp = f"{self._ledger}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"interface": self.interface, "addresses": sorted(addresses)}, f)
        os.replace(tmp, self._ledger)

    def _no_redirects(self) -> None:
        """The proxy sends packets back out of the interface they came in on (to endpoints on the clients'
        network): the kernel would tell clients, by ICMP redirects, to go to the endpoint directly."""
        for scope in ("all", self.interface):
            failed = _set_sysctl(f"net/ipv4/conf/{scope}/send_redirects", "0")
            if failed:
                log.warning(
                    "proxy: can't turn off ICMP redirects (%s); clients may be told to bypass the proxy "
                    "(docker: --sysctl net.ipv4.conf.all.send_redirects=0 and ...eth0.send_redirects=0)",
                    failed,
                )
                return

    def _forwarding(self) -> None:
        """Packets for endpoints on other machines are forwarded: IP forwarding must be on."""
        for key in ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")[: 2 if self.ipv6 else 1]:
            failed = _set_sysctl(key, "1")
            if failed:
                log.warning(
                    "proxy: %s is off and can't be turned on (%s): only endpoints on this machine can be reached "
                    "(docker: --sysctl net.ipv4.ip_forward=1)",
                    key.replace("/", "."),
                    failed,
                )


def _set_sysctl(key: str, value: str) -> str:
    """Set /proc/sys/`key` to `value` unless it is already; "" when done, else why not. Logs a change."""
    path = f"/proc/sys/{key}"
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() == value:
                return ""
        with open(path, "w", encoding="ascii") as f:
            f.write(f"{value}\n")
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    log.info("proxy: set %s = %s", key.replace("/", "."), value)
    return ""


def _first_load(registry: Registry, node: Node) -> tuple[Ruleset, float, int]:
    """Write the whole table in stages (see ruleset.table_stage): the table; the Services in NFT_READERS
    shares, each handed to an nft process as soon as it is built, so that nft reads one share while the
    next is built and several shares at once; the hooks last. When a stage fails, the table goes, so that
    no half-written one is left for the next try. The ruleset, the seconds spent building, the text's size.
    """
    build = 0.0
    texts = [table_stage(node)]
    shares: dict[tuple[str, str], ServiceRules] = {}
    keys = list(registry.services)
    try:
        with ThreadPoolExecutor(NFT_READERS + 1) as pool:  # each thread waits for its nft outside the GIL
            table = pool.submit(_nft, texts[0])
            parts = []
            for i in range(NFT_READERS):
                started = time.perf_counter()
                share = rules(registry, node, keys=keys[i::NFT_READERS]).services
                texts.append(services_stage(share.values()))
                shares.update(share)
                build += time.perf_counter() - started
                table.result()  # the shares need the table's maps
                parts.append(pool.submit(_nft, texts[-1]))
            for part in parts:
                part.result()
        texts.append(hooks_stage())
        _nft(texts[-1])
    except ProxyError:
        with contextlib.suppress(ProxyError):
            _drop_table()
        raise
    return Ruleset(node, shares), build, sum(map(len, texts))


def _drop_table() -> None:
    """Remove the table, whatever is in it (adding it first makes the delete valid when there is none)."""
    _nft(f"add table {TABLE}\ndelete table {TABLE}\n")


def _nft(text: str) -> None:
    if text:
        _run(["nft", "-f", "-"], text)


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProxyError(f"{argv[0]}: {exc}") from None
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[:2000]
        raise ProxyError(f"`{' '.join(argv)}` failed: {detail}")
    return done.stdout
