"""The ``slurm`` backend: each accepted batch-script or batch-notebook session is one Slurm job.

Virtual platforms on one cluster are brokers with different Slurm *accounts*: each
broker submits with its own ``--account``, so Slurm's per-account limits back the
broker's quota, and ``free()`` tells the broker what the cluster can really give now.

Why the command-line tools and not slurmrestd: ``sbatch``/``squeue``/``scontrol``/
``sacct``/``scancel`` exist on every submit host and authenticate with munge as the
broker's own user, with nothing to configure; slurmrestd is an optional daemon that
needs JWT keys or a local socket, and its OpenAPI version changes with each Slurm
release (v0.0.38 for 22.05, v0.0.39 for 23.02 ...). The CLIs' text formats are stable,
chosen explicitly (``-o``/``-P``/``-h``), and each call costs a few milliseconds; the
jobs the monitor asks about at once share one ``squeue`` (``slurm_queue``). psij-python's
Slurm executor makes the same choice; its state and reason tables are the model for
``slurm_states``.

The job is a batch script built from a template (``slurm_job``) and given to sbatch on
its standard input: ``#SBATCH`` lines built only from validated integers, names and paths
we control, then ``export NAME='value'`` lines that set the session's environment inside
the job (names validated, values ``shlex.quote``-d, NUL refused), then ``exec /bin/sh
script.sh``, where ``script.sh`` is the user's text, never parsed by sbatch nor spliced
into any command. Every Slurm command (sbatch, squeue, scontrol, sacct, scancel,
sacctmgr) runs with the broker's fixed environment (``PATH``, ``LANG`` and ``SLURM_CONF``
if set) and an argument list: nothing of the user's reaches a broker process, nothing of
the broker's own environment reaches a job. ``--export=ALL`` exports that fixed
environment; ``NONE``/``NIL`` would not do better on Slurm 22.05, where both set
``SLURM_GET_USER_ENV=1`` and slurmd then runs ``su -`` to load the account's login
environment (an error in slurmd's log for a nologin account, and a slower start).
Names Slurm itself reads (``SLURM_*``, ``SBATCH_*``, ...) are refused, since its tools in
the job would obey them.

Who the job runs as: never root, never the broker's own user. Each broker user has an
unprivileged account (``accounts``: ``run_as.users`` maps them, or a root broker makes
``eb…`` system accounts); a root broker submits with ``sbatch --uid --gid``, so slurmd
starts the job as that account, and adds the account to the broker's Slurm ``account``
(``sacctmgr -i add user``) the first time, since Slurm runs no job without that
association. The session's directory is made by the broker, filled, then handed to the
account (mode 0700): only that account (and root) can read it; its parents are
traversable (checked at start-up). The broker writes nothing there once it is handed
over, and reads logs from it without following links (see ``base.read_tail``). The
broker refuses at start-up to run several users under one uid, and refuses to run as
root with ``run_as.shared`` (every job would be root's). Being in the Slurm account, a job
could submit jobs of its own there, past its grant: the cluster must take jobs for that
account from root alone (a ``job_submit`` rule; services.sh writes one for its test
cluster), and a root broker asks Slurm at start-up (``tasks_can_submit``) and refuses to
start if it would not, unless ``tasks_may_submit`` says the operator accepts it.

Time: the monitor submits a session at its start (slurmctld then starts a batch job on
its next pass, within about a second); ``--begin`` is set only if a launch comes early,
so Slurm never starts a job before its grant. ``--time`` is the grant's time left,
rounded up to whole minutes (Slurm's granularity): the monitor stops the session at the
deadline itself, and Slurm's limit (TIMEOUT) is the backstop while the broker is down.

Options: ``account``, ``partition``, ``notebook_python``, ``run_as`` (``accounts``) and
``tasks_may_submit``, nothing else (closed): no ``cluster`` (one
cluster per broker; ``-M`` would change every command's output) and no ``sbatch_extra``
(a config must not smuggle arbitrary sbatch flags past the grant).

Notebooks: a batch ``jupyter-notebook`` is the same job, its ``script.sh`` one line,
``exec <notebook_python> <workdir>/notebook_runner.py <workdir>/notebook-task.json``
(``notebooks.prepare``'s command; every part of it is the broker's own). The runner writes
the executed notebook to ``outputs/`` and its result (state, the failing cell's error)
next to it, both read from the shared work directory, which the broker (root) serves to
the session's owner. ``notebook_python`` is the python that runs it *on the node*, as the
job's account: it needs nbclient (or papermill) and ipykernel there, and it and every
directory above it must be readable by other users. The default, the broker's own
interpreter, is right only where that holds and the nodes share the broker host's file
system; a python in a private home (``/root/.pyenv``...) is not, and notebooks are then
refused, saying so. Debian's ``/usr/bin/python3`` with ``python3-nbclient`` and
``python3-ipykernel`` is (scripts/services.sh installs both). Interactive notebooks are
refused: a Jupyter server on a compute node listens on a port open to anyone who can
reach that node (its token the only guard), and the broker can neither publish nor fence
it there.

The handle is the job id. The job's name ``eb.<broker>.<session>`` and comment let
``find`` locate a job after a crash (``squeue -t all``, then ``sacct --allusers``: the
jobs belong to the users' accounts, not the broker's), so a session
is never submitted twice. ``--no-requeue`` keeps Slurm from running a job a second time
after a node failure: such a session fails instead.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from execbroker import kinds, notebooks
from execbroker.model.executables import BatchScript, Executable, JupyterNotebook
from execbroker.outputs import OUTPUTS_DIR
from execbroker.planner import Resources
from execbroker.platforms import slurm_states as states
from execbroker.platforms import staging
from execbroker.platforms.accounts import Account, Accounts, RunAsOptions
from execbroker.platforms.base import LaunchSpec, Logs, PlatformError, RunState, RunStatus
from execbroker.platforms.slurm_job import (
    JOB_PATH,
    RESERVED_PREFIXES,
    SAFE_PATH,
    batch_script,
    job_name,
    malformed_variable,
    reserved_names,
)
from execbroker.platforms.slurm_queue import Queue
from execbroker.timeutil import utcnow

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0
# How far back ``find`` looks in Slurm's accounting for a session's job.
FIND_HORIZON = timedelta(days=30)
# How long sbatch is retried while slurmctld has not yet heard of a new association.
ASSOCIATION_WAIT = 15.0

_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")
_SLURM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class SlurmOptions(BaseModel):
    """The platform's options in a broker's config; anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    account: str | None = Field(default=None, pattern=_SLURM_NAME)
    partition: str | None = Field(default=None, pattern=_SLURM_NAME)
    # The python that runs batch notebooks on the nodes (see the module's docstring).
    notebook_python: str = Field(default_factory=lambda: sys.executable, min_length=1)
    run_as: RunAsOptions = Field(default_factory=RunAsOptions)
    # A job's account is in ``account`` (else no job of it would run), so by itself it could
    # submit jobs there, past its grant, unless the cluster takes jobs for ``account`` from
    # the broker (root) alone. A root broker asks Slurm at start-up and refuses to start if
    # not; true: the operator accepts that its tasks may.
    tasks_may_submit: bool = False


