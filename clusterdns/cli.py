"""The `clusterdns` command line: argparse subcommands; the only place that sets up logging.

`main(argv=None) -> int` returns the exit status, so tests call it directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

import yaml

from clusterdns import envvars, kubectl
from clusterdns.allocate import Store
from clusterdns.daemon import Daemon, Options
from clusterdns.forward import Forwarder, Upstream, parse_upstream, resolv_conf_upstreams
from clusterdns.health import parse_listen
from clusterdns.labels import dns1123_label_error
from clusterdns.manifests import read_file
from clusterdns.metrics import Stats, zone_labels
from clusterdns.model import Pod, Workload
from clusterdns.proxy import Proxy, ProxyError, missing_privileges, place
from clusterdns.querylog import QueryLog
from clusterdns.registry import Config, ConfigError, Registry, builtin_services
from clusterdns.respond import DEFAULT_RECURSION, Recursion, Responder
from clusterdns.server import BindError, DNSServer, bind, fork_workers
from clusterdns.zones import Zones, ZonesError, default_state_dir, open_store

log = logging.getLogger("clusterdns")


class UsageError(Exception):
    """A flag combination that can't work; printed as `clusterdns: error: ...`, exit 2."""


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every subcommand accepts; on subcommands they default to "not given"."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("global options")
    g.add_argument("--zones", metavar="DIR", default=default("zones"), help="manifest directory (default ./zones)")
    g.add_argument(
        "--state",
        metavar="DIR",
        default=default(None),
        help="allocation state directory (default ~/.local/state/clusterdns/<zones hash>)",
    )
    g.add_argument(
        "--service-cidr",
        metavar="CIDR[,CIDR...]",
        default=default("10.0.0.0/16"),
        help="service IP ranges; the first of each IP family allocates (default 10.0.0.0/16)",
    )
    g.add_argument(
        "--pod-cidr",
        metavar="CIDR",
        default=default("10.244.0.0/16"),
        help="pod IP range, or an IPv4 and an IPv6 range (default 10.244.0.0/16)",
    )
    g.add_argument(
        "--loadbalancer-cidr",
        metavar="CIDR[,CIDR]",
        default=default(""),
        help="give LoadBalancer Services without status.loadBalancer.ingress an address from here "
        "(default: none, they stay <pending>)",
    )
    g.add_argument("--domain", default=default("cluster.local"), help="cluster domain (default cluster.local)")
    g.add_argument("-v", "--verbose", action="store_true", default=default(False), help="log debug detail")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clusterdns",
        description="Kubernetes Services, cluster DNS and service environment variables from manifests.",
    )
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, suppress=True)
        return p

    command("check", "load every manifest and report every problem; exit 1 if there is one")

    p = command("get", "list services, endpoints, pods or namespaces as kubectl does")
    p.add_argument("resource", help="services|svc|endpoints|ep|pods|po|namespaces|ns")
    p.add_argument("name", nargs="?", help="only this object")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("-o", "--output", choices=["wide", "yaml", "json"], help="output format")

    p = command("serve", "answer cluster DNS over UDP and TCP for everything in the zones")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=1053, help="UDP and TCP port (default 1053)")
    p.add_argument("--ttl", type=_ttl, default=5, help="TTL of answers, 0-3600 seconds (default 5)")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="processes answering UDP on the same socket (default 1; up to one per core helps)",
    )
    p.add_argument(
        "--http",
        default="127.0.0.1:9153",
        metavar="ADDR:PORT",
        help="serve /health, /ready and /metrics here (default 127.0.0.1:9153; off disables)",
    )
    p.add_argument(
        "--upstream",
        action="append",
        metavar="ADDR[:PORT]",
        help="resolver for names outside the cluster (repeatable; default: the nameservers of "
        "/etc/resolv.conf; off: answer REFUSED)",
    )
    p.add_argument(
        "--stub-domain",
        action="append",
        default=[],
        metavar="DOMAIN=ADDR[:PORT]",
        help="resolver for one domain, as kube-dns stubDomains (repeatable)",
    )
    p.add_argument(
        "--allow-recursion",
        action="append",
        metavar="CIDR",
        help="clients whose other names are forwarded (repeatable; default loopback and private ranges)",
    )
    p.add_argument(
        "--log-queries",
        choices=["all", "denial", "error"],
        help="write one JSON line per query (all, only NXDOMAIN/NODATA, or only errors) to stdout",
    )
    p.add_argument("--no-watch", action="store_true", help="don't reload when files under --zones change")
    p.add_argument(
        "--lameduck",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, keep answering (not ready) this long before exiting (default 5)",
    )
    p.add_argument(
        "--proxy",
        action="store_true",
        help="make cluster IPs, node ports and load-balancer IPs connect to the endpoints, as kube-proxy "
        "does (nftables; needs CAP_NET_ADMIN)",
    )
    p.add_argument(
        "--node-ip",
        metavar="ADDR",
        action="append",
        help="with --proxy: the node's address that NodePorts are served on (repeatable; default --host "
        "when it is not loopback or a wildcard)",
    )
    p.add_argument(
        "--proxy-interface",
        metavar="NAME",
        help="with --proxy: the interface that claims service addresses (default: the one holding --host, "
        "else the first --node-ip)",
    )
    p.add_argument(
        "--pods",
        choices=["insecure", "verified", "disabled"],
        default="insecure",
        help="pod A records: any IP (insecure, default), only existing Pods (verified), none (disabled)",
    )

    p = command("resolv-conf", "print the resolv.conf the kubelet writes for a ClusterFirst pod")
    p.add_argument("--namespace", "-n", default="default", metavar="NS", help="the pod's namespace (default: default)")
    p.add_argument(
        "--nameserver",
        metavar="IP",
        help="the cluster DNS address (default: kube-dns' cluster IP, the tenth of --service-cidr)",
    )

    p = command("describe", "show one service in detail, as kubectl describe does")
    p.add_argument("resource", choices=["service", "services", "svc"], help="service|svc")
    p.add_argument("name")
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")

    p = command("env", "print the service environment variables the kubelet injects into a container")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--namespace", "-n", metavar="NS", help="variables for a container in this namespace")
    which.add_argument("--pod", metavar="FILE", help="the whole environment of a container of the Pod in FILE")
    p.add_argument("--no-service-links", action="store_true", help="as a Pod with enableServiceLinks: false")
    p.add_argument("--container", "-c", metavar="NAME", help="container of --pod (default: the first)")
    p.add_argument("--format", choices=["dotenv", "shell", "json"], default="dotenv", help="default dotenv")
    return parser


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return int(text)


