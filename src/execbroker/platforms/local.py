"""The ``local`` backend: batch scripts as processes on the broker's own host.

Each task runs under ``local_runner`` in its session's work directory, which holds
everything about it (script, launch parameters, pid, logs, final status), so the
handle is just that directory and a restarted broker finds everything it needs there.

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

from execbroker import kinds
from execbroker.model.executables import BatchScript, Executable
from execbroker.planner import Resources
from execbroker.platforms.base import LaunchSpec, Logs, PlatformError, RunState, RunStatus

LOG_TAIL_BYTES = 1_000_000


class LocalPlatform:
    name = "local"

    def __init__(self, *, sessions_dir: Path) -> None:
        self.sessions_dir = sessions_dir
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def check(self, executable: Executable) -> str | None:
        if executable.kind == kinds.BATCH_SCRIPT:
            return None
        return (
            f"the local platform runs batch-script executables, not {kinds.alias(executable.kind)}"
        )

    def free(self) -> Resources | None:
        return None

    def start(self, spec: LaunchSpec) -> str:
        if not isinstance(spec.executable, BatchScript) or not spec.executable.script:
            raise PlatformError("a batch-script with a script is needed")
        workdir = spec.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "script.sh").write_text(spec.executable.script)
        launch = {
            "session": spec.session_id,
            "cores": spec.resources.cores,
            "memory_gib": spec.resources.memory_gib,
            "deadline": spec.deadline.timestamp(),
            "environment": spec.executable.environment,
        }
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
            return RunStatus(RunState.RUNNING)
        final = self._final(workdir)  # it may have finished between the two looks
        return final or RunStatus(RunState.LOST, "the runner process is gone without a status")

    def logs(self, handle: str) -> Logs:
        workdir = Path(handle)
        return Logs(_tail(workdir / "stdout.log"), _tail(workdir / "stderr.log"))

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


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as stream:
            stream.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            return stream.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def create(options: dict[str, Any], *, broker: Any) -> LocalPlatform:
    if options:
        raise ValueError(f"the local platform takes no options, got {sorted(options)}")
    return LocalPlatform(sessions_dir=broker.state_path / "sessions")
