"""Batch notebooks as Slurm jobs, through a real broker process on the real cluster.

The job runs ``notebook_runner.py`` under the broker's own python (the default
``notebook_python``: this single-node cluster shares the broker host's file system); the
executed notebook is then fetched over the API, a failing cell's error is the session's
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

pytestmark = pytest.mark.slurm

EXAMPLES = Path(__file__).parents[2] / "examples"
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """The slurm-account-001 example broker, under a name of its own."""
    partition = os.environ.get("EXECBROKER_SLURM_PARTITION")
    if not partition:
        pytest.fail("EXECBROKER_SLURM_PARTITION unset: run scripts/services.sh up slurm")
    config = yaml.safe_load((EXAMPLES / "brokers" / "slurm-account-001.yaml").read_text())
    config["name"] = f"nb{uuids.uuid4().hex[:8]}"
    config["platforms"][0]["partition"] = partition
    config["monitor"] = {"interval": "PT0.2S"}
    prefix = slurm_platform.job_name(config["name"], "")
    with running_broker(tmp_path_factory.mktemp("slurm-notebook"), **config) as broker:
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
