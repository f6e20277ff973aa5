"""The command line, called as `clusterdns.cli.main(argv)`: exit codes, what goes to stdout and stderr,
and the global options. Every call passes --state inside the temporary directory."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from clusterdns.cli import main

if TYPE_CHECKING:
    from conftest import WriteZones

ROOT = Path(__file__).resolve().parents[1]

ZONES = {
    "web.yaml": """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          labels:
            app: web
        spec:
          clusterIP: 10.0.100.10
          selector:
            app: web
          ports:
          - name: http
            port: 80
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: web-a
          labels:
            app: web
        spec:
          containers:
          - name: nginx
            ports:
            - containerPort: 80
        status:
          podIP: 10.244.2.5
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: web-b
          labels:
            app: web
        spec:
          containers:
          - name: nginx
            ports:
            - containerPort: 80
        status:
          podIP: 10.244.3.4
        """,
    "shop.yaml": """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop
        ---
        apiVersion: v1
        kind: Service
        metadata:
          name: np
          namespace: shop
        spec:
          type: NodePort
          clusterIP: 10.0.100.11
          selector:
            app: np
          ports:
          - name: http
            port: 8080
            targetPort: 80
            nodePort: 31704
          - name: https
            port: 443
            nodePort: 31443
        ---
        apiVersion: v1
        kind: Service
        metadata:
          name: ext
          namespace: shop
        spec:
          type: ExternalName
          externalName: db.example.com
        """,
}

BAD = """
    apiVersion: v1
    kind: Service
    metadata:
      name: bad
    spec:
      ports:
      - port: 0
    ---
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: web
    """


def cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run main(argv); (exit status, stdout, stderr). argparse's own errors exit via SystemExit."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def ages(table: str) -> str:
    """A table with its ages in seconds (`0s`, `3s`) written as `0s`: they depend on the clock."""
    return re.sub(r"(?m)(?<= )\d+s(?= |$)", "0s", table)


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def zones(write_zones: WriteZones) -> Path:
    return write_zones(ZONES)


# --- check --------------------------------------------------------------------------------------------


def test_check_clean(zones: Path, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`check` on clean zones prints a summary and exits 0."""
    assert cli(["check", "--state", state], capsys) == (
        0,
        "ok: 4 Namespaces, 5 Services, 2 Pods, 2 Endpoints\n",
        "",
    )


