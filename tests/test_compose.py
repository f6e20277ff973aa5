"""docker-compose.yml and the Dockerfile: a compose file that compose accepts, whose addresses, search list and
pod environment agree with what clusterdns serves.

No Docker engine runs here, so the stack is checked, not started: compose's own `config` validates the file,
and the clusterdns commands of the file run through `clusterdns.cli.main`, with each container path mapped
to what is mounted there (./zones from the repository, each named volume a directory in tmp_path).
"""

from __future__ import annotations

import argparse
import fnmatch
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterdns import cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The flags that place clusterdns's address ranges in the compose network: the only difference the stack may
# make to the image's default command.
NETWORK_FLAGS = ("service_cidr", "pod_cidr")

Service = dict[str, Any]


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as a user reads it, anchors and `<<` merges resolved."""
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def pods(compose: dict[str, Any]) -> dict[str, Service]:
    """The services that play pods: those whose resolver is set with `dns`."""
    return {name: svc for name, svc in compose["services"].items() if "dns" in svc}


def serve_args(compose: dict[str, Any]) -> argparse.Namespace:
    """The clusterdns service's command, parsed by clusterdns's own parser."""
    command = compose["services"]["clusterdns"]["command"]
    assert command[:2] == ["clusterdns", "serve"]
    return cli.build_parser().parse_args(command[1:])


def address(svc: Service) -> str:
    """The fixed address of a service on the stack's one network."""
    (network,) = svc["networks"].values()
    return str(network["ipv4_address"])


def ipam(compose: dict[str, Any]) -> dict[str, str]:
    (network,) = compose["networks"].values()
    (config,) = network["ipam"]["config"]
    return dict(config)


def mounts(svc: Service) -> dict[str, str]:
    """Container path -> source (a named volume, or a host path starting with . or /) of short-syntax volumes."""
    result = {}
    for volume in svc.get("volumes", []):
        source, target, *_mode = volume.split(":")
        result[target] = source
    return result


def shell_lines(svc: Service) -> list[list[str]]:
    """The words of each line of a `sh -c SCRIPT` command."""
    command = svc["command"]
    assert command[0] == "sh" and command[1].startswith("-") and "c" in command[1], command
    return [shlex.split(line) for line in command[2].splitlines() if line.strip()]


def dockerfile_instructions(name: str) -> list[str]:
    """The arguments of every NAME instruction in the Dockerfile (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    return [line.split(None, 1)[1] for line in text.splitlines() if line.split(None, 1)[:1] == [name]]


def dockerfile_cmd() -> list[str]:
    (cmd,) = dockerfile_instructions("CMD")
    value = json.loads(cmd)
    assert isinstance(value, list), "CMD in exec form, so that clusterdns gets SIGTERM as PID 1"
    return value


class Stack:
    """Runs the clusterdns commands of the compose file as the containers would, on mapped paths."""

    def __init__(self, compose: dict[str, Any], volumes: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.compose = compose
        self.volumes = volumes
        self.capsys = capsys

    def host_path(self, svc: Service, path: str) -> Path:
        """Where a container path of `svc` is on this machine; it must be under one of its mounts."""
        targets = [t for t in mounts(svc) if path == t or path.startswith(t.rstrip("/") + "/")]
        assert targets, f"{path} is not under any volume of this service: {svc.get('volumes')}"
        target = max(targets, key=len)
        source = mounts(svc)[target]
        if source.startswith((".", "/")):  # a bind mount
            base = ROOT / source
        else:  # a named volume
            base = self.volumes / source
            base.mkdir(parents=True, exist_ok=True)
        return base / os.path.relpath(path, target)

    def run(self, svc: Service, argv: Sequence[str]) -> str:
        """`clusterdns ARGV` in `svc`'s container; returns its output."""
        mapped = [str(self.host_path(svc, a)) if a.startswith("/") else a for a in argv]
        if "--state" not in argv:  # never the user's default state directory from a test
            mapped += ["--state", str(self.volumes.parent / "state")]
        self.capsys.readouterr()
        code = cli.main(mapped)
        out, err = self.capsys.readouterr()
        assert code == 0, f"clusterdns {shlex.join(argv)}: exit {code}: {err}"
        return out

    def run_script(self, name: str) -> dict[str, str]:
        """Run a `sh -c` service made of `clusterdns ... > FILE` lines; returns container path -> text written."""
        svc = self.compose["services"][name]
        written = {}
        for words in shell_lines(svc):
            assert words[0] == "clusterdns" and words[-2] == ">", f"not `clusterdns ... > FILE`: {words}"
            out = self.run(svc, words[1:-2])
            self.host_path(svc, words[-1]).write_text(out, encoding="utf-8")
            written[words[-1]] = out
        return written

    def get(self, *argv: str) -> dict[str, Any]:
        """`clusterdns get ... -o json` with the clusterdns service's zones, state and address ranges."""
        svc = self.compose["services"]["clusterdns"]
        flags = serve_args(self.compose)
        argv = ("get", *argv, "-o", "json", "--zones", flags.zones, "--state", flags.state)
        argv += ("--service-cidr", flags.service_cidr, "--pod-cidr", flags.pod_cidr, "--domain", flags.domain)
        doc = json.loads(self.run(svc, argv))
        assert isinstance(doc, dict)
        return doc

    def cluster_ip(self, namespace: str, name: str) -> str:
        return str(self.get("svc", name, "-n", namespace)["spec"]["clusterIP"])

    def default_pods(self) -> dict[str, dict[str, Any]]:
        return {item["metadata"]["name"]: item for item in self.get("pods", "-n", "default")["items"]}


