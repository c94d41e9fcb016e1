"""The ``slurm`` backend: each accepted batch-script or batch-notebook session is one Slurm job.

Virtual platforms on one cluster are brokers with different Slurm *accounts*: each
broker submits with its own ``--account``, so Slurm's per-account limits back the
broker's quota, and ``free()`` tells the broker what the cluster can really give now.

Why the command-line tools and not slurmrestd: ``sbatch``/``squeue``/``scontrol``/
``sacct``/``scancel`` exist on every submit host and authenticate with munge as the
broker's own user, with nothing to configure; slurmrestd is an optional daemon that
needs JWT keys or a local socket, and its OpenAPI version changes with each Slurm
release (v0.0.38 for 22.05, v0.0.39 for 23.02 ...). The CLIs' text formats are stable,
chosen explicitly (``-o``/``-P``/``-h``), and each call costs a few milliseconds, which
the monitor's per-session polling can afford. psij-python's Slurm executor makes the
same choice; its state and reason tables are the model for ``slurm_states``.

The job is a generated batch script (``job.sh`` in the session's work directory, which
the cluster shares with the broker): a ``#!/bin/sh`` line, ``#SBATCH`` lines built only
from validated integers, names and paths we control, and ``exec /bin/sh script.sh``, where
``script.sh`` is the user's text, never parsed by sbatch nor spliced into any command.
``sbatch --parsable job.sh`` is an argument list. The job's environment is exactly the
session's environment plus ``EXECBROKER_*`` (and Slurm's own ``SLURM_*``): sbatch runs in
a clean environment we build, with ``--export=ALL``, so no value is ever on a command line
or in the script, nothing of the broker's own environment leaks, and slurmd does not load
the user's login environment (which any other ``--export`` form makes it do, through a
``su -`` that also delays every start by about two seconds). Names Slurm itself reads
(``SLURM_*``, ``SBATCH_*``, ...) are refused, since sbatch would obey them.

Time: the monitor submits a session at its start (slurmctld then starts a batch job on
its next pass, within about a second); ``--begin`` is set only if a launch comes early,
so Slurm never starts a job before its grant. ``--time`` is the grant's time left,
rounded up to whole minutes (Slurm's granularity): the monitor stops the session at the
deadline itself, and Slurm's limit (TIMEOUT) is the backstop while the broker is down.

Options: ``account`` and ``partition``, nothing else (closed): no ``cluster`` (one
cluster per broker; ``-M`` would change every command's output) and no ``sbatch_extra``
(a config must not smuggle arbitrary sbatch flags past the grant).

Notebooks: a batch ``jupyter-notebook`` is the same job, its ``script.sh`` one line,
``exec <notebook_python> <workdir>/notebook_runner.py <workdir>/notebook-task.json``
(``notebooks.prepare``'s command; every part of it is the broker's own). The runner writes
the executed notebook to ``outputs/`` and its result (state, the failing cell's error)
next to it, both read from the shared work directory. ``notebook_python`` is the python
that runs it *on the node*, and it needs papermill (or nbclient) and ipykernel there. The
default, the broker's own interpreter, is right only where the nodes share the broker
host's file system, as on a single-node cluster; on a real cluster set it to such a
python on the nodes. Interactive notebooks are refused: a Jupyter server on a compute
node listens on a port open to anyone who can reach that node (its token the only guard),
and the broker can neither publish nor fence it there.

The handle is the job id. The job's name ``eb.<broker>.<session>`` and comment let
``find`` locate a job after a crash (``squeue -t all``, then ``sacct``), so a session
is never submitted twice. ``--no-requeue`` keeps Slurm from running a job a second time
after a node failure: such a session fails instead.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from execbroker import kinds, notebooks
from execbroker.model.executables import BatchScript, Executable, JupyterNotebook
from execbroker.planner import Resources
from execbroker.platforms import slurm_states as states
from execbroker.platforms.base import LaunchSpec, Logs, PlatformError, RunState, RunStatus
from execbroker.timeutil import utcnow

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0
JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
# Environment names sbatch or Slurm's daemons would act on: a user may not set them.
RESERVED_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SPANK_", "PMI_", "PMIX_")
# How far back ``find`` looks in Slurm's accounting for a session's job.
FIND_HORIZON = timedelta(days=30)

_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")
_SLURM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# What an #SBATCH value may contain: no blanks, quotes, ``%`` (Slurm's filename patterns)
# or anything a shell or sbatch's directive parser would read specially.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:/+=@-]+$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]+$")


class SlurmOptions(BaseModel):
    """The platform's options in a broker's config; anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    account: str | None = Field(default=None, pattern=_SLURM_NAME)
    partition: str | None = Field(default=None, pattern=_SLURM_NAME)
    # The python that runs batch notebooks on the nodes (see the module's docstring).
    notebook_python: str = Field(default_factory=lambda: sys.executable, min_length=1)


