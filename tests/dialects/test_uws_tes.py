"""UWS 1.1 and TES 1.1 over the same sessions, driven by the real pyvo and py-tes clients."""

from __future__ import annotations

import http.server
import threading
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
    job.execution_duration = 100  # answered 303: the held offer now lasts 100 s
    assert job.execution_duration.value == 100  # pyvo's TimeDelta, in seconds
    assert session().get(f"{url}/executionduration").text == "100"
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


def test_uws_executionduration_changes_a_pending_job_within_quota_only(broker):
    url = create_job(broker, script="echo x")
    with broker.client() as client:
        before = int(client.get(f"{url}/executionduration").text)
        changed = client.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "77"})
        assert changed.status_code == 303, changed.text
        assert client.get(f"{url}/executionduration").text == "77"
        quote = client.get(f"{url}/quote").text
        too_long = client.post(url, data={"EXECUTIONDURATION": str(10**8)})
        assert too_long.status_code == 409, too_long.text
        assert "cannot last" in too_long.json()["detail"]
        assert client.get(f"{url}/executionduration").text == "77"  # nothing half-changed
        assert client.get(f"{url}/quote").text == quote
        unlimited = client.post(url, data={"EXECUTIONDURATION": "0"})  # UWS: no limit asked
        assert unlimited.status_code == 303
        assert client.get(f"{url}/executionduration").text == "77"
        bad = client.post(url, data={"EXECUTIONDURATION": "soon"})
        assert bad.status_code == 422 and "executionduration" in bad.text
        assert before != 77
        ran = client.post(url, data={"PHASE": "RUN", "EXECUTIONDURATION": "60"})
        assert ran.status_code == 303
        assert client.get(f"{url}/executionduration").text == "60"
        for _ in range(10):  # blocking WAITs until it has run
            done = client.get(url, params={"WAIT": "10"}).content
            if etree.fromstring(done).findtext("{*}phase") == "COMPLETED":
                break
        later = client.post(url, data={"EXECUTIONDURATION": "90"})
        assert later.status_code == 409, later.text  # it has run: too late to change
        assert client.get(f"{url}/executionduration").text == "60"


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


def test_tes_pages_hold_when_tasks_are_added_and_tokens_are_opaque(broker):
    client = tes_client(broker)
    prefix = "keyset-"

    def make(n: int) -> str:
        executor = tes.Executor(image="busybox:local", command=["true"])
        return client.create_task(tes.Task(name=f"{prefix}{n}", executors=[executor]))

    ids = [make(n) for n in range(3)]
    listed = f"{broker.url}/ga4gh/tes/v1/tasks"
    http = session()
    first = http.get(listed, params={"name_prefix": prefix, "page_size": 2}).json()
    token = first["next_page_token"]
    assert not token.isdigit()  # not an offset a client could compute
    # a task made between two pages neither repeats nor hides one
    ids.append(make(3))
    second = http.get(
        listed, params={"name_prefix": prefix, "page_size": 2, "page_token": token}
    ).json()
    assert [t["id"] for t in first["tasks"] + second["tasks"]] == ids[2::-1]
    assert "next_page_token" not in second
    for forged in ("2", "bm90IGEgdG9rZW4", "W1siYSJdXQ"):
        answer = http.get(listed, params={"page_token": forged})
        assert answer.status_code == 422 and "page_token" in answer.text, answer.text


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


class PutServer:
    """A tiny HTTP server on 127.0.0.1 that keeps what is PUT to it, by path."""

    def __init__(self) -> None:
        self.received: dict[str, bytes] = {}
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                size = int(self.headers.get("content-length", "0"))
                received[self.path] = self.rfile.read(size)
                self.send_response(201)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def put_server():
    server = PutServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def delivering_broker(tmp_path_factory):
    """A local broker that may write under ``out`` and PUT to 127.0.0.1 (tests' server)."""
    directory = tmp_path_factory.mktemp("deliveries")
    (directory / "out" / "alice").mkdir(parents=True)  # the tests' user's own root
    platforms = [{"type": "local", "fetch": {"allow": ["127.0.0.1/32"]}}]
    config = {"tes": {"file_roots": [str(directory / "out" / "{user}")]}, "platforms": platforms}
    with running_broker(directory / "broker", **config) as broker:
        broker.out = directory / "out" / "alice"
        yield broker


# The task's own paths are under $TES_ROOT on a batch platform.
MAKE_OUTPUTS = (
    'tr a-z A-Z < "$TES_ROOT/data/in.txt" > "$TES_ROOT/results/upper.txt" && '
    'mkdir -p "$TES_ROOT/results/tree/sub" && echo a > "$TES_ROOT/results/tree/a.txt" && '
    'echo b > "$TES_ROOT/results/tree/sub/b.txt" && echo "$EXECBROKER_OUTPUTS" > '
    '"$EXECBROKER_OUTPUTS/where.txt"'
)


