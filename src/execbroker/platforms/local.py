"""The ``local`` backend: batch scripts and Jupyter notebooks as processes on the broker's host.

Each task runs under ``local_runner`` (a root process in a session of its own, so it
outlives a broker crash), inside a bubblewrap sandbox (``sandbox``) as its owner's own
unprivileged account (``accounts``), in per-session cgroups (``cgroups``) that hold it to
its grant: memory (an allocation past it fails the session, saying so), a process count
(a fork bomb stops there), CPU quota and shares for its cores, and a kill at the
deadline or on cancel that ends every process it started, daemonized or not.

Two directories per session:

- its work directory (``LaunchSpec.workdir``, the task's HOME and cwd, seen as ``/task``):
  owned by the owner's account, 0700, so no other user's task can enter it; it holds the
  script or notebook files and ``outputs/``;
- the broker's record of the run (``local_runs``: ``<state>/local/<session>``, root's,
  0700, never visible in the sandbox): launch parameters, the idempotency marker and the
  runner's lock, pids, logs and final status, which the task can neither read nor forge.
  Its path is the handle, so a restarted broker finds everything there.

A notebook runs as ``notebooks.prepare`` describes it (its self-contained runner under
this interpreter, whose venv is bound read-only); an interactive one's Jupyter server
binds ``publish_host`` on a free port (the runner picks it) and is reported as an HTTP
endpoint once it answers.

The monitor hears of a task's end from its runner's exit (``watch``: the runner writes the
final status and only then exits, dropping the lock), not at its next pass; a runner started
by an earlier broker is watched from the first status that finds it alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from execbroker import kinds, notebooks
from execbroker.model.executables import BatchScript, Executable, JupyterNotebook
from execbroker.outputs import OUTPUTS_DIR
from execbroker.planner import Resources
from execbroker.platforms import sandbox, staging
from execbroker.platforms.accounts import Account, Accounts, IsolationError, RunAsOptions
from execbroker.platforms.base import LaunchSpec, Logs, PlatformError, RunState, RunStatus
from execbroker.platforms.cgroups import SessionCgroup
from execbroker.platforms.exits import ExitWatcher
from execbroker.platforms.local_runs import LockHeld, Progress, RunDir, write_json

log = logging.getLogger(__name__)
STOP_GRACE = 5.0  # seconds the runner gets to stop its task and say so


class LocalOptions(BaseModel):
    """The platform's options in a broker's config; anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    publish_host: str = "127.0.0.1"  # where interactive notebook servers listen
    # "none": a task's network is its own loopback alone (no port of the host, the broker's
    # or another session's, and no way out); an interactive notebook, whose server must be
    # reached, is the exception. "host": every task shares the host's network.
    network: Literal["none", "host"] = "none"
    run_as: RunAsOptions = Field(default_factory=RunAsOptions)
    max_processes: int = Field(default=512, ge=16, le=1_000_000)  # pids.max of a session


