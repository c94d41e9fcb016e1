"""The one small interface every execution backend implements.

The monitor owns the lifecycle loop (when to start, poll, stop, clean up); a backend
only answers narrow questions about the tasks it runs, in the style of psij-python's
executors. Every call may block (a process, a Docker or Slurm command), so the monitor
calls them from worker threads; none may block for long except ``start``, which is
where slow preparation (an image pull, a file download) happens, in PREPARING.

A *handle* is the backend's own opaque string for one task (a pid, a container id, a
Slurm job id); the broker persists it and hands it back after a restart, which is how
running tasks are re-adopted instead of started twice.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from execbroker.model.data import DataMount
from execbroker.model.executables import Executable
from execbroker.planner import Resources


class RunState(StrEnum):
    """What a backend can say about a task; the monitor maps these onto session phases."""

    PREPARING = "PREPARING"  # being set up (image pull, job queued)
    AVAILABLE = "AVAILABLE"  # up and reachable through its connectors (a server)
    RUNNING = "RUNNING"  # running
    COMPLETED = "COMPLETED"  # ended well (exit code 0)
    FAILED = "FAILED"  # ended badly; ``message`` says how
    CANCELLED = "CANCELLED"  # stopped on request
    LOST = "LOST"  # the backend knows nothing of this handle any more

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = {RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED, RunState.LOST}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A way to reach a running task, e.g. ``HTTP`` at ``http://127.0.0.1:32768/``."""

    protocol: str
    location: str


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything a backend needs to start one session's task."""

    session_id: str
    broker: str  # the broker's name: backends label what they start with it and the session id
    owner: str
    executable: Executable
    resources: Resources  # the grant: hard limits, not hints
    start: datetime
    deadline: datetime  # the end of the grant: the task must be stopped by then
    workdir: Path  # a fresh directory for this session, owned by the broker
    # Files to fetch (in ``start``, under the platform's fetch policy) and mount for the
    # task; only platforms whose ``stages_data`` is true are given any.
    data: tuple[DataMount, ...] = ()


@dataclass(frozen=True, slots=True)
class RunStatus:
    state: RunState
    message: str | None = None
    exit_code: int | None = None
    endpoints: tuple[Endpoint, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Logs:
    stdout: str
    stderr: str

    @classmethod
    def read(cls, stdout: Path, stderr: Path) -> Logs:
        """What a task has written so far to its two log files (their tails)."""
        return cls(read_tail(stdout), read_tail(stderr))


LOG_TAIL_BYTES = 1_000_000


def read_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a task's log file as text ("" before it exists): a task
    may write without end, and what ``logs`` returns must stay small enough to serve.

    The task may own the directory and have put a link or a FIFO in the file's place: the
    file is opened without following a link nor waiting on a FIFO, and read only if it is
    a regular file, so a (root) broker never serves what the task itself could not read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except OSError as error:
        if error.errno == errno.ELOOP:  # a link
            return ""
        raise
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return ""
        stream.seek(max(0, info.st_size - limit))
        return stream.read(limit).decode(errors="replace")


class PlatformError(Exception):
    """A backend could not do what was asked; the message is fit to show the session's owner."""


@runtime_checkable
class Platform(Protocol):
    """An execution backend. Implementations live one per module in ``execbroker.platforms``."""

    name: str

    def check(self, executable: Executable) -> str | None:
        """Why this backend cannot run ``executable`` (a sentence), or None if it can.

        Called while making offers, so it must be quick and must not pull or download.
        A backend may raise ``execbroker.errors.InvalidRequest`` (naming the field) for input
        that is malformed rather than unsupported, such as compose text that is not YAML.
        """

    def free(self) -> Resources | None:
        """What the platform itself could still give now, if it knows (a shared cluster
        does; a dedicated host does not and returns None). Offers never exceed it."""

    def start(self, spec: LaunchSpec) -> str:
        """Start the task and return its handle. Raises PlatformError with a reason."""

    def find(self, session_id: str) -> str | None:
        """The handle of a task this broker started for ``session_id``, if the backend
        still has one: used after a crash between ``start`` and saving its handle."""

    def status(self, handle: str) -> RunStatus:
        """The task's state now. Never raises for an unknown handle: that is LOST."""

    def logs(self, handle: str) -> Logs:
        """What the task has written so far."""

    def stop(self, handle: str) -> None:
        """Stop the task now; a task already stopped is not an error."""

    def release(self, handle: str) -> None:
        """Free what the finished task still holds (containers, projects); idempotent."""

    def forget(self, handle: str) -> None:
        """Delete what the platform keeps of a finished, released task (its records, logs),
        once the broker purges the session; idempotent."""


@runtime_checkable
class Watching(Protocol):
    """A backend that can tell when a task may have changed (an engine's event stream, a
    process's exit). An optimisation only: the monitor still asks ``status`` on every pass,
    so an event that is missed costs time, never correctness."""

    def watch(self, notify: Callable[[str], None]) -> None:
        """From now on, call ``notify`` (from any thread) with the session id of a task
        whose state may have changed."""

    def close(self) -> None:
        """Stop watching, and free what was prepared ahead (the broker is stopping)."""


@runtime_checkable
class Collecting(Protocol):
    """A backend whose tasks' files are not on the broker's host (a container's): it copies
    one out of an ended task before ``release``, for the broker to deliver."""

    def collect(self, handle: str, path: str, target: Path, *, limit: int) -> None:
        """Copy the file or directory ``path`` (as the task saw it) to ``target``: regular
        files and directories only, at most ``limit`` bytes. Raises PlatformError."""


def stop_and_release(platform: Platform, handle: str) -> None:
    """Stop a task and free what it holds, logging (not raising) what the platform refuses:
    the caller has already decided the session's fate and only needs the task gone."""
    try:
        platform.stop(handle)
        platform.release(handle)
    except PlatformError as error:
        logging.getLogger(__name__).warning("stopping %s on %s: %s", handle, platform.name, error)
