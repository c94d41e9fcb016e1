"""Runs one task (a batch script, or a notebook's runner) under its grant, outside the broker.

Usage: ``python -m execbroker.platforms.local_runner WORKDIR``.

The broker starts this in a session (process group) of its own, so the task outlives a
broker crash and can be re-adopted. It applies the grant (CPU affinity, CPU time and
address-space limits), runs ``/bin/sh script.sh`` (or ``launch.json``'s ``argv``) with the
session's environment, kills the whole process group at the deadline or on SIGTERM, and
writes ``status.json`` (atomically) as its last act; a task that leaves a result file
(``launch.json``'s ``result``: JSON with a ``message``) has that message in its status. The
script text is only ever a file: no shell ever sees it spliced into a command line.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

GIB = 1024**3


def _limit(cores: int, memory_gib: int, seconds: float) -> None:
    """Applied in the child before exec: what the grant allows it."""
    os.setpgid(0, 0)
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[: max(1, min(cores, len(cpus)))])
    cpu_seconds = max(1, int(cores * seconds) + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (memory_gib * GIB, memory_gib * GIB))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _write_status(workdir: Path, **status: object) -> None:
    temporary = workdir / "status.json.tmp"
    temporary.write_text(json.dumps(status))
    temporary.replace(workdir / "status.json")


def run(workdir: Path) -> int:
    launch = json.loads((workdir / "launch.json").read_text())
    seconds = launch["deadline"] - time.time()
    if seconds <= 0:
        _write_status(workdir, state="FAILED", message="the granted time was over before start")
        return 1
    stopped: list[str] = []

    def _on_term(signum: int, _frame: object) -> None:
        stopped.append("CANCELLED")

    signal.signal(signal.SIGTERM, _on_term)
    home = workdir / "work"
    home.mkdir(exist_ok=True)
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **launch["environment"],
        "EXECBROKER_SESSION": launch["session"],
        "EXECBROKER_CORES": str(launch["cores"]),
        "EXECBROKER_MEMORY_GIB": str(launch["memory_gib"]),
    }
    with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
        child = subprocess.Popen(
            launch.get("argv") or ["/bin/sh", str(workdir / "script.sh")],
            cwd=home,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=lambda: _limit(launch["cores"], launch["memory_gib"], seconds),
        )
        (workdir / "task.pid").write_text(str(child.pid))
        deadline = time.monotonic() + seconds
        while child.poll() is None and not stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        if child.poll() is None:
            _kill_group(child)
            if stopped:
                _write_status(workdir, state="CANCELLED", message="stopped on request")
            else:
                _write_status(
                    workdir, state="FAILED", message="stopped: exceeded the granted duration"
                )
            return 1
    code = child.returncode
    reported = _reported(workdir, launch.get("result"))
    if code == 0:
        _write_status(workdir, state="COMPLETED", exit_code=0, message=reported or "completed")
    elif code < 0:
        name = signal.Signals(-code).name
        hint = " (CPU time limit of the grant)" if -code == signal.SIGXCPU else ""
        _write_status(workdir, state="FAILED", exit_code=code, message=f"killed by {name}{hint}")
    else:
        message = reported or f"exited with code {code}"
        _write_status(workdir, state="FAILED", exit_code=code, message=message)
    return 0


def _reported(workdir: Path, name: str | None) -> str | None:
    """The message a task left in its result file, if it has one and left it."""
    if not name:
        return None
    try:
        message = json.loads((workdir / name).read_text()).get("message")
    except (OSError, ValueError, AttributeError):
        return None
    return str(message) if message else None


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    except ProcessLookupError:
        child.wait()


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
