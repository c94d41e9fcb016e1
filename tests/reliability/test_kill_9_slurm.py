"""A Slurm broker killed with SIGKILL at random moments while short batch jobs are
offered, accepted, submitted and finished: no session is started twice, none is lost,
none is stuck.

Each job counts its own runs twice over: in ``started.txt`` in its cwd (the session's
``work`` directory), and in a ledger outside the session's directory, since a second
submission would begin by replacing that directory (``_fill_workdir``) and so erase the
first run's line. The jobs run as the mapped account ebtest-alice, so the broker's state
and the ledger lie in a directory that account may enter (``slurm_support``).
"""

from __future__ import annotations

import os
import subprocess
import uuid as uuids
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execbroker.platforms import slurm as slurm_platform
from tests.brokers import BASE_CONFIG, BrokerProcess, batch_request
from tests.platforms.slurm_support import ensure_test_accounts, enterable_dir
from tests.reliability.support import (
    NOTHING_WRONG,
    counting_script,
    kill_while_accepting,
    report,
    starting_now,
)

pytestmark = pytest.mark.slurm

KILLS = 5
# account-003's Slurm limits (cpu=2, mem=8G), as in examples/brokers/slurm-account-003.yaml
QUOTA = {"cores": 2, "memory": 4, "max_sessions": 4, "max_duration": "PT1H"}


@pytest.fixture
def workspace() -> Iterator[Path]:
    with enterable_dir("eb-slurm-kills-") as directory:
        yield directory


def _ledger(workspace: Path) -> Path:
    """A directory only ebtest-alice (and root) may write, for the jobs' own count."""
    ledger = workspace / "ledger"
    ledger.mkdir(mode=0o700)
    account = ensure_test_accounts()["alice"]
    subprocess.run(["chown", f"{account}:{account}", str(ledger)], check=True, timeout=30)
    return ledger


def _config(name: str) -> dict[str, Any]:
    partition = os.environ.get("EXECBROKER_SLURM_PARTITION", "")
    if not partition:
        pytest.fail("EXECBROKER_SLURM_PARTITION unset: run scripts/services.sh up slurm")
    return {
        **BASE_CONFIG,
        "name": name,
        "quota": QUOTA,
        "monitor": {"interval": "PT0.2S", "lease": "PT1S"},
        "platforms": [
            {
                "type": "slurm",
                "account": "account-003",
                "partition": partition,
                "run_as": {"users": ensure_test_accounts()},
            }
        ],
    }


def _cancel_jobs(prefix: str) -> None:
    """A failed run must not leave jobs holding the shared 2-core node."""
    listing = subprocess.run(
        ["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, timeout=30
    ).stdout
    for line in listing.splitlines():
        job, _, name = line.partition("|")
        if name.startswith(prefix):
            subprocess.run(["scancel", job], check=False, timeout=30)


def _ledger_runs(runs_file: Path, prefix: str) -> Counter[str]:
    """How many times each session's job ran, as the jobs wrote it (by their job name)."""
    if not runs_file.exists():
        return Counter()
    lines = runs_file.read_text().split()
    return Counter(line.removeprefix(prefix) for line in lines if line.startswith(prefix))


def test_five_kills_submit_no_job_twice_and_lose_none(workspace: Path) -> None:
    name = f"k{uuids.uuid4().hex[:8]}"
    prefix = slurm_platform.job_name(name, "")
    runs_file = _ledger(workspace) / "runs"
    script = counting_script(f'echo "$SLURM_JOB_NAME" >> {runs_file}; sleep 1')

    def request() -> dict[str, Any]:
        body = batch_request(script, duration="PT2M")
        body["schedule"]["requested"]["start"] = starting_now()
        return body

    broker = BrokerProcess(_config(name), workspace).start()
    try:
        sessions = kill_while_accepting(broker, request, KILLS, pause=(1.0, 4.0), settle=100)
    finally:
        broker.stop()
        _cancel_jobs(prefix)
    state, logs = workspace / "state", [broker.log_path]
    completed = [u for u, s in sessions.items() if s["phase"] == "COMPLETED"]
    assert len(completed) >= KILLS, "too few sessions got past their offer to test anything"
    assert report(sessions, state, logs) == NOTHING_WRONG
    ledger = _ledger_runs(runs_file, prefix)
    assert report(sessions, state, logs, ran=ledger) == NOTHING_WRONG
    assert set(ledger) <= set(sessions), "a job ran for no session of the broker"