class LocalPlatform:
    name = "local"
    stages_data = True  # fetched into the run's record, bound into the sandbox

    def __init__(
        self,
        *,
        state_dir: Path,
        accounts: Accounts,
        options: LocalOptions | None = None,
        bwrap: str | None = None,
    ) -> None:
        found = bwrap or shutil.which("bwrap")
        if found is None:
            raise IsolationError(
                "the local platform needs bubblewrap (bwrap) to sandbox its tasks: "
                "install Debian's bubblewrap (scripts/bootstrap.sh does)"
            )
        self.bwrap = found
        self.runs_dir = state_dir / "local"
        self.accounts = accounts
        self.options = options or LocalOptions()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._exits: ExitWatcher | None = None

    def check(self, executable: Executable) -> str | None:
        if executable.kind == kinds.BATCH_SCRIPT:
            return None
        if isinstance(executable, JupyterNotebook):
            support = notebooks.Support.of_this_python()
            return notebooks.refusal(executable, support, platform=self.name)
        kind = kinds.alias(executable.kind)
        return f"the local platform runs batch-script and jupyter-notebook executables, not {kind}"

    def free(self) -> Resources | None:
        return None

    def start(self, spec: LaunchSpec) -> str:
        """Start the task, once: a session whose runner is alive, finished or died mid-task
        gets its handle back, never a second run."""
        run = self._run(spec.session_id)
        run.create()
        if run.progress() is not Progress.NEVER_BEGAN:
            return str(run.path)
        run.forget_attempt()
        account = self.accounts.for_owner(spec.owner)
        mounts = self._stage(spec, run, account)
        argv, result = self._prepare(spec, account)
        launch: dict[str, Any] = {
            "session": spec.session_id,
            "cores": spec.resources.cores,
            "memory_gib": spec.resources.memory_gib,
            "processes": self.options.max_processes,
            "deadline": spec.deadline.timestamp(),
            "environment": {
                **_environment(spec.executable),
                **staging.environment([(str(mount.path), mount) for mount in spec.data]),
            },
            "argv": argv,
            "result": result,
            "notebook": isinstance(spec.executable, JupyterNotebook),
            "workdir": str(spec.workdir),
            "account": None if account is None else _as_json(account),
            "read_only": [str(path) for path in sandbox.python_dirs()],
            "mounts": mounts,
            "host_network": self._host_network(spec.executable),
            "bwrap": self.bwrap,
        }
        write_json(run.path / "launch.json", launch)  # the marker: before the spawn
        try:
            lock = run.lock()
        except LockHeld:
            return str(run.path)  # a runner holds it: this session is under way already
        try:
            child = self._spawn(run, lock)
        finally:
            os.close(lock)  # the runner's copy now holds the lock alone
        self._children[str(run.path)] = child
        if self._exits is not None:
            self._exits.add(child.pid, spec.session_id)
        return str(run.path)

    def watch(self, notify: Callable[[str], None]) -> None:
        """Tell ``notify`` the session id of each runner that exits (its task has ended)."""
        self._exits = ExitWatcher(notify)

    def close(self) -> None:
        if self._exits is not None:
            self._exits.close()
            self._exits = None

    def find(self, session_id: str) -> str | None:
        run = self._run(session_id)
        return None if run.progress() is Progress.NEVER_BEGAN else str(run.path)

    def status(self, handle: str) -> RunStatus:
        run = RunDir(Path(handle))
        launch = run.launch()
        progress = run.progress()
        if launch is None or progress is Progress.NEVER_BEGAN:
            return RunStatus(RunState.LOST, "the task never began")
        if progress is Progress.ALIVE:
            self._watch_adopted(run)
            if launch.get("notebook"):
                return notebooks.running(Path(launch["workdir"]))
            return RunStatus(RunState.RUNNING)
        if progress is Progress.FINISHED:
            data = run.status() or {}
            return RunStatus(RunState(data["state"]), data.get("message"), data.get("exit_code"))
        self._clean(run)
        return RunStatus(
            RunState.LOST,
            "the task's runner died mid-task (its processes were ended with it); "
            "it is not started again",
        )

    def logs(self, handle: str) -> Logs:
        run = Path(handle)
        return Logs.read(run / "stdout.log", run / "stderr.log")

    def stop(self, handle: str) -> None:
        run = RunDir(Path(handle))
        signalled = False
        deadline = time.monotonic() + STOP_GRACE
        while run.locked() and time.monotonic() < deadline:
            pid = run.runner_pid()  # none yet: the runner is just starting
            if pid is not None and not signalled and self._is_runner(pid, run):
                os.kill(pid, signal.SIGTERM)  # it ends the task and records CANCELLED
                signalled = True
            time.sleep(0.05)
        if run.locked():  # the runner did not answer: end its task, then it
            self._kill_task(run)
            pid = run.runner_pid()
            if pid is not None and self._is_runner(pid, run):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._reap(run)
        if not run.locked():
            self._clean(run)

    def release(self, handle: str) -> None:
        run = RunDir(Path(handle))
        self._reap(run)
        if not run.locked():
            self._clean(run)

    def forget(self, handle: str) -> None:
        """Remove the broker's record of a run (launch marker, status, logs), never one whose
        runner still holds its lock, nor anything outside this platform's runs."""
        run = RunDir(Path(handle))
        if run.path.parent.resolve() != self.runs_dir.resolve() or run.locked():
            return
        shutil.rmtree(run.path, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------

    def _run(self, session_id: str) -> RunDir:
        return RunDir(self.runs_dir / session_id)

    @staticmethod
    def _stage(spec: LaunchSpec, run: RunDir, account: Account | None) -> list[dict[str, Any]]:
        """The session's data fetched into its run record (root's, never visible in the
        sandbox but through the binds): a READWRITE directory is the account's, a READONLY
        one root's and bound read-only, so the task reads it but cannot change it."""
        owner = None if account is None else (account.uid, account.gid)
        staged = staging.stage_all(spec.data, run.path / "data", owner=owner)
        return [
            {"source": str(path), "target": str(mount.path), "readonly": mount.readonly}
            for path, mount in staged
        ]

    def _prepare(self, spec: LaunchSpec, account: Account | None) -> tuple[list[str], str | None]:
        """Write the task's files into its work directory and hand it to ``account``;
        the command (as the sandbox sees it) and the result file's name."""
        workdir = spec.workdir
        executable = spec.executable
        if isinstance(executable, JupyterNotebook):
            task = notebooks.prepare(
                spec,
                python=sys.executable,
                task_dir=sandbox.TASK_DIR,
                host=self.options.publish_host,
            )
            task.write(workdir)
            argv, result = list(task.argv), notebooks.task.RESULT_FILE
        elif isinstance(executable, BatchScript) and executable.script:
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "script.sh").write_text(executable.script)
            argv, result = ["/bin/sh", str(sandbox.TASK_DIR / "script.sh")], None
        else:
            raise PlatformError("a batch-script with a script or a jupyter-notebook is needed")
        (workdir / OUTPUTS_DIR).mkdir(exist_ok=True)  # $EXECBROKER_OUTPUTS
        _hand_over(workdir, account)
        return argv, result

    def _host_network(self, executable: Executable) -> bool:
        interactive = isinstance(executable, JupyterNotebook) and executable.mode == "interactive"
        return self.options.network == "host" or interactive

    def _spawn(self, run: RunDir, lock: int) -> subprocess.Popen[bytes]:
        keep = ("PATH", "LANG", "PYTHONPATH")  # the runner needs no more of the broker's
        runner = [sys.executable, "-m", "execbroker.platforms.local_runner"]
        with (run.path / "runner.log").open("wb") as errors:
            return subprocess.Popen(
                [*runner, str(run.path), str(lock)],
                env={name: os.environ[name] for name in keep if name in os.environ},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                pass_fds=(lock,),
                start_new_session=True,
            )

    def _watch_adopted(self, run: RunDir) -> None:
        """Watch a runner this process did not start (a restarted broker's), once."""
        exits, session = self._exits, run.path.name
        if exits is None or str(run.path) in self._children or exits.watching(session):
            return
        pid = run.runner_pid()
        if pid is not None:
            exits.add(pid, session, check=lambda: self._is_runner(pid, run))

    def _reap(self, run: RunDir) -> None:
        child = self._children.get(str(run.path))
        if child is not None and child.poll() is not None:
            self._children.pop(str(run.path), None)

    @staticmethod
    def _kill_task(run: RunDir) -> None:
        paths = run.cgroups()
        if paths:
            SessionCgroup.at(paths).kill()

    @staticmethod
    def _clean(run: RunDir) -> None:
        """Whatever a runner that died left: processes in its cgroups, the cgroups."""
        paths = run.cgroups()
        if paths:
            SessionCgroup.at(paths).remove()

    def _is_runner(self, pid: int, run: RunDir) -> bool:
        """Is ``pid`` still the runner of ``run`` (not a zombie, not a reused pid)?"""
        child = self._children.get(str(run.path))
        if child is not None and child.pid == pid:
            return child.poll() is None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z" and str(run.path).encode() in cmdline


