"""Reading Slurm's answers: job states, pending reasons, exit codes and node capacity.

Pure functions over the text ``squeue``/``scontrol``/``sacct`` print, so every mapping is
unit-tested without a cluster. States are tables, in the style of psij-python's Slurm
executor: Slurm's compact codes (``squeue %t``) name the same states as the full names
``scontrol``/``sacct`` print, and each full name maps to one RunState (plus, for the bad
endings, a sentence for the session's owner).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from execbroker.platforms.base import RunState, RunStatus

# squeue's compact codes → the full state names scontrol and sacct print.
COMPACT: dict[str, str] = {
    "BF": "BOOT_FAIL",
    "CA": "CANCELLED",
    "CD": "COMPLETED",
    "CF": "CONFIGURING",
    "CG": "COMPLETING",
    "DL": "DEADLINE",
    "F": "FAILED",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "PD": "PENDING",
    "PR": "PREEMPTED",
    "R": "RUNNING",
    "RD": "RESV_DEL_HOLD",
    "RF": "REQUEUE_FED",
    "RH": "REQUEUE_HOLD",
    "RQ": "REQUEUED",
    "RS": "RESIZING",
    "RV": "REVOKED",
    "S": "SUSPENDED",
    "SE": "SPECIAL_EXIT",
    "SI": "SIGNALING",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
    "TO": "TIMEOUT",
}

# Full state name → what the broker makes of it. COMPLETING still holds the node (the
# epilog runs), so it counts as running until Slurm says how the job ended.
STATES: dict[str, RunState] = {
    "PENDING": RunState.PREPARING,
    "CONFIGURING": RunState.PREPARING,
    "REQUEUED": RunState.PREPARING,
    "REQUEUE_HOLD": RunState.PREPARING,
    "REQUEUE_FED": RunState.PREPARING,
    "RESV_DEL_HOLD": RunState.PREPARING,
    "RUNNING": RunState.RUNNING,
    "COMPLETING": RunState.RUNNING,
    "RESIZING": RunState.RUNNING,
    "SIGNALING": RunState.RUNNING,
    "STAGE_OUT": RunState.RUNNING,
    "SUSPENDED": RunState.RUNNING,
    "STOPPED": RunState.RUNNING,
    "COMPLETED": RunState.COMPLETED,
    "CANCELLED": RunState.CANCELLED,
    "FAILED": RunState.FAILED,
    "TIMEOUT": RunState.FAILED,
    "OUT_OF_MEMORY": RunState.FAILED,
    "NODE_FAIL": RunState.FAILED,
    "BOOT_FAIL": RunState.FAILED,
    "PREEMPTED": RunState.FAILED,
    "DEADLINE": RunState.FAILED,
    "SPECIAL_EXIT": RunState.FAILED,
    "REVOKED": RunState.FAILED,
}

# What the owner is told for states that say more than their exit code.
STATE_MESSAGES: dict[str, str] = {
    "TIMEOUT": "stopped by Slurm: exceeded the granted duration",
    "OUT_OF_MEMORY": "killed by Slurm: ran out of the granted memory",
    "NODE_FAIL": "failed: the Slurm node running it failed",
    "BOOT_FAIL": "failed: the Slurm node could not boot to run it",
    "PREEMPTED": "stopped by Slurm: preempted by a job of higher priority",
    "DEADLINE": "not run: Slurm could not start it before its deadline",
    "SPECIAL_EXIT": "failed: Slurm held it after a special exit",
    "REVOKED": "failed: Slurm revoked it (it ran on another cluster of the federation)",
    "SUSPENDED": "suspended by Slurm",
    "STOPPED": "stopped (SIGSTOP) in Slurm",
}

# Why a job is still pending (squeue %r), in words for the owner.
REASONS: dict[str, str] = {
    "None": "queued in Slurm",
    "Priority": "queued in Slurm behind jobs of higher priority",
    "Resources": "queued in Slurm, waiting for free resources",
    "BeginTime": "queued in Slurm until its start time",
    "Dependency": "queued in Slurm, waiting for another job",
    "WaitingForScheduling": "queued in Slurm, waiting for the scheduler",
    "Cleaning": "queued in Slurm while a previous run is cleaned up",
    "Prolog": "starting: Slurm's prolog is running",
    "Licenses": "queued in Slurm, waiting for a license",
    "Reservation": "queued in Slurm, waiting for its reservation",
    "JobHeldAdmin": "held in Slurm by an administrator",
    "JobHeldUser": "held in Slurm",
    "BadConstraints": "cannot start: Slurm cannot meet its constraints",
    "InvalidAccount": "cannot start: the Slurm account is not valid",
    "InvalidQOS": "cannot start: the Slurm QOS is not valid",
    "AssociationJobLimit": "queued in Slurm: the account has as many jobs as it may",
    "AssociationResourceLimit": "queued in Slurm: the account has used its resource limit",
    "AssocGrpCpuLimit": "queued in Slurm: the account has used its CPU limit",
    "AssocGrpMemLimit": "queued in Slurm: the account has used its memory limit",
    "AssocGrpJobsLimit": "queued in Slurm: the account has as many jobs as it may",
    "AssocMaxJobsLimit": "queued in Slurm: the account has as many jobs as it may",
    "AssocMaxCpuPerJobLimit": "cannot start: more CPUs than the Slurm account allows per job",
    "AssocMaxWallDurationPerJobLimit": "cannot start: longer than the Slurm account allows",
    "AssociationTimeLimit": "cannot start: longer than the Slurm account allows",
    "QOSJobLimit": "queued in Slurm: the QOS has as many jobs as it may",
    "QOSResourceLimit": "queued in Slurm: the QOS has used its resource limit",
    "QOSTimeLimit": "cannot start: longer than the Slurm QOS allows",
    "PartitionDown": "queued in Slurm: the partition is down",
    "PartitionInactive": "queued in Slurm: the partition is inactive",
    "PartitionNodeLimit": "queued in Slurm: the partition's nodes are unavailable",
    "PartitionTimeLimit": "cannot start: longer than the partition allows",
    "NodeDown": "queued in Slurm: a node it needs is down",
    "ReqNodeNotAvail": "queued in Slurm: the nodes it needs are not available",
    "FrontEndDown": "queued in Slurm: no front-end node is up",
    "SystemFailure": "queued in Slurm after a system failure",
    "JobLaunchFailure": "Slurm could not launch it",
    "BeginTimeNotReached": "queued in Slurm until its start time",
}

_EXIT = re.compile(r"^(-?\d+)(?::(\d+))?$")


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as Slurm describes it: full state name, reason, raw ``code:signal``."""

    job_id: str
    state: str
    reason: str = "None"
    exit_code: str = ""