def test_check_problems(write_zones: WriteZones, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`check` lists every problem (and notes) and exits 1; the good objects are still counted."""
    write_zones({**ZONES, "bad.yaml": BAD})
    code, out, err = cli(["check", "--state", state], capsys)
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "note: zones/bad.yaml:9: Ingress default/web: kind Ingress is not used; skipped",
        "error: zones/bad.yaml:7: Service default/bad: spec.ports[0].port: must be 1-65535, got 0",
        "1 problem(s); loaded 4 Namespaces, 5 Services, 2 Pods, 2 Endpoints",
    ]


# --- get ----------------------------------------------------------------------------------------------


def test_get_services_all_namespaces(zones: Path, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`get svc -A` prints kubectl's table with a leading NAMESPACE column."""
    code, out, err = cli(["get", "svc", "-A", "--state", state], capsys)
    assert (code, err) == (0, "")
    assert ages(out) == (
        "NAMESPACE     NAME         TYPE           CLUSTER-IP    EXTERNAL-IP      PORT(S)                        AGE\n"
        "default       kubernetes   ClusterIP      10.0.0.1      <none>           443/TCP                        0s\n"
        "default       web          ClusterIP      10.0.100.10   <none>           80/TCP                         0s\n"
        "kube-system   kube-dns     ClusterIP      10.0.0.10     <none>           53/UDP,53/TCP,9153/TCP         0s\n"
        "shop          ext          ExternalName   <none>        db.example.com   <none>                         0s\n"
        "shop          np           NodePort       10.0.100.11   <none>           8080:31704/TCP,443:31443/TCP   0s\n"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["get", "services"],
            "NAME         TYPE        CLUSTER-IP    EXTERNAL-IP   PORT(S)   AGE\n"
            "kubernetes   ClusterIP   10.0.0.1      <none>        443/TCP   0s\n"
            "web          ClusterIP   10.0.100.10   <none>        80/TCP    0s\n",
        ),
        (
            ["get", "svc", "np", "-n", "shop"],
            "NAME   TYPE       CLUSTER-IP    EXTERNAL-IP   PORT(S)                        AGE\n"
            "np     NodePort   10.0.100.11   <none>        8080:31704/TCP,443:31443/TCP   0s\n",
        ),
        (
            ["get", "ep", "web"],
            "NAME   ENDPOINTS                     AGE\nweb    10.244.2.5:80,10.244.3.4:80   0s\n",
        ),
        (
            ["get", "po", "-o", "wide"],
            "NAME    READY   STATUS    RESTARTS   AGE   IP           NODE     NOMINATED NODE   READINESS GATES\n"
            "web-a   1/1     Running   0          0s    10.244.2.5   <none>   <none>           <none>\n"
            "web-b   1/1     Running   0          0s    10.244.3.4   <none>   <none>           <none>\n",
        ),
        (
            ["get", "ns"],
            "NAME          STATUS   AGE\n"
            "default       Active   <unknown>\n"
            "kube-public   Active   <unknown>\n"
            "kube-system   Active   <unknown>\n"
            "shop          Active   0s\n",
        ),
    ],
)
def test_get_tables(
    zones: Path, state: str, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    """`get` prints kubectl's tables for services, endpoints, pods and namespaces."""
    code, out, err = cli([*argv, "--state", state], capsys)
    assert (code, err) == (0, "")
    assert ages(out) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "svc", "nope"], 'Error from server (NotFound): services "nope" not found\n'),
        (["get", "svc", "web", "-n", "shop"], 'Error from server (NotFound): services "web" not found\n'),
        (["get", "pods", "nope"], 'Error from server (NotFound): pods "nope" not found\n'),
        (["get", "widgets"], 'error: the server doesn\'t have a resource type "widgets"\n'),
        (["get", "svc", "web", "-A"], "error: a resource cannot be retrieved by name across all namespaces\n"),
        (["describe", "svc", "nope"], 'Error from server (NotFound): services "nope" not found\n'),
    ],
)
def test_get_errors(zones: Path, state: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """Objects that are not there: kubectl's message on stderr, exit 1."""
    assert cli([*argv, "--state", state], capsys) == (1, "", message)


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_get_output_formats(zones: Path, state: str, capsys: pytest.CaptureFixture[str], output: str) -> None:
    """`-o json` and `-o yaml` print a v1 List (or one object by name) that parses back."""
    code, out, err = cli(["get", "svc", "-n", "shop", "-o", output, "--state", state], capsys)
    assert (code, err) == (0, "")
    doc = json.loads(out) if output == "json" else yaml.safe_load(out)
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "List")
    assert [(i["kind"], i["metadata"]["namespace"], i["metadata"]["name"]) for i in doc["items"]] == [
        ("Service", "shop", "ext"),
        ("Service", "shop", "np"),
    ]
    code, out, err = cli(["get", "svc", "np", "-n", "shop", "-o", output, "--state", state], capsys)
    doc = json.loads(out) if output == "json" else yaml.safe_load(out)
    assert (code, doc["kind"], doc["spec"]["clusterIP"]) == (0, "Service", "10.0.100.11")
    assert [(p["name"], p["port"], p["nodePort"]) for p in doc["spec"]["ports"]] == [
        ("http", 8080, 31704),
        ("https", 443, 31443),
    ]