# What a node's ``notebook_python`` is taken to have; kernels are not known in advance.
NOTEBOOK_SUPPORT = notebooks.Support(batch="papermill", interactive=None, kernels=None)
INTERACTIVE_REFUSAL = (
    "the Slurm platform does not serve interactive notebooks: a Jupyter server on a compute "
    "node would listen on a port open to anyone who can reach that node (its token the only "
    "guard), and the broker can neither publish nor fence it there; ask for mode batch"
)


def parse_job_id(output: str) -> str:
    """The job id ``sbatch --parsable`` prints (``123`` or ``123;cluster``)."""
    job_id = output.strip().splitlines()[-1].split(";", 1)[0].strip() if output.strip() else ""
    if not _JOB_ID.match(job_id):
        raise PlatformError(f"sbatch answered {output.strip()!r}, not a job id")
    return job_id


def slurm_error(text: str) -> str:
    """The useful part of a Slurm command's stderr, fit for the session's owner."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    cleaned = [
        re.sub(r"^(sbatch|squeue|scancel|sacct|sacctmgr|scontrol): error: ", "", x) for x in lines
    ]
    return "; ".join(cleaned) or "no message"


def fixed_environment() -> dict[str, str]:
    """The one environment every Slurm command of the broker runs in."""
    env = {"PATH": JOB_PATH, "LANG": "C.UTF-8"}
    if "SLURM_CONF" in os.environ:  # a cluster configured away from /etc/slurm
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return env


def untraversable(path: Path) -> Path | None:
    """The first directory from ``/`` down to ``path`` that other users cannot enter."""
    for directory in [*reversed(path.parents), path]:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None


def readable_by_others(program: str) -> bool:
    """Whether an account other than the broker's can run ``program`` (its directories
    enterable, the file, after links, readable and executable by others)."""
    path = Path(program)
    try:
        real = path.resolve(strict=True)
        mode = os.stat(real).st_mode
    except OSError:
        return False
    if mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
        return False
    return all(untraversable(p.parent) is None for p in (path.absolute(), real))


def stage_into_workdir(spec: LaunchSpec, account: Account | None) -> None:
    """The session's data in ``<workdir>/data/<index>/content`` (a job has no mount
    namespace of its own here: no absolute mount path can be made for it), found at its
    mount path *relative to the job's working directory* (``work/input`` → a link to
    ``../data/0`` for ``/input``) and as ``$EXECBROKER_DATA_<index>``. READONLY is by
    modes: root's, 0755/0444, in a directory the account cannot write (when the broker is
    root; otherwise the broker's own user's, which that user could change)."""
    owner = None if account is None else (account.uid, account.gid)
    data = spec.workdir / "data"
    data.mkdir(mode=0o755, exist_ok=True)
    for directory, mount in staging.stage_all(spec.data, data, owner=owner):
        link = spec.workdir / "work" / str(mount.path).lstrip("/")
        for parent in reversed(link.relative_to(spec.workdir / "work").parents[:-1]):
            made = spec.workdir / "work" / parent
            made.mkdir(exist_ok=True)
            if account is not None:
                os.lchown(made, account.uid, account.gid)
        link.symlink_to(os.path.relpath(directory, link.parent))
        if account is not None:
            os.lchown(link, account.uid, account.gid)


def hand_over(workdir: Path, account: Account) -> None:
    """Give the session's freshly filled directory to the job's account, 0700 at the top.
    Links are changed themselves (``lchown``), never followed."""
    for root, dirs, files in os.walk(workdir):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), account.uid, account.gid)
    os.chown(workdir, account.uid, account.gid)
    os.chmod(workdir, 0o700)


# -- the backend ------------------------------------------------------------------------


class SlurmPlatform:
    name = "slurm"
    stages_data = True  # into the job's work directory (``stage_into_workdir``)

    def __init__(
        self,
        *,
        options: SlurmOptions,
        broker: str,
        sessions_dir: Path,
        binaries: dict[str, str],
        accounts: Accounts | None = None,
    ) -> None:
        self.options = options
        self.broker = broker
        self.sessions_dir = sessions_dir
        self.binaries = binaries
        self.accounts = accounts
        self._workdirs: dict[str, Path] = {}
        self._associated: set[str] = set()
        self._lock = threading.Lock()
        self._queue = Queue(self._list_jobs)  # one squeue for the jobs asked about at once

    # -- offers ---------------------------------------------------------------------------

    def check(self, executable: Executable) -> str | None:
        if isinstance(executable, JupyterNotebook):
            if executable.mode == "interactive":
                return INTERACTIVE_REFUSAL
            if self._foreign_accounts() and not readable_by_others(self.options.notebook_python):
                return (
                    f"this Slurm platform's notebook_python ({self.options.notebook_python}) "
                    "cannot be run by the accounts its jobs run as; the operator must set "
                    "notebook_python to a python other users can read (e.g. /usr/bin/python3 "
                    "with nbclient and ipykernel)"
                )
            return notebooks.refusal(executable, NOTEBOOK_SUPPORT, platform=self.name)
        if executable.kind != kinds.BATCH_SCRIPT:
            return (
                "the Slurm platform runs batch-script and batch jupyter-notebook executables, "
                f"not {kinds.alias(executable.kind)}"
            )
        environment = executable.environment if isinstance(executable, BatchScript) else {}
        problem = malformed_variable(environment)
        if problem is not None:
            raise problem
        reserved = reserved_names(environment)
        if reserved:
            fields = ", ".join(f"executable.environment.{name}" for name in reserved)
            return (
                f"{fields}: would change how Slurm runs the job; names starting with "
                f"{', '.join(RESERVED_PREFIXES)} are not allowed"
            )
        return None

    def _foreign_accounts(self) -> bool:
        """Whether jobs run as accounts other than the broker's own (only root may submit
        as another user; a broker that is not root was refused or warned at start-up)."""
        return self.accounts is not None and not self.accounts.shared and os.geteuid() == 0

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
        """CPUs and MiB held now by this broker's jobs (by name, in our account), whichever
        users' accounts they run as (squeue lists every user's jobs; ``--all`` every
        partition's)."""
        command = ["--all", "-h", "-t", "CF,R,CG,S,ST,SO,SI,RS", "-o", "%j|%a|%C|%m"]
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
        account = self.accounts.for_owner(spec.owner) if self._foreign_accounts() else None
        if account is not None:
            self._associate(account)
        elif os.geteuid() == 0:  # refused at start-up; an owner unknown to the config too
            raise PlatformError(f"no account to run {spec.owner}'s job as: never as root")
        script = batch_script(
            spec, account=self.options.account, partition=self.options.partition, now=utcnow()
        )
        self._fill_workdir(spec, account)
        submit = ["--parsable"]
        if account is not None:
            submit += [f"--uid={account.uid}", f"--gid={account.gid}"]
        result = self._sbatch(*submit, input=script, account=account)
        if result.returncode != 0:
            raise PlatformError(f"Slurm refused the job: {slurm_error(result.stderr)}")
        job_id = parse_job_id(result.stdout)
        self._workdirs[job_id] = spec.workdir
        return job_id

    def _sbatch(
        self, *args: str, input: str | None, account: Account | None, as_it: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """sbatch for a job of ``account`` (run by ``account`` itself if ``as_it``), tried
        again while slurmctld has not yet heard of the association sacctmgr just added."""
        user = account if as_it else None
        deadline = time.monotonic() + ASSOCIATION_WAIT
        while True:
            result = self._run("sbatch", *args, input=input, check=False, user=user)
            new = account is not None and "Invalid account" in result.stderr
            if result.returncode == 0 or not new or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def tasks_can_submit(self, owner: str) -> str | None:
        """Whether a task of ``owner``'s could submit a job of its own to the broker's Slurm
        account: asked of Slurm (``sbatch --test-only``, nothing queued) as the account the
        task would run as. The reason if it could; None if Slurm refused it, or if there is
        nothing to ask (no account of the broker's, jobs not run as other accounts)."""
        slurm_account = self.options.account
        account = self.accounts.for_owner(owner) if self._foreign_accounts() else None
        if account is None or slurm_account is None:
            return None
        partition = [f"--partition={self.options.partition}"] if self.options.partition else []
        asked = ["--test-only", f"--account={slurm_account}", *partition, "--wrap", "true"]
        try:
            self._associate(account)
            result = self._sbatch(*asked, input=None, account=account, as_it=True)
        except PlatformError as error:  # (Slurm down: the broker starts, and says so)
            log.warning("could not ask Slurm whether a task may submit jobs: %s", error)
            return None
        if result.returncode != 0:
            log.info("Slurm takes no job from a task's account: %s", slurm_error(result.stderr))
            return None
        return (
            f"platform slurm: Slurm takes jobs for account {slurm_account} from {account.name}, "
            "the account tasks run as, so a task could submit jobs of its own past its grant: "
            f"have the cluster take jobs for {slurm_account} from root alone (a job_submit "
            "rule; see the README), or set tasks_may_submit: true to accept that they may"
        )

    def _fill_workdir(self, spec: LaunchSpec, account: Account | None) -> None:
        """A fresh session directory with the task's files, then given to its account.
        A directory left by an earlier try (no job was found for it) may hold anything the
        account put there since: it is removed (``rmtree`` follows no links), not reused."""
        workdir = spec.workdir
        if workdir.is_symlink() or workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(mode=0o700)
        (workdir / "work").mkdir()
        (workdir / OUTPUTS_DIR).mkdir()  # $EXECBROKER_OUTPUTS
        (workdir / "script.sh").write_text(self._task_script(spec))
        for name in ("stdout.log", "stderr.log"):  # the owner's, before Slurm opens them
            (workdir / name).touch()
        if account is not None:
            hand_over(workdir, account)
        if spec.data:
            stage_into_workdir(spec, account)

    def _associate(self, account: Account) -> None:
        """Make sure Slurm lets ``account`` run jobs in the broker's Slurm account."""
        slurm_account = self.options.account
        if slurm_account is None or account.name in self._associated:
            return
        with self._lock:
            if account.name in self._associated:
                return
            listed = self._run(
                "sacctmgr", "-nP", "show", "assoc", "where",
                f"user={account.name}", f"account={slurm_account}", "format=user",
            )  # fmt: skip
            if account.name not in listed.stdout.split():
                added = self._run(
                    "sacctmgr", "-i", "add", "user", account.name,
                    f"account={slurm_account}", check=False,
                )  # fmt: skip
                log.info(
                    "Slurm association %s/%s: %s",
                    account.name,
                    slurm_account,
                    slurm_error(added.stdout + added.stderr),
                )
            self._associated.add(account.name)

    def _task_script(self, spec: LaunchSpec) -> str:
        """What the job script runs: the user's script, or the notebook runner's command."""
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
        result = self._run("squeue", "--all", "-h", "-t", "all", f"--name={name}", "-o", "%i")
        found = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if not found:
            since = (datetime.now() - FIND_HORIZON).strftime("%Y-%m-%dT%H:%M:%S")
            result = self._run(
                "sacct", "--allusers", "-n", "-X", "-P", f"--name={name}", "-S", since,
                "-o", "JobID",
            )  # fmt: skip
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
        return self._queue.record(job_id)

    def _list_jobs(self, jobs: Sequence[str]) -> list[states.JobRecord]:
        """What ``squeue`` says of these jobs (those slurmctld still knows)."""
        result = self._run(
            "squeue", "--all", "-h", "-t", "all", "-j", ",".join(jobs), "-o", "%i|%t|%r",
            check=False,
        )  # fmt: skip
        if result.returncode == 0:
            return [r for r in states.parse_squeue(result.stdout) if r.job_id in jobs]
        if "Invalid job id" not in result.stderr:
            raise PlatformError(f"squeue failed: {slurm_error(result.stderr)}")
        if len(jobs) == 1:
            return []
        return [record for job in jobs for record in self._list_jobs([job])]  # one is gone

    def _scontrol(self, job_id: str) -> states.JobRecord | None:
        result = self._run("scontrol", "show", "job", "-o", job_id, check=False)
        return states.parse_scontrol_job(result.stdout) if result.returncode == 0 else None

    def _sacct(self, job_id: str) -> states.JobRecord | None:
        result = self._run(
            "sacct", "--allusers", "-n", "-X", "-P", "-j", job_id,
            "-o", "JobID,State,ExitCode,Reason",
        )  # fmt: skip
        records = [r for r in states.parse_sacct(result.stdout) if r.job_id == job_id]
        return records[-1] if records else None

    def _workdir(self, handle: str) -> Path | None:
        """The session directory of a job: cached, or found from the job's name."""
        if handle in self._workdirs:
            return self._workdirs[handle]
        if not _JOB_ID.match(handle):
            return None
        result = self._run(
            "squeue", "--all", "-h", "-t", "all", "-j", handle, "-o", "%j", check=False
        )
        names = result.stdout.split() if result.returncode == 0 else []
        if not names:
            names = self._run(
                "sacct", "--allusers", "-n", "-X", "-P", "-j", handle, "-o", "JobName"
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
        input: str | None = None,
        check: bool = True,
        user: Account | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """One Slurm command, as an argument list, in the broker's fixed environment; as
        ``user`` if given (a root broker only)."""
        as_user: dict[str, Any] = {}
        if user is not None:
            as_user = {"user": user.uid, "group": user.gid, "extra_groups": []}
        try:
            result = subprocess.run(
                [self.binaries[command], *args],
                capture_output=True,
                text=True,
                env=fixed_environment(),
                cwd="/",  # sbatch hands its directory to the job (SLURM_SUBMIT_DIR)
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                timeout=COMMAND_TIMEOUT,
                check=False,
                **as_user,
            )
        except subprocess.TimeoutExpired as error:
            raise PlatformError(
                f"{command} did not answer within {COMMAND_TIMEOUT:.0f}s"
            ) from error
        except (OSError, KeyError) as error:
            raise PlatformError(f"{command} could not run: {error}") from error
        if check and result.returncode != 0:
            raise PlatformError(f"{command} failed: {slurm_error(result.stderr)}")
        return result


COMMANDS = ("sbatch", "squeue", "scontrol", "sacct", "scancel")


def _accounts(parsed: SlurmOptions, broker: Any) -> Accounts:
    """The accounts jobs run as, checked as the broker starts: one uid per user, never
    root; raises ValueError (IsolationError) when that cannot hold."""
    accounts = Accounts(parsed.run_as, broker=broker.name, platform="slurm")
    users = [user.name for user in getattr(broker, "users", [])]
    for warning in accounts.check(users):
        log.warning("%s", warning)
    root = os.geteuid() == 0
    if accounts.shared and root:
        raise ValueError(
            "platform slurm: run_as.shared with a root broker would run every job as root; "
            "map users in run_as.users or let the broker create their accounts"
        )
    unmapped = [user for user in users if user not in parsed.run_as.users]
    if root and not accounts.shared and unmapped and not accounts.can_create():
        raise ValueError(
            f"platform slurm: {', '.join(unmapped)} would have their jobs run as root: map "
            "them in run_as.users or let the broker create their accounts (run_as.create)"
        )
    if not accounts.shared and not root and parsed.run_as.users:
        raise ValueError(
            "platform slurm: run_as.users needs a root broker: only root may submit a job "
            "as another user (sbatch --uid)"
        )
    return accounts


def _sessions_dir(state_path: Path, *, prepare: bool) -> Path:
    """The sessions' parent; with ``prepare``, made enterable (not listable) by the jobs'
    accounts, or a ValueError naming the directory on the way they cannot enter."""
    sessions_dir = state_path / "sessions"
    if not SAFE_PATH.match(str(sessions_dir)):
        raise ValueError(
            f"the slurm platform needs a state_dir Slurm can be given as a plain path "
            f"(letters, digits, '_', '.', '/', '+', '-'), not {state_path}"
        )
    if not prepare:
        return sessions_dir
    sessions_dir.mkdir(parents=True, exist_ok=True)
    # The jobs' accounts must pass through the state dir, and may then open any name they
    # know in it: all but ``sessions`` (the broker's database, above all) is made the
    # broker's alone. SQLite gives a database's -wal and -shm files the database's mode.
    for entry in state_path.iterdir():
        if entry.name != "sessions" and not entry.is_symlink():
            os.chmod(entry, stat.S_IMODE(entry.stat().st_mode) & ~0o077)
    os.chmod(state_path, stat.S_IMODE(os.stat(state_path).st_mode) | 0o011)
    os.chmod(sessions_dir, 0o711)  # enterable, not listable: no one sees others' sessions
    blocked = untraversable(sessions_dir)
    if blocked is not None:
        raise ValueError(
            f"the slurm platform's jobs run as other users, who cannot enter {blocked} "
            f"on the way to {sessions_dir}: choose a state_dir below directories others "
            "may enter (mode o+x)"
        )
    return sessions_dir


def create(options: dict[str, Any], *, broker: Any) -> SlurmPlatform:
    try:
        parsed = SlurmOptions.model_validate(options)
    except ValidationError as error:
        raise ValueError(f"slurm platform options: {error}") from error
    sessions_dir = _sessions_dir(Path(broker.state_path), prepare=False)
    binaries = {name: shutil.which(name) for name in (*COMMANDS, "sacctmgr")}
    missing = sorted(name for name in COMMANDS if binaries[name] is None)
    if missing:
        raise ValueError(
            f"the slurm platform needs {', '.join(missing)} on PATH (is this a Slurm submit host?)"
        )
    accounts = _accounts(parsed, broker)
    as_others = os.geteuid() == 0 and not accounts.shared
    if as_others and parsed.account and binaries["sacctmgr"] is None:
        raise ValueError("the slurm platform needs sacctmgr to give its users' accounts access")
    if as_others:
        _sessions_dir(Path(broker.state_path), prepare=True)
    platform = SlurmPlatform(
        options=parsed,
        broker=broker.name,
        sessions_dir=sessions_dir,
        binaries={name: path for name, path in binaries.items() if path},
        accounts=accounts,
    )
    users = [user.name for user in getattr(broker, "users", [])]
    if as_others and users and not parsed.tasks_may_submit:
        problem = platform.tasks_can_submit(users[0])
        if problem is not None:
            raise ValueError(problem)
    return platform
