"""The kubernetes backend on the real single-node cluster, through real broker processes.

Needs ``scripts/services.sh up kubernetes`` (a 1.20 cluster from Debian's source package,
namespaces k8s-namespace-001..003 with their ResourceQuotas). Every check of what ran asks
Kubernetes itself (Jobs and pods by their labels), not only what the broker reports. Pods
are never contacted by IP: a container's port is reached through the broker's connector on
127.0.0.1 (the API's port-forward).
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid as uuids
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml

from execbroker.config import QuotaConfig
from execbroker.model.executables import BatchScript
from execbroker.planner import Resources
from execbroker.platforms import k8s_jobs as jobs
from execbroker.platforms import kubernetes as k8s
from execbroker.platforms.base import LaunchSpec, RunState
from tests.brokers import (
    BrokerProcess,
    accept,
    batch_request,
    running_broker,
    update,
    wait_for_phase,
)
from tests.notebooks.notebooks import notebook, notebook_request

pytestmark = pytest.mark.kubernetes

EXAMPLES = Path(__file__).parents[2] / "examples" / "brokers"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED"}
BUSYBOX = "busybox:local"


# -- what Kubernetes says ---------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Any:
    """A client of the cluster scripts/services.sh started (else the test fails)."""
    from kubernetes import config

    path = os.environ.get("EXECBROKER_KUBECONFIG")
    if not path:
        pytest.fail("EXECBROKER_KUBECONFIG is not set: run scripts/services.sh up kubernetes")
    client = config.new_client_from_config(config_file=path)
    from kubernetes.client import CoreV1Api

    CoreV1Api(client).read_namespace("k8s-namespace-001")
    return client


def core(api: Any) -> Any:
    from kubernetes.client import CoreV1Api

    return CoreV1Api(api)


def batch(api: Any) -> Any:
    from kubernetes.client import BatchV1Api

    return BatchV1Api(api)


def session_objects(api: Any, namespace: str, session: str) -> tuple[list[Any], list[Any]]:
    """The Jobs and pods Kubernetes has for one session."""
    selector = f"{jobs.LABEL_SESSION}={session}"
    found_jobs = batch(api).list_namespaced_job(namespace, label_selector=selector).items
    pods = core(api).list_namespaced_pod(namespace, label_selector=selector).items
    return found_jobs, pods


def wait_gone(api: Any, namespace: str, session: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    left: tuple[list[Any], list[Any]] = ([], [])
    while time.monotonic() < deadline:
        left = session_objects(api, namespace, session)
        if left == ([], []):
            return
        time.sleep(0.3)
    names = [o.metadata.name for group in left for o in group]
    raise AssertionError(f"still there after {timeout}s: {names}")


_BROKERS: set[str] = set()


@pytest.fixture(autouse=True)
def _remove_leftovers(api: Any) -> Iterator[None]:
    """No test may leave pods holding the 2-core node (or a namespace's quota) for the
    next ones, not even a cancelled one still in its grace period: they are deleted at
    once and waited for. Only this process's brokers' Jobs and pods are touched."""
    yield
    selectors = [f"{jobs.LABEL_BROKER}={jobs.label_value(name)}" for name in _BROKERS]
    namespaces = [f"k8s-namespace-{number:03d}" for number in (1, 2, 3)]
    for selector in selectors:
        for namespace in namespaces:
            batch(api).delete_collection_namespaced_job(
                namespace, label_selector=selector, propagation_policy="Background"
            )
            core(api).delete_collection_namespaced_pod(
                namespace, label_selector=selector, grace_period_seconds=0
            )
    deadline = time.monotonic() + 60
    left = [""]
    while left and time.monotonic() < deadline:
        left = [
            pod.metadata.name
            for namespace in namespaces
            for selector in selectors
            for pod in core(api).list_namespaced_pod(namespace, label_selector=selector).items
        ]
        if left:
            time.sleep(0.3)
    assert not left, f"pods still there after 60 s: {left}"


# -- brokers ----------------------------------------------------------------------------


def _config(number: int, **changes: Any) -> dict[str, Any]:
    """An example broker under a name of its own (its Jobs are told apart by its label)."""
    config = yaml.safe_load((EXAMPLES / f"k8s-namespace-{number:03d}.yaml").read_text())
    config["name"] = f"t{uuids.uuid4().hex[:8]}-{number:03d}"
    config["platforms"][0]["kubeconfig"] = os.environ["EXECBROKER_KUBECONFIG"]
    # A restarted broker is a new replica: it takes its predecessor's sessions over once
    # their leases lapse (the default 10 s would be most of a kill -9 test's time).
    config["monitor"] = {"interval": "PT0.2S", "lease": "PT2S"}
    _BROKERS.add(config["name"])
    return {**config, **changes}


def _offers(client: httpx.Client, request: dict[str, Any]) -> dict[str, Any]:
    return client.post("/requests", json=request).raise_for_status().json()


def _run(client: httpx.Client, request: dict[str, Any]) -> str:
    """Accept the first offer and return the session's uuid."""
    answer = _offers(client, request)
    assert answer["result"] == "YES", answer
    uuid = answer["offers"][0]["meta"]["uuid"]
    accept(client, uuid).raise_for_status()
    return uuid


def container_request(
    command: list[str], *, cores: int = 1, memory: int = 1, duration: str = "PT5M", **extra: Any
) -> dict[str, Any]:
    return {
        "executable": {
            "kind": "docker-container",
            "image": {"locations": [BUSYBOX]},
            "command": command,
            **extra,
        },
        "compute": {
            "kind": "simple-compute-resource",
            "cores": {"min": cores, "max": cores},
            "memory": {"min": memory, "max": memory},
        },
        "schedule": {"requested": {"duration": duration}},
    }


def _reject_all(client: httpx.Client, answer: dict[str, Any]) -> None:
    """Give back what a YES holds (its offers book the shared broker's calendar until
    their ttl, which would push the next tests' sessions to later starts)."""
    for offer in answer.get("offers") or []:
        client.post(
            f"/sessions/{offer['meta']['uuid']}",
            json={"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"},
        ).raise_for_status()


def _messages(session: dict[str, Any]) -> str:
    return " | ".join(m["message"] for m in session["meta"]["messages"])


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, api: Any) -> Iterator[BrokerProcess]:
    """k8s-namespace-003's broker (the biggest quota), shared by the quick tests."""
    with running_broker(tmp_path_factory.mktemp("k8s"), **_config(3)) as broker:
        yield broker


