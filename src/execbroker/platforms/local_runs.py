"""The broker's own record of one local run, out of the task's reach, and how far it got.

One directory per session under the broker's state (``local/<session>``, root's, 0700;
the task's sandbox never sees it), holding:

    launch.json    the idempotency marker: written (atomically) before the runner is spawned
    runner.lock    flock'ed by the broker just before the spawn; the locked descriptor is
                   passed to the runner, which keeps it open for its whole life
    runner.pid     written by the runner first thing, before it starts the task
    cgroups.json   the session's cgroup paths, once the runner has made them
    stdout.log, stderr.log   the task's output (it holds only the open descriptors)
    status.json    the runner's last act: how the task ended

So, whatever the moment a broker is killed, ``progress`` tells four cases apart: the lock
is held (the runner is alive), a status exists (finished), the runner had begun but
neither holds the lock nor left a status (it died mid-task: never start it again), or
nothing had begun (no marker, or a marker and a free lock but no runner.pid: the broker
died before the spawn or the runner before the task; safe to start again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

LAUNCH = "launch.json"
LOCK = "runner.lock"
BEGAN = "runner.pid"
CGROUPS = "cgroups.json"
STATUS = "status.json"
STDOUT, STDERR = "stdout.log", "stderr.log"


class Progress(StrEnum):
    NEVER_BEGAN = "never began"
    ALIVE = "runner alive"
    FINISHED = "finished"
    DIED = "runner died mid-task"


class LockHeld(Exception):
    """Another process holds the run's lock: its runner is alive (or being spawned)."""


def write_json(path: Path, data: Any) -> None:
    """Atomically, owner-only."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as stream:
        json.dump(data, stream)
        stream.flush()
        os.fsync(stream.fileno())
    temporary.replace(path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None if there is none (or it is not JSON yet)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.parent.chmod(0o700)
        self.path.mkdir(mode=0o700, exist_ok=True)

    def launch(self) -> dict[str, Any] | None:
        return read_json(self.path / LAUNCH)

    def status(self) -> dict[str, Any] | None:
        return read_json(self.path / STATUS)

    def cgroups(self) -> dict[str, str] | None:
        return read_json(self.path / CGROUPS)

    def runner_pid(self) -> int | None:
        try:
            return int((self.path / BEGAN).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def lock(self, attempts: int = 50) -> int:
        """The run's lock, taken (a descriptor to hand to the runner). LockHeld if a runner
        holds it; a brief hold by another ``progress`` is waited out."""
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for _ in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                time.sleep(0.01)
        os.close(fd)
        raise LockHeld(str(self.path))

    def locked(self) -> bool:
        """Is the lock held by someone (the runner)? Probed by taking it for an instant."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's own lock
        return False

    def progress(self) -> Progress:
        if not (self.path / LAUNCH).exists():
            return Progress.NEVER_BEGAN
        if self.locked():  # first: a runner writes its status and only then lets go
            return Progress.ALIVE
        if (self.path / STATUS).exists():
            return Progress.FINISHED
        if (self.path / BEGAN).exists():
            return Progress.DIED
        return Progress.NEVER_BEGAN

    def forget_attempt(self) -> None:
        """Clear what a start that never began left, before starting again."""
        for name in (BEGAN, CGROUPS, STATUS, STDOUT, STDERR):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
