"""The Slurm backend on the real cluster, through real broker processes.

Needs ``scripts/services.sh up slurm`` (slurmctld, slurmd, slurmdbd, accounts
account-001..003). Every job is found in Slurm by its name ``eb.<broker>.<session>``,
so the tests check what Slurm itself says, not only what the broker reports. The jobs
run as the test accounts the brokers' users are mapped to (``slurm_support``), so every
state directory lies where other users may enter, and Slurm is asked about all users' jobs.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
import uuid as uuids
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml

from execbroker.model.executables import BatchScript
from execbroker.planner import Resources
from execbroker.platforms import slurm as slurm_platform
from execbroker.platforms.base import LaunchSpec, RunState
from tests.brokers import (
    BrokerProcess,
    accept,
    batch_request,
    running_broker,
    update,
    wait_for_phase,
)
from tests.platforms.slurm_support import ensure_test_accounts, enterable_dir

pytestmark = pytest.mark.slurm

EXAMPLES = Path(__file__).parents[2] / "examples" / "brokers"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED"}


# -- what Slurm says --------------------------------------------------------------------


def _cluster() -> tuple[list[str], str]:
    """(accounts, partition) of the cluster ``scripts/services.sh up slurm`` started."""
    accounts = os.environ.get("EXECBROKER_SLURM_ACCOUNTS", "")
    partition = os.environ.get("EXECBROKER_SLURM_PARTITION", "")
    if not accounts or not partition:
        pytest.fail("EXECBROKER_SLURM_ACCOUNTS/PARTITION unset: run scripts/services.sh up slurm")
    return [a for a in accounts.replace(",", " ").split() if a], partition


def _slurm(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout


def _jobs(name: str) -> dict[str, str]:
    """Every job Slurm has with this name (controller and accounting): id → state."""
    found: dict[str, str] = {}
    since = (datetime.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    accounting = _slurm(
        "sacct", "--allusers", "-n", "-X", "-P", f"--name={name}", "-S", since,
        "-o", "JobID,State",
    )  # fmt: skip
    for line in accounting.splitlines():
        job, _, state = line.partition("|")
        found[job] = state.split(" ")[0]
    for line in _slurm("squeue", "-h", "-t", "all", f"--name={name}", "-o", "%i|%T").splitlines():
        job, _, state = line.partition("|")
        found[job] = state
    return found


def _wait_for_job(name: str, states: set[str], timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = _jobs(name)
        if found and all(state in states for state in found.values()):
            return found
        time.sleep(0.2)
    raise AssertionError(f"Slurm job {name} is {found}, not in {states}")


# Prefixes of the job names this test process made (brokers, platforms, blockers).
_OURS: set[str] = set()


@pytest.fixture(autouse=True)
def _cancel_leftovers() -> Iterator[None]:
    """A failed test must not leave jobs holding the 2-core node for the next ones; only
    this process's jobs are touched (another run may share the cluster)."""
    yield
    listing = _slurm("squeue", "-h", "-o", "%i|%j")
    for line in listing.splitlines():
        job, _, name = line.partition("|")
        if any(name.startswith(prefix) for prefix in _OURS):
            subprocess.run(["scancel", job], check=False, timeout=30)


def _job_field(job_id: str, field: str) -> str:
    return _slurm("sacct", "--allusers", "-n", "-X", "-P", "-j", job_id, "-o", field).strip()


# -- brokers ----------------------------------------------------------------------------


def _example(number: int) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"slurm-account-{number:03d}.yaml").read_text())


def _config(number: int, **changes: Any) -> dict[str, Any]:
    """An example broker under a name of its own (its jobs are told apart by name)."""
    config = _example(number)
    _, partition = _cluster()
    config["platforms"][0]["partition"] = partition
    config["name"] = f"t{uuids.uuid4().hex[:8]}-{number:03d}"
    _OURS.add(slurm_platform.job_name(config["name"], ""))
    config["monitor"] = {"interval": "PT0.2S"}
    config["platforms"][0]["run_as"] = {"users": ensure_test_accounts()}
    config.pop("state_dir", None)
    return {**config, **changes}