def full_state(text: str) -> str:
    """The full state name of a compact code or of a full name with extras.

    sacct prints ``CANCELLED by 0``; scontrol may add flags (``COMPLETING+``); both are
    reduced to the bare name.
    """
    word = text.strip().split(" ", 1)[0].rstrip("+*")
    return COMPACT.get(word, word)


def parse_exit(text: str) -> tuple[int | None, int | None]:
    """``1:0`` → (1, 0): the exit code and the signal that ended the job (0 for none)."""
    match = _EXIT.match(text.strip())
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2) or 0)


def reason_message(reason: str) -> str:
    """The owner's sentence for a pending reason; an unknown one is shown as Slurm says it."""
    key = reason.strip().split(",", 1)[0].split("(", 1)[0] or "None"
    return REASONS.get(key, f"queued in Slurm ({reason.strip()})")


def run_status(record: JobRecord) -> RunStatus:
    """What the broker makes of one job's state, reason and exit code."""
    state = full_state(record.state)
    run_state = STATES.get(state)
    if run_state is None:
        return RunStatus(RunState.PREPARING, f"Slurm job {record.job_id} is {record.state}")
    if run_state == RunState.PREPARING:
        return RunStatus(run_state, reason_message(record.reason))
    code, signal = parse_exit(record.exit_code)
    if run_state == RunState.COMPLETED:
        return RunStatus(run_state, "completed", 0 if code is None else code)
    if run_state == RunState.CANCELLED:
        return RunStatus(run_state, _cancelled(record.state), _code(code, signal))
    if run_state == RunState.RUNNING:
        return RunStatus(run_state, STATE_MESSAGES.get(state))
    text = STATE_MESSAGES.get(state) or _failure(code, signal)
    return RunStatus(run_state, text, _code(code, signal))


def _cancelled(raw: str) -> str:
    by = raw.strip().partition(" by ")[2]
    return f"cancelled in Slurm (by uid {by})" if by else "cancelled in Slurm"


def _code(code: int | None, signal: int | None) -> int | None:
    """An exit code as the local backend reports it: negative for a signal."""
    if signal:
        return -signal
    return code


