"""docker-compose.yml and the Dockerfile: a compose file whose addresses, search lists and pod environment agree
with what clusterdns serves, and a stack that works when it runs.

Two halves. The static one reads the file: compose's own `config` validates it, and the clusterdns commands of
the file run through `clusterdns.cli.main`, with each container path mapped to what is mounted there (./zones
from the repository, each named volume a directory in tmp_path). The running one brings the stack up on a
Docker engine (started here when none runs) from a copy of the project, with local images only, as no image
registry is reachable: a Debian made by debootstrap from this machine's mirror (kept between runs), clusterdns
built on it from wheels downloaded here, and tests/compose/override.yml in place of the public images. Then
the pods use it as pods use a cluster, through real clients (busybox's nslookup and wget, urllib on the host).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import glob
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from clusterdns import cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
OVERRIDE_FILE = ROOT / "tests" / "compose" / "override.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The flags where the compose stack's clusterdns differs from the image's default command: its node address, the
# proxy, and the network's address ranges.
STACK_FLAGS = ("host", "proxy", "node_ip", "proxy_interface", "service_cidr", "pod_cidr")

# Pods whose manifest image can't run from ./zones alone, and what the compose file runs instead (see there).
STAND_INS = {"bprashanth/nginxhttps:1.0": "nginx"}

Service = dict[str, Any]


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """A compose file as a user reads it, anchors and `<<` merges resolved."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
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


def get_argv(compose: dict[str, Any], *argv: str) -> list[str]:
    """`clusterdns get ARGV -o json` with the zones, state, address ranges and domain of the clusterdns service."""
    flags = serve_args(compose)
    return [
        *("get", *argv, "-o", "json", "--zones", flags.zones, "--state", flags.state),
        *("--service-cidr", flags.service_cidr, "--pod-cidr", flags.pod_cidr, "--domain", flags.domain),
    ]


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
        """`clusterdns get ... -o json` as the clusterdns service would answer it."""
        doc = json.loads(self.run(self.compose["services"]["clusterdns"], get_argv(self.compose, *argv)))
        assert isinstance(doc, dict)
        return doc

    def cluster_ip(self, namespace: str, name: str) -> str:
        return str(self.get("svc", name, "-n", namespace)["spec"]["clusterIP"])

    def all_pods(self) -> dict[str, dict[str, Any]]:
        """Every Pod by name (names are unique across the namespaces of ./zones)."""
        return {item["metadata"]["name"]: item for item in self.get("pods", "-A")["items"]}


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


def test_clusterdns_is_the_node_and_serves_the_proxy(compose: dict[str, Any]) -> None:
    """clusterdns runs --proxy on its fixed address, which is its --host and no Service, pod or Docker address."""
    flags = serve_args(compose)
    node = ipaddress.ip_address(address(compose["services"]["clusterdns"]))
    net = ipam(compose)
    assert flags.proxy and flags.host == str(node)
    assert flags.node_ip in (None, [], [str(node)]) and flags.proxy_interface is None
    assert node in ipaddress.ip_network(net["subnet"])
    for cidr in (flags.service_cidr, flags.pod_cidr, net["ip_range"]):
        assert node not in ipaddress.ip_network(cidr), cidr


def test_clusterdns_has_what_the_proxy_needs(compose: dict[str, Any]) -> None:
    """The clusterdns container has CAP_NET_ADMIN, runs as root, forwards, and sends no ICMP redirects."""
    svc = compose["services"]["clusterdns"]
    assert svc["cap_add"] == ["NET_ADMIN"]
    assert svc.get("user", "root") in ("root", "0") and not dockerfile_instructions("USER")
    assert svc["sysctls"] == {
        "net.ipv4.ip_forward": 1,
        "net.ipv4.conf.all.send_redirects": 0,
        "net.ipv4.conf.eth0.send_redirects": 0,
    }


def test_pods_name_kube_dns_cluster_ip(compose: dict[str, Any], stack: Stack) -> None:
    """The pods' nameserver is kube-dns's cluster IP, in the network's subnet and nobody's container address."""
    dns = stack.cluster_ip("kube-system", "kube-dns")
    assert ipaddress.ip_address(dns) in ipaddress.ip_network(ipam(compose)["subnet"])
    assert dns not in {address(svc) for svc in compose["services"].values() if "networks" in svc}
    for name, svc in pods(compose).items():
        assert svc["dns"] == [dns], name


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