# -- the platform alone -----------------------------------------------------------------


def _platform(tmp_path: Path, namespace: int = 3) -> k8s.KubernetesPlatform:
    name = f"p{uuids.uuid4().hex[:8]}"
    _BROKERS.add(name)
    broker = SimpleNamespace(name=name, state_path=tmp_path, quota=QuotaConfig(cores=1, memory=1))
    return k8s.create(
        {
            "namespace": f"k8s-namespace-{namespace:03d}",
            "kubeconfig": os.environ["EXECBROKER_KUBECONFIG"],
        },
        broker=broker,
    )


def _spec(
    executable: Any, tmp_path: Path, *, seconds: int = 120, session: str | None = None
) -> LaunchSpec:
    session = session or str(uuids.uuid4())
    now = datetime.now(UTC)
    return LaunchSpec(
        session_id=session,
        broker="unused",
        owner="alice",
        executable=executable,
        resources=Resources(1, 1, 0),
        start=now,
        deadline=now + timedelta(seconds=seconds),
        workdir=tmp_path / "sessions" / session,
    )


def _wait_final(platform: Any, handle: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while not (status := platform.status(handle)).state.final and time.monotonic() < deadline:
        time.sleep(0.2)
    return status


def test_platform_starts_finds_reads_back_and_never_starts_twice(tmp_path: Path, api: Any) -> None:
    platform = _platform(tmp_path)
    spec = _spec(BatchScript(script="echo out; echo err >&2; id -u; pwd; exit 4"), tmp_path)
    handle = platform.start(spec)
    assert platform.start(spec) == handle  # the same session again: the same Job, not a second
    assert platform.find(spec.session_id) == handle
    assert platform.find(str(uuids.uuid4())) is None
    status = _wait_final(platform, handle)
    assert status.state == RunState.FAILED and status.exit_code == 4, status
    # One stream: stdout and stderr each in order, but not in order with each other.
    written = platform.logs(handle).stdout
    assert [line for line in written.splitlines() if line != "err"] == ["out", "65534", "/work"]
    assert sorted(written.splitlines()) == sorted(["out", "err", "65534", "/work"])
    found_jobs, pods = session_objects(api, "k8s-namespace-003", spec.session_id)
    assert len(found_jobs) == 1 and len(pods) == 1
    platform.release(handle)
    wait_gone(api, "k8s-namespace-003", spec.session_id)
    assert platform.logs(handle).stdout == written  # kept on release
    assert platform.status(handle).state == RunState.LOST
    platform.stop(handle)  # gone already: not an error


def test_execs_and_forwards_leave_the_platforms_other_calls_alone(tmp_path: Path) -> None:
    """The client's exec and port-forward swap their ApiClient's transport while they
    connect; on a client shared with the monitor and ``free()`` that sent those calls
    down a websocket (or left the swap in place). Execs in threads, status and capacity
    alongside: every answer is the right one."""
    platform = _platform(tmp_path)
    spec = _spec(BatchScript(script="sleep 600"), tmp_path)
    handle = platform.start(spec)
    deadline = time.monotonic() + 60
    while platform.status(handle).state != RunState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.2)
    pod = platform._pod(jobs.job_name(spec.session_id))
    assert pod is not None

    def execs() -> list[str]:
        return [platform._exec(pod, ["echo", "hi"]) for _ in range(8)]

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            running = [pool.submit(execs) for _ in range(2)]
            states = []
            while not all(f.done() for f in running):
                states.append(platform.status(handle).state)
                assert platform.free().cores >= 1  # 0: an API call failed
        assert {s for f in running for s in f.result()} == {"hi\n"}
        assert set(states) == {RunState.RUNNING} and len(states) > 3
        assert platform.status(handle).state == RunState.RUNNING  # the client still works
    finally:
        platform.release(handle)