# What a node's ``notebook_python`` is taken to have; kernels are not known in advance.
NOTEBOOK_SUPPORT = notebooks.Support(batch="papermill", interactive=None, kernels=None)
INTERACTIVE_REFUSAL = (
    "the Slurm platform does not serve interactive notebooks: a Jupyter server on a compute "
    "node would listen on a port open to anyone who can reach that node (its token the only "
    "guard), and the broker can neither publish nor fence it there; ask for mode batch"
)


# -- building the job (pure) ------------------------------------------------------------


def job_name(broker: str, session_id: str) -> str:
    return f"eb.{broker}.{session_id}"


def time_limit_minutes(deadline: datetime, start: datetime, now: datetime) -> int:
    """Slurm's ``--time`` in whole minutes, rounded up: the time left of the grant
    (its whole duration when launched on time). The monitor stops the task at the
    deadline itself; Slurm's limit is the backstop when the broker is down."""
    seconds = (deadline - max(start, now)).total_seconds()
    return max(1, math.ceil(seconds / 60))


def begin_time(start: datetime, now: datetime) -> str | None:
    """``--begin`` for a start still ahead, as ``now+<seconds>`` (relative, so no time zone
    can shift it); None when the job may start at once. sbatch adds the seconds to its own
    clock's *whole* second, so they are counted from ``now`` rounded down to ``start``
    rounded up: never early, at most a second late."""
    if (start - now).total_seconds() <= 1:
        return None
    return f"now+{math.ceil(start.timestamp()) - math.floor(now.timestamp())}"


def job_environment(spec: LaunchSpec) -> dict[str, str]:
    """The job's whole environment: a plain base, the session's own, and ours on top."""
    home = str(spec.workdir / "work")
    user = spec.executable.environment if isinstance(spec.executable, BatchScript) else {}
    return {
        "PATH": JOB_PATH,
        "HOME": home,
        "LANG": "C.UTF-8",
        **user,
        "EXECBROKER_BROKER": spec.broker,
        "EXECBROKER_SESSION": spec.session_id,
        "EXECBROKER_CORES": str(spec.resources.cores),
        "EXECBROKER_MEMORY_GIB": str(spec.resources.memory_gib),
    }


def reserved_names(environment: dict[str, str]) -> list[str]:
    return sorted(name for name in environment if name.startswith(RESERVED_PREFIXES))


def directives(spec: LaunchSpec, options: SlurmOptions, now: datetime) -> list[tuple[str, str]]:
    """The ``#SBATCH`` options of the session's job, in order."""
    if spec.resources.cores < 1:
        raise PlatformError("a Slurm job needs at least one core; this grant has none")
    if spec.resources.memory_gib < 1:
        raise PlatformError("a Slurm job needs at least 1 GiB of memory; this grant has none")
    workdir = str(spec.workdir)
    items = [
        ("job-name", job_name(spec.broker, spec.session_id)),
        (
            "comment",
            f"execbroker:broker={spec.broker},session={spec.session_id},owner={spec.owner}",
        ),
        ("account", options.account),
        ("partition", options.partition),
        ("nodes", "1"),
        ("ntasks", "1"),
        ("cpus-per-task", str(int(spec.resources.cores))),
        ("mem", f"{int(spec.resources.memory_gib)}G"),
        ("time", str(time_limit_minutes(spec.deadline, spec.start, now))),
        ("begin", begin_time(spec.start, now)),
        ("no-requeue", ""),
        ("chdir", f"{workdir}/work"),
        ("output", f"{workdir}/stdout.log"),
        ("error", f"{workdir}/stderr.log"),
        ("export", "ALL"),  # all of the clean environment sbatch runs in: see job_environment
    ]
    return [(name, value) for name, value in items if value is not None]