def test_get_nothing_found(zones: Path, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A namespace without Services: kubectl's `No resources found` line on stderr, exit 0."""
    assert cli(["get", "svc", "-n", "empty", "--state", state], capsys) == (
        0,
        "",
        "No resources found in empty namespace.\n",
    )


# --- describe -----------------------------------------------------------------------------------------


def test_describe_service(zones: Path, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`describe svc NAME -n NS` prints kubectl's describe layout."""
    code, out, err = cli(["describe", "svc", "np", "-n", "shop", "--state", state], capsys)
    assert (code, err) == (0, "")
    assert out == (
        "Name:                     np\n"
        "Namespace:                shop\n"
        "Labels:                   <none>\n"
        "Annotations:              <none>\n"
        "Selector:                 app=np\n"
        "Type:                     NodePort\n"
        "IP Family Policy:         SingleStack\n"
        "IP Families:              IPv4\n"
        "IP:                       10.0.100.11\n"
        "IPs:                      10.0.100.11\n"
        "Port:                     http  8080/TCP\n"
        "TargetPort:               80/TCP\n"
        "NodePort:                 http  31704/TCP\n"
        "Endpoints:                \n"
        "Port:                     https  443/TCP\n"
        "TargetPort:               443/TCP\n"
        "NodePort:                 https  31443/TCP\n"
        "Endpoints:                \n"
        "Session Affinity:         None\n"
        "External Traffic Policy:  Cluster\n"
        "Internal Traffic Policy:  Cluster\n"
        "Events:                   <none>\n"
    )


def test_describe_endpoints(zones: Path, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """describe lists a Service's endpoints for each port."""
    code, out, _ = cli(["describe", "service", "web", "--state", state], capsys)
    assert code == 0
    assert re.findall(r"(?m)^(Name|Selector|IP|Port|TargetPort|Endpoints):\s+(.*)$", out) == [
        ("Name", "web"),
        ("Selector", "app=web"),
        ("IP", "10.0.100.10"),
        ("Port", "http  80/TCP"),
        ("TargetPort", "80/TCP"),
        ("Endpoints", "10.244.2.5:80,10.244.3.4:80"),
    ]


# --- env ----------------------------------------------------------------------------------------------


def test_env_namespace(zones: Path, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`env --namespace default` prints the kubelet's service variables as sorted dotenv lines."""
    code, out, err = cli(["env", "--namespace", "default", "--state", state], capsys)
    assert (code, err) == (0, "")
    assert out == (
        "KUBERNETES_PORT=tcp://10.0.0.1:443\n"
        "KUBERNETES_PORT_443_TCP=tcp://10.0.0.1:443\n"
        "KUBERNETES_PORT_443_TCP_ADDR=10.0.0.1\n"
        "KUBERNETES_PORT_443_TCP_PORT=443\n"
        "KUBERNETES_PORT_443_TCP_PROTO=tcp\n"
        "KUBERNETES_SERVICE_HOST=10.0.0.1\n"
        "KUBERNETES_SERVICE_PORT=443\n"
        "KUBERNETES_SERVICE_PORT_HTTPS=443\n"
        "WEB_PORT=tcp://10.0.100.10:80\n"
        "WEB_PORT_80_TCP=tcp://10.0.100.10:80\n"
        "WEB_PORT_80_TCP_ADDR=10.0.100.10\n"
        "WEB_PORT_80_TCP_PORT=80\n"
        "WEB_PORT_80_TCP_PROTO=tcp\n"
        "WEB_SERVICE_HOST=10.0.100.10\n"
        "WEB_SERVICE_PORT=80\n"
        "WEB_SERVICE_PORT_HTTP=80\n"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--namespace", "shop"], {"NP_SERVICE_HOST": "10.0.100.11", "NP_SERVICE_PORT_HTTPS": "443"}),
        (["--namespace", "shop", "--no-service-links"], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}),
        (["-n", "default", "--format", "json"], {"WEB_PORT_80_TCP_PROTO": "tcp"}),
    ],
)
def test_env_json(
    zones: Path, state: str, capsys: pytest.CaptureFixture[str], argv: list[str], expected: dict[str, str]
) -> None:
    """`--format json` is one object; service links off leaves only default/kubernetes."""
    code, out, err = cli(["env", *argv, "--format", "json", "--state", state], capsys)
    assert (code, err) == (0, "")
    env = json.loads(out)
    assert env.items() >= expected.items()
    if "--no-service-links" in argv:
        assert {k for k in env if k.endswith("_SERVICE_HOST")} == {"KUBERNETES_SERVICE_HOST"}


def test_env_shell(zones: Path, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--format shell` prints export lines."""
    code, out, _ = cli(["env", "-n", "default", "--format", "shell", "--state", state], capsys)
    assert code == 0
    assert "export WEB_SERVICE_HOST=10.0.100.10\n" in out
    assert all(line.startswith("export ") for line in out.splitlines())


def test_env_pod(write_zones: WriteZones, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`env --pod FILE` prints the whole environment of the Pod's first container."""
    write_zones(ZONES)
    write_zones(
        {
            "pod.yaml": """
                apiVersion: v1
                kind: Pod
                metadata:
                  name: client
                  namespace: shop
                spec:
                  enableServiceLinks: false
                  containers:
                  - name: app
                    env:
                    - name: POD_NAME
                      valueFrom:
                        fieldRef:
                          fieldPath: metadata.name
                    - name: URL
                      value: https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)/$(NOPE)
                status:
                  podIP: 10.244.9.9
                """
        },
        under="pods",
    )
    code, out, err = cli(["env", "--pod", "pods/pod.yaml", "--state", state], capsys)
    assert (code, err) == (0, "")
    assert [line for line in out.splitlines() if not line.startswith("KUBERNETES_")] == [
        "POD_NAME=client",
        "URL='https://10.0.0.1:443/$(NOPE)'",
    ]
    assert "KUBERNETES_SERVICE_HOST=10.0.0.1" in out.splitlines()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["env", "--pod", "zones/web.yaml", "--container", "nope"], None),
        (["env", "--namespace", "default", "--container", "x"], "clusterdns: error: --container needs --pod\n"),
        (
            ["env", "--pod", "zones/web.yaml", "--no-service-links"],
            "clusterdns: error: --no-service-links goes with --namespace; a Pod says enableServiceLinks itself\n",
        ),
    ],
)
def test_env_errors(
    zones: Path, state: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str | None
) -> None:
    """Flag combinations that can't work exit 2 (usage) or 1 (an unknown container), with a message."""
    code, out, err = cli([*argv, "--state", state], capsys)
    assert out == ""
    if message is None:
        assert code == 1
        assert err.startswith("clusterdns: error: ")
        assert "nope" in err
    else:
        assert (code, err) == (2, message)


# --- global options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--service-cidr",
            "10.0.0.0/33",
            "clusterdns: error: --service-cidr: must be a CIDR such as 10.0.0.0/16, got '10.0.0.0/33' "
            "('10.0.0.0/33' does not appear to be an IPv4 or IPv6 network)\n",
        ),
        (
            "--service-cidr",
            "10.0.0.1/16",
            "clusterdns: error: --service-cidr: must be a CIDR such as 10.0.0.0/16, got '10.0.0.1/16' "
            "(10.0.0.1/16 has host bits set)\n",
        ),
        (
            "--service-cidr",
            "10.0.0.0/16,banana",
            "clusterdns: error: --service-cidr: must be a CIDR such as 10.0.0.0/16, got 'banana' "
            "('banana' does not appear to be an IPv4 or IPv6 network)\n",
        ),
        (
            "--pod-cidr",
            "banana",
            "clusterdns: error: --pod-cidr: must be a CIDR such as 10.0.0.0/16, got 'banana' "
            "('banana' does not appear to be an IPv4 or IPv6 network)\n",
        ),
        (
            "--pod-cidr",
            "10.1.0.0/16,10.2.0.0/16",
            "clusterdns: error: --pod-cidr: give one CIDR, or one IPv4 and one IPv6, got '10.1.0.0/16,10.2.0.0/16'\n",
        ),
        ("--domain", "", "clusterdns: error: --domain: must be a DNS name such as cluster.local, got ''\n"),
        ("--domain", "a..b", "clusterdns: error: --domain: must be a DNS name such as cluster.local, got 'a..b'\n"),
    ],
)
def test_bad_global_flags(
    zones: Path, state: str, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    """A bad global flag value exits 2 with a message naming the flag."""
    assert cli(["check", "--state", state, f"{flag}={value}"], capsys) == (2, "", message)


def test_unknown_flag(zones: Path, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown flag is a usage error, exit 2, naming the flag."""
    code, out, err = cli(["check", "--state", state, "--bogus"], capsys)
    assert (code, out) == (2, "")
    assert err.endswith("clusterdns: error: unrecognized arguments: --bogus\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["--zones", "here", "--state", "{state}", "--domain", "example.org", "get", "svc", "-A"],
        ["get", "svc", "-A", "--zones", "here", "--state", "{state}", "--domain", "example.org"],
        ["--zones", "here", "get", "--state", "{state}", "svc", "-A", "--domain", "example.org"],
    ],
)
def test_global_options_anywhere(
    write_zones: WriteZones, state: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Global options are accepted before and after the subcommand."""
    write_zones(ZONES, under="here")
    code, out, err = cli([a.replace("{state}", state) for a in argv], capsys)
    assert (code, err) == (0, "")
    assert "10.0.100.11" in out


def test_global_option_after_subcommand_wins(
    write_zones: WriteZones, state: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A global option given after the subcommand overrides the same one given before it."""
    write_zones(ZONES, under="here")
    code, out, _ = cli(["--zones", "nowhere", "get", "svc", "-A", "--zones", "here", "--state", state], capsys)
    assert code == 0
    assert "10.0.100.11" in out


def test_dual_stack_flag(write_zones: WriteZones, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--service-cidr 10.0.0.0/16,fd00::/108` gives PreferDualStack Services an IPv6 cluster IP too."""
    write_zones(
        {
            "a.yaml": """
                apiVersion: v1
                kind: Service
                metadata:
                  name: dual
                spec:
                  ipFamilyPolicy: PreferDualStack
                  clusterIP: 10.0.100.20
                  ports:
                  - port: 80
                """
        }
    )
    argv = ["get", "svc", "dual", "-o", "json", "--state", state, "--service-cidr", "10.0.0.0/16,fd00::/108"]
    code, out, _ = cli(argv, capsys)
    assert code == 0
    spec = json.loads(out)["spec"]
    assert (spec["ipFamilies"], spec["clusterIPs"][0]) == (["IPv4", "IPv6"], "10.0.100.20")
    assert spec["clusterIPs"][1].startswith("fd00::")


def test_missing_zones_dir(write_zones: WriteZones, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A zones directory that does not exist: a clear error, exit 1."""
    write_zones({})
    assert cli(["check", "--zones", "nope", "--state", state], capsys) == (
        1,
        "",
        "clusterdns: error: zones directory nope: not found (give one with --zones DIR)\n",
    )


def test_default_zones_dir(write_zones: WriteZones, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --zones, ./zones is read."""
    write_zones(ZONES)
    code, out, _ = cli(["get", "svc", "web", "--state", state], capsys)
    assert code == 0
    assert "10.0.100.10" in out


def test_state_is_a_file(write_zones: WriteZones, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A state directory that can't be used: a clear error, exit 1."""
    write_zones(ZONES)
    (tmp_path / "state").write_text("not a directory")
    code, out, err = cli(["check", "--state", str(tmp_path / "state")], capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"clusterdns: error: state directory {tmp_path / 'state'}: ")


def test_module_help() -> None:
    """`python -m clusterdns --help` prints the usage with every subcommand, exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "clusterdns", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: clusterdns ")
    for word in ("check", "get", "describe", "env", "--zones", "--state", "--service-cidr", "--pod-cidr", "--domain"):
        assert word in result.stdout
