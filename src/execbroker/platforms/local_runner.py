"""Runs one task (a batch script, or a notebook's runner) under its grant, outside the broker.

Usage: ``python -m execbroker.platforms.local_runner RUN_DIR LOCK_FD``.

The broker starts this in a session (process group) of its own, so the task outlives a
broker crash and can be re-adopted, and hands it ``LOCK_FD``: the run's flock'ed lock,
kept open (never passed on to the task) for the runner's whole life, which is how a
broker tells a live runner from a dead one (see ``local_runs``). It records its pid,
makes the session's cgroups (memory, pids, cpu, freezer: ``cgroups``), starts the task in
its sandbox (``sandbox``: bubblewrap, as the owner's account) inside them, and at the
deadline, on SIGTERM or when the task's first process ends, kills everything left in the
cgroups and writes ``status.json`` (atomically) as its last act, then exits; a child of it
removes the emptied cgroups. A task
whose process the kernel killed for want of memory fails with that reason. A task that
leaves a result file (``launch.json``'s ``result``: JSON with a ``message``) has that
message in its status. The script text is only ever a file: no shell sees it spliced
into a command line.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from execbroker.notebooks.progress import read_untrusted
from execbroker.outputs import OUTPUTS_DIR
from execbroker.platforms import local_runs, sandbox
from execbroker.platforms.accounts import Account
from execbroker.platforms.cgroups import Limits, SessionCgroup

GIB = 1024**3


def _limit(launch: dict[str, Any], group: SessionCgroup | None, seconds: float) -> None:
    """Applied in the task's process before it execs the sandbox: the grant."""
    if group is not None:
        group.join(os.getpid())
    cores = launch["cores"]
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[: max(1, min(cores, len(cpus)))])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if group is None:  # no cgroups here: per-process limits are all there is
        cpu_seconds = max(1, int(cores * seconds) + 1)
        memory = launch["memory_gib"] * GIB
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def _status(run: Path, **status: object) -> None:
    local_runs.write_json(run / local_runs.STATUS, status, durable=False)  # see _let_go


def _account(launch: dict[str, Any]) -> Account | None:
    found = launch.get("account")
    if found is None:
        return None
    account = Account(found["name"], found["uid"], found["gid"])
    if account.uid == 0 or account.gid == 0:
        raise SystemExit("refusing to run a task as root")
    return account


def run(run: Path) -> tuple[int, SessionCgroup | None]:
    """The runner's exit code, and the session's cgroups (emptied) for ``_let_go`` to remove."""
    (run / local_runs.BEGAN).write_text(str(os.getpid()))
    launch = local_runs.read_json(run / local_runs.LAUNCH)
    seconds = launch["deadline"] - time.time()
    if seconds <= 0:
        _status(run, state="FAILED", message="the granted time was over before start")
        return 1, None
    stopped: list[str] = []
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.append("CANCELLED"))
    limits = Limits(launch["memory_gib"] * GIB, launch["processes"], launch["cores"])
    group = SessionCgroup.create(f"execbroker-{launch['session']}", limits)
    if group is not None:
        local_runs.write_json(run / local_runs.CGROUPS, group.as_json())
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(sandbox.TASK_DIR),
        "LANG": "C.UTF-8",
        **launch["environment"],
        "EXECBROKER_SESSION": launch["session"],
        "EXECBROKER_CORES": str(launch["cores"]),
        "EXECBROKER_MEMORY_GIB": str(launch["memory_gib"]),
        "EXECBROKER_OUTPUTS": str(sandbox.TASK_DIR / OUTPUTS_DIR),
    }
    argv = sandbox.command(
        launch["argv"],
        workdir=Path(launch["workdir"]),
        account=_account(launch),
        environment=environment,
        read_only=[Path(path) for path in launch["read_only"]],
        mounts=[sandbox.Mount(**item) for item in launch.get("mounts", [])],
        host_network=launch["host_network"],
        bwrap=launch["bwrap"],
    )
    try:
        code = _supervise(run, argv, launch, group, seconds, stopped)
        ending = None if code is None else _ending(code, launch, group)  # while it exists
        if group is not None:
            group.kill()  # nothing of the task outlives the status that says it ended
    except BaseException:
        if group is not None:
            group.remove()
        raise
    if ending is None:
        return 1, group
    _status(run, **ending)
    return 0, group