def batch_script(spec: LaunchSpec, options: SlurmOptions, now: datetime) -> str:
    """The job script sbatch reads: only validated values, then the user's script by path."""
    if not _SAFE_PATH.match(str(spec.workdir)):
        raise PlatformError(
            f"the session directory {spec.workdir} is not a plain path Slurm can be given "
            "(letters, digits, '_', '.', '/', '+', '-')"
        )
    lines = [
        "#!/bin/sh",
        f"# execbroker: session {spec.session_id} of broker {spec.broker}",
    ]
    for name, value in directives(spec, options, now):
        if value and not _SAFE_VALUE.match(value):
            raise PlatformError(f"refusing an unsafe value for --{name}: {value!r}")
        lines.append(f"#SBATCH --{name}={value}" if value else f"#SBATCH --{name}")
    lines.append(f"exec /bin/sh {spec.workdir}/script.sh")
    return "\n".join(lines) + "\n"


def parse_job_id(output: str) -> str:
    """The job id ``sbatch --parsable`` prints (``123`` or ``123;cluster``)."""
    job_id = output.strip().splitlines()[-1].split(";", 1)[0].strip() if output.strip() else ""
    if not _JOB_ID.match(job_id):
        raise PlatformError(f"sbatch answered {output.strip()!r}, not a job id")
    return job_id


