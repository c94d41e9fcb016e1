"""scripts/services.sh: `status` reports the services up, a second `up` of a running service
is quick and changes nothing, and each service answers the way the test suite uses it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "services.sh"
ENV_FILE = Path("/var/lib/execbroker/services.env")
ENV_FRAGMENTS = ENV_FILE.parent / "env.d"  # one file per service, merged into ENV_FILE
WARM_UP_SECONDS = 30  # a warm `up` takes ~1-3 s here; generous for a loaded CI machine

# What `up` prints only when it does something (installs, starts, builds, creates, writes).
CHANGE_WORDS = (
    "apt-get",
    "installing",
    "starting",
    "building",
    "rebuilding",
    "creating",
    "wrote",
    "sacctmgr add",
    "GrpTRES",
)


def run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def services_env() -> dict[str, str]:
    env = {}
    for line in ENV_FILE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            env[name.strip()] = value.strip()
    return env


def read_pid(path: str) -> str | None:
    try:
        return Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None


def assert_status_up(service: str) -> None:
    result = run_script("status", service, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{service}: up"), result.stdout


def assert_warm_up(service: str, pidfiles: list[str]) -> None:
    """A second `up` of a running service: succeeds quickly, restarts nothing, changes nothing."""
    pids = {p: read_pid(p) for p in pidfiles}
    assert all(pids.values()), f"{service} is not running: {pids}"
    # The service's own fragment and its lines in ENV_FILE: other services' lines may change
    # meanwhile (another checkout's `up` of another service), and are not this test's business.
    fragment = ENV_FRAGMENTS / f"{service}.env"
    fragment_before = fragment.read_text()
    lines = set(fragment_before.splitlines())
    assert lines <= set(ENV_FILE.read_text().splitlines()), "the env file lacks the service"
    started = time.monotonic()
    result = run_script("up", service)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert took < WARM_UP_SECONDS, f"a warm `up {service}` took {took:.1f}s:\n{output}"
    assert not [w for w in CHANGE_WORDS if w in result.stderr], output
    assert {p: read_pid(p) for p in pidfiles} == pids, "a warm `up` restarted a daemon"
    assert fragment.read_text() == fragment_before, "a warm `up` rewrote how to reach it"
    assert lines <= set(ENV_FILE.read_text().splitlines()), "a warm `up` lost the service"
    assert result.stdout.startswith(f"{service}:"), "no line saying how to reach the service"


def test_script_is_valid_bash() -> None:
    for script in [SCRIPT, *sorted((ROOT / "scripts" / "images").glob("*/build.sh"))]:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        if shutil.which("shellcheck"):
            result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, result.stdout


def test_usage_and_unknown_service() -> None:
    result = run_script("frobnicate", timeout=30)
    assert result.returncode == 2
    assert "services.sh up" in result.stdout + result.stderr
    result = run_script("status", "nosuch", timeout=30)
    assert result.returncode != 0
    assert "unknown service 'nosuch'" in result.stderr


# --- docker ------------------------------------------------------------------------------


@pytest.mark.docker
def test_docker_status_and_warm_up() -> None:
    assert_status_up("docker")
    assert services_env()["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert_warm_up("docker", ["/var/run/docker.pid"])


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": "unix:///var/run/docker.sock"}
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.docker
def test_docker_images_run() -> None:
    result = docker("run", "--rm", "busybox:local", "true")
    assert result.returncode == 0, result.stderr
    result = docker("run", "--rm", "busybox:local", "sh", "-c", "echo $((6 * 7))")
    assert result.stdout.strip() == "42", result.stderr
    imports = "import nbclient, nbformat, ipykernel, papermill, jupyter_server"
    result = docker("run", "--rm", "execbroker/python:local", "python3", "-c", imports)
    assert result.returncode == 0, result.stderr


@pytest.mark.docker
def test_busybox_httpd_with_published_port() -> None:
    publish = ["--cpus", "0.5", "--memory", "64m", "-p", "127.0.0.1::8080"]
    httpd = ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    result = docker("run", "-d", "--rm", *publish, "busybox:local", *httpd)
    assert result.returncode == 0, result.stderr
    container = result.stdout.strip()
    try:
        port = docker("port", container, "8080/tcp").stdout.split(":")[-1].strip()
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert "It works" in page.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        docker("rm", "-f", container)


@pytest.mark.docker
def test_docker_compose_v2_installed() -> None:
    assert docker("compose", "version").stdout.startswith("Docker Compose version v2")
    result = subprocess.run(["docker-compose", "version"], capture_output=True, text=True)
    assert result.stdout.startswith("Docker Compose version v2"), result.stderr


@pytest.mark.docker
def test_docker_compose_runs_a_project(tmp_path: Path) -> None:
    """Two services on the project's network, one port published, then torn down."""
    compose = {
        "services": {
            "web": {
                "image": "busybox:local",
                "command": ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
                "ports": ["127.0.0.1::8080"],
            },
            "client": {
                "image": "busybox:local",
                "command": ["sh", "-c", "wget -qO- http://web:8080/ && sleep 600"],
                "depends_on": ["web"],
                "restart": "on-failure",
            },
        }
    }
    (tmp_path / "compose.yaml").write_text(json.dumps(compose))
    project = ["compose", "-f", str(tmp_path / "compose.yaml"), "-p", f"svc-test-{os.getpid()}"]
    try:
        result = docker(*project, "up", "-d", "--wait")
        assert result.returncode == 0, result.stderr
        port = docker(*project, "port", "web", "8080").stdout.strip().rsplit(":", 1)[-1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert "It works" in page.read().decode()
        running = docker(*project, "ps", "--services", "--status", "running").stdout.split()
        assert sorted(running) == ["client", "web"]
    finally:
        result = docker(*project, "down", "-t", "0")
    assert result.returncode == 0, result.stderr


# --- postgres ----------------------------------------------------------------------------


def postgres_pidfiles() -> list[str]:
    return [str(p) for p in Path("/var/lib/postgresql").glob("*/main/postmaster.pid")]


@pytest.mark.postgres
def test_postgres_status_and_warm_up() -> None:
    assert_status_up("postgres")
    assert services_env()["EXECBROKER_TEST_POSTGRES_URL"] == (
        "postgresql+psycopg://execbroker:execbroker@127.0.0.1:5432/execbroker_test"
    )
    assert_warm_up("postgres", postgres_pidfiles())


@pytest.mark.postgres
def test_psql_connects_with_the_url() -> None:
    url = services_env()["EXECBROKER_TEST_POSTGRES_URL"].replace("+psycopg", "")
    result = subprocess.run(
        [
            "psql",
            "-X",
            "-At",
            url,
            "-c",
            "SELECT current_user, current_database(), rolcreatedb FROM pg_roles "
            "WHERE rolname = current_user",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "execbroker|execbroker_test|t"


# --- slurm -------------------------------------------------------------------------------


@pytest.mark.slurm
def test_slurm_status_and_warm_up() -> None:
    assert_status_up("slurm")
    env = services_env()
    assert env["EXECBROKER_SLURM_ACCOUNTS"] == "account-001,account-002,account-003"
    assert env["EXECBROKER_SLURM_PARTITION"]
    assert_warm_up(
        "slurm",
        [
            "/run/execbroker/slurmctld.pid",
            "/run/execbroker/slurmd.pid",
            "/run/execbroker/slurmdbd.pid",
        ],
    )


@pytest.mark.slurm
def test_sbatch_runs_under_an_account(tmp_path: Path) -> None:
    env = services_env()
    out = tmp_path / "job.out"
    result = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--parsable",
            "--account=account-001",
            f"--partition={env['EXECBROKER_SLURM_PARTITION']}",
            "--time=1",
            f"--output={out}",
            "--wrap",
            "echo hello from $SLURM_JOB_ACCOUNT",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text().strip() == "hello from account-001"


@pytest.mark.slurm
def test_slurm_accounts_have_different_limits() -> None:
    result = subprocess.run(
        ["sacctmgr", "-nP", "show", "assoc", "format=account,user,grptres"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines()]
    limits = {account: tres for account, user, tres in rows if not user}
    users = {(account, user) for account, user, _ in rows if user}
    accounts = ["account-001", "account-002", "account-003"]
    assert all(limits.get(a) for a in accounts), limits
    assert len({limits[a] for a in accounts}) == 3, limits
    assert "cpu=1" in limits["account-001"].split(",")
    for account in accounts:
        assert (account, "root") in users
        assert (account, "execbroker-test") in users
    # A job asking more CPUs than account-001 may use at once pends on that limit.
    result = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--account=account-001",
            "--cpus-per-task=2",
            "--time=1",
            "--output=/dev/null",
            "--wrap=true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 30
        reason = ""
        while reason != "PENDING AssocGrpCpuLimit" and time.monotonic() < deadline:
            time.sleep(0.3)
            reason = subprocess.run(
                ["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True
            ).stdout.strip()
        assert reason == "PENDING AssocGrpCpuLimit"
    finally:
        subprocess.run(["scancel", job], capture_output=True)


# --- chromium ----------------------------------------------------------------------------


@pytest.mark.browser
def test_chromium_status_and_warm_up() -> None:
    first = run_script("up", "chromium")  # what scripts/test.sh runs first
    assert first.returncode == 0, first.stdout + first.stderr
    assert_status_up("chromium")
    assert services_env()["EXECBROKER_TEST_CHROMIUM"] == "/usr/bin/chromium"
    assert_warm_up("chromium", [])
    version = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("Chromium "), version.stdout + version.stderr


# --- kubernetes --------------------------------------------------------------------------

KUBE_DAEMONS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
KUBE_PIDFILES = [f"/run/execbroker/kubernetes-{d}.pid" for d in KUBE_DAEMONS]


@pytest.mark.kubernetes
def test_kubernetes_status_and_warm_up() -> None:
    assert_status_up("kubernetes")
    env = services_env()
    assert Path(env["EXECBROKER_KUBECONFIG"]).is_file()
    assert (
        env["EXECBROKER_K8S_NAMESPACES"] == "k8s-namespace-001,k8s-namespace-002,k8s-namespace-003"
    )
    assert env["EXECBROKER_K8S_SERVER"] == "https://127.0.0.1:6443"
    assert_warm_up("kubernetes", KUBE_PIDFILES)


@pytest.mark.kubernetes
def test_kubernetes_leaves_the_host_as_it_was() -> None:
    """Loopback only, no iptables chain of its own, the kernel's tunables unchanged (the
    kubelet would set these three unless told to only warn), nothing in the host paths the
    kubelet uses by default."""
    pids = {read_pid(p) for p in KUBE_PIDFILES}
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True)
    ours = [
        line for line in listening.stdout.splitlines() if any(f"pid={p}," in line for p in pids)
    ]
    assert ours, listening.stdout
    for line in ours:
        local = line.split()[3]
        assert local.startswith("127.0.0.1:"), line
    if shutil.which("iptables-save"):
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
        assert "KUBE-" not in rules.stdout
    # The kernel tunables the kubelet would set: as they were before it started.
    before = Path("/var/lib/execbroker/kubernetes/sysctls-before-kubelet").read_text()
    for line in before.splitlines():
        name, _, value = line.partition("=")
        assert Path(f"/proc/sys/{name}").read_text().strip() == value, name
    for path in ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/dockershim"):
        assert not Path(path).exists(), path
