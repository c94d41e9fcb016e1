"""The ``docker`` backend against the real Docker Engine (``scripts/services.sh up docker``).

Each test runs under a broker name of its own, so what it started is found (and cleaned up)
by the ``execbroker.broker`` label, and what the tests check is what ``docker inspect`` says.
"""

from __future__ import annotations

import time
import uuid as uuids
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from execbroker.model.executables import DockerCompose, DockerContainer
from execbroker.platforms.base import PlatformError, RunState
from execbroker.platforms.docker_engine import GIB
from tests.platforms import support
from tests.platforms.support import launch, wait_state

pytestmark = pytest.mark.docker

IMAGE = "busybox:local"
HTTPD = ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]


def container(image: str = IMAGE, **fields: Any) -> DockerContainer:
    return DockerContainer.model_validate({"image": {"locations": [image]}, **fields})


def test_httpd_is_reached_through_its_connector_under_the_granted_limits(
    make_platform, engine, tmp_path
):
    platform = make_platform()
    web = container(
        command=HTTPD,
        network={
            "ports": [{"internal": {"port": 8080}, "protocol": "HTTP", "path": "/index.html"}]
        },
    )
    spec = launch(web, tmp_path, cores=1, memory=1)
    handle = platform.start(spec)
    status = wait_state(platform, handle, {RunState.AVAILABLE})
    (endpoint,) = status.endpoints
    assert endpoint.protocol == "HTTP"
    assert endpoint.location.startswith("http://127.0.0.1:")
    assert endpoint.location.endswith("/index.html")
    assert "It works" in httpx.get(endpoint.location, timeout=5).text

    attrs = engine.api.inspect_container(handle)
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Memory"] == GIB and host["MemorySwap"] == GIB
    assert host["PidsLimit"] == 1024
    assert host["CapDrop"] == ["ALL"] and "NET_RAW" not in host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert not host["Privileged"]
    assert host["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    labels = attrs["Config"]["Labels"]
    assert labels["execbroker.session"] == spec.session_id
    assert labels["execbroker.owner"] == "alice"

    platform.stop(handle)
    assert platform.status(handle).state.final
    platform.release(handle)
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(handle)
    assert platform.status(handle).state == RunState.LOST
    platform.release(handle)  # idempotent


def test_exit_codes_and_output_decide_the_final_state(make_platform, tmp_path):
    platform = make_platform()
    good = platform.start(launch(container(command=["sh", "-c", "echo fine"]), tmp_path))
    bad = platform.start(launch(container(command=["sh", "-c", "echo oops >&2; exit 3"]), tmp_path))
    long = platform.start(launch(container(command=["sleep", "30"]), tmp_path))
    assert wait_state(platform, good, {RunState.COMPLETED}).exit_code == 0
    failed = wait_state(platform, bad, {RunState.FAILED})
    assert failed.exit_code == 3
    assert "exited with code 3" in failed.message and "oops" in failed.message
    assert platform.status(long).state == RunState.RUNNING  # no ports: RUNNING, not AVAILABLE
    assert platform.logs(good).stdout == "fine\n"
    assert platform.logs(bad).stderr == "oops\n"
    platform.release(bad)
    assert platform.logs(bad).stderr == "oops\n", "a released task's output is kept"
    started = time.monotonic()
    platform.stop(long)
    assert time.monotonic() - started < 5, "stop must not wait long for a task that ignores TERM"


def test_check_answers_quickly_and_says_why(make_platform):
    platform = make_platform(pull="never")
    assert platform.check(container()) is None
    assert platform.check(DockerContainer()) is None  # the kind-only question
    missing = platform.check(container("nowhere.invalid/nothing:1"))
    assert "not on this host" in missing and "does not pull" in missing
    assert "executable.privileged" in platform.check(container(privileged=True))
    assert "docker-container" in platform.check(DockerCompose(compose="services: {}"))
    assert make_platform(pull="missing").check(container("nowhere.invalid/nothing:1")) is None
    assert make_platform(allow={"privileged": True}).check(container(privileged=True)) is None


def test_a_failed_pull_is_a_platform_error(make_platform, tmp_path):
    platform = make_platform(pull="missing")
    with pytest.raises(PlatformError, match=r"could not pull nowhere\.invalid/nothing:1"):
        platform.start(launch(container("nowhere.invalid/nothing:1"), tmp_path))


def test_a_restarted_broker_finds_its_container_and_never_starts_a_second(
    make_platform, engine, broker_name, tmp_path
):
    spec = launch(container(command=["sleep", "30"]), tmp_path)
    handle = make_platform().start(spec)
    again = make_platform()  # a new process: nothing in memory
    assert again.find(spec.session_id) == handle
    assert again.start(spec) == handle
    assert again.find(str(uuids.uuid4())) is None
    label = {"label": [f"execbroker.broker={broker_name}", f"execbroker.session={spec.session_id}"]}
    assert [c.id for c in engine.containers.list(all=True, ignore_removed=True, filters=label)] == [
        handle
    ]


def test_a_container_created_but_not_started_before_a_crash_is_started_by_find(
    make_platform, engine, tmp_path
):
    platform = make_platform()
    spec = launch(container(command=["sleep", "30"]), tmp_path)
    handle = platform.start(spec)
    engine.containers.get(handle).kill()
    created = engine.api.create_container(  # what a crash between create and start leaves
        IMAGE, ["sleep", "30"], labels=engine.containers.get(handle).labels
    )
    platform.release(handle)
    assert platform.find(spec.session_id) == created["Id"]
    assert platform.status(created["Id"]).state == RunState.RUNNING


def _probe_other_session(platform: Any, engine: Any, tmp_path: Path) -> RunState:
    """Start httpd in one session and fetch it by IP address from another session."""
    server = platform.start(launch(container(command=HTTPD), tmp_path))
    wait_state(platform, server, {RunState.RUNNING})
    address = support.address_of(engine, server)
    request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} 8080 | grep -q 200"
    probe = ["sh", "-c", request]  # (this busybox's wget crashes on non-local addresses)
    other = platform.start(launch(container(command=probe), tmp_path))
    return wait_state(platform, other, {RunState.COMPLETED, RunState.FAILED}).state


def test_sessions_cannot_reach_each_other_over_the_network(make_platform, engine, tmp_path):
    assert _probe_other_session(make_platform(), engine, tmp_path) == RunState.FAILED
    # the same probe on docker's shared default bridge does reach: the test can tell
    shared = make_platform(isolate=False)
    assert _probe_other_session(shared, engine, tmp_path) == RunState.COMPLETED


def test_storage_limits_are_honest_about_the_driver(make_platform, engine, tmp_path, caplog):
    platform = make_platform()
    handle = platform.start(launch(container(command=["true"]), tmp_path))
    options = engine.api.inspect_container(handle)["HostConfig"].get("StorageOpt")
    if platform.engine.storage_limits():
        assert options == {"size": "1G"}
    else:
        assert not options
        assert "storage limits are not enforced" in caplog.text


def test_the_sweep_ends_containers_long_past_their_deadline(make_platform, engine, tmp_path):
    platform = make_platform()
    late = platform.start(launch(container(command=["sleep", "30"]), tmp_path, seconds=-120))
    current = platform.start(launch(container(command=["sleep", "30"]), tmp_path))
    assert platform.status(current).state == RunState.RUNNING  # the first status sweeps
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(late)
    assert engine.containers.get(current).status == "running"