def _workers(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"must be 1-64, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be 0-3600 seconds, got {text!r}")
    return value


def _ttl(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 3600:
        raise argparse.ArgumentTypeError(f"must be 0-3600 seconds, got {text!r}")
    return int(text)


def config_of(args: argparse.Namespace) -> Config:
    """The registry's settings from the global flags; a UsageError says which flag is wrong."""
    try:
        return Config.from_flags(args.domain, args.service_cidr, args.pod_cidr, args.loadbalancer_cidr)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def load_registry(args: argparse.Namespace) -> Registry:
    """Read the zones directory into a registry, allocating through the state directory."""
    config = config_of(args)
    store = open_store(args.state, args.zones)
    try:
        zones = Zones(args.zones, config, store)
        registry = zones.load(time.time())
    finally:
        store.close()
    if _kept is not None:
        _kept.append(zones)
    return registry


# What `run` keeps from being freed object by object before it exits (None: keep nothing, as when tests
# call main).
_kept: list[object] | None = None


def cmd_check(args: argparse.Namespace) -> int:
    registry = load_registry(args)
    for note in registry.notes:
        print(f"note: {note}")
    for problem in registry.problems:
        print(f"error: {problem}")
    counts = registry.counts()
    summary = ", ".join(f"{n} {kind}s" for kind, n in counts.items() if n)
    if registry.problems:
        print(f"{len(registry.problems)} problem(s); loaded {summary}")
        return 1
    print(f"ok: {summary}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    resource = kubectl.resolve(args.resource)
    registry = load_registry(args)
    namespace = None if args.all_namespaces else args.namespace
    if args.output in ("yaml", "json"):
        doc = kubectl.get_objects(registry, resource, args.name, namespace)
        if args.output == "json":
            print(json.dumps(doc, indent=4))
        else:
            print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False), end="")
        return 0
    table = kubectl.get_table(registry, resource, args.name, namespace, args.output == "wide", time.time())
    # kubectl writes "No resources found" to stderr, so that scripts reading stdout see nothing.
    print(table, end="", file=sys.stderr if table.startswith("No resources found") else sys.stdout)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    registry = load_registry(args)
    print(kubectl.describe_service(registry, args.namespace, args.name), end="")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    if args.pod is None and args.container:
        raise UsageError("--container needs --pod")
    registry = load_registry(args)
    if args.namespace is not None:
        if args.namespace not in registry.namespaces:
            log.warning("namespace %s has no objects in %s", args.namespace, args.zones)
        env = envvars.service_env(registry, args.namespace, service_links=not args.no_service_links)
    else:
        if args.no_service_links:
            raise UsageError("--no-service-links goes with --namespace; a Pod says enableServiceLinks itself")
        env = envvars.container_env(registry, _pod_from_file(args.pod, registry), args.container)
    print(envvars.format_env(env, args.format), end="")
    return 0


