"""Jupyter notebooks on the ``docker`` platform, through real broker processes on the real
Docker Engine, in the ``execbroker/python:local`` image: the same notebook as on the local
platform, a failing cell, a live server behind its token, and how files go in and out."""

from __future__ import annotations

import json
import time
import uuid as uuids
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from execbroker.model.executables import JupyterNotebook
from execbroker.platforms import docker as docker_platform
from execbroker.platforms import docker_engine
from execbroker.platforms.base import LaunchSpec, RunState, RunStatus
from tests.brokers import accept, running_broker, update, wait_for_phase
from tests.notebooks.notebooks import notebook, notebook_request
from tests.platforms.support import launch, remove_labelled, session_containers

pytestmark = pytest.mark.docker

IMAGE = "execbroker/python:local"
EXAMPLE = Path(__file__).parents[2] / "examples" / "tasks" / "notebook-batch.yaml"
EXPECTED = "sum of primes below 20000: 21171191 (2262 primes)\n"
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture(scope="module")
def docker_broker(engine, tmp_path_factory):
    name = f"t-{uuids.uuid4().hex[:10]}"
    config = {"name": name, "platforms": [{"type": "docker", "pull": "never"}]}
    try:
        with running_broker(tmp_path_factory.mktemp("docker-notebooks"), **config) as broker:
            yield broker
    finally:
        remove_labelled(engine, name)