def test_a_broker_quota_beyond_its_namespace_is_refused_at_start_up(tmp_path: Path) -> None:
    broker = SimpleNamespace(
        name="too-big", state_path=tmp_path, quota=QuotaConfig(cores=2, memory=2)
    )
    options = {"namespace": "k8s-namespace-001", "kubeconfig": os.environ["EXECBROKER_KUBECONFIG"]}
    with pytest.raises(
        ValueError,
        match=r"quota.cores \(2\) is more than the ResourceQuota "
        r"k8s-namespace-001/execbroker allows its pods together \(1 CPUs\)",
    ):
        k8s.create(options, broker=broker)
    broker.quota = QuotaConfig(cores=1, memory=3)
    with pytest.raises(ValueError, match=r"quota.memory \(3 GiB\) is more than"):
        k8s.create(options, broker=broker)
    with pytest.raises(ValueError, match="no-such-namespace"):
        k8s.create({**options, "namespace": "no-such-namespace"}, broker=broker)


# -- through a broker -------------------------------------------------------------------


def test_a_containers_stdout_comes_back_and_the_grant_is_in_the_pod_and_its_cgroup(
    broker: BrokerProcess, api: Any
) -> None:
    script = (
        "echo hello from kubernetes; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us; sleep 3"
    )
    with broker.client() as client:
        uuid = _run(client, container_request(["sh", "-c", script], cores=2, memory=3))
        wait_for_phase(client, uuid, {"RUNNING"}, timeout=60)
        _, pods = session_objects(api, "k8s-namespace-003", uuid)
        assert len(pods) == 1
        pod = pods[0]
        grant = {"cpu": "2", "memory": "3Gi"}
        resources = pod.spec.containers[0].resources
        assert (resources.requests, resources.limits) == (grant, grant)
        assert pod.status.qos_class == "Guaranteed"
        # The pod's own cgroup on the node (cgroupfs driver: kubepods/pod<uid>).
        memory = Path(f"/sys/fs/cgroup/memory/kubepods/pod{pod.metadata.uid}/memory.limit_in_bytes")
        assert int(memory.read_text()) == 3 * 1024**3
        cpu = Path(f"/sys/fs/cgroup/cpu/kubepods/pod{pod.metadata.uid}/cpu.cfs_quota_us")
        assert int(cpu.read_text()) == 2 * 100_000
        done = wait_for_phase(client, uuid, FINISHED, timeout=60)
        assert done["phase"] == "COMPLETED", _messages(done)
        out = client.get(f"/sessions/{uuid}/logs").json()["stdout"]
    assert out.splitlines() == ["hello from kubernetes", str(3 * 1024**3), "200000", "100000"]