def test_a_tes_task_s_outputs_are_delivered_by_the_broker(delivering_broker, put_server):
    """The sandboxed task writes its outputs in its own area; once it ends the broker copies
    them to the allowed file:// directory and PUTs one over http, and logs each file."""
    broker, out = delivering_broker, delivering_broker.out
    client = tes_client(broker)
    task = tes.Task(
        inputs=[tes.Input(path="/data/in.txt", content="shout\n")],
        executors=[tes.Executor(image="busybox:local", command=["sh", "-c", MAKE_OUTPUTS])],
        outputs=[
            tes.Output(path="/results/upper.txt", url=f"file://{out}/upper.txt"),
            tes.Output(path="/results/tree", url=f"file://{out}/tree", type="DIRECTORY"),
            tes.Output(path="/results/upper.txt", url=f"{put_server.url}/put/upper.txt"),
        ],
    )
    task_id = client.create_task(task)
    done = client.wait(task_id, timeout=60)
    full = client.get_task(task_id, view="FULL")
    assert done.state == "COMPLETE", full.logs[0].system_logs
    assert (out / "upper.txt").read_text() == "SHOUT\n"
    assert (out / "tree/a.txt").read_text() == "a\n"
    assert (out / "tree/sub/b.txt").read_text() == "b\n"
    assert put_server.received["/put/upper.txt"] == b"SHOUT\n"
    logged = {(item.url, item.path, int(item.size_bytes)) for item in full.logs[0].outputs}
    assert logged == {
        ((out / "upper.txt").as_uri(), "/results/upper.txt", 6),
        ((out / "tree/a.txt").as_uri(), "/results/tree/a.txt", 2),
        ((out / "tree/sub/b.txt").as_uri(), "/results/tree/sub/b.txt", 2),
        (f"{put_server.url}/put/upper.txt", "/results/upper.txt", 6),
    }
    # $EXECBROKER_OUTPUTS is the session's outputs, served as such
    with broker.client() as http_client:
        listed = http_client.get(f"/sessions/{task_id}/outputs").json()["outputs"]
        assert [item["name"] for item in listed] == ["where.txt"], listed


@pytest.mark.parametrize(
    ("command", "wanted", "said"),
    [
        ('ln -s /etc/shadow "$TES_ROOT/results/secret"', "FILE", "not readable as an output"),
        (
            'mkdir -p "$TES_ROOT/results/secret" && ln -s /etc "$TES_ROOT/results/secret/etc"',
            "DIRECTORY",
            "links are never followed",
        ),
        ("true", "FILE", "no such file"),
        ('head -c 3000 /dev/zero > "$TES_ROOT/results/secret"', "FILE", "larger than"),
    ],
)
def test_an_output_the_broker_cannot_deliver_is_a_system_error_naming_it(
    tmp_path, command, wanted, said
):
    """A link is never followed (the broker is root; the task is not), a missing output or
    one past the limit is not half-delivered: SYSTEM_ERROR, saying which output failed."""
    (tmp_path / "out" / "alice").mkdir(parents=True)
    roots = [str(tmp_path / "out" / "{user}")]
    config = {"tes": {"file_roots": roots, "max_output_bytes": 2000}}
    with running_broker(tmp_path / "broker", **config) as broker:
        client = tes_client(broker)
        target = tmp_path / "out" / "alice" / "secret"
        task = tes.Task(
            executors=[tes.Executor(image="busybox:local", command=["sh", "-c", command])],
            outputs=[tes.Output(path="/results/secret", url=target.as_uri(), type=wanted)],
        )
        done = client.wait(client.create_task(task), timeout=60)
        full = client.get_task(done.id, view="FULL")
        assert done.state == "SYSTEM_ERROR", full.logs[0].system_logs
        failures = [line for line in full.logs[0].system_logs if "outputs[0]" in line]
        assert failures and said in failures[0], full.logs[0].system_logs
        assert not any((tmp_path / "out" / "alice").iterdir())
        assert full.logs[0].outputs == []


def test_tes_output_paths_and_urls_are_checked_at_create(delivering_broker):
    http = session()
    url = f"{delivering_broker.url}/ga4gh/tes/v1/tasks"
    executors = [{"image": "busybox:local", "command": ["true"]}]
    for field, output in [
        ("outputs[0].path", {"path": "../escape", "url": delivering_broker.out.as_uri()}),
        ("outputs[0].path", {"path": "/a/../../b", "url": delivering_broker.out.as_uri()}),
        ("outputs[0].url", {"path": "/a", "url": "file:///etc/passwd"}),
    ]:
        answer = http.post(url, json={"executors": executors, "outputs": [output]})
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field, answer.text


def test_tes_http_inputs_and_outputs_are_checked_against_the_fetch_rules_at_create(broker):
    """A URL the broker's fetch rules refuse (metadata, loopback) is a 400 naming the field,
    and no task is made."""
    http = session()
    url = f"{broker.url}/ga4gh/tes/v1/tasks"
    before = len(http.get(url, params={"name_prefix": "fetch-rules"}).json()["tasks"])
    executors = [{"image": "busybox:local", "command": ["true"]}]
    cases = [
        (
            "inputs[1].url",
            {
                "inputs": [
                    {"path": "/a", "content": "x"},
                    {"path": "/b", "url": "http://169.254.169.254/latest/meta-data/"},
                ]
            },
        ),
        ("inputs[0].url", {"inputs": [{"path": "/a", "url": "http://127.0.0.1:8080/x"}]}),
        ("outputs[0].url", {"outputs": [{"path": "/o", "url": "https://[::1]/up"}]}),
    ]
    for field, part in cases:
        answer = http.post(url, json={"name": "fetch-rules", "executors": executors, **part})
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"] == field, answer.text
        assert "address" in answer.json()["detail"]
    assert len(http.get(url, params={"name_prefix": "fetch-rules"}).json()["tasks"]) == before
