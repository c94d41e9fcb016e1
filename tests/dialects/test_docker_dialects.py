"""The dialects on the real Docker Engine: the seeds' "image → RUN → endpoint" through pyvo,
and a TES task whose executors run in order in one container."""

from __future__ import annotations

import io
import uuid as uuids

import httpx
import pytest
import tes
from pyvo.dal import AsyncTAPJob

from tests.brokers import running_broker
from tests.dialects.test_uws_tes import create_job, session, tes_client, valid
from tests.platforms.support import remove_labelled

pytestmark = pytest.mark.docker

# An image that only declares its port (EXPOSE 8080) and serves on it by default.
DOCKERFILE = b'FROM busybox:local\nEXPOSE 8080\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'


@pytest.fixture(scope="module")
def web_image(engine):
    tag = f"execbroker-test/uws-web:{uuids.uuid4().hex[:8]}"
    engine.images.build(fileobj=io.BytesIO(DOCKERFILE), tag=tag, rm=True)
    try:
        yield tag
    finally:
        engine.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def docker_broker(engine, tmp_path_factory):
    name = f"t-{uuids.uuid4().hex[:10]}"
    roots = tmp_path_factory.mktemp("docker-outputs")
    out = roots / "alice"  # the tests' user's own root
    out.mkdir()
    config = {
        "name": name,
        "platforms": [{"type": "docker", "pull": "never"}],
        "tes": {"file_roots": [str(roots / "{user}")]},
    }
    try:
        with running_broker(tmp_path_factory.mktemp("docker-dialects"), **config) as broker:
            broker.out = out
            yield broker
    finally:
        remove_labelled(engine, name)


def test_a_uws_job_naming_only_an_image_reports_its_url(docker_broker, web_image):
    url = create_job(docker_broker, image=web_image, PHASE="RUN")
    job = AsyncTAPJob(url, session=session())
    job.wait(phases={"EXECUTING"}, timeout=60)
    endpoints = [uri for uri in job.result_uris if uri.startswith("http://127.0.0.1")]
    for _ in range(50):  # AVAILABLE (and its connector) once the port answers
        if endpoints:
            break
        job.wait(phases={"EXECUTING"}, timeout=5)
        endpoints = [uri for uri in job.result_uris if uri.startswith("http://127.0.0.1")]
    assert endpoints, job.result_uris
    assert httpx.get(endpoints[0], timeout=10).status_code == 200
    with docker_broker.client() as client:
        valid(client.get(url).content)
    job.delete()
    with docker_broker.client() as client:
        session_id = url.rsplit("/", 1)[1]
        assert client.get(f"/sessions/{session_id}").json()["phase"] == "CANCELLED"


def test_tes_executors_run_in_order_in_the_image(docker_broker):
    client = tes_client(docker_broker)
    task_id = client.create_task(
        tes.Task(
            inputs=[tes.Input(path="/data/in.txt", content="from the input\n")],
            executors=[
                tes.Executor(image="busybox:local", command=["cat", "/data/in.txt"]),
                tes.Executor(
                    image="busybox:local",
                    command=["sh", "-c", "echo $GREETING"],
                    env={"GREETING": "hello; rm -rf /"},
                    ignore_error=True,
                ),
                tes.Executor(image="busybox:local", command=["false"], ignore_error=True),
                tes.Executor(image="busybox:local", command=["echo", "last"]),
            ],
        )
    )
    assert client.wait(task_id, timeout=60).state == "COMPLETE"
    logs = client.get_task(task_id, view="FULL").logs[0].logs
    assert [log.exit_code for log in logs] == [0, 0, 1, 0]
    assert [log.stdout for log in logs] == ["from the input", "hello; rm -rf /", "", "last"]