@pytest.fixture
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture
def stack(compose: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Stack:
    return Stack(compose, tmp_path / "volumes", capsys)


def test_compose_config_accepts_the_file(compose: dict[str, Any]) -> None:
    """docker-compose's `config` accepts the file and reads the same pods, DNS settings and addresses from it."""
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing, and CI is set: install it (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose), so the file isn't validated")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert rendered["services"].keys() == compose["services"].keys()
    for name, svc in pods(compose).items():
        seen = rendered["services"][name]
        assert {k: seen.get(k) for k in ("dns", "dns_search", "dns_opt", "networks", "depends_on", "command")} == {
            k: svc.get(k) for k in ("dns", "dns_search", "dns_opt", "networks", "depends_on", "command")
        }


def test_clusterdns_runs_on_kube_dns_cluster_ip(compose: dict[str, Any], stack: Stack) -> None:
    """clusterdns's fixed address is in the network's subnet and is kube-dns's cluster IP in its own answers."""
    dns = address(compose["services"]["clusterdns"])
    assert ipaddress.ip_address(dns) in ipaddress.ip_network(ipam(compose)["subnet"])
    assert stack.cluster_ip("kube-system", "kube-dns") == dns


def test_address_ranges_are_disjoint_and_in_the_subnet(compose: dict[str, Any]) -> None:
    """Service and pod ranges lie in the subnet, apart from each other and from Docker's own range and gateway."""
    flags = serve_args(compose)
    net = ipam(compose)
    subnet = ipaddress.ip_network(net["subnet"])
    services = ipaddress.ip_network(flags.service_cidr)
    pod_range = ipaddress.ip_network(flags.pod_cidr)
    docker = ipaddress.ip_network(net["ip_range"])
    for cidr in (services, pod_range, docker):
        assert cidr.subnet_of(subnet), cidr  # type: ignore[arg-type]
    for a, b in ((services, pod_range), (services, docker), (pod_range, docker)):
        assert not a.overlaps(b), (a, b)
    gateway = ipaddress.ip_address(net["gateway"])
    assert gateway in docker and gateway not in services and gateway not in pod_range


def test_pods_resolve_through_clusterdns(compose: dict[str, Any], stack: Stack) -> None:
    """Every pod's dns, dns_search and dns_opt are the resolv.conf that `clusterdns resolv-conf` prints."""
    dns = address(compose["services"]["clusterdns"])
    resolv_conf = stack.run(compose["services"]["clusterdns"], ["resolv-conf", "--namespace", "default"])
    lines = dict(line.split(None, 1) for line in resolv_conf.splitlines())
    assert lines["search"].split() == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert pods(compose), "no service sets dns"
    for name, svc in pods(compose).items():
        assert svc["dns"] == [dns], name
        assert svc["dns_search"] == lines["search"].split(), name
        assert svc["dns_opt"] == lines["options"].split(), name


def test_pods_wait_for_clusterdns_and_the_init_service(compose: dict[str, Any]) -> None:
    """Pods start once clusterdns is ready (its /ready on the --http port) and the init service has finished."""
    services = compose["services"]
    http = serve_args(compose).http
    assert http.startswith("0.0.0.0:")
    assert f"http://127.0.0.1:{http.split(':')[1]}/ready" in " ".join(services["clusterdns"]["healthcheck"]["test"])
    for name, svc in pods(compose).items():
        assert svc["depends_on"] == {
            "clusterdns": {"condition": "service_healthy"},
            "pod-init": {"condition": "service_completed_successfully"},
        }, name


def test_pods_have_the_addresses_clusterdns_gives_them(compose: dict[str, Any], stack: Stack) -> None:
    """Each pod container has its Pod's name as hostname, the Pod's IP as address, and the Pod's image."""
    known = stack.default_pods()
    for name, svc in pods(compose).items():
        pod = known.get(svc["hostname"])
        assert pod is not None, f"{name}: no Pod {svc['hostname']} in namespace default; Pods: {sorted(known)}"
        assert address(svc) == pod["status"]["podIP"], name
        assert svc["image"] == pod["spec"]["containers"][0]["image"], name
    owners = sorted(svc["hostname"] for svc in pods(compose).values() if svc["hostname"].startswith("my-nginx-"))
    assert owners == sorted(p for p in known if p.startswith("my-nginx-")), "both replicas of my-nginx"


def test_init_service_writes_the_environment_busybox_loads(compose: dict[str, Any], stack: Stack) -> None:
    """The init service's env file is the one busybox sources, and holds the addresses clusterdns answers."""
    written = stack.run_script("pod-init")
    busybox = compose["services"]["busybox"]
    (sourced,) = [words[1] for words in shell_lines(busybox) if words[0] == "."]
    loaded = stack.host_path(busybox, sourced).read_text(encoding="utf-8")
    assert loaded in written.values(), f"busybox sources {sourced}, which pod-init doesn't write"
    env = dict(shlex.split(line)[1].split("=", 1) for line in loaded.splitlines() if line.startswith("export "))
    assert env["MY_NGINX_SERVICE_HOST"] == stack.cluster_ip("default", "my-nginx")
    assert env["POD_IP"] == address(busybox)
    assert env["POD_NAME"] == busybox["hostname"]
    script = busybox["command"][2]
    assert "nslookup my-nginx\n" in script and "$$MY_NGINX_SERVICE_HOST" in script


def test_init_service_writes_the_pod_resolv_conf(compose: dict[str, Any], stack: Stack) -> None:
    """The resolv.conf the init service writes names clusterdns and the search list the pods use."""
    written = stack.run_script("pod-init")
    (resolv_conf,) = [text for path, text in written.items() if path.endswith("/resolv.conf")]
    busybox = compose["services"]["busybox"]
    assert resolv_conf == (
        f"nameserver {busybox['dns'][0]}\n"
        f"search {' '.join(busybox['dns_search'])}\n"
        f"options {' '.join(busybox['dns_opt'])}\n"
    )


def test_init_service_runs_clusterdns_as_the_server_does(compose: dict[str, Any]) -> None:
    """The init service runs the same image with the same zones, state and address ranges as clusterdns."""
    services = compose["services"]
    server, init = services["clusterdns"], services["pod-init"]
    assert init["build"] == server["build"] and init["image"] == server["image"]
    flags = serve_args(compose)
    for words in shell_lines(init):
        if words[1] != "env":
            continue
        args = cli.build_parser().parse_args(words[1:-2])
        for option in ("zones", "state", "domain", *NETWORK_FLAGS):
            assert getattr(args, option) == getattr(flags, option), option
        assert mounts(init)[args.zones] == mounts(server)[flags.zones]
        assert mounts(init)[args.state] == mounts(server)[flags.state]


def test_clusterdns_serves_port_53_from_the_mounted_zones(compose: dict[str, Any]) -> None:
    """clusterdns listens on 0.0.0.0 port 53, reads ./zones mounted read-only, keeps state in a named volume."""
    flags = serve_args(compose)
    assert (flags.host, flags.port, flags.zones, flags.state) == ("0.0.0.0", 53, "/zones", "/state")
    volumes = compose["services"]["clusterdns"]["volumes"]
    assert "./zones:/zones:ro" in volumes
    assert mounts(compose["services"]["clusterdns"])["/state"] in compose["volumes"]


def test_dockerfile_default_command_is_the_compose_server(compose: dict[str, Any]) -> None:
    """The image runs `clusterdns serve` as compose does, but for the network's address ranges."""
    cmd = dockerfile_cmd()
    assert cmd[:2] == ["clusterdns", "serve"]
    image = vars(cli.build_parser().parse_args(cmd[1:]))
    stack = vars(serve_args(compose))
    assert {k: v for k, v in image.items() if k not in NETWORK_FLAGS} == {
        k: v for k, v in stack.items() if k not in NETWORK_FLAGS
    }
    assert (image["host"], image["port"], image["zones"], image["state"]) == ("0.0.0.0", 53, "/zones", "/state")


def test_dockerfile_exposes_dns_and_health_ports() -> None:
    """The image exposes DNS on 53/udp and 53/tcp, and 9153/tcp; `--http` listens there once serve has it."""
    exposed = {port for line in dockerfile_instructions("EXPOSE") for port in line.split()}
    assert exposed == {"53/udp", "53/tcp", "9153/tcp"}
    image = cli.build_parser().parse_args(dockerfile_cmd()[1:])
    if hasattr(image, "http"):
        assert image.http == "0.0.0.0:9153", "serve has --http now: add `--http 0.0.0.0:9153` to the Dockerfile CMD"


def test_dockerfile_copies_what_the_build_context_holds() -> None:
    """Every file the Dockerfile copies exists and is not left out of the build context by .dockerignore."""
    rules = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    rules = [rule for rule in rules if rule and not rule.startswith("#")]

    def ignored(path: str) -> bool:
        result = False
        for rule in rules:
            pattern = rule.removeprefix("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                result = not rule.startswith("!")
        return result

    for copy in dockerfile_instructions("COPY"):
        *sources, _dest = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert not ignored(source), f"COPY {source}: left out of the build context by .dockerignore"


def test_compose_names_leave_cluster_names_to_clusterdns(compose: dict[str, Any], stack: Stack) -> None:
    """No compose service is named like a Service: Docker's embedded DNS would answer that name itself."""
    services = {item["metadata"]["name"] for item in stack.get("svc", "-A")["items"]}
    assert not services & compose["services"].keys()