def _pod_from_file(path: str, registry: Registry) -> Pod:
    """The first Pod (or workload's pod template) in FILE; the registry's copy when it holds that Pod."""
    result = read_file(path)
    if result.problems:
        raise UsageError("\n".join(str(p) for p in result.problems))
    for obj in result.objects:
        if isinstance(obj, Pod):
            return registry.pods.get(obj.key, obj)
        if isinstance(obj, Workload):
            t = obj.template
            for pod in registry.pods.values():  # a running replica, with its name and IP
                if pod.owner == f"{obj.kind}/{obj.name}" and pod.namespace == obj.namespace:
                    return pod
            return Pod(obj.namespace, obj.name, t.spec, t.labels, t.annotations, source=obj.source)
    raise UsageError(f"{path}: no Pod, Deployment, ReplicaSet or StatefulSet in this file")


def cmd_serve(args: argparse.Namespace) -> int:
    config = config_of(args)
    try:
        http = parse_listen(args.http)
    except ValueError as exc:
        raise UsageError(f"--http: {exc}") from None
    upstreams, stubs, recursion = _forwarding(args)
    if (args.node_ip or args.proxy_interface) and not args.proxy:
        raise UsageError("--node-ip and --proxy-interface only mean something with --proxy")
    if args.proxy and (why := missing_privileges()):
        print(f"clusterdns: error: {why}", file=sys.stderr)
        return 2
    store = open_store(args.state, args.zones)
    zones = Zones(args.zones, config, store)
    options = Options(ttl=args.ttl, pods=args.pods, watch=not args.no_watch, lameduck=args.lameduck, http=http)
    daemon = Daemon(zones, options)
    main_pid = os.getpid()  # workers leave the data plane to the main process
    try:
        sockets = bind(args.host, args.port)
    except BindError as exc:
        print(f"clusterdns: error: {exc}", file=sys.stderr)
        return 1
    if upstreams is not None:
        daemon.forwarder = Forwarder(upstreams, stubs, local=[(sockets.host, sockets.port)])
    if args.proxy:
        try:
            placement = place(sockets.host, sockets.port, args.node_ip or [], args.proxy_interface)
        except ProxyError as exc:
            print(f"clusterdns: error: {exc}", file=sys.stderr)
            return 2
        ipv6 = any(":" in c for c in config.service_cidrs)
        daemon.proxy = Proxy(placement, state_dir=args.state or default_state_dir(args.zones), ipv6=ipv6)
    daemon.recursion = recursion
    if args.log_queries:
        daemon.query_log = QueryLog(args.log_queries, sys.stdout)
    try:
        if http is not None:  # counting costs a little on every query: only when someone can read it
            daemon.stats = Stats(zone_labels(config.domain), processes=args.workers)
        responder = daemon.load()
        if daemon.proxy is not None:
            daemon.proxy.start()
            assert daemon.registry is not None
            daemon.proxy.sync(daemon.registry)  # at start a failure is fatal: the kernel can't do it
            log.info(
                "proxy: %d services forwarded, %d addresses claimed on %s",
                len(daemon.proxy.applied.services) if daemon.proxy.applied else 0,
                len(daemon.proxy.claimed),
                daemon.proxy.interface,
            )
        if args.workers > 1:  # before any thread exists: fork copies only the calling thread
            server = DNSServer(responder, sockets.host, sockets.port, forwarder=daemon.forwarder, stats=daemon.stats)
            server.query_log = daemon.query_log
            inherited: list[Store] = []

            def worker_reload() -> Responder:
                # An SQLite connection must not be used across fork(): a worker opens its own on its first
                # reload, and keeps the inherited one unused and unclosed (closing it would touch the files).
                if not inherited:
                    inherited.append(zones.store)
                    zones.store = open_store(args.state, args.zones)
                return daemon.load()

            daemon.workers = fork_workers(args.workers - 1, sockets, server, worker_reload)
            responder.touch()  # as each worker does: the copies fork's sharing calls for, made before answering
        return asyncio.run(daemon.run(responder, sockets))
    except (BindError, ProxyError) as exc:
        print(f"clusterdns: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for pid in daemon.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if daemon.proxy is not None and os.getpid() == main_pid:
            daemon.proxy.stop()
        store.close()


def _forwarding(args: argparse.Namespace) -> tuple[list[Upstream] | None, dict[str, list[Upstream]], Recursion]:
    """--upstream, --stub-domain and --allow-recursion, checked. Upstreams None: don't forward."""
    try:
        if args.upstream == ["off"]:
            upstreams = None
        elif args.upstream:
            upstreams = [parse_upstream(u) for u in args.upstream]
        else:
            upstreams = resolv_conf_upstreams()
        stubs: dict[str, list[Upstream]] = {}
        for item in args.stub_domain:
            domain, sep, address = item.partition("=")
            if not sep or not domain.strip("."):
                raise ValueError(f"--stub-domain: must be DOMAIN=ADDR[:PORT], got {item!r}")
            stubs.setdefault(domain.strip(".").lower() + ".", []).append(parse_upstream(address))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        recursion = Recursion(args.allow_recursion or DEFAULT_RECURSION)
    except ValueError as exc:
        raise UsageError(f"--allow-recursion: {exc}") from None
    if stubs and upstreams is None:
        upstreams = []
    return upstreams, stubs, recursion


def cmd_resolv_conf(args: argparse.Namespace) -> int:
    """kubelet's ClusterFirst resolv.conf: the cluster DNS, the namespace's search list, ndots:5."""
    problem = dns1123_label_error(args.namespace)
    if problem:
        raise UsageError(f"--namespace: {problem}")
    config = config_of(args)
    domain = config.domain
    nameserver = args.nameserver or builtin_services(config.service_cidrs)[1].cluster_ips[0]
    try:
        ipaddress.ip_address(nameserver)
    except ValueError:
        raise UsageError(f"--nameserver: must be an IP address, got {nameserver!r}") from None
    print(f"nameserver {nameserver}")
    print(f"search {args.namespace}.svc.{domain} svc.{domain} {domain}")
    print("options ndots:5")
    return 0


COMMANDS = {
    "check": cmd_check,
    "resolv-conf": cmd_resolv_conf,
    "serve": cmd_serve,
    "get": cmd_get,
    "describe": cmd_describe,
    "env": cmd_env,
}


def run() -> None:
    """The `clusterdns` command: main, then exit at once, without freeing what the command loaded object by
    object (as mypy does): a registry of 100,000 Services took 1.3 s to free, a seventh of `check`."""
    global _kept
    _kept = []
    code = main()
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `clusterdns get ... | head`
        pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"clusterdns: error: {exc}", file=sys.stderr)
        return 2
    except (ZonesError, kubectl.KubectlError, envvars.EnvError) as exc:
        print(
            f"{exc}" if isinstance(exc, kubectl.KubectlError) else f"clusterdns: error: {exc}",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:  # `clusterdns get ... | head`
        return 0