@pytest.fixture
def workspace() -> Iterator[Path]:
    """This module's tests' own directory, one the jobs' accounts may enter."""
    with enterable_dir("eb-slurm-cluster-") as directory:
        yield directory


def _platform_broker(workspace: Path) -> SimpleNamespace:
    """What ``slurm.create`` reads of a broker config, for driving the platform alone."""
    return SimpleNamespace(
        name=f"p{uuids.uuid4().hex[:8]}",
        state_path=workspace,
        users=[SimpleNamespace(name="alice")],
    )


def _job_name(broker: BrokerProcess, session: str) -> str:
    name = yaml.safe_load(broker.config_path.read_text())["name"]
    return slurm_platform.job_name(name, session)


def _offers(client: httpx.Client, request: dict[str, Any]) -> dict[str, Any]:
    return client.post("/requests", json=request).raise_for_status().json()


def _run(client: httpx.Client, request: dict[str, Any]) -> str:
    """Accept the first offer and return the session's uuid."""
    answer = _offers(client, request)
    assert answer["result"] == "YES", answer
    uuid = answer["offers"][0]["meta"]["uuid"]
    accept(client, uuid).raise_for_status()
    return uuid


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    """account-003's broker (the biggest quota), shared by the quick tests."""
    os.environ["BROKER_SECRET"] = "s3cret"  # the broker inherits it; its jobs must not
    try:
        with (
            enterable_dir("eb-slurm-cluster-") as directory,
            running_broker(directory, **_config(3)) as broker,
        ):
            yield broker
    finally:
        del os.environ["BROKER_SECRET"]


# -- the platform alone -----------------------------------------------------------------


def test_platform_submits_finds_and_reads_back(workspace: Path) -> None:
    accounts, partition = _cluster()
    broker = _platform_broker(workspace)
    _OURS.add(slurm_platform.job_name(broker.name, ""))
    run_as = {"users": ensure_test_accounts()}
    platform = slurm_platform.create(
        {"account": accounts[0], "partition": partition, "run_as": run_as}, broker=broker
    )
    session = str(uuids.uuid4())
    now = datetime.now(UTC)
    spec = LaunchSpec(
        session_id=session,
        broker=broker.name,
        owner="alice",
        executable=BatchScript(script="echo out; echo err >&2; exit 4"),
        resources=Resources(1, 1, 0),
        start=now,
        deadline=now + timedelta(minutes=2),
        workdir=workspace / "sessions" / session,
    )
    handle = platform.start(spec)
    assert platform.find(session) == handle
    assert platform.find(str(uuids.uuid4())) is None
    deadline = time.monotonic() + 60
    while not (status := platform.status(handle)).state.final and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (status.state, status.exit_code, status.message) == (
        RunState.FAILED,
        4,
        "exited with code 4",
    )
    assert (platform.logs(handle).stdout, platform.logs(handle).stderr) == ("out\n", "err\n")
    # a restarted broker knows only the handle: the session's directory is found from the job
    again = slurm_platform.create(
        {"account": accounts[0], "partition": partition, "run_as": run_as}, broker=broker
    )
    assert again.logs(handle).stdout == "out\n"
    assert _job_field(handle, "Account") == accounts[0]
    assert platform.status("999999999").state == RunState.LOST
    platform.stop(handle)  # already finished: not an error


def test_a_start_ahead_is_held_by_slurm(workspace: Path) -> None:
    """Launched before its start (the monitor never does, a platform may be called so):
    ``--begin`` keeps Slurm from starting it early."""
    accounts, partition = _cluster()
    broker = _platform_broker(workspace)
    _OURS.add(slurm_platform.job_name(broker.name, ""))
    run_as = {"users": ensure_test_accounts()}
    platform = slurm_platform.create(
        {"account": accounts[2], "partition": partition, "run_as": run_as}, broker=broker
    )
    session = str(uuids.uuid4())
    start = datetime.now(UTC) + timedelta(seconds=3)
    spec = LaunchSpec(
        session_id=session,
        broker=broker.name,
        owner="alice",
        executable=BatchScript(script="true"),
        resources=Resources(1, 1, 0),
        start=start,
        deadline=start + timedelta(minutes=2),
        workdir=workspace / "sessions" / session,
    )
    handle = platform.start(spec)
    status = platform.status(handle)
    assert (status.state, status.message) == (
        RunState.PREPARING,
        "queued in Slurm until its start time",
    )
    shown = _slurm("scontrol", "show", "job", "-o", handle)
    eligible = datetime.fromisoformat(shown.split("EligibleTime=")[1].split()[0]).astimezone()
    assert start <= eligible < start + timedelta(seconds=2)
    # (slurmctld looks at jobs held to a begin time only on its periodic pass, seconds
    # late: one reason the monitor submits at the start instead of ahead with --begin)
    platform.stop(handle)
    assert platform.status(handle).state == RunState.CANCELLED