@pytest.mark.parametrize(("ignore_error", "ran"), [(False, 1), (True, 2)])
def test_a_tes_task_shows_the_executors_it_ran_when_first_read(docker_broker, ignore_error, ran):
    """As the TES compliance suite reads it: a GET right after the create sees the executors
    that have run, each with its exit code (the first is no command at all)."""
    body = {
        "name": "CompTest",
        "executors": [
            {"image": "busybox:local", "command": ["ERROR"], "ignore_error": ignore_error},
            {"image": "busybox:local", "command": ["echo", "hello"]},
        ],
    }
    http = session()
    url = f"{docker_broker.url}/ga4gh/tes/v1/tasks"
    created = http.post(url, json=body)
    assert created.status_code == 200, created.text
    task = http.get(f"{url}/{created.json()['id']}", params={"view": "FULL"}).json()
    logs = task["logs"][0]["logs"]
    assert len(logs) == ran, task
    assert logs[0]["exit_code"] == 127 and logs[0]["start_time"].endswith("Z")
    if ran == 2:
        assert logs[1]["exit_code"] == 0 and logs[1]["stdout"] == "hello"


def test_tes_paths_are_the_container_s_and_its_outputs_are_copied_out(docker_broker):
    """In a container the task's input and output paths are where the executors see them;
    the broker copies the outputs out of the ended container and delivers them."""
    out = docker_broker.out
    client = tes_client(docker_broker)
    script = (
        "mkdir -p /results/tree && tr a-z A-Z < /data/in.txt > /results/upper.txt && "
        "echo a > /results/tree/a.txt && "
        'echo "$EXECBROKER_OUTPUTS" > "$EXECBROKER_OUTPUTS/where.txt"'
    )
    task_id = client.create_task(
        tes.Task(
            inputs=[tes.Input(path="/data/in.txt", content="loud\n")],
            executors=[tes.Executor(image="busybox:local", command=["sh", "-c", script])],
            outputs=[
                tes.Output(path="/results/upper.txt", url=f"file://{out}/upper.txt"),
                tes.Output(path="/results/tree", url=f"file://{out}/tree", type="DIRECTORY"),
            ],
        )
    )
    done = client.wait(task_id, timeout=60)
    full = client.get_task(task_id, view="FULL")
    assert done.state == "COMPLETE", full.logs[0].system_logs
    assert (out / "upper.txt").read_text() == "LOUD\n"
    assert (out / "tree/a.txt").read_text() == "a\n"
    assert {item.path for item in full.logs[0].outputs} == {
        "/results/upper.txt",
        "/results/tree/a.txt",
    }
    with docker_broker.client() as http:
        listed = http.get(f"/sessions/{task_id}/outputs").json()["outputs"]
        assert [item["name"] for item in listed] == ["where.txt"], listed
        where = http.get(f"/sessions/{task_id}/outputs/where.txt").text
        assert where.strip() == "/session/outputs"


def test_a_link_in_a_container_s_output_is_never_followed(docker_broker):
    out = docker_broker.out
    client = tes_client(docker_broker)
    script = "mkdir -p /results && ln -s /etc/passwd /results/secret"
    task_id = client.create_task(
        tes.Task(
            executors=[tes.Executor(image="busybox:local", command=["sh", "-c", script])],
            outputs=[tes.Output(path="/results/secret", url=f"file://{out}/secret")],
        )
    )
    done = client.wait(task_id, timeout=60)
    logs = client.get_task(task_id, view="FULL").logs[0].system_logs
    assert done.state == "SYSTEM_ERROR", logs
    assert any("outputs[0]" in line and "link" in line for line in logs), logs
    assert not (out / "secret").exists()


def test_a_tes_task_cancelled_right_after_its_create_is_canceled(docker_broker):
    """As the compliance suite's cancel check: a task that would end at once, cancelled as
    soon as it is made, is CANCELED (the create does not wait for it to start)."""
    http = session()
    url = f"{docker_broker.url}/ga4gh/tes/v1/tasks"
    body = {"executors": [{"image": "busybox:local", "command": ["echo", "hello"]}]}
    for _ in range(3):
        task_id = http.post(url, json=body).json()["id"]
        assert http.post(f"{url}/{task_id}:cancel").status_code == 200
        client = tes_client(docker_broker)
        assert client.wait(task_id, timeout=30).state == "CANCELED"
