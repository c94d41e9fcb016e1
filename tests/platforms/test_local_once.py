"""Exactly once on the local platform, driving the platform object directly: a broker killed
with SIGKILL at each moment of ``start`` (after the marker and before the spawn; after the
spawn and before the handle is saved), or a runner killed mid-task, never has its task
started twice, and ``find`` tells what happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from execbroker.model.executables import BatchScript
from execbroker.platforms import local
from execbroker.platforms.base import RunState
from tests.platforms.support import launch, wait_state

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "echo ran >> count; sleep 3; echo done"
FINAL = {RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED, RunState.LOST}

# A broker that dies (SIGKILL, no clean-up) at one moment of start(): ``before-spawn`` once
# the marker is written and the lock taken, ``after-spawn`` once the runner is started but
# before start() returns its handle for the broker to save.
CRASHING = """
import os, signal, subprocess, sys
from pathlib import Path
from types import SimpleNamespace
from execbroker.model.executables import BatchScript
from execbroker.platforms import local
from tests.platforms.support import launch

window, state, session, script = sys.argv[1:5]
real = subprocess.Popen

def crashing(*args, **kwargs):
    if window == "before-spawn":
        os.kill(os.getpid(), signal.SIGKILL)
    child = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return child

local.subprocess.Popen = crashing
broker = SimpleNamespace(name="test", state_path=Path(state), users=[])
platform = local.create({}, broker=broker)
spec = launch(BatchScript(script=script), Path(state).parent, session=session)
platform.start(spec)
raise SystemExit("start() returned: the crash never happened")
"""


def _platform(state: Path) -> local.LocalPlatform:
    return local.create({}, broker=SimpleNamespace(name="test", state_path=state, users=[]))


def _count(workdir: Path) -> int:
    for path in (workdir / "count", workdir / "work" / "count"):  # the old layout had work/
        if path.exists():
            return len(path.read_text().split())
    return 0


@pytest.mark.parametrize("window", ["before-spawn", "after-spawn"])
def test_a_broker_killed_during_start_never_starts_the_task_twice(tmp_path, window):
    state = tmp_path / "state"
    spec = launch(BatchScript(script=SCRIPT), tmp_path, session=f"once-{window}")
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING, window, str(state), spec.session_id, SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    platform = _platform(state)  # the broker, restarted
    found = platform.find(spec.session_id)
    if window == "before-spawn":
        assert found is None  # never began: safe to start
    else:
        assert found is not None  # the runner is alive: re-adopt it
    handle = platform.start(spec)  # what the monitor does when find said nothing
    assert found is None or handle == found
    again = platform.start(spec)  # a second start of a live session is its handle
    assert again == handle
    status = wait_state(platform, handle, FINAL, timeout=60)
    assert status.state == RunState.COMPLETED, status
    assert platform.start(spec) == handle  # finished: still never started again
    time.sleep(0.5)
    assert _count(spec.workdir) == 1
    platform.release(handle)


def test_a_runner_killed_mid_task_is_reported_and_never_started_again(tmp_path):
    state = tmp_path / "state"
    platform = _platform(state)
    spec = launch(BatchScript(script="echo ran >> count; sleep 300"), tmp_path)
    handle = platform.start(spec)
    wait_state(platform, handle, {RunState.RUNNING})
    deadline = time.monotonic() + 30
    while _count(spec.workdir) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    runner = next(
        int(path.read_text())
        for path in (Path(handle) / "runner.pid", spec.workdir / "runner.pid")
        if path.exists()
    )
    os.kill(runner, signal.SIGKILL)
    restarted = _platform(state)
    status = wait_state(restarted, handle, FINAL)
    assert status.state == RunState.LOST
    assert "died mid-task" in (status.message or "")
    assert restarted.find(spec.session_id) == handle
    assert restarted.start(spec) == handle
    time.sleep(1)
    assert _count(spec.workdir) == 1
    sleeping = [
        entry
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _cmdline(entry) == b"sleep\x00300\x00"
        and _in_session(entry, spec.session_id)
    ]  # fmt: skip
    assert sleeping == []  # the task went with its runner
    platform.release(handle)


def _cmdline(entry: Path) -> bytes:
    try:
        return (entry / "cmdline").read_bytes()
    except OSError:
        return b""


def _in_session(entry: Path, session: str) -> bool:
    try:
        return session.encode() in (entry / "environ").read_bytes()
    except OSError:
        return False


def test_find_tells_the_four_cases_apart(tmp_path):
    from execbroker.platforms.local_runs import Progress, RunDir  # (new in this module's fix)

    run = RunDir(tmp_path / "local" / "s")
    run.create()
    assert run.progress() is Progress.NEVER_BEGAN
    (run.path / "launch.json").write_text("{}")
    assert run.progress() is Progress.NEVER_BEGAN  # a marker, a free lock, no runner
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run.path / "runner.lock")],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    assert run.progress() is Progress.ALIVE
    (run.path / "runner.pid").write_text(str(holder.pid))
    assert run.progress() is Progress.ALIVE
    holder.kill()
    holder.wait()
    assert run.progress() is Progress.DIED
    (run.path / "status.json").write_text('{"state": "COMPLETED"}')
    assert run.progress() is Progress.FINISHED


HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(300)
    """
)