def test_the_deadline_ends_a_long_task_as_failed_with_the_reason(tmp_path: Path, api: Any) -> None:
    """Killed as soon as the task runs, the broker cannot stop it: Kubernetes does, at the
    grant's end (the pod's activeDeadlineSeconds), and the restarted broker says so. The
    kubelet ends the pod in place, so what the task wrote is still there to be read
    however long the broker was down (the grace period is long past here)."""
    broker = BrokerProcess(_config(3), tmp_path).start()
    try:
        with broker.client() as client:
            uuid = _run(client, batch_request("echo started; sleep 600", duration="PT15S"))
            wait_for_phase(client, uuid, {"RUNNING"}, timeout=60)
        broker.kill()
        name = jobs.job_name(uuid)
        deadline = time.monotonic() + 60
        reasons: list[str] = []
        while time.monotonic() < deadline and not reasons:
            job = batch(api).read_namespaced_job(name, "k8s-namespace-003")
            reasons = [c.reason for c in job.status.conditions or [] if c.type == "Failed"]
            time.sleep(0.3)
        assert reasons == ["BackoffLimitExceeded"]  # its one pod failed:
        (pod,) = session_objects(api, "k8s-namespace-003", uuid)[1]
        assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
        # Past the pod's grace period, so its container has been killed (1.20's kubelet no
        # longer updates a terminal pod's container statuses: the time is the condition).
        time.sleep(jobs.GRACE_SECONDS + 2)
        broker.start()
        with broker.client() as client:
            ended = wait_for_phase(client, uuid, FINISHED, timeout=60)
            assert client.get(f"/sessions/{uuid}/logs").json()["stdout"] == "started\n"
        assert ended["phase"] == "FAILED"
        assert "exceeded the granted duration (activeDeadlineSeconds)" in _messages(ended)
        wait_gone(api, "k8s-namespace-003", uuid)  # released once it ended
    finally:
        broker.stop()


def test_cancel_removes_the_job_and_its_pods(broker: BrokerProcess, api: Any) -> None:
    with broker.client() as client:
        uuid = _run(client, container_request(["sleep", "600"]))
        wait_for_phase(client, uuid, {"RUNNING"}, timeout=60)
        found_jobs, pods = session_objects(api, "k8s-namespace-003", uuid)
        assert (len(found_jobs), len(pods)) == (1, 1)
        update(client, uuid, "CANCELLED").raise_for_status()
        assert wait_for_phase(client, uuid, FINISHED)["phase"] == "CANCELLED"
    wait_gone(api, "k8s-namespace-003", uuid)


def test_a_containers_port_is_reached_on_loopback_through_the_api(broker: BrokerProcess) -> None:
    request = container_request(
        ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
        network={"ports": [{"internal": {"port": 8080}, "protocol": "HTTP", "path": "/"}]},
    )
    with broker.client() as client:
        uuid = _run(client, request)
        session = wait_for_phase(client, uuid, {"AVAILABLE"} | FINISHED, timeout=90)
        assert session["phase"] == "AVAILABLE", _messages(session)
        (connector,) = session["connectors"]
        assert connector["protocol"] == "HTTP"
        assert connector["location"].startswith("http://127.0.0.1:"), connector
        page = httpx.get(connector["location"], timeout=10)
        assert page.status_code == 200 and "It works" in page.text
        update(client, uuid, "CANCELLED").raise_for_status()
        wait_for_phase(client, uuid, FINISHED)