def test_pods_resolve_with_their_namespace_search_list(compose: dict[str, Any], stack: Stack) -> None:
    """Every pod's dns_search and dns_opt are the resolv.conf `clusterdns resolv-conf` prints for its namespace."""
    known = stack.all_pods()
    assert pods(compose), "no service sets dns"
    for name, svc in pods(compose).items():
        namespace = known[svc["hostname"]]["metadata"]["namespace"]
        resolv_conf = stack.run(compose["services"]["clusterdns"], ["resolv-conf", "--namespace", namespace])
        lines = dict(line.split(None, 1) for line in resolv_conf.splitlines())
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
    known = stack.all_pods()
    for name, svc in pods(compose).items():
        pod = known.get(svc["hostname"])
        assert pod is not None, f"{name}: no Pod {svc['hostname']}; Pods: {sorted(known)}"
        assert address(svc) == pod["status"]["podIP"], name
        image = pod["spec"]["containers"][0]["image"]
        assert svc["image"] == STAND_INS.get(image, image), name
    owners = sorted(svc["hostname"] for svc in pods(compose).values() if svc["hostname"].startswith("my-nginx-"))
    assert owners == sorted(p for p in known if p.startswith("my-nginx-")), "every replica of both my-nginx"


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
    assert "nslookup my-nginx\n" in script and "timeout 5 wget -qO- http://my-nginx " in script
    assert "timeout 5 wget -qO- http://$$MY_NGINX_SERVICE_HOST:$$MY_NGINX_SERVICE_PORT " in script


def test_init_service_writes_the_pod_resolv_conf(compose: dict[str, Any], stack: Stack) -> None:
    """The resolv.conf the init service writes names kube-dns and the search list the busybox pod uses."""
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
        for option in ("zones", "state", "domain", "service_cidr", "pod_cidr"):
            assert getattr(args, option) == getattr(flags, option), option
        assert mounts(init)[args.zones] == mounts(server)[flags.zones]
        assert mounts(init)[args.state] == mounts(server)[flags.state]


def test_clusterdns_serves_port_53_from_the_mounted_zones(compose: dict[str, Any]) -> None:
    """clusterdns listens on port 53, reads ./zones mounted read-only, keeps state in a named volume."""
    flags = serve_args(compose)
    assert (flags.port, flags.zones, flags.state) == (53, "/zones", "/state")
    volumes = compose["services"]["clusterdns"]["volumes"]
    assert "./zones:/zones:ro" in volumes
    assert mounts(compose["services"]["clusterdns"])["/state"] in compose["volumes"]


def test_dockerfile_default_command_is_the_compose_server(compose: dict[str, Any]) -> None:
    """The image runs `clusterdns serve` as compose does, but for the node address, the proxy and the ranges."""
    cmd = dockerfile_cmd()
    assert cmd[:2] == ["clusterdns", "serve"]
    image = vars(cli.build_parser().parse_args(cmd[1:]))
    stack = vars(serve_args(compose))
    assert {k: v for k, v in image.items() if k not in STACK_FLAGS} == {
        k: v for k, v in stack.items() if k not in STACK_FLAGS
    }
    assert (image["host"], image["port"], image["zones"], image["state"]) == ("0.0.0.0", 53, "/zones", "/state")


def test_dockerfile_exposes_dns_and_health_ports() -> None:
    """The image exposes DNS on 53/udp and 53/tcp, and 9153/tcp, where `--http` listens."""
    exposed = {port for line in dockerfile_instructions("EXPOSE") for port in line.split()}
    assert exposed == {"53/udp", "53/tcp", "9153/tcp"}
    image = cli.build_parser().parse_args(dockerfile_cmd()[1:])
    assert image.http == "0.0.0.0:9153"


def test_dockerfile_copies_what_the_build_context_holds() -> None:
    """Every file the Dockerfile copies exists (unless it is an optional glob) and is in the build context."""
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
            if glob.has_magic(source):  # `wheel[s]`: wheels/, when the build provides it
                name = re.sub(r"\[(.)\]", r"\1", source)
                assert not ignored(name), f"COPY {source}: {name} is left out of the build context by .dockerignore"
                continue
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert not ignored(source), f"COPY {source}: left out of the build context by .dockerignore"


