"""Reading Slurm's answers (pure): states, reasons, exit codes, node capacity."""

from __future__ import annotations

import pytest

from execbroker.platforms.base import RunState
from execbroker.platforms.slurm_states import (
    COMPACT,
    STATES,
    JobRecord,
    memory_mib,
    node_usable,
    parse_exit,
    parse_nodes,
    parse_sacct,
    parse_scontrol_job,
    parse_squeue,
    reason_message,
    run_status,
)


def test_every_compact_code_names_a_mapped_state() -> None:
    assert set(COMPACT.values()) == set(STATES)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("PD", RunState.PREPARING),
        ("CF", RunState.PREPARING),
        ("R", RunState.RUNNING),
        ("CG", RunState.RUNNING),
        ("CD", RunState.COMPLETED),
        ("CA", RunState.CANCELLED),
        ("CANCELLED by 0", RunState.CANCELLED),
        ("F", RunState.FAILED),
        ("TO", RunState.FAILED),
        ("OOM", RunState.FAILED),
        ("NODE_FAIL", RunState.FAILED),
        ("PREEMPTED", RunState.FAILED),
        ("COMPLETING+", RunState.RUNNING),
    ],
)
def test_states_map_to_run_states(state: str, expected: RunState) -> None:
    assert run_status(JobRecord("7", state)).state == expected


def test_pending_says_why() -> None:
    status = run_status(JobRecord("7", "PD", "Resources"))
    assert status.state == RunState.PREPARING
    assert status.message == "queued in Slurm, waiting for free resources"
    assert "start time" in (run_status(JobRecord("7", "PENDING", "BeginTime")).message or "")


def test_unknown_reason_is_shown_as_slurm_says_it() -> None:
    assert reason_message("SomethingNew") == "queued in Slurm (SomethingNew)"
    assert "nodes" in reason_message("ReqNodeNotAvail, UnavailableNodes:n1")


def test_failed_carries_the_exit_code() -> None:
    status = run_status(JobRecord("7", "FAILED", "NonZeroExitCode", "3:0"))
    assert (status.state, status.exit_code, status.message) == (
        RunState.FAILED,
        3,
        "exited with code 3",
    )


def test_signal_is_a_negative_exit_code() -> None:
    status = run_status(JobRecord("7", "FAILED", "", "0:9"))
    assert status.exit_code == -9
    assert status.message == "killed by signal 9"


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("TIMEOUT", "exceeded the granted duration"),
        ("OUT_OF_MEMORY", "ran out of the granted memory"),
        ("NODE_FAIL", "node running it failed"),
        ("PREEMPTED", "preempted"),
    ],
)
def test_bad_endings_say_what_happened(state: str, words: str) -> None:
    status = run_status(JobRecord("7", state, "", "0:15"))
    assert status.state == RunState.FAILED
    assert words in (status.message or "")


def test_completed_and_cancelled() -> None:
    assert run_status(JobRecord("7", "COMPLETED", "", "0:0")).exit_code == 0
    status = run_status(JobRecord("7", "CANCELLED by 1000", "", "0:15"))
    assert status.message == "cancelled in Slurm (by uid 1000)"


def test_unknown_state_is_not_final() -> None:
    assert not run_status(JobRecord("7", "NEW_STATE_2030")).state.final


def test_parse_exit() -> None:
    assert parse_exit("1:0") == (1, 0)
    assert parse_exit("0:15") == (0, 15)
    assert parse_exit("") == (None, None)


def test_parse_squeue_and_sacct() -> None:
    assert parse_squeue("12|PD|BeginTime\n\n") == [JobRecord("12", "PD", "BeginTime")]
    assert parse_sacct("12|CANCELLED by 0|0:15|None\n") == [
        JobRecord("12", "CANCELLED by 0", "None", "0:15")
    ]


def test_parse_scontrol_job() -> None:
    line = (
        "JobId=42 JobName=eb.x.y UserId=root(0) JobState=FAILED Reason=NonZeroExitCode "
        "Dependency=(null) ExitCode=2:0 Command=/a b/job.sh WorkDir=/w"
    )
    assert parse_scontrol_job(line) == JobRecord("42", "FAILED", "NonZeroExitCode", "2:0")
    assert parse_scontrol_job("") is None


NODES = (
    "NodeName=n1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=1 CPUEfctv=2 CPUTot=2 CPULoad=0.1 "
    "OS=Linux 6.1.0 #1 SMP RealMemory=4096 AllocMem=1024 FreeMem=3000 State=MIXED "
    "Partitions=debug,all\n"
    "NodeName=n2 CPUAlloc=0 CPUTot=4 RealMemory=8192 AllocMem=0 State=IDLE+DRAIN "
    "Partitions=debug\n"
    "NodeName=n3 CPUAlloc=0 CPUTot=4 RealMemory=8192 AllocMem=0 MemSpecLimit=1024 State=IDLE "
    "Partitions=other\n"
)


def test_parse_nodes_keeps_usable_nodes_of_the_partition() -> None:
    nodes = parse_nodes(NODES, "debug")
    assert [(n.name, n.cpus, n.memory_mib) for n in nodes] == [("n1", 1, 3072)]
    every = parse_nodes(NODES)
    assert [(n.name, n.cpus, n.memory_mib) for n in every] == [
        ("n1", 1, 3072),
        ("n3", 4, 7168),
    ]


@pytest.mark.parametrize(
    ("state", "usable"),
    [
        ("IDLE", True),
        ("MIXED", True),
        ("ALLOCATED", True),
        ("IDLE+DRAIN", False),
        ("DOWN*", False),
        ("IDLE*", False),
        ("MIXED+COMPLETING", True),
    ],
)
def test_node_usable(state: str, usable: bool) -> None:
    assert node_usable(state) is usable


def test_memory_mib() -> None:
    assert memory_mib("1G") == 1024
    assert memory_mib("2000M") == 2000
    assert memory_mib("512") == 512
    assert memory_mib("junk") == 0