def test_free_is_the_clusters_real_capacity(workspace: Path) -> None:
    _, partition = _cluster()
    broker = _platform_broker(workspace)
    platform = slurm_platform.create({"partition": partition}, broker=broker)
    free = platform.free()
    idle = _slurm("sinfo", "-h", "-p", partition, "-o", "%C").strip().split("/")[1]
    assert free is not None and free.cores == int(idle)
    assert free.memory_gib >= 1


# -- through a broker -------------------------------------------------------------------


def test_job_runs_with_the_granted_resources(broker: BrokerProcess, monkeypatch) -> None:
    script = (
        'echo "cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE account=$SLURM_JOB_ACCOUNT"\n'
        'echo "session=$EXECBROKER_SESSION cores=$EXECBROKER_CORES greeting=$GREETING"\n'
        'echo "leak=${BROKER_SECRET:-none} home=$HOME"\n'
    )
    request = batch_request(script, cores=(2, 2), memory=(2, 2), duration="PT2M")
    request["executable"]["environment"] = {"GREETING": "hello, world $(x)"}
    with broker.client() as client:
        uuid = _run(client, request)
        done = wait_for_phase(client, uuid, FINISHED, timeout=60)
        assert done["phase"] == "COMPLETED", done["meta"]["messages"]
        out = client.get(f"/sessions/{uuid}/logs").json()["stdout"].splitlines()
    account = _config(3)["platforms"][0]["account"]
    assert out[0] == f"cpus=2 mem={2 * 1024} account={account}"
    assert out[1] == f"session={uuid} cores=2 greeting=hello, world $(x)"
    assert out[2].startswith("leak=none home=") and out[2].endswith(f"/sessions/{uuid}/work")
    jobs = _jobs(_job_name(broker, uuid))
    assert list(jobs.values()) == ["COMPLETED"]


def test_scheduled_start_is_honoured(broker: BrokerProcess) -> None:
    start = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    request = batch_request("date +%s.%N", duration="PT1M")
    request["schedule"]["requested"]["start"] = start.strftime("%Y-%m-%dT%H:%M:%SZ") + "/PT1M"
    with broker.client() as client:
        uuid = _run(client, request)
        assert wait_for_phase(client, uuid, {"WAITING"})["phase"] == "WAITING"
        assert _jobs(_job_name(broker, uuid)) == {}, "submitted before its start"
        done = wait_for_phase(client, uuid, FINISHED, timeout=60)
        assert done["phase"] == "COMPLETED", done["meta"]["messages"]
        started = float(client.get(f"/sessions/{uuid}/logs").json()["stdout"])
    assert started >= start.timestamp()
    (job,) = _jobs(_job_name(broker, uuid))
    slurm_start = datetime.fromisoformat(_job_field(job, "Start")).astimezone()
    assert slurm_start >= start


def test_cancel_is_scancel(broker: BrokerProcess) -> None:
    with broker.client() as client:
        uuid = _run(client, batch_request("sleep 300", duration="PT10M"))
        wait_for_phase(client, uuid, {"RUNNING"}, timeout=60)
        assert list(_jobs(_job_name(broker, uuid)).values()) == ["RUNNING"]
        cancelled = update(client, uuid, "CANCELLED")
        assert cancelled.status_code == 200 and cancelled.json()["phase"] == "CANCELLED"
    _wait_for_job(_job_name(broker, uuid), {"CANCELLED"}, timeout=30)