def test_compose_names_leave_cluster_names_to_clusterdns(compose: dict[str, Any], stack: Stack) -> None:
    """No compose service is named like a Service: Docker's embedded DNS would answer that name itself."""
    services = {item["metadata"]["name"] for item in stack.get("svc", "-A")["items"]}
    assert not services & compose["services"].keys()


def test_override_replaces_every_public_image(compose: dict[str, Any]) -> None:
    """The test's override gives every service a local image: the base, or clusterdns built on it."""
    override = load_compose(OVERRIDE_FILE)["services"]
    assert override.keys() == compose["services"].keys()
    for name, svc in override.items():
        assert svc["image"] in ("${CLUSTERDNS_TEST_BASE}", "${CLUSTERDNS_TEST_IMAGE}"), name
        if "build" in compose["services"][name]:
            assert svc["build"]["args"] == {"BASE": "${CLUSTERDNS_TEST_BASE}"}, name


def test_override_runs_clusterdns_as_compose_does_but_without_upstream(compose: dict[str, Any]) -> None:
    """The test's clusterdns command is docker-compose.yml's, with `--upstream off`."""
    override = load_compose(OVERRIDE_FILE)["services"]["clusterdns"]
    assert override["command"] == [*compose["services"]["clusterdns"]["command"], "--upstream", "off"]


# The running stack.

T = TypeVar("T")

# What the base image holds: what the Dockerfile and the pods of the override need.
BASE_PACKAGES = ("python3", "python3-venv", "busybox", "nftables", "iproute2")
# Changing how the base is made changes its tag, so that a cached one is made again.
BASE_RECIPE = "1"
# Busybox's applets that Debian has no command for (nslookup, wget, ...), put on the PATH as in busybox's image.
LINK_APPLETS = 'for a in $(busybox --list); do command -v "$a" >/dev/null || ln -s /bin/busybox /usr/local/bin/$a; done'
PYTHON_VERSION = "import sys; print('%d.%d' % sys.version_info[:2])"


