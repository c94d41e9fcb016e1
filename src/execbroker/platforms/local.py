"""The ``local`` backend: batch scripts and Jupyter notebooks as processes on the broker's host.

Each task runs under ``local_runner`` in its session's work directory, which holds
everything about it (script or notebook task, launch parameters, pid, logs, final
status), so the handle is just that directory and a restarted broker finds everything
it needs there. A notebook runs as ``notebooks.prepare`` describes it (its self-contained
runner under this interpreter); an interactive one's Jupyter server binds
``publish_host`` on a free port (the runner picks it) and is reported as an HTTP endpoint
once it answers.

Limits (honest about what a plain process can be held to): cores by CPU affinity (no
more CPUs than granted, up to those the host has) and a CPU-time limit of cores ×
duration; memory by an address-space limit per process; time by the runner killing
the process group at the deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from execbroker import kinds, notebooks
from execbroker.model.executables import BatchScript, Executable, JupyterNotebook
from execbroker.planner import Resources
from execbroker.platforms.base import LaunchSpec, Logs, PlatformError, RunState, RunStatus


class LocalOptions(BaseModel):
    """The platform's options in a broker's config; anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    publish_host: str = "127.0.0.1"  # where interactive notebook servers listen


class LocalPlatform:
    name = "local"

    def __init__(self, *, sessions_dir: Path, options: LocalOptions | None = None) -> None:
        self.sessions_dir = sessions_dir
        self.options = options or LocalOptions()
        self._children: dict[int, subprocess.Popen[bytes]] = {}

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
        workdir = spec.workdir
        launch: dict[str, Any] = {
            "session": spec.session_id,
            "cores": spec.resources.cores,
            "memory_gib": spec.resources.memory_gib,
            "deadline": spec.deadline.timestamp(),
            "environment": {},
        }
        if isinstance(spec.executable, JupyterNotebook):
            task = notebooks.prepare(spec, python=sys.executable, host=self.options.publish_host)
            task.write(workdir)
            launch |= {"argv": list(task.argv), "result": notebooks.task.RESULT_FILE}
        elif isinstance(spec.executable, BatchScript) and spec.executable.script:
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "script.sh").write_text(spec.executable.script)
            launch["environment"] = spec.executable.environment
        else:
            raise PlatformError("a batch-script with a script or a jupyter-notebook is needed")
        (workdir / "launch.json").write_text(json.dumps(launch))
        child = subprocess.Popen(
            [sys.executable, "-m", "execbroker.platforms.local_runner", str(workdir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "runner.log").open("wb"),
            start_new_session=True,
        )
        self._children[child.pid] = child
        (workdir / "runner.pid").write_text(str(child.pid))
        return str(workdir)

    def find(self, session_id: str) -> str | None:
        workdir = self.sessions_dir / session_id
        return str(workdir) if (workdir / "runner.pid").exists() else None

    def status(self, handle: str) -> RunStatus:
        workdir = Path(handle)
        final = self._final(workdir)
        if final is not None:
            return final
        pid = self._pid(workdir)
        if pid is not None and self._alive(pid, workdir):
            if notebooks.is_notebook_task(workdir):
                return notebooks.running(workdir)
            return RunStatus(RunState.RUNNING)
        final = self._final(workdir)  # it may have finished between the two looks
        return final or RunStatus(RunState.LOST, "the runner process is gone without a status")

    def logs(self, handle: str) -> Logs:
        workdir = Path(handle)
        return Logs.read(workdir / "stdout.log", workdir / "stderr.log")

    def stop(self, handle: str) -> None:
        workdir = Path(handle)
        pid = self._pid(workdir)
        if pid is None or not self._alive(pid, workdir):
            return
        os.kill(pid, signal.SIGTERM)  # the runner stops the task and records CANCELLED
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self._alive(pid, workdir):
            time.sleep(0.05)
        if self._alive(pid, workdir):  # the runner did not answer: end it and its task
            for group in (pid, self._pid(workdir, "task.pid")):
                if group is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(group, signal.SIGKILL)

    def release(self, handle: str) -> None:
        pid = self._pid(Path(handle))
        if pid is not None and pid in self._children:
            self._children.pop(pid).wait()

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _final(workdir: Path) -> RunStatus | None:
        try:
            data: dict[str, Any] = json.loads((workdir / "status.json").read_text())
        except FileNotFoundError:
            return None
        return RunStatus(RunState(data["state"]), data.get("message"), data.get("exit_code"))

    @staticmethod
    def _pid(workdir: Path, name: str = "runner.pid") -> int | None:
        try:
            return int((workdir / name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, pid: int, workdir: Path) -> bool:
        """Is ``pid`` still our runner for ``workdir`` (not a zombie, not a reused pid)?"""
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z" and str(workdir).encode() in cmdline


def create(options: dict[str, Any], *, broker: Any) -> LocalPlatform:
    return LocalPlatform(
        sessions_dir=broker.state_path / "sessions", options=LocalOptions.model_validate(options)
    )