def test_the_three_namespaces_stay_apart(tmp_path: Path, api: Any) -> None:
    """3 GiB is more than k8s-namespace-001 may hold (NO, saying why) and within 002's 4 GiB
    (YES). Once someone else's pod holds 2 GiB of 002's quota, 002 can no longer promise
    3 GiB: its broker says NO, and 003, whose quota is untouched, still says YES."""
    request = batch_request("true", memory=(3, 3))
    with (
        running_broker(tmp_path / "one", **_config(1)) as one,
        running_broker(tmp_path / "two", **_config(2)) as two,
        running_broker(tmp_path / "three", **_config(3)) as three,
        one.client() as c1,
        two.client() as c2,
        three.client() as c3,
    ):
        no = _offers(c1, request)
        assert no["result"] == "NO"
        assert _offers(c2, request)["result"] == "YES"
        other = _holder("k8s-namespace-002", memory="2Gi")
        core(api).create_namespaced_pod("k8s-namespace-002", other)
        try:
            deadline = time.monotonic() + 30
            while _offers(c2, request)["result"] != "NO" and time.monotonic() < deadline:
                time.sleep(0.5)
            assert _offers(c2, request)["result"] == "NO"
            assert _offers(c3, request)["result"] == "YES"
            # and what 002 can still promise is what its quota has left: 2 GiB
            assert _offers(c2, batch_request("true", memory=(2, 2)))["result"] == "YES"
        finally:
            _delete_pod(api, "k8s-namespace-002", other["metadata"]["name"])


def _delete_pod(api: Any, namespace: str, name: str) -> None:
    """Delete a pod and wait until it is gone: even 100m of CPU left on the 2-core node
    makes the next test's brokers offer one whole core less."""
    from kubernetes.client.exceptions import ApiException

    core(api).delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core(api).read_namespaced_pod(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(0.3)
    raise AssertionError(f"pod {namespace}/{name} still there after 60 s")


def _holder(namespace: str, *, memory: str) -> dict[str, Any]:
    """Someone else's pod (not the broker's), holding part of a namespace's quota."""
    limits = {"cpu": "100m", "memory": memory}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"other-{uuids.uuid4().hex[:8]}", "namespace": namespace},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "hold",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "600"],
                    "resources": {"requests": limits, "limits": limits},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def test_kill_9_re_adopts_and_never_starts_a_job_twice(tmp_path: Path, api: Any) -> None:
    """Killed while two tasks run: one finishes meanwhile and gets its final phase, the
    other is re-adopted as RUNNING (found by its Job's name, its handle lost as in a crash
    right after the Job was created); the same Job and pod throughout."""
    broker = BrokerProcess(_config(3), tmp_path).start()
    try:
        with broker.client() as client:
            short = _run(client, batch_request("sleep 3; echo finished"))
            long = _run(client, batch_request("sleep 600"))
            for uuid in (short, long):
                wait_for_phase(client, uuid, {"RUNNING"}, timeout=60)
        before = {u: session_objects(api, "k8s-namespace-003", u) for u in (short, long)}
        broker.kill()
        with sqlite3.connect(tmp_path / "state" / "broker.db") as db:
            db.execute(
                "UPDATE sessions SET handle = NULL, phase = 'PREPARING' WHERE uuid = ?", (long,)
            )
        broker.start()
        with broker.client() as client:
            done = wait_for_phase(client, short, FINISHED, timeout=60)
            assert done["phase"] == "COMPLETED", _messages(done)
            assert client.get(f"/sessions/{short}/logs").json()["stdout"] == "finished\n"
            assert wait_for_phase(client, long, {"RUNNING"})["phase"] == "RUNNING"
            time.sleep(1)  # a few monitor passes over the re-adopted Job
            assert client.get(f"/sessions/{long}").json()["phase"] == "RUNNING"
            found_jobs, pods = session_objects(api, "k8s-namespace-003", long)
            assert [j.metadata.uid for j in found_jobs] == [j.metadata.uid for j in before[long][0]]
            assert [p.metadata.uid for p in pods] == [p.metadata.uid for p in before[long][1]]
            update(client, long, "CANCELLED").raise_for_status()
            wait_for_phase(client, long, FINISHED)
    finally:
        broker.stop()