def test_exceeding_the_grant_is_stopped_at_its_end(broker: BrokerProcess) -> None:
    with broker.client() as client:
        uuid = _run(client, batch_request("sleep 300", duration="PT5S"))
        done = wait_for_phase(client, uuid, FINISHED, timeout=60)
    assert done["phase"] == "FAILED"
    assert "exceeded the granted duration" in done["meta"]["messages"][-1]["message"]
    _wait_for_job(_job_name(broker, uuid), {"CANCELLED"}, timeout=30)


def test_offers_need_capacity_slurm_really_has(broker: BrokerProcess) -> None:
    """A job of another account holds a core: the broker offers only what is left now."""
    accounts, partition = _cluster()
    quota = _config(3)["quota"]
    blocker = f"block-{uuids.uuid4().hex[:8]}"
    _OURS.add(blocker)
    _slurm(
        "sbatch", "--parsable", f"--account={accounts[0]}", f"--partition={partition}",
        f"--job-name={blocker}", "--cpus-per-task=1", "--mem=1G", "--time=2",
        "--output=/dev/null", "--wrap=sleep 120",
    )  # fmt: skip
    try:
        _wait_for_job(blocker, {"RUNNING"}, timeout=30)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        request = batch_request("true", cores=(1, quota["cores"]), duration="PT1M")
        request["schedule"]["requested"]["start"] = f"{now}/PT5S"
        with broker.client() as client:
            answer = _offers(client, request)
            for offer in answer["offers"]:  # open offers would hold the quota for their ttl
                update(client, offer["meta"]["uuid"], "REJECTED").raise_for_status()
        cores = [offer["compute"]["cores"]["min"] for offer in answer["offers"]]
        idle = int(_slurm("sinfo", "-h", "-p", partition, "-o", "%C").strip().split("/")[1])
        assert answer["result"] == "YES" and max(cores) <= idle
    finally:
        _slurm("scancel", f"--name={blocker}")


def test_a_job_slurm_cannot_start_yet_says_why(broker: BrokerProcess) -> None:
    """Someone else takes the node between our offer and its acceptance: the session waits
    in PREPARING, saying why in Slurm's words, and runs once the node is free again."""
    accounts, partition = _cluster()
    with broker.client() as client:
        answer = _offers(client, batch_request("echo ran", duration="PT2M"))
        blocker = f"block-{uuids.uuid4().hex[:8]}"
        _OURS.add(blocker)
        _slurm(
            "sbatch", "--parsable", f"--account={accounts[1]}", f"--partition={partition}",
            f"--job-name={blocker}", "--cpus-per-task=2", "--mem=1G", "--time=2",
            "--output=/dev/null", "--wrap=sleep 120",
        )  # fmt: skip
        _wait_for_job(blocker, {"RUNNING"}, timeout=30)
        uuid = answer["offers"][0]["meta"]["uuid"]
        accept(client, uuid).raise_for_status()
        deadline = time.monotonic() + 30
        texts: list[str] = []
        while time.monotonic() < deadline and "waiting for free resources" not in " ".join(texts):
            session = client.get(f"/sessions/{uuid}").json()
            texts = [item["message"] for item in session["meta"]["messages"]]
            time.sleep(0.2)
        assert session["phase"] == "PREPARING", session
        assert "queued in Slurm, waiting for free resources" in texts
        _slurm("scancel", f"--name={blocker}")
        done = wait_for_phase(client, uuid, FINISHED, timeout=60)
        assert done["phase"] == "COMPLETED", done["meta"]["messages"]


def test_own_running_jobs_are_not_counted_twice(broker: BrokerProcess) -> None:
    """A running job of this broker is in its calendar *and* missing from Slurm's idle
    CPUs: ``free`` adds it back, so the rest of the quota is still offered now."""
    quota = _config(3)["quota"]
    assert quota["cores"] == 2, "the test fills the 2-core node with this broker's jobs"
    with broker.client() as client:
        first = _run(client, batch_request("sleep 60", duration="PT2M"))
        wait_for_phase(client, first, {"RUNNING"}, timeout=60)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        request = batch_request("sleep 60", duration="PT2M")
        request["schedule"]["requested"]["start"] = f"{now}/PT5S"
        second = _run(client, request)
        wait_for_phase(client, second, {"RUNNING"}, timeout=60)
        for uuid in (first, second):
            update(client, uuid, "CANCELLED").raise_for_status()