def slurm_error(text: str) -> str:
    """The useful part of a Slurm command's stderr, fit for the session's owner."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    cleaned = [re.sub(r"^(sbatch|squeue|scancel|sacct|scontrol): error: ", "", x) for x in lines]
    return "; ".join(cleaned) or "no message"


# -- the backend ------------------------------------------------------------------------


class SlurmPlatform:
    name = "slurm"

    def __init__(
        self, *, options: SlurmOptions, broker: str, sessions_dir: Path, binaries: dict[str, str]
    ) -> None:
        self.options = options
        self.broker = broker
        self.sessions_dir = sessions_dir
        self.binaries = binaries
        self._workdirs: dict[str, Path] = {}

    # -- offers ---------------------------------------------------------------------------

    def check(self, executable: Executable) -> str | None:
        if isinstance(executable, JupyterNotebook):
            if executable.mode == "interactive":
                return INTERACTIVE_REFUSAL
            return notebooks.refusal(executable, NOTEBOOK_SUPPORT, platform=self.name)
        if executable.kind != kinds.BATCH_SCRIPT:
            return (
                "the Slurm platform runs batch-script and batch jupyter-notebook executables, "
                f"not {kinds.alias(executable.kind)}"
            )
        environment = executable.environment if isinstance(executable, BatchScript) else {}
        reserved = reserved_names(environment)
        if reserved:
            return (
                f"executable.environment: {', '.join(reserved)} would change how Slurm runs "
                f"the job; names starting with {', '.join(RESERVED_PREFIXES)} are not allowed"
            )
        return None

    def free(self) -> Resources | None:
        """What Slurm could give *this broker* now: what is free on the usable nodes, plus
        what this broker's own running jobs hold. Those jobs are in the broker's calendar
        already; leaving them out of ``free`` too would count them twice."""
        try:
            nodes = states.parse_nodes(
                self._run("scontrol", "show", "node", "-o").stdout, self.options.partition
            )
            own_cpus, own_mib = self._own_running()
        except PlatformError as error:
            log.warning("Slurm capacity unknown, offering nothing: %s", error)
            return Resources(0, 0, 0)
        cpus = sum(node.cpus for node in nodes) + own_cpus
        mib = sum(node.memory_mib for node in nodes) + own_mib
        return Resources(cpus, mib // 1024, 0)

    def _own_running(self) -> tuple[int, int]:
        """CPUs and MiB held now by this broker's jobs (by name, in our account)."""
        command = ["-h", "-t", "CF,R,CG,S,ST,SO,SI,RS", "-o", "%j|%a|%C|%m"]
        if self.options.partition:
            command += ["-p", self.options.partition]
        prefix = job_name(self.broker, "")
        cpus = mib = 0
        for line in self._run("squeue", *command).stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 4 or not parts[0].startswith(prefix):
                continue
            if self.options.account and parts[1] != self.options.account:
                continue
            cpus += int(parts[2]) if parts[2].isdigit() else 0
            mib += states.memory_mib(parts[3])
        return cpus, mib

    # -- running --------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> str:
        reason = self.check(spec.executable)
        if reason is not None:
            raise PlatformError(reason)
        environment = job_environment(spec)
        script = batch_script(spec, self.options, utcnow())
        workdir = spec.workdir
        (workdir / "work").mkdir(parents=True, exist_ok=True)
        (workdir / "script.sh").write_text(self._task_script(spec))
        (workdir / "job.sh").write_text(script)
        result = self._run(
            "sbatch", "--parsable", str(workdir / "job.sh"), environment=environment, check=False
        )
        if result.returncode != 0:
            raise PlatformError(f"Slurm refused the job: {slurm_error(result.stderr)}")
        job_id = parse_job_id(result.stdout)
        (workdir / "slurm-job-id").write_text(job_id + "\n")
        self._workdirs[job_id] = workdir
        return job_id

    def _task_script(self, spec: LaunchSpec) -> str:
        """What ``job.sh`` runs: the user's script, or the notebook runner's command."""
        executable = spec.executable
        if isinstance(executable, JupyterNotebook):  # prepare fetches a location, if any
            task = notebooks.prepare(
                spec, python=self.options.notebook_python, host="0.0.0.0", port=0
            )
            task.write(spec.workdir)
            return "exec " + shlex.join(task.argv) + "\n"
        if isinstance(executable, BatchScript) and executable.script:
            return executable.script
        raise PlatformError("a batch-script with a script or a batch jupyter-notebook is needed")

    def find(self, session_id: str) -> str | None:
        name = job_name(self.broker, session_id)
        result = self._run("squeue", "-h", "-t", "all", f"--name={name}", "-o", "%i")
        found = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if not found:
            since = (datetime.now() - FIND_HORIZON).strftime("%Y-%m-%dT%H:%M:%S")
            result = self._run(
                "sacct", "-n", "-X", "-P", f"--name={name}", "-S", since, "-o", "JobID"
            )
            found = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        found = [job for job in found if _JOB_ID.match(job)]
        if not found:
            return None
        if len(found) > 1:
            log.warning(
                "session %s has several Slurm jobs %s; adopting the last", session_id, found
            )
        return max(found, key=lambda job: int(job.split("_")[0]))

    def status(self, handle: str) -> RunStatus:
        if not _JOB_ID.match(handle):
            return RunStatus(RunState.LOST, f"{handle!r} is not a Slurm job id")
        status = self._job_status(handle)
        if status.state.final:
            return self._notebook_result(handle, status) or status
        return status

    def _job_status(self, handle: str) -> RunStatus:
        """What Slurm says of the job."""
        record = self._squeue(handle)
        if record is None:  # slurmctld has forgotten it (MinJobAge): ask the accounting
            record = self._sacct(handle)
            if record is None:
                return RunStatus(RunState.LOST, f"Slurm has no job {handle}")
            return states.run_status(record)
        status = states.run_status(record)
        if status.state.final:  # squeue shows no exit code; scontrol does
            detail = self._scontrol(handle)
            if detail is not None:
                return states.run_status(detail)
        return status

    def _notebook_result(self, handle: str, job: RunStatus) -> RunStatus | None:
        """How a finished notebook job's runner said it ended (a failing cell's error is
        the session's message), with Slurm's exit code; None for a script, or a runner that
        was killed before it could say."""
        workdir = self._workdir(handle)
        if workdir is None or not notebooks.is_notebook_task(workdir):
            return None
        said = notebooks.result(workdir)
        if said is None:
            return None
        return RunStatus(said.state, said.message, job.exit_code)

    def logs(self, handle: str) -> Logs:
        workdir = self._workdir(handle)
        if workdir is None:
            return Logs("", "")
        return Logs.read(workdir / "stdout.log", workdir / "stderr.log")

    def stop(self, handle: str) -> None:
        if not _JOB_ID.match(handle):
            return
        result = self._run("scancel", handle, check=False)
        gone = ("already completing or completed", "Invalid job id")
        if result.returncode != 0 and not any(text in result.stderr for text in gone):
            raise PlatformError(f"scancel {handle} failed: {slurm_error(result.stderr)}")

    def release(self, handle: str) -> None:
        """Slurm frees a finished job's resources itself; only our own cache is dropped."""
        self._workdirs.pop(handle, None)

    # -- helpers --------------------------------------------------------------------------

    def _squeue(self, job_id: str) -> states.JobRecord | None:
        result = self._run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%t|%r", check=False)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return None
            raise PlatformError(f"squeue failed: {slurm_error(result.stderr)}")
        records = [r for r in states.parse_squeue(result.stdout) if r.job_id == job_id]
        return records[0] if records else None

    def _scontrol(self, job_id: str) -> states.JobRecord | None:
        result = self._run("scontrol", "show", "job", "-o", job_id, check=False)
        return states.parse_scontrol_job(result.stdout) if result.returncode == 0 else None

    def _sacct(self, job_id: str) -> states.JobRecord | None:
        result = self._run(
            "sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State,ExitCode,Reason"
        )
        records = [r for r in states.parse_sacct(result.stdout) if r.job_id == job_id]
        return records[-1] if records else None

    def _workdir(self, handle: str) -> Path | None:
        """The session directory of a job: cached, or found from the job's name."""
        if handle in self._workdirs:
            return self._workdirs[handle]
        if not _JOB_ID.match(handle):
            return None
        result = self._run("squeue", "-h", "-t", "all", "-j", handle, "-o", "%j", check=False)
        names = result.stdout.split() if result.returncode == 0 else []
        if not names:
            names = self._run(
                "sacct", "-n", "-X", "-P", "-j", handle, "-o", "JobName"
            ).stdout.split()
        prefix = job_name(self.broker, "")
        for name in names:
            session = name.removeprefix(prefix)
            if name.startswith(prefix) and re.fullmatch(r"[0-9a-f-]{36}", session):
                self._workdirs[handle] = self.sessions_dir / session
                return self._workdirs[handle]
        return None

    def _run(
        self,
        command: str,
        *args: str,
        environment: dict[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """One Slurm command, as an argument list, in a clean environment."""
        env = {"PATH": JOB_PATH, "LANG": "C.UTF-8", **(environment or {})}
        if "SLURM_CONF" in os.environ:  # a cluster configured away from /etc/slurm
            env["SLURM_CONF"] = os.environ["SLURM_CONF"]
        try:
            result = subprocess.run(
                [self.binaries[command], *args],
                capture_output=True,
                text=True,
                env=env,
                stdin=subprocess.DEVNULL,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise PlatformError(
                f"{command} did not answer within {COMMAND_TIMEOUT:.0f}s"
            ) from error
        except OSError as error:
            raise PlatformError(f"{command} could not run: {error}") from error
        if check and result.returncode != 0:
            raise PlatformError(f"{command} failed: {slurm_error(result.stderr)}")
        return result


COMMANDS = ("sbatch", "squeue", "scontrol", "sacct", "scancel")


def create(options: dict[str, Any], *, broker: Any) -> SlurmPlatform:
    try:
        parsed = SlurmOptions.model_validate(options)
    except ValidationError as error:
        raise ValueError(f"slurm platform options: {error}") from error
    sessions_dir = broker.state_path / "sessions"
    if not _SAFE_PATH.match(str(sessions_dir)):
        raise ValueError(
            f"the slurm platform needs a state_dir Slurm can be given as a plain path "
            f"(letters, digits, '_', '.', '/', '+', '-'), not {broker.state_path}"
        )
    binaries = {name: shutil.which(name) for name in COMMANDS}
    missing = sorted(name for name, path in binaries.items() if path is None)
    if missing:
        raise ValueError(
            f"the slurm platform needs {', '.join(missing)} on PATH (is this a Slurm submit host?)"
        )
    return SlurmPlatform(
        options=parsed,
        broker=broker.name,
        sessions_dir=sessions_dir,
        binaries={name: path for name, path in binaries.items() if path},
    )