def _supervise(
    run: Path,
    argv: list[str],
    launch: dict[str, Any],
    group: SessionCgroup | None,
    seconds: float,
    stopped: list[str],
) -> int | None:
    """The task's exit code; None when it was stopped (its status already written)."""
    out = os.open(run / local_runs.STDOUT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(run / local_runs.STDERR, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        child = subprocess.Popen(
            argv,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},  # bwrap's; the task's is in argv
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=lambda: _limit(launch, group, seconds),
        )
    finally:
        os.close(out)
        os.close(err)
    _wait(child, stopped, time.monotonic() + seconds)
    if child.poll() is not None:
        return child.returncode
    _end(child, group)
    if stopped:
        _status(run, state="CANCELLED", message="stopped on request")
    else:
        _status(run, state="FAILED", message="stopped: exceeded the granted duration")
    return None


def _wait(child: subprocess.Popen[bytes], stopped: list[str], deadline: float) -> None:
    """Until the task ends, a stop is asked for (SIGTERM) or the deadline: heard at once
    through the child's pidfd and the signal's wake-up pipe, so the end is reported (and
    the broker hears of it) without waiting for a poll."""
    wake, woken = os.pipe()
    os.set_blocking(woken, False)
    previous = signal.set_wakeup_fd(woken)
    try:
        pidfd = os.pidfd_open(child.pid)
    except OSError:  # no pidfds: poll
        pidfd = None
    try:
        while child.poll() is None and not stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if pidfd is None:
                time.sleep(min(left, 0.05))
            else:
                select.select([pidfd, wake], [], [], min(left, 1.0))
    finally:
        signal.set_wakeup_fd(previous)
        for fd in (wake, woken, pidfd):
            if fd is not None:
                os.close(fd)


def _end(child: subprocess.Popen[bytes], group: SessionCgroup | None) -> None:
    """Every process of the task, gone: the cgroup's kill, or (without cgroups) the
    sandbox's init, whose death ends its pid namespace."""
    if group is not None:
        group.kill()
    else:
        child.kill()
    child.wait()


def _ending(code: int, launch: dict[str, Any], group: SessionCgroup | None) -> dict[str, Any]:
    reported = _reported(launch)
    if code == 0:
        return {"state": "COMPLETED", "exit_code": 0, "message": reported or "completed"}
    if group is not None and group.out_of_memory():
        message = (
            f"out of memory: the grant is {launch['memory_gib']} GiB and the task needed more "
            f"(the kernel killed a process of it; exit code {code})"
        )
        return {"state": "FAILED", "exit_code": code, "message": message}
    message = reported or f"exited with code {code}"
    if not reported and code > 128:  # bwrap reports a task killed by signal N as 128 + N
        with contextlib.suppress(ValueError):
            name = signal.Signals(code - 128).name
            hint = ", the CPU time limit of the grant" if name == "SIGXCPU" else ""
            message += f" (killed by {name}{hint})"
    return {"state": "FAILED", "exit_code": code, "message": message}


def _reported(launch: dict[str, Any]) -> str | None:
    """The message a task left in its result file, if it has one and left it."""
    name = launch.get("result")
    if not name:
        return None
    data = read_untrusted(Path(launch["workdir"]) / name)
    message = data.get("message") if data else None
    return str(message) if message else None


def main(arguments: list[str]) -> None:
    run_dir, lock = Path(arguments[0]), int(arguments[1])
    os.fstat(lock)  # the run's lock must be ours to keep: without it no broker could tell
    code, group = run(run_dir)
    _let_go(run_dir, lock, code, group)
    return 0  # not reached


def _let_go(run: Path, lock: int, code: int, group: SessionCgroup | None) -> None:
    """The status is in place: let go of the lock and end now, so the broker (watching this
    process) hears at once; a child of it puts the status on disk and removes the emptied
    cgroups meanwhile (each can take a while: a busy disk, a group the kernel has not let go
    of yet; the broker's ``release`` removes them too, whichever comes first). A host crash
    before that finds the run as one whose runner died, as it would have had the crash come
    a moment before the status was written."""
    os.close(lock)
    sys.stderr.flush()
    if os.fork() == 0:
        try:
            if group is not None:
                group.remove()
            local_runs.make_durable(run / local_runs.STATUS)
        finally:
            os._exit(0)
    os._exit(code)  # nothing is left to tidy: not the interpreter's slow way out


if __name__ == "__main__":
    main(sys.argv[1:])