def test_virtual_platforms_keep_their_quotas_apart(workspace: Path) -> None:
    small, middle, big = _config(1), _config(2), _config(3)
    above_small = small["quota"]["cores"] + 1
    assert above_small <= big["quota"]["cores"], "the examples' quotas should differ"
    with (
        running_broker(workspace / "small", **small) as one,
        running_broker(workspace / "middle", **middle) as two,
        running_broker(workspace / "big", **big) as three,
        one.client() as c1,
        two.client() as c2,
        three.client() as c3,
    ):
        # more cores than account-001's quota: NO there, YES from the bigger broker
        wide = batch_request("true", cores=(above_small, above_small), duration="PT1M")
        assert _offers(c1, wide)["result"] == "NO"
        assert _offers(c3, wide)["result"] == "YES"
        # account-001 runs a job with its whole quota; account-002 still offers and runs now
        full = batch_request(
            "sleep 60", cores=(small["quota"]["cores"],) * 2, memory=(1, 1), duration="PT2M"
        )
        busy = _run(c1, full)
        wait_for_phase(c1, busy, {"RUNNING"}, timeout=60)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        soon = batch_request("echo ran", duration="PT1M")
        soon["schedule"]["requested"]["start"] = f"{now}/PT5S"
        assert _offers(c1, soon)["result"] == "NO", "account-001's quota is used up"
        other = _run(c2, soon)
        assert wait_for_phase(c2, other, FINISHED, timeout=60)["phase"] == "COMPLETED"
        assert (
            _job_field(next(iter(_jobs(_job_name(two, other)))), "Account")
            == (middle["platforms"][0]["account"])
        )
        update(c1, busy, "CANCELLED").raise_for_status()


def test_kill_9_readopts_jobs_and_slurm_keeps_the_time_limit(workspace: Path) -> None:
    """Killed while two jobs run: one finishes meanwhile and gets its final phase, the
    other is re-adopted as RUNNING (found by its name, its job id lost as in a crash right
    after sbatch); killed again, Slurm's own time limit ends that one at its grant, and
    the restarted broker says so. No session is ever submitted twice."""
    broker = BrokerProcess(_config(3), workspace).start()
    try:
        with broker.client() as client:
            short = _run(client, batch_request("sleep 3; echo finished", duration="PT5M"))
            late = _run(client, batch_request("sleep 600", duration="PT1M"))
            for uuid in (short, late):
                wait_for_phase(client, uuid, {"RUNNING"}, timeout=60)
        broker.kill()
        _wait_for_job(_job_name(broker, short), {"COMPLETED"}, timeout=30)
        # As if the broker had died between sbatch and saving the job id: only the job's
        # name can lead back to it.
        with sqlite3.connect(workspace / "state" / "broker.db") as db:
            db.execute(
                "UPDATE sessions SET handle = NULL, phase = 'PREPARING' WHERE uuid = ?", (late,)
            )
        broker.start()
        with broker.client() as client:
            done = wait_for_phase(client, short, FINISHED)
            assert done["phase"] == "COMPLETED", done["meta"]["messages"]
            assert client.get(f"/sessions/{short}/logs").json()["stdout"] == "finished\n"
            assert wait_for_phase(client, late, {"RUNNING"})["phase"] == "RUNNING"
            time.sleep(1)  # a few monitor passes over the re-adopted job
            assert client.get(f"/sessions/{late}").json()["phase"] == "RUNNING"
            assert len(_jobs(_job_name(broker, late))) == 1, "submitted again"
        broker.kill()  # down past the grant's end: only Slurm can stop the job now
        _wait_for_job(_job_name(broker, late), {"TIMEOUT"}, timeout=150)
        broker.start()
        with broker.client() as client:
            timed_out = wait_for_phase(client, late, FINISHED)
        assert timed_out["phase"] == "FAILED"
        assert "exceeded the granted duration" in timed_out["meta"]["messages"][-1]["message"]
        for uuid in (short, late):
            assert len(_jobs(_job_name(broker, uuid))) == 1, "submitted twice"
    finally:
        broker.stop()