def _accepted(client: httpx.Client, body: bytes | dict[str, Any]) -> tuple[str, float]:
    """Ask, accept the first offer; the session and when it was accepted."""
    if isinstance(body, bytes):
        answer = client.post(
            "/requests", content=body, headers={"Content-Type": "application/yaml"}
        )
    else:
        answer = client.post("/requests", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "YES", answer.json()["meta"]["messages"]
    uuid = answer.json()["offers"][0]["meta"]["uuid"]
    assert accept(client, uuid).status_code == 200
    return uuid, time.monotonic()


def _executed(client: httpx.Client, uuid: str, name: str = "notebook.ipynb") -> dict[str, Any]:
    listed = client.get(f"/sessions/{uuid}/outputs").raise_for_status().json()["outputs"]
    assert name in [item["name"] for item in listed], listed
    fetched = client.get(f"/sessions/{uuid}/outputs/{name}")
    assert fetched.status_code == 200
    return fetched.json()


def _stdout(cell: dict[str, Any]) -> str:
    return "".join("".join(out["text"]) for out in cell["outputs"] if out.get("name") == "stdout")


def _last(session: dict[str, Any]) -> str:
    return session["meta"]["messages"][-1]["message"]


def test_the_example_notebook_completes_on_local_and_on_docker_with_the_same_output(
    docker_broker, engine, tmp_path
):
    body = EXAMPLE.read_bytes()
    seconds = {}
    with running_broker(tmp_path) as local:
        for label, broker in (("local", local), ("docker", docker_broker)):
            with broker.client() as client:
                uuid, accepted = _accepted(client, body)
                done = wait_for_phase(client, uuid, FINAL, timeout=60)
                seconds[label] = time.monotonic() - accepted
                assert done["phase"] == "COMPLETED", (label, done["meta"]["messages"])
                assert "executed 3 cells" in _last(done)
                executed = _executed(client, uuid)
                injected = executed["cells"][1]
                assert "injected-parameters" in injected["metadata"]["tags"]
                assert "limit = 20000" in "".join(injected["source"])
                assert _stdout(executed["cells"][-1]) == EXPECTED, label
                assert EXPECTED in client.get(f"/sessions/{uuid}/logs").json()["stdout"]
        # released just after its session ends (the end is recorded first, so a crash in
        # between leaves a container to re-adopt, never a session without its task)
        deadline = time.monotonic() + 15
        while session_containers(engine, docker_broker.name, uuid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_containers(engine, docker_broker.name, uuid) == [], "released when it ended"
    print(
        f"\naccept -> COMPLETED, tiny notebook: local {seconds['local']:.1f} s, "
        f"docker {seconds['docker']:.1f} s"
    )


def test_a_failing_cell_fails_the_docker_session_with_the_cell_and_its_error(docker_broker):
    content = notebook("value = 7", "ratio = value / 0", "print('never')")
    with docker_broker.client() as client:
        uuid, _ = _accepted(client, notebook_request(content))
        done = wait_for_phase(client, uuid, FINAL, timeout=60)
        assert done["phase"] == "FAILED"
        message = _last(done)
        for part in ("cell 1", "In [2]", "ZeroDivisionError", "ratio = value / 0"):
            assert part in message, message
        executed = _executed(client, uuid)  # the notebook up to the failure came back too
        outputs = [o for cell in executed["cells"] for o in cell.get("outputs", [])]
        errors = [o for o in outputs if o["output_type"] == "error"]
        assert errors and errors[0]["ename"] == "ZeroDivisionError"


def test_an_interactive_notebook_is_served_behind_its_token_until_cancelled(docker_broker, engine):
    content = notebook("print(x)", parameters="x = 1")
    body = notebook_request(content, mode="interactive", parameters={"x": 5}, duration="PT5M")
    with docker_broker.client() as client:
        uuid, _ = _accepted(client, body)
        session = wait_for_phase(client, uuid, {"AVAILABLE", *FINAL}, timeout=60)
        assert session["phase"] == "AVAILABLE", session["meta"]["messages"]
        (connector,) = session["connectors"]
        location, _, token = connector["location"].partition("?token=")
        base = location.rstrip("/")
        assert connector["protocol"] == "HTTP" and base.startswith("http://127.0.0.1:")
        assert len(token) >= 40
        assert httpx.get(f"{base}/api/status").status_code == 403
        assert httpx.get(f"{base}/api/status", params={"token": token[:-1]}).status_code == 403
        assert httpx.get(f"{base}/api/status", params={"token": token}).status_code == 200
        assert httpx.get(connector["location"], follow_redirects=True).status_code == 200

        (container,) = session_containers(engine, docker_broker.name, uuid)
        inspected = engine.api.inspect_container(container.id)
        host = inspected["HostConfig"]
        assert inspected["Mounts"] == [] and not host["Binds"], "files are copied, not mounted"
        assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"]
        assert host["NanoCpus"] == 1_000_000_000 and host["Memory"] == 1024**3

        # The notebook, with its parameters, is open; what the user saves there is kept.
        path = f"{base}/api/contents/notebook.ipynb"
        opened = httpx.get(path, params={"token": token}).raise_for_status().json()["content"]
        assert any("x = 5" in "".join(cell["source"]) for cell in opened["cells"])
        opened["cells"].append({**opened["cells"][-1], "id": "mine", "source": "print('mine')"})
        saved = {"type": "notebook", "format": "json", "content": opened}
        assert httpx.put(path, params={"token": token}, json=saved).status_code == 200

        assert update(client, uuid, "CANCELLED").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/api/status", params={"token": token}, timeout=2)
        assert session_containers(engine, docker_broker.name, uuid) == []
        assert wait_for_phase(client, uuid, FINAL)["phase"] == "CANCELLED"
        kept = _executed(client, uuid)
        assert "print('mine')" in ["".join(cell["source"]) for cell in kept["cells"]]


# -- the platform itself -----------------------------------------------------------------


@pytest.fixture
def make_platform(engine, tmp_path) -> Iterator[Callable[..., docker_platform.DockerPlatform]]:
    name = f"t-{uuids.uuid4().hex[:10]}"

    def make(**options: Any) -> docker_platform.DockerPlatform:
        broker = SimpleNamespace(name=name, state_path=tmp_path / "state")
        return docker_platform.create(options, broker=broker)

    yield make
    remove_labelled(engine, name)


def _launch(executable: JupyterNotebook, tmp_path: Path) -> LaunchSpec:
    return launch(executable, tmp_path, seconds=120)


def _wait_final(platform: Any, handle: str, timeout: float = 60) -> RunStatus:
    deadline = time.monotonic() + timeout
    status = platform.status(handle)
    while not status.state.final and time.monotonic() < deadline:
        time.sleep(0.1)
        status = platform.status(handle)
    assert status.state.final, status
    return status


def test_check_knows_the_image_and_its_one_kernel(make_platform):
    platform = make_platform(pull="never")
    batch = JupyterNotebook(notebook=notebook("1"))
    assert platform.check(batch) is None
    assert platform.check(JupyterNotebook()) is None  # the kind-only question
    assert platform.check(batch.model_copy(update={"mode": "interactive"})) is None
    other = platform.check(batch.model_copy(update={"kernel": "ir"}))
    assert "no Jupyter kernel 'ir'" in other
    missing = make_platform(pull="never", notebook_image="nowhere.invalid/jupyter:1").check(batch)
    assert "notebook image nowhere.invalid/jupyter:1 is not on this host" in missing
    assert "no notebook_image" in make_platform(notebook_image=None).check(batch)


def test_outputs_come_back_as_plain_files_under_a_byte_limit(make_platform, engine, tmp_path):
    writes = (
        "import os\n"
        "open('small.txt', 'w').write('kept')\n"
        "open('big.bin', 'wb').write(os.urandom(3 * 1024 * 1024))\n"
        "os.symlink('/etc/passwd', 'link')\n"
        "os.mkdir('sub')\n"
        "open('sub/inner.txt', 'w').write('not an output')\n"
    )
    platform = make_platform(notebook_outputs_limit=8 * 1024 * 1024)
    spec = _launch(JupyterNotebook(notebook=notebook(writes)), tmp_path)
    handle = platform.start(spec)
    assert _wait_final(platform, handle).state == RunState.COMPLETED
    outputs = spec.workdir / "outputs"
    assert sorted(path.name for path in outputs.iterdir()) == [
        "big.bin",
        "notebook.ipynb",
        "small.txt",
    ]
    # The same container's outputs, read under a limit they exceed: never more than it.
    container = engine.containers.get(handle)
    smaller = tmp_path / "smaller"
    copied = docker_engine.copy_out(container, "/session/outputs", smaller, limit=1024 * 1024)
    assert "big.bin" not in copied and sorted(p.name for p in smaller.iterdir()) == sorted(copied)
    assert docker_engine.read_file(container, "/session/outputs/big.bin", limit=1024) is None
    assert docker_engine.read_file(container, "/session/outputs/small.txt") == b"kept"
    platform.release(handle)
    assert engine.containers.list(all=True, ignore_removed=True, filters={"id": handle}) == []


def test_a_notebook_container_created_before_a_crash_gets_its_files_when_found(
    make_platform, engine, tmp_path
):
    platform = make_platform()
    spec = _launch(JupyterNotebook(notebook=notebook("print(6 * 7)")), tmp_path)
    first = engine.containers.get(platform.start(spec))
    first.kill()
    created = engine.api.create_container(  # what a crash between create and start leaves
        IMAGE, first.attrs["Config"]["Cmd"], labels=first.labels, working_dir="/session"
    )
    platform.release(first.id)
    (spec.workdir / "outputs" / "notebook.ipynb").unlink(missing_ok=True)
    restarted = make_platform()  # a new process: nothing in memory
    assert restarted.find(spec.session_id) == created["Id"]
    assert _wait_final(restarted, created["Id"]).state == RunState.COMPLETED
    executed = json.loads((spec.workdir / "outputs" / "notebook.ipynb").read_text())
    assert _stdout(executed["cells"][0]) == "42\n"
