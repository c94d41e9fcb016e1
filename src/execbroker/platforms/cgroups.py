"""A cgroup (v1) per local session: the grant as kernel limits, and a kill that misses nothing.

Each session gets a group of its own in the ``memory`` (limit = the grant, no swap on
top), ``pids`` (a fork bomb stops at ``pids.max``), ``cpu`` (quota and shares of its
cores) and ``freezer`` hierarchies, made under the cgroup the broker itself is in (which
need not be the root: a container's memory cgroup, for one). Every process the task
starts stays in these groups whatever it does (``setsid``, double forks), so freezing the
group and killing every pid in it ends them all, and the memory group says whether the
kernel killed one of them for want of memory.

A host without writable cgroup v1 hierarchies gets None from ``SessionCgroup.create``; the
runner then falls back to per-process resource limits.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu", "freezer")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    memory_bytes: int
    processes: int
    cores: int


def own_cgroups(text: str) -> dict[str, str]:
    """Controller → this process's cgroup path in it, from ``/proc/self/cgroup`` text."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller:
                found[controller] = path
    return found


class SessionCgroup:
    """One session's groups, by controller; made by ``create``, found again by ``at``."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    @classmethod
    def create(cls, name: str, limits: Limits, *, root: Path = ROOT) -> SessionCgroup | None:
        """Make the session's groups with its limits; None if this host cannot."""
        own = own_cgroups(Path("/proc/self/cgroup").read_text())
        paths = {c: root / c / own.get(c, "/").lstrip("/") / name for c in CONTROLLERS}
        if not all(path.parent.is_dir() for path in paths.values()):
            return None
        group = cls(paths)
        try:
            for path in paths.values():
                path.mkdir(exist_ok=True)
            group._write("memory", "memory.limit_in_bytes", limits.memory_bytes)
            if (paths["memory"] / "memory.memsw.limit_in_bytes").exists():  # no swap either
                group._write("memory", "memory.memsw.limit_in_bytes", limits.memory_bytes)
            group._write("pids", "pids.max", limits.processes)
            group._write("cpu", "cpu.cfs_period_us", CPU_PERIOD_US)
            group._write("cpu", "cpu.cfs_quota_us", limits.cores * CPU_PERIOD_US)
            group._write("cpu", "cpu.shares", 1024 * limits.cores)
        except OSError:
            group.remove()
            return None
        return group

    @classmethod
    def at(cls, paths: dict[str, str]) -> SessionCgroup:
        return cls({controller: Path(path) for controller, path in paths.items()})

    def as_json(self) -> dict[str, str]:
        return {controller: str(path) for controller, path in self.paths.items()}

    def join(self, pid: int) -> None:
        """Move ``pid`` into every group (called in the task's process before its exec)."""
        for path in self.paths.values():
            (path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.paths.values():
            with contextlib.suppress(FileNotFoundError):
                found |= {int(n) for n in (path / "cgroup.procs").read_text().split()}
        return found

    def kill(self, timeout: float = 10) -> bool:
        """End every process in the groups: frozen first so none can fork meanwhile, then
        SIGKILLed and thawed. True once the groups are empty."""
        deadline = time.monotonic() + timeout
        for attempt in itertools.count():
            pids = self.pids()
            if not pids:
                return True
            frozen = self._freeze()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if frozen:
                self._write("freezer", "freezer.state", "THAWED")  # a frozen task cannot die
            if time.monotonic() > deadline:
                return not self.pids()
            time.sleep(_pause(attempt))
        return False  # not reached

    def out_of_memory(self) -> bool:
        """Did the kernel kill a process of the group because the grant's memory was full?"""
        try:
            text = (self.paths["memory"] / "memory.oom_control").read_text()
        except FileNotFoundError:
            return False
        fields = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(fields.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        """Remove the groups (emptied first); gone already is fine."""
        self.kill()
        for path in self.paths.values():
            for attempt in range(60):  # the last process may take a moment to leave the group
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY:
                        break
                    time.sleep(_pause(attempt))

    def _freeze(self) -> bool:
        path = self.paths.get("freezer")
        if path is None or not path.is_dir():
            return False
        try:
            self._write("freezer", "freezer.state", "FROZEN")
            for attempt in range(100):
                if (path / "freezer.state").read_text().strip() == "FROZEN":
                    break
                time.sleep(min(0.01, _pause(attempt)))
        except OSError:
            return False
        return True

    def _write(self, controller: str, name: str, value: object) -> None:
        (self.paths[controller] / name).write_text(str(value))


def _pause(attempt: int) -> float:
    """Seconds before looking again at a group whose processes are still leaving: they
    mostly have within milliseconds (a task's end waits on this), rarely after longer."""
    return min(0.02, 0.001 * 2**attempt)