def run(argv: Sequence[str], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def check(argv: Sequence[str], timeout: float = 120, **kwargs: Any) -> str:
    """Run a command; its output, or a failure that shows its stderr."""
    result = run(argv, timeout, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{shlex.join(argv)}: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def until(probe: Callable[[], T | None], seconds: float, what: str) -> T:
    """Poll `probe` until it returns something other than None (or `seconds` have passed: a failure)."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(0.5)


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: the compose test needs it (apt-get install {package}; .ci/test does)")
    return path


@dataclass(frozen=True)
class Engine:
    """A Docker engine to talk to: `docker` and the environment (DOCKER_HOST) that reaches it."""

    docker: str
    env: dict[str, str] = field(repr=False)

    def __call__(self, *argv: str, timeout: float = 120) -> str:
        return check([self.docker, *argv], timeout, env=self.env)


# Kept between runs: the data of an engine started here (with the base image), and the lock of a run.
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clusterdns-test"


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (waiting up to 15 minutes for another holder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:

        def locked() -> bool | None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            return True

        until(locked, 900, f"the lock {path}, held by another run of the compose test")
        yield


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The running Docker engine; or, when none runs, one started here and stopped at the end, with its data kept
    in CACHE (so the base image is made once) and nothing else outside a temporary directory. It changes nothing
    on the host's network but its own bridges: no iptables rules, no forwarding, no docker0 (--iptables=false
    --ip-forward=false --bridge=none). One run at a time on a machine: the stack's addresses are fixed."""
    with exclusive(CACHE / "lock"):
        docker = need_tool("docker", "docker.io")
        env = dict(os.environ)
        if run([docker, "version"], 30, env=env).returncode == 0:
            yield Engine(docker, env)
            return
        dockerd = need_tool("dockerd", "docker.io")
        if os.geteuid() != 0:
            pytest.fail("no Docker engine runs, and starting one (dockerd) needs root")
        run_dir = Path(tempfile.mkdtemp(prefix="cdns-docker-"))  # short: it holds unix sockets
        log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        env["DOCKER_HOST"] = f"unix://{run_dir}/docker.sock"
        argv = [dockerd, "--data-root", str(CACHE / "docker"), "--exec-root", str(run_dir / "exec")]
        argv += ["--host", env["DOCKER_HOST"], "--pidfile", str(run_dir / "docker.pid")]
        argv += ["--iptables=false", "--ip-forward=false", "--bridge=none"]
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool | None:
            if proc.poll() is not None:
                pytest.fail(f"dockerd exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            return True if run([docker, "version"], 10, env=env).returncode == 0 else None

        try:
            until(up, 60, f"dockerd answering on {env['DOCKER_HOST']} (log: {log})")
            yield Engine(docker, env)
        finally:
            proc.send_signal(signal.SIGTERM)  # dockerd stops its containerd and its containers
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(run_dir, ignore_errors=True)


def debian_source() -> tuple[str, str]:
    """The mirror and suite this machine installs its own Debian release from, as apt is configured."""
    release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    codename = release.get("VERSION_CODENAME", "").strip('"')
    sources: list[tuple[list[str], list[str], list[str]]] = []  # (types, URIs, suites), in apt's order
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if path.suffix == ".list" and path.is_file():
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()  # without [options]
                if len(words) >= 3:
                    sources.append(([words[0]], [words[1]], [words[2]]))
        elif path.suffix == ".sources" and path.is_file():
            for stanza in re.split(r"\n\s*\n", path.read_text()):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith(("#", " ", "\t")):
                        key, value = line.split(":", 1)
                        fields[key.strip().lower()] = value.split()
                if fields.get("enabled", ["yes"]) != ["no"]:
                    sources.append((fields.get("types", []), fields.get("uris", []), fields.get("suites", [])))
    for types, uris, suites in sources:
        if "deb" in types and codename in suites and uris:
            return uris[0], codename
    pytest.fail(f"no apt source for this machine's Debian release ({codename or 'unknown'}) in /etc/apt")


def unmount_below(root: Path) -> None:
    """Unmount whatever is mounted under `root` (debootstrap mounts /proc and /sys, and leaves them on failure),
    so that removing the tree never reaches into the host's."""
    with open("/proc/self/mounts", encoding="utf-8") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    for point in sorted((p for p in points if p.startswith(f"{root}/")), key=len, reverse=True):
        run(["umount", "-l", point], 30)


@pytest.fixture(scope="module")
def base_image(engine: Engine) -> str:
    """A minimal Debian of this machine's release with BASE_PACKAGES, made by debootstrap from its apt mirror and
    imported into the engine; or the one an earlier run imported."""
    mirror, suite = debian_source()
    key = hashlib.sha256(repr((mirror, suite, BASE_PACKAGES, BASE_RECIPE)).encode()).hexdigest()[:12]
    tag = f"clusterdns-test-base:{key}"
    if run([engine.docker, "image", "inspect", tag], 30, env=engine.env).returncode == 0:
        return tag
    debootstrap = need_tool("debootstrap", "debootstrap")
    if os.geteuid() != 0:
        pytest.fail("debootstrap needs root to make the compose test's base image")
    root = Path(tempfile.mkdtemp(prefix="cdns-base-", dir="/var/tmp"))
    try:
        include = ",".join(BASE_PACKAGES)
        check([debootstrap, "--variant=minbase", f"--include={include}", suite, str(root), mirror], timeout=900)
        check(["chroot", str(root), "/bin/busybox", "sh", "-c", LINK_APPLETS])
        for leftover in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
            shutil.rmtree(root / leftover, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        imported = run(
            [engine.docker, "import", "--change", f"ENV {path}", "-", tag], 300, stdin=tar.stdout, env=engine.env
        )
        assert tar.stdout is not None
        tar.stdout.close()
        assert tar.wait() == 0 and imported.returncode == 0, f"docker import: {imported.stderr}"
    finally:
        unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)
    for old in engine("image", "ls", "clusterdns-test-base", "--format", "{{.Repository}}:{{.Tag}}").split():
        if old != tag:  # made by an earlier recipe or from another mirror
            engine("image", "rm", old)
    return tag


@pytest.fixture(scope="module")
def project(engine: Engine, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what the stack reads from the project directory (so that the test may edit its zones), with a
    wheels/ directory holding clusterdns's dependencies and build backend for the base image's python3."""
    need_tool("docker-compose", "docker-compose")
    copy = tmp_path_factory.mktemp("project")
    for name in ("docker-compose.yml", "Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    for name in ("clusterdns", "zones", "tests/compose"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    version = engine("run", "--rm", "--network", "none", base_image, "python3", "-c", PYTHON_VERSION)
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = [*meta["build-system"]["requires"], *meta["project"]["dependencies"]]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:"]
    pip += ["--python-version", version.strip(), "--dest", str(copy / "wheels")]
    check([*pip, *requirements], timeout=300)
    return copy


@dataclass(frozen=True)
class Running:
    """The stack, up: `docker-compose` with the override, under a project name of its own."""

    engine: Engine
    directory: Path
    name: str
    env: dict[str, str] = field(repr=False)
    compose: dict[str, Any] = field(repr=False)

    def __call__(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        files = ("-f", "docker-compose.yml", "-f", "tests/compose/override.yml")
        return run(["docker-compose", "-p", self.name, *files, *argv], timeout, cwd=self.directory, env=self.env)

    def exec(self, service: str, script: str) -> subprocess.CompletedProcess[str]:
        """`sh -c SCRIPT` in a service's container."""
        return self("exec", "-T", service, "sh", "-c", script, timeout=60)

    def get(self, *argv: str) -> dict[str, Any]:
        """`clusterdns get ... -o json`, asked of the running clusterdns."""
        result = self("exec", "-T", "clusterdns", "clusterdns", *get_argv(self.compose, *argv))
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert isinstance(doc, dict)
        return doc

    def down(self) -> subprocess.CompletedProcess[str]:
        """`docker-compose down` with the volumes (clusterdns has 5 s to leave its lameduck)."""
        return self("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=300)

    def left(self) -> list[str]:
        """The project's containers, networks and volumes that exist."""
        label = f"label=com.docker.compose.project={self.name}"
        found = []
        for kind, flags in (("container", ["--all"]), ("network", []), ("volume", [])):
            found += [f"{kind} {name}" for name in self.engine(kind, "ls", *flags, "--filter", label, "-q").split()]
        return found


@pytest.fixture(scope="module")
def running(engine: Engine, base_image: str, project: Path) -> Iterator[Running]:
    """The stack up, built from the project copy with local images only; taken down with its volumes and its
    clusterdns image whatever the tests did."""
    name = f"clusterdnstest{os.getpid()}"
    image = f"clusterdns-test:{name}"
    env = {**engine.env, "CLUSTERDNS_TEST_BASE": base_image, "CLUSTERDNS_TEST_IMAGE": image}
    stack = Running(engine, project, name, env, load_compose(project / "docker-compose.yml"))
    try:
        result = stack("up", "--detach", "--build", timeout=900)
        if result.returncode != 0:
            logs = stack("logs", "--no-color", "--tail", "40").stdout
            pytest.fail(f"docker-compose up: exit {result.returncode}\n{result.stderr[-3000:]}\n{logs}")
        yield stack
    finally:
        stack.down()
        run([engine.docker, "image", "rm", image], 120, env=engine.env)


def busybox_env(stack: Running) -> dict[str, str]:
    """The environment the busybox pod's command runs with (the file pod-init wrote, sourced)."""
    result = stack.exec("busybox", ". /env/pod.env && env")
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def answers(stack: Running, url: str, times: int) -> list[str] | None:
    """What `wget -qO- URL` in the busybox pod prints, `times` times over; None while it fails."""
    script = f". /env/pod.env && for i in $(seq {times}); do timeout 10 wget -qO- {url} || exit 1; done"
    result = stack.exec("busybox", script)
    return result.stdout.split() if result.returncode == 0 else None


def replicas(stack: Running) -> set[str]:
    """The names of the pods of Service my-nginx, which their HTTP servers answer with."""
    return {svc["hostname"] for name, svc in pods(stack.compose).items() if name.startswith("my-nginx-pod-")}


def test_pod_resolves_service_through_kube_dns(running: Running) -> None:
    """busybox's nslookup finds my-nginx's cluster IP, through Docker's DNS and straight from kube-dns's address."""
    cluster_ip = running.get("svc", "my-nginx")["spec"]["clusterIP"]
    kube_dns = running.get("svc", "kube-dns", "-n", "kube-system")["spec"]["clusterIP"]
    # With a server named, busybox's nslookup asks the name as given, without the search list.
    for args in ("my-nginx", f"my-nginx.default.svc.cluster.local {kube_dns}"):
        result = running.exec("busybox", f"nslookup {args}")
        assert f"Name:\tmy-nginx.default.svc.cluster.local\nAddress: {cluster_ip}\n" in result.stdout, (
            result.stdout + result.stderr
        )


def test_service_name_reaches_both_replicas(running: Running) -> None:
    """`wget http://my-nginx` in the busybox pod is answered by each of the two nginx pods over repeated requests."""
    until(lambda: answers(running, "http://my-nginx", 1), 30, "wget http://my-nginx in the busybox pod")
    seen = answers(running, "http://my-nginx", 20)
    assert seen is not None and set(seen) == replicas(running), seen


def test_kubelet_variables_lead_to_the_service(running: Running) -> None:
    """MY_NGINX_SERVICE_HOST and _PORT are my-nginx's cluster IP and port, and a GET there reaches a replica."""
    env = busybox_env(running)
    service = running.get("svc", "my-nginx")["spec"]
    assert (env["MY_NGINX_SERVICE_HOST"], env["MY_NGINX_SERVICE_PORT"]) == (service["clusterIP"], "80")
    assert env["KUBERNETES_SERVICE_HOST"] == running.get("svc", "kubernetes")["spec"]["clusterIP"]
    assert env["POD_IP"] == address(running.compose["services"]["busybox"])
    url = "http://$MY_NGINX_SERVICE_HOST:$MY_NGINX_SERVICE_PORT"
    seen = until(lambda: answers(running, url, 1), 30, f"wget {url} in the busybox pod")
    assert seen[0] in replicas(running), seen


def test_busybox_command_shows_the_service_answering(running: Running) -> None:
    """The busybox pod's own command prints the lookup, the variables and both wgets answered by nginx pods."""

    seen = [""]

    def logged() -> str | None:
        seen[0] = log = running("logs", "--no-color", "busybox").stdout
        answered = [line for line in log.splitlines() if line.split("| ")[-1] in replicas(running)]
        return log if len(answered) >= 2 else None

    try:
        log = until(logged, 120, "two answers of my-nginx in `docker-compose logs busybox`")
    except pytest.fail.Exception as failed:
        raise AssertionError(f"{failed}; the log:\n{seen[0]}") from None
    assert "Name:\tmy-nginx.default.svc.cluster.local" in log and "MY_NGINX_SERVICE_HOST=" in log


def test_node_port_answers_from_the_host(running: Running) -> None:
    """nginx-secure/my-nginx's http node port on the node address is answered by its pod, from the host."""
    service = running.get("svc", "my-nginx", "-n", "nginx-secure")["spec"]
    (node_port,) = [port["nodePort"] for port in service["ports"] if port["name"] == "http"]
    url = f"http://{address(running.compose['services']['clusterdns'])}:{node_port}/"
    pod = running.compose["services"]["nginx-secure-pod"]["hostname"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an http_proxy of the host

    def get() -> str | None:
        try:
            with opener.open(url, timeout=5) as response:
                return str(response.read().decode().strip())
        except OSError:
            return None

    assert until(get, 30, f"GET {url} from the host") == pod


def test_zones_edit_changes_answers_and_forwarding(running: Running) -> None:
    """A Service added to a file under zones/ resolves, and connects to its pods, within seconds of the write."""
    with (running.directory / "zones" / "my-nginx.yaml").open("a", encoding="utf-8") as f:
        f.write(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: my-nginx-alt\nspec:\n  ports:\n"
            "  - port: 8080\n    targetPort: 80\n  selector:\n    run: my-nginx\n"
        )
    seen = until(lambda: answers(running, "http://my-nginx-alt:8080", 1), 20, "wget http://my-nginx-alt:8080")
    assert seen[0] in replicas(running), seen


def test_down_leaves_nothing_behind(running: Running) -> None:
    """`docker-compose down -v` removes every container, network and volume of the project."""
    assert running.left(), "the stack is not up"
    result = running.down()
    assert result.returncode == 0, result.stderr
    assert running.left() == []
