"""Notebooks through a real broker on the local platform: run to completion and fetch the
executed notebook, fail with the cell's error, serve a live Jupyter server behind its token
until cancelled or the grant ends, and refuse what is not a notebook."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.brokers import running_broker, update, wait_for_phase
from tests.notebooks.notebooks import notebook, notebook_request

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    # The test web server is on 127.0.0.1, which a platform fetches from only when told to.
    platforms = [{"type": "local", "fetch": {"allow": ["127.0.0.1/32"]}}]
    with running_broker(tmp_path_factory.mktemp("notebooks"), platforms=platforms) as broker:
        yield broker


@pytest.fixture
def client(broker):
    with broker.client() as client:
        yield client


def _start(client: httpx.Client, body: dict[str, Any]) -> str:
    answer = client.post("/direct", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["meta"]["uuid"]


def _output(client: httpx.Client, uuid: str, name: str = "notebook.ipynb") -> dict[str, Any]:
    listed = client.get(f"/sessions/{uuid}/outputs").raise_for_status().json()["outputs"]
    assert name in [item["name"] for item in listed]
    fetched = client.get(f"/sessions/{uuid}/outputs/{name}")
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "application/x-ipynb+json"
    return fetched.json()


def _stdout(cell: dict[str, Any]) -> str:
    return "".join("".join(out["text"]) for out in cell["outputs"] if out.get("name") == "stdout")


def _last(session: dict[str, Any]) -> str:
    return session["meta"]["messages"][-1]["message"]


def test_a_parameterised_notebook_runs_and_the_executed_notebook_is_fetched(client, broker):
    content = notebook("print('answer', x * 2, greeting)", parameters="x = 1\ngreeting = 'hi'")
    started = time.monotonic()
    uuid = _start(client, notebook_request(content, parameters={"x": 21, "greeting": "hello"}))
    done = wait_for_phase(client, uuid, FINAL, timeout=60)
    seconds = time.monotonic() - started
    assert done["phase"] == "COMPLETED", done["meta"]["messages"]
    assert "executed 3 cells" in _last(done)
    print(f"tiny notebook: /direct to COMPLETED in {seconds:.1f} s")
    executed = _output(client, uuid)
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"]["tags"]]
    assert len(injected) == 1 and "x = 21" in "".join(injected[0]["source"])
    assert _stdout(executed["cells"][-1]) == "answer 42 hello\n"
    # Someone else's outputs are not theirs to read.
    with broker.client("demo-bob") as bob:
        assert bob.get(f"/sessions/{uuid}/outputs").status_code == 403
        assert bob.get(f"/sessions/{uuid}/outputs/notebook.ipynb").status_code == 403
    assert client.get(f"/sessions/{uuid}/outputs/missing.ipynb").status_code == 404


def test_a_failing_cell_fails_the_session_with_the_cell_and_its_error(client):
    content = notebook("value = 7", "ratio = value / 0", "print('never')")
    uuid = _start(client, notebook_request(content))
    done = wait_for_phase(client, uuid, FINAL, timeout=60)
    assert done["phase"] == "FAILED"
    message = _last(done)
    for part in ("cell 1", "In [2]", "ZeroDivisionError", "division by zero", "ratio = value / 0"):
        assert part in message, message
    assert done["meta"]["messages"][-1]["level"] == "ERROR"
    executed = _output(client, uuid)  # the notebook up to the failure is still there
    errors = [
        o for c in executed["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    assert errors and errors[0]["ename"] == "ZeroDivisionError"


def test_a_notebook_at_a_location_is_fetched_at_start_and_keeps_its_name(client, web):
    web["/work/analysis.ipynb"] = json.dumps(notebook("print(6 * 7)")).encode()
    found = _start(client, notebook_request(location=web.url("/work/analysis.ipynb")))
    # Offers are made without fetching: a location that will not answer still gets one,
    # and fails at start saying why.
    missing = _start(client, notebook_request(location=web.url("/gone.ipynb")))
    failed = wait_for_phase(client, missing, FINAL, timeout=60)
    assert failed["phase"] == "FAILED" and "HTTP 404" in _last(failed)
    assert wait_for_phase(client, found, FINAL, timeout=60)["phase"] == "COMPLETED"
    assert _stdout(_output(client, found, "analysis.ipynb")["cells"][0]) == "42\n"


def _server(session: dict[str, Any]) -> tuple[str, str]:
    """The server's base URL and token, from the session's connector."""
    (connector,) = session["connectors"]
    assert connector["protocol"] == "HTTP"
    location, _, token = connector["location"].partition("?token=")
    base = location.split("/lab/", 1)[0].rstrip("/")
    return base, token


def _processes_in(workdir: Path) -> list[str]:
    """Command lines of live processes of ``workdir``'s session (runner, server, kernels):
    naming it, or (inside the local sandbox, where it is ``/task``) carrying its id."""
    found = []
    session = f"EXECBROKER_SESSION={workdir.name}\0".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            ours = str(workdir) in command or session in (entry / "environ").read_bytes()
        except (OSError, IndexError):
            continue
        if ours and state != "Z":
            found.append(command)
    return found


def test_an_interactive_session_serves_jupyter_behind_its_token_until_cancelled(client, broker):
    content = notebook("print(x)", parameters="x = 1")
    uuid = _start(client, notebook_request(content, mode="interactive", parameters={"x": 5}))
    session = wait_for_phase(client, uuid, {"AVAILABLE", *FINAL}, timeout=60)
    assert session["phase"] == "AVAILABLE", session["meta"]["messages"]
    base, token = _server(session)
    assert base.startswith("http://127.0.0.1:") and len(token) >= 40
    assert httpx.get(f"{base}/api/status", params={"token": token}).status_code == 200
    assert httpx.get(f"{base}/api/status").status_code == 403
    assert httpx.get(f"{base}/api/status", params={"token": token[:-1]}).status_code == 403
    # The notebook, with its parameters, is open in the server's root.
    opened = httpx.get(f"{base}/api/contents/notebook.ipynb", params={"token": token})
    assert opened.status_code == 200
    sources = ["".join(cell["source"]) for cell in opened.json()["content"]["cells"]]
    assert any("x = 5" in source for source in sources)
    kernel = httpx.post(f"{base}/api/kernels", params={"token": token}, json={"name": "python3"})
    assert kernel.status_code == 201
    workdir = broker.directory / "state" / "sessions" / uuid
    assert len(_processes_in(workdir)) >= 3  # runner, server, kernel

    assert update(client, uuid, "CANCELLED").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/api/status", params={"token": token}, timeout=2)
    deadline = time.monotonic() + 5
    while _processes_in(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_in(workdir) == []  # the kernel went with the server
    assert wait_for_phase(client, uuid, FINAL)["phase"] == "CANCELLED"


def test_the_end_of_the_grant_ends_a_server_well_and_a_batch_run_badly(client):
    # 20 s: room for the server to come up on a loaded 2-core machine (it has taken over 10 s)
    # before the runner's stop margin.
    serving = _start(client, notebook_request(notebook("1"), mode="interactive", duration="PT20S"))
    slow = notebook("import time\ntime.sleep(60)")
    running = _start(client, notebook_request(slow, duration="PT8S"))
    up = wait_for_phase(client, serving, {"AVAILABLE", *FINAL}, timeout=40)
    assert up["phase"] == "AVAILABLE", up["meta"]["messages"]
    base, token = _server(up)
    ended = wait_for_phase(client, serving, FINAL, timeout=40)
    # The runner stops the server a little before the end; the monitor releases it at the
    # end, whichever sees it first: either way its time was used as granted.
    assert ended["phase"] == "COMPLETED", _last(ended)
    assert "granted time is over" in _last(ended) or "released at the end" in _last(ended)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/api/status", params={"token": token}, timeout=2)
    overrun = wait_for_phase(client, running, FINAL, timeout=30)
    assert overrun["phase"] == "FAILED" and "granted time ran out" in _last(overrun)


@pytest.mark.parametrize(
    "bad",
    [
        {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": "none"},
        {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []},
        {"cells": []},
    ],
)
def test_an_invalid_notebook_is_refused_with_422_naming_the_field(client, bad):
    before = len(client.get("/sessions").json()["sessions"])
    for path in ("/requests", "/direct"):
        answer = client.post(path, json=notebook_request(bad))
        assert answer.status_code == 422, answer.text
        fields = [problem["field"] for problem in answer.json()["errors"]]
        assert fields == ["body.executable.notebook"], answer.json()
        assert "nbformat" in answer.json()["detail"]
    assert len(client.get("/sessions").json()["sessions"]) == before


def test_the_broker_says_it_runs_notebooks_and_which_kernels(client):
    kinds = [item["alias"] for item in client.get("/info").json()["kinds"]]
    assert "jupyter-notebook" in kinds and "batch-script" in kinds
    body = notebook_request(notebook("1"))
    body["executable"]["kernel"] = "no-such-kernel"
    answer = client.post("/requests", json=body).json()
    assert answer["result"] == "NO"
    assert "no Jupyter kernel 'no-such-kernel'" in answer["meta"]["messages"][0]["message"]


EXAMPLES = Path(__file__).parents[2] / "examples" / "tasks"


def test_the_batch_example_runs_as_yaml_and_its_cells_print_to_the_logs(client):
    body = (EXAMPLES / "notebook-batch.yaml").read_bytes()
    answer = client.post("/direct", content=body, headers={"Content-Type": "application/yaml"})
    assert answer.status_code == 200, answer.text
    uuid = answer.json()["meta"]["uuid"]
    assert wait_for_phase(client, uuid, FINAL, timeout=60)["phase"] == "COMPLETED"
    stdout = client.get(f"/sessions/{uuid}/logs").json()["stdout"]
    assert "sum of primes below 20000: 21171191 (2262 primes)" in stdout
