"""Batch notebooks as Slurm jobs, through a real broker process on the real cluster.

The job runs ``notebook_runner.py`` as the user's own account, under Debian's python
(``notebook_python: /usr/bin/python3``, with python3-nbclient and python3-ipykernel from
scripts/services.sh): the broker's own venv python lies under /root, which no other account
may enter, and the broker refuses notebooks rather than submit a job that cannot start.
The executed notebook is then fetched over the API, a failing cell's error is the session's
message, and interactive notebooks are refused, saying why.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid as uuids
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from execbroker.platforms import slurm as slurm_platform
from tests.brokers import BrokerProcess, accept, running_broker, wait_for_phase
from tests.notebooks.notebooks import notebook, notebook_request
from tests.platforms.slurm_support import ensure_test_accounts, enterable_dir

pytestmark = pytest.mark.slurm

EXAMPLES = Path(__file__).parents[2] / "examples"
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def _config(**platform: Any) -> dict[str, Any]:
    """The slurm-account-001 example broker, under a name of its own."""
    partition = os.environ.get("EXECBROKER_SLURM_PARTITION")
    if not partition:
        pytest.fail("EXECBROKER_SLURM_PARTITION unset: run scripts/services.sh up slurm")
    config = yaml.safe_load((EXAMPLES / "brokers" / "slurm-account-001.yaml").read_text())
    config["name"] = f"nb{uuids.uuid4().hex[:8]}"
    config["platforms"][0].update(
        partition=partition, run_as={"users": ensure_test_accounts()}, **platform
    )
    config["monitor"] = {"interval": "PT0.2S"}
    return config


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    config = _config(notebook_python="/usr/bin/python3")
    prefix = slurm_platform.job_name(config["name"], "")
    with (
        enterable_dir("eb-slurm-notebook-") as directory,
        running_broker(directory, **config) as broker,
    ):
        yield broker
    # A failed test must not leave its job holding the node for the next ones.
    listing = subprocess.run(
        ["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, timeout=30, check=False
    )
    for line in listing.stdout.splitlines():
        job, _, name = line.partition("|")
        if name.startswith(prefix):
            subprocess.run(["scancel", job], check=False, timeout=30)


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[httpx.Client]:
    with broker.client() as client:
        yield client


def _run(client: httpx.Client, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Accept the first offer and follow it to its end: (the session, seconds from accept)."""
    answer = client.post("/requests", json=request).raise_for_status().json()
    assert answer["result"] == "YES", answer
    uuid = answer["offers"][0]["meta"]["uuid"]
    started = time.monotonic()
    accept(client, uuid).raise_for_status()
    done = wait_for_phase(client, uuid, FINAL, timeout=90)
    return done, time.monotonic() - started


def _last(session: dict[str, Any]) -> str:
    return session["meta"]["messages"][-1]["message"]


def test_the_example_notebook_runs_as_a_slurm_job_and_its_output_is_fetched(client):
    request = yaml.safe_load((EXAMPLES / "tasks" / "notebook-batch.yaml").read_text())
    done, seconds = _run(client, request)
    print(f"tiny notebook on Slurm: accept to COMPLETED in {seconds:.1f} s")
    assert done["phase"] == "COMPLETED", done["meta"]["messages"]
    assert "executed 3 cells" in _last(done)  # the runner's own word, not only Slurm's
    uuid = done["meta"]["uuid"]
    listed = client.get(f"/sessions/{uuid}/outputs").raise_for_status().json()["outputs"]
    assert [item["name"] for item in listed] == ["notebook.ipynb"]
    executed = client.get(f"/sessions/{uuid}/outputs/notebook.ipynb").raise_for_status().json()
    stdout = "".join(
        "".join(out["text"]) for out in executed["cells"][-1]["outputs"] if out["name"] == "stdout"
    )
    primes = [k for k in range(2, 20000) if all(k % d for d in range(2, int(k**0.5) + 1))]
    assert stdout == f"sum of primes below 20000: {sum(primes)} ({len(primes)} primes)\n"


def test_a_failing_cell_fails_the_job_with_the_cells_error(client):
    done, _ = _run(client, notebook_request(notebook("value = 7", "ratio = value / 0")))
    assert done["phase"] == "FAILED"
    message = _last(done)
    for part in ("cell 1", "ZeroDivisionError", "division by zero", "ratio = value / 0"):
        assert part in message, message


def test_an_interactive_notebook_is_refused_saying_why(client):
    answer = client.post("/requests", json=notebook_request(notebook("1"), mode="interactive"))
    body = answer.raise_for_status().json()
    assert body["result"] == "NO"
    assert "anyone who can reach that node" in str(body), body


def test_a_notebook_python_the_jobs_account_cannot_run_is_refused_saying_so() -> None:
    """Like a venv under /root (the broker's own interpreter, by default): a python in a
    directory only the broker may enter."""
    with enterable_dir("eb-slurm-notebook-") as directory:
        private = directory / "private" / "python3"
        private.parent.mkdir(mode=0o700)
        private.symlink_to("/usr/bin/python3")
        config = _config(notebook_python=str(private))
        with running_broker(directory / "broker", **config) as broker, broker.client() as client:
            body = client.post("/requests", json=notebook_request(notebook("1"))).json()
    assert body["result"] == "NO"
    assert f"notebook_python ({private}) cannot be run by the accounts" in str(body), body