def _environment(executable: Executable) -> dict[str, str]:
    """The task's own variables; PlatformError for one no process could be given."""
    found = dict(executable.environment) if isinstance(executable, BatchScript) else {}
    for name, value in found.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise PlatformError(f"environment: {name[:60]!r} cannot be passed to a process")
    return found


def _as_json(account: Account) -> dict[str, Any]:
    return {"name": account.name, "uid": account.uid, "gid": account.gid}


def _hand_over(workdir: Path, account: Account | None) -> None:
    """Make ``workdir`` the account's alone (0700): no other user's task may enter it.
    Nothing of the task has run in it yet, so no link in it is the task's."""
    workdir.chmod(0o700)
    if account is None:
        return
    for top, directories, files in os.walk(workdir):
        for name in [*directories, *files]:
            os.chown(Path(top) / name, account.uid, account.gid, follow_symlinks=False)
    os.chown(workdir, account.uid, account.gid)


def create(options: dict[str, Any], *, broker: Any) -> LocalPlatform:
    """The platform for ``broker``; IsolationError when it cannot keep its users apart."""
    own = LocalOptions.model_validate(options)
    accounts = Accounts(own.run_as, broker=broker.name, platform="local")
    for warning in accounts.check([user.name for user in broker.users]):
        log.warning("%s", warning)
    return LocalPlatform(state_dir=broker.state_path, accounts=accounts, options=own)