def test_privileged_and_host_path_requests_are_refused(broker: BrokerProcess, api: Any) -> None:
    with broker.client() as client:
        privileged = _offers(client, container_request(["true"], privileged=True))
        assert privileged["result"] == "NO"
        assert "executable.privileged" in str(privileged)
        # A container has no host mounts in the schema: the property is named and ignored.
        mount = _offers(
            client, container_request(["true"], volumes=[{"host": "/etc", "container": "/etc"}])
        )
        _reject_all(client, mount)
        warnings = [item["message"] for item in mount["meta"]["messages"]]
        assert "executable.volumes: unknown property, ignored" in warnings, warnings
    # and the cluster itself refuses such pods, whoever asks
    from kubernetes.client.exceptions import ApiException

    for change in (
        {"containers": [{"name": "p", "image": BUSYBOX, "securityContext": {"privileged": True}}]},
        {
            "containers": [
                {"name": "h", "image": BUSYBOX, "volumeMounts": [{"name": "h", "mountPath": "/h"}]}
            ],
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        },
    ):
        pod = _holder("k8s-namespace-003", memory="64Mi")
        pod["spec"] |= change
        for container in pod["spec"]["containers"]:
            container["resources"] = {"limits": {"cpu": "100m", "memory": "64Mi"}}
        with pytest.raises(ApiException) as refused_pod:
            core(api).create_namespaced_pod("k8s-namespace-003", pod)
        assert refused_pod.value.status in (403, 422), refused_pod.value


# -- notebooks --------------------------------------------------------------------------


def test_a_batch_notebook_runs_and_its_executed_copy_comes_back(
    broker: BrokerProcess, api: Any
) -> None:
    content = notebook("print(f'{label}: {6 * 7}')", parameters="label = 'x'")
    body = notebook_request(content, parameters={"label": "the answer"})
    with broker.client() as client:
        uuid = _run(client, body)
        done = wait_for_phase(client, uuid, FINISHED, timeout=120)
        assert done["phase"] == "COMPLETED", _messages(done)
        executed = client.get(f"/sessions/{uuid}/outputs/notebook.ipynb").raise_for_status().json()
        printed = [
            "".join(o.get("text", ""))
            for cell in executed["cells"]
            for o in cell.get("outputs", [])
        ]
        assert "the answer: 42\n" in printed
        logs = client.get(f"/sessions/{uuid}/logs").json()["stdout"]
        assert "execbroker: the notebook's outputs follow" not in logs
    wait_gone(api, "k8s-namespace-003", uuid)
    left = core(api).list_namespaced_config_map(
        "k8s-namespace-003", label_selector=f"{jobs.LABEL_SESSION}={uuid}"
    )
    assert left.items == [], "the task's files outlived its Job"


def test_an_interactive_notebook_is_served_on_loopback_behind_its_token(
    broker: BrokerProcess, api: Any
) -> None:
    content = notebook("print(x)", parameters="x = 1")
    body = notebook_request(content, mode="interactive", parameters={"x": 5}, duration="PT5M")
    with broker.client() as client:
        uuid = _run(client, body)
        session = wait_for_phase(client, uuid, {"AVAILABLE"} | FINISHED, timeout=120)
        assert session["phase"] == "AVAILABLE", _messages(session)
        (connector,) = session["connectors"]
        location, _, token = connector["location"].partition("?token=")
        base = location.rstrip("/")
        assert base.startswith("http://127.0.0.1:") and len(token) >= 40
        assert httpx.get(f"{base}/api/status", timeout=10).status_code == 403
        assert (
            httpx.get(f"{base}/api/status", params={"token": token}, timeout=10).status_code == 200
        )
        path = f"{base}/api/contents/notebook.ipynb"
        opened = httpx.get(path, params={"token": token}, timeout=10).raise_for_status().json()
        cells = opened["content"]["cells"]
        assert any("x = 5" in "".join(cell["source"]) for cell in cells)
        cells.append({**cells[-1], "id": "mine", "source": "print('mine')"})
        saved = {"type": "notebook", "format": "json", "content": opened["content"]}
        assert httpx.put(path, params={"token": token}, json=saved, timeout=10).status_code == 200
        _cancel_asking_meanwhile(broker, client, api, uuid)
        assert wait_for_phase(client, uuid, FINISHED)["phase"] == "CANCELLED"
        kept = client.get(f"/sessions/{uuid}/outputs/notebook.ipynb").raise_for_status().json()
        assert "print('mine')" in ["".join(cell["source"]) for cell in kept["cells"]]
    wait_gone(api, "k8s-namespace-003", uuid)