def _failure(code: int | None, signal: int | None) -> str:
    if signal:
        return f"killed by signal {signal}"
    if code is None:
        return "failed in Slurm"
    return f"exited with code {code}"


# -- parsing command output -------------------------------------------------------------


def parse_squeue(text: str) -> list[JobRecord]:
    """Lines of ``squeue -h -o %i|%t|%r``."""
    records = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and parts[0]:
            records.append(JobRecord(parts[0], parts[1], parts[2]))
    return records


def parse_sacct(text: str) -> list[JobRecord]:
    """Lines of ``sacct -n -X -P -o JobID,State,ExitCode,Reason`` (one per allocation)."""
    records = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and parts[0]:
            reason = parts[3] if len(parts) > 3 else "None"
            records.append(JobRecord(parts[0], parts[1], reason, parts[2]))
    return records


def scontrol_fields(line: str, *names: str) -> dict[str, str]:
    """Chosen ``Key=value`` fields of one ``scontrol show ... -o`` line.

    Only keys we name are read, and only as whole words: some values (the node's ``OS=``,
    a job's ``Command=``) contain spaces, so the line is not split as a whole.
    """
    found = {}
    for name in names:
        match = re.search(rf"(?:^|\s){re.escape(name)}=(\S*)", line)
        if match:
            found[name] = match.group(1)
    return found


def parse_scontrol_job(text: str) -> JobRecord | None:
    """The job in ``scontrol show job -o ID``, or None when there is none."""
    for line in text.splitlines():
        fields = scontrol_fields(line, "JobId", "JobState", "Reason", "ExitCode")
        if "JobId" in fields and "JobState" in fields:
            return JobRecord(
                fields["JobId"],
                fields["JobState"],
                fields.get("Reason", "None"),
                fields.get("ExitCode", ""),
            )
    return None


# -- capacity ---------------------------------------------------------------------------

# Node state words (``IDLE+DRAIN``, ``DOWN*``) that mean no new job will start there.
UNUSABLE_NODE_STATES = frozenset(
    {
        "DOWN",
        "DRAIN",
        "DRAINED",
        "DRAINING",
        "FAIL",
        "FAILING",
        "FUTURE",
        "INVAL",
        "MAINT",
        "NOT_RESPONDING",
        "POWER_DOWN",
        "POWERED_DOWN",
        "POWERING_DOWN",
        "REBOOT_ISSUED",
        "REBOOT_REQUESTED",
        "UNKNOWN",
    }
)

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)$")
_MIB_PER_UNIT = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}


@dataclass(frozen=True, slots=True)
class NodeFree:
    """What one node can still give: idle CPUs and memory not allocated to jobs (MiB)."""

    name: str
    cpus: int
    memory_mib: int


def node_usable(state: str) -> bool:
    if state.endswith("*"):  # not responding
        return False
    return not any(word in UNUSABLE_NODE_STATES for word in state.rstrip("$~#!%@^-").split("+"))


def parse_nodes(text: str, partition: str | None = None) -> list[NodeFree]:
    """Usable nodes of ``scontrol show node -o`` (in ``partition``, if named), with what
    is free on each: CPUs not allocated and RealMemory − MemSpecLimit − AllocMem."""
    nodes = []
    for line in text.splitlines():
        fields = scontrol_fields(
            line,
            "NodeName",
            "CPUAlloc",
            "CPUTot",
            "CPUEfctv",
            "RealMemory",
            "AllocMem",
            "MemSpecLimit",
            "State",
            "Partitions",
        )
        if "NodeName" not in fields or not node_usable(fields.get("State", "UNKNOWN")):
            continue
        if partition is not None and partition not in fields.get("Partitions", "").split(","):
            continue
        cpus = _int(fields.get("CPUEfctv") or fields.get("CPUTot")) - _int(fields.get("CPUAlloc"))
        memory = (
            _int(fields.get("RealMemory"))
            - _int(fields.get("MemSpecLimit"))
            - _int(fields.get("AllocMem"))
        )
        nodes.append(NodeFree(fields["NodeName"], max(0, cpus), max(0, memory)))
    return nodes


def memory_mib(text: str) -> int:
    """A Slurm memory amount (``1G``, ``2000M``, ``512``: MiB by default) in MiB."""
    match = _MEMORY.match(text.strip().upper())
    if not match:
        return 0
    return int(float(match.group(1)) * _MIB_PER_UNIT[match.group(2)])


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
