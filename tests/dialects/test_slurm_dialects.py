"""A TES task as a Slurm batch job: its paths under $TES_ROOT, its outputs delivered by the
broker from the job's directory, $EXECBROKER_OUTPUTS the session's outputs."""

from __future__ import annotations

import os

import pytest
import tes

from tests.brokers import running_broker
from tests.dialects.test_uws_tes import tes_client
from tests.platforms.slurm_support import ensure_test_accounts, enterable_dir

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_broker(tmp_path_factory):
    partition = os.environ.get("EXECBROKER_SLURM_PARTITION", "")
    if not partition:
        pytest.fail("EXECBROKER_SLURM_PARTITION unset: run scripts/services.sh up slurm")
    roots = tmp_path_factory.mktemp("slurm-outputs")
    out = roots / "alice"  # the tests' user's own root
    out.mkdir()
    platform = {
        "type": "slurm",
        "account": "account-002",
        "partition": partition,
        "run_as": {"users": ensure_test_accounts()},
    }
    with enterable_dir("eb-tes-slurm-") as directory:
        config = {"platforms": [platform], "tes": {"file_roots": [str(roots / "{user}")]}}
        with running_broker(directory, state_dir=str(directory / "state"), **config) as broker:
            broker.out = out
            yield broker


def test_a_tes_task_on_slurm_delivers_its_outputs(slurm_broker):
    out = slurm_broker.out
    script = (
        'tr a-z A-Z < "$TES_ROOT/data/in.txt" > "$TES_ROOT/results/upper.txt" && '
        'echo "$EXECBROKER_OUTPUTS" > "$EXECBROKER_OUTPUTS/where.txt"'
    )
    client = tes_client(slurm_broker)
    task_id = client.create_task(
        tes.Task(
            inputs=[tes.Input(path="/data/in.txt", content="batch\n")],
            executors=[tes.Executor(image="busybox:local", command=["sh", "-c", script])],
            outputs=[tes.Output(path="/results/upper.txt", url=f"file://{out}/upper.txt")],
        )
    )
    done = client.wait(task_id, timeout=120)
    full = client.get_task(task_id, view="FULL")
    assert done.state == "COMPLETE", full.logs[0].system_logs
    assert (out / "upper.txt").read_text() == "BATCH\n"
    assert [item.path for item in full.logs[0].outputs] == ["/results/upper.txt"]
    with slurm_broker.client() as http:
        listed = http.get(f"/sessions/{task_id}/outputs").json()["outputs"]
        assert [item["name"] for item in listed] == ["where.txt"], listed
        where = http.get(f"/sessions/{task_id}/outputs/where.txt").text.strip()
        assert where.endswith(f"/sessions/{task_id}/outputs"), where