def _cancel_asking_meanwhile(
    broker: BrokerProcess, client: httpx.Client, api: Any, uuid: str
) -> None:
    """Cancel a 1-core session while asking for 2 cores all along. The session ends in the
    calendar at once, but its pod holds its core until Kubernetes has it deleted (a
    notebook's is first asked for what its user saved): no answer given while the pod
    still held may offer the cores now (a YES for after the session's booked end, given
    before the cancel, is a promise the namespace can keep)."""
    both = container_request(["sleep", "600"], cores=2)
    with ThreadPoolExecutor(max_workers=1) as pool, broker.client() as other:
        cancelling = pool.submit(update, other, uuid, "CANCELLED")
        asked = 0
        while not cancelling.done() or asked == 0:
            answer = _offers(client, both)
            asked += 1
            _, pods = session_objects(api, "k8s-namespace-003", uuid)
            _reject_all(client, answer)
            if _holding(pods):
                assert _starts_now(answer) == [], "offered the core of a pod not yet deleted"
        cancelling.result().raise_for_status()


def _starts_now(answer: dict[str, Any]) -> list[str]:
    """The starts of an answer's offers that come within a minute (a 5-minute session
    booked now would end much later)."""
    soon = datetime.now(UTC) + timedelta(minutes=1)
    starts = [o["schedule"]["preparing"]["start"] for o in answer.get("offers") or []]
    return [s for s in starts if datetime.fromisoformat(s.replace("Z", "+00:00")) < soon]


def _holding(pods: list[Any]) -> bool:
    """Whether any of the pods still holds its quota and node room: Kubernetes stops
    counting a pod once it has ended (Succeeded or Failed), even before it is removed."""
    return any(pod.status.phase not in ("Succeeded", "Failed") for pod in pods)


def test_a_cancelled_pod_still_ending_is_not_offered_again(broker: BrokerProcess, api: Any) -> None:
    """A cancelled session's pod holds its namespace's quota while it is ending (its grace
    period). Until then the broker must not offer that room again, or Kubernetes refuses
    the next pod. A YES once the pod has ended (before it is removed) must be one that
    Kubernetes keeps: it is accepted and must run."""
    both = container_request(["sleep", "600"], cores=2)
    with broker.client() as client:
        uuid = _run(client, both)
        wait_for_phase(client, uuid, {"RUNNING"}, timeout=60)
        update(client, uuid, "CANCELLED").raise_for_status()
        seen_holding = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = _offers(client, both)
            # Read after the answer: a pod still holding now held while it was given.
            _, pods = session_objects(api, "k8s-namespace-003", uuid)
            if _holding(pods):
                seen_holding += 1
                assert answer["result"] == "NO", "offered the cores a deleted pod still holds"
            elif answer["result"] == "YES":
                break
            time.sleep(0.2)
        assert seen_holding > 0, "the pod stopped holding before it could be asked about"
        assert answer["result"] == "YES", answer
        # The promise is kept: the next session runs, ended pod or not.
        nxt = answer["offers"][0]["meta"]["uuid"]
        accept(client, nxt).raise_for_status()
        session = wait_for_phase(client, nxt, {"RUNNING", *FINISHED}, timeout=60)
        assert session["phase"] == "RUNNING", _messages(session)
        update(client, nxt, "CANCELLED").raise_for_status()
        wait_gone(api, "k8s-namespace-003", uuid)
        wait_gone(api, "k8s-namespace-003", nxt)
