"""UWS 1.1 and TES 1.1 over the same sessions, driven by the real pyvo and py-tes clients."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import requests
import tes
from lxml import etree
from pyvo.dal import AsyncTAPJob

from tests.brokers import running_broker

SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parents[1] / "data/uws/UWS-local.xsd")))


def valid(text: bytes) -> etree._Element:
    document = etree.fromstring(text)
    SCHEMA.assertValid(document)
    return document


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory.mktemp("dialects")) as process:
        yield process


def session(token: str = "demo-alice") -> requests.Session:
    found = requests.Session()
    found.headers["Authorization"] = f"Bearer {token}"
    return found


def create_job(broker, **params: str) -> str:
    with broker.client() as client:
        answer = client.post("/uws/jobs", data=params)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


def test_a_uws_job_runs_through_pyvo_and_every_document_is_valid(broker):
    url = create_job(broker, script="echo hello from uws", RUNID="run-1")
    job = AsyncTAPJob(url, session=session())
    assert job.phase == "PENDING"
    assert job.execution_duration > 0
    assert job.destruction is not None
    job.execution_duration = 100  # answered 303; the offer keeps its own duration
    job.run()
    job.wait(timeout=60)
    assert job.phase == "COMPLETED"
    stdout = [uri for uri in job.result_uris if uri.endswith("/results/stdout")]
    assert session().get(stdout[0]).text.strip() == "hello from uws"
    with broker.client() as client:
        document = valid(client.get(url).content)
        assert document.findtext("{*}runId") == "run-1"
        assert document.findtext("{*}ownerId") == "alice"
        assert document.findtext("{*}creationTime").endswith("Z")
        for part in ("parameters", "results"):
            valid(client.get(f"{url}/{part}").content)
        valid(client.get("/uws/jobs").content)
        valid(client.get("/uws/jobs", params={"PHASE": "COMPLETED", "LAST": "1"}).content)
        assert client.get(f"{url}/phase").text == "COMPLETED"
    job.delete()
    with broker.client() as client:
        assert client.get(url).status_code == 404
        assert url.rsplit("/", 1)[1] not in client.get("/uws/jobs").text


def test_uws_no_is_an_error_and_another_users_job_is_forbidden(broker):
    url = create_job(broker, script="echo x", cores="64")
    with broker.client() as client:
        document = valid(client.get(url).content)
    assert document.findtext("{*}phase") == "ERROR"
    assert document.find("{*}errorSummary/{*}message").text
    with broker.client("demo-bob") as client:
        assert client.get(url).status_code == 403
        assert client.post(url, data={"PHASE": "ABORT"}).status_code == 403
    with broker.client() as client:
        assert client.post("/uws/jobs", data={"image": "x", "script": "y"}).status_code == 422
        assert client.post("/uws/jobs", data={"colour": "red"}).json()["field"] == "colour"


def test_uws_wait_blocks_while_pending_and_returns_once_it_changes(broker):
    url = create_job(broker, script="sleep 30")
    with broker.client() as client:
        answer = client.get(url, params={"WAIT": "1"})
        assert valid(answer.content).findtext("{*}phase") == "PENDING"
        assert answer.elapsed.total_seconds() >= 0.9
        answer = client.get(url, params={"WAIT": "5", "PHASE": "QUEUED"})  # not its phase
        assert answer.elapsed.total_seconds() < 0.9
        assert client.post(url, data={"PHASE": "ABORT"}).status_code == 303
        assert valid(client.get(url).content).findtext("{*}phase") == "ABORTED"


def tes_client(broker, user: str = "alice", token: str = "demo-alice") -> tes.HTTPClient:
    return tes.HTTPClient(f"{broker.url}/ga4gh/tes", user=user, password=token, timeout=30)


def test_a_tes_task_runs_its_executors_in_order_through_py_tes(broker):
    client = tes_client(broker)
    task = tes.Task(
        name="two-steps",
        tags={"project": "dialects"},
        inputs=[tes.Input(path="/data/in.txt", content="some input\n")],
        executors=[
            # On a batch platform a task's paths are under $TES_ROOT, not the host's root.
            tes.Executor(
                image="busybox:local", command=["sh", "-c", 'cat "$TES_ROOT/data/in.txt"']
            ),
            tes.Executor(image="busybox:local", command=["sh", "-c", "echo second; exit 3"]),
            tes.Executor(image="busybox:local", command=["echo", "never"]),
        ],
        resources=tes.Resources(cpu_cores=1, ram_gb=1),
    )
    task_id = client.create_task(task)
    done = client.wait(task_id, timeout=60)
    assert done.state == "EXECUTOR_ERROR"
    full = client.get_task(task_id, view="FULL")
    logs = full.logs[0].logs
    assert [log.exit_code for log in logs] == [0, 3]
    assert "some input" in logs[0].stdout and logs[1].stdout == "second"
    basic = client.get_task(task_id, view="BASIC")
    assert basic.name == "two-steps" and basic.logs[0].logs[0].stdout is None
    assert client.get_task(task_id, view="MINIMAL").name is None
    # The same session through the other dialects.
    with broker.client() as http:
        assert http.get(f"/sessions/{task_id}").json()["phase"] == "FAILED"
        assert valid(http.get(f"/uws/jobs/{task_id}").content).findtext("{*}phase") == "ERROR"


def test_tes_lists_in_pages_filters_and_cancels(broker):
    client = tes_client(broker)
    ids = [
        client.create_task(
            tes.Task(
                name=f"page-{n}",
                tags={"batch": "p"},
                executors=[tes.Executor(image="busybox:local", command=["sleep", "30"])],
            )
        )
        for n in range(3)
    ]
    first = client.list_tasks(view="MINIMAL", page_size=2)
    assert len(first.tasks) == 2 and first.next_page_token
    second = client.list_tasks(view="BASIC", page_size=2, page_token=first.next_page_token)
    assert [t.id for t in first.tasks + second.tasks][:3] == ids[::-1]  # newest first
    listed = f"{broker.url}/ga4gh/tes/v1/tasks"
    http = session()
    named = http.get(listed, params={"name_prefix": "page-", "view": "BASIC"}).json()["tasks"]
    assert {t["id"] for t in named} == set(ids)
    tagged = http.get(listed, params={"tag_key": "batch", "tag_value": "p"}).json()["tasks"]
    assert {t["id"] for t in tagged} == set(ids)
    wrong = http.get(listed, params={"tag_key": "batch", "tag_value": "q"}).json()["tasks"]
    assert wrong == []
    for task_id in ids:
        client.cancel_task(task_id)
        assert client.wait(task_id, timeout=30).state == "CANCELED"
    other = tes_client(broker, "bob", "demo-bob")
    with pytest.raises(requests.HTTPError):
        other.get_task(ids[0])
    assert httpx.get(f"{broker.url}/ga4gh/tes/v1/tasks").status_code == 401


def test_tes_backend_parameters_are_refused_only_when_strict(broker):
    def task(strict: bool) -> dict:
        return {
            "executors": [{"image": "busybox:local", "command": ["true"]}],
            "resources": {
                "backend_parameters": {"VmSize": "big"},
                "backend_parameters_strict": strict,
            },
        }

    http = session()
    url = f"{broker.url}/ga4gh/tes/v1/tasks"
    refused = http.post(url, json=task(True))
    assert refused.status_code == 400 and "backend_parameters" in refused.json()["field"]
    assert http.post(url, json=task(False)).status_code == 200
    info = http.get(f"{broker.url}/ga4gh/tes/v1/service-info").json()
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
