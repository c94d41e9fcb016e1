"""What a notebook task is doing, read from the files its runner writes in the work directory.

For backends whose task shares the work directory with the broker (the local host, a
container's bind mount, a cluster's shared file system): ``running`` for a task whose
process is alive, ``result`` once it has ended.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from execbroker.notebooks.task import RESULT_FILE, SERVER_FILE, TASK_FILE
from execbroker.platforms.base import Endpoint, RunState, RunStatus, read_tail

MAX_JSON_BYTES = 1_000_000
_STATES = {state: RunState(state) for state in ("COMPLETED", "FAILED", "CANCELLED")}


def read_untrusted(path: Path) -> dict[str, Any] | None:
    """A small JSON object the task wrote, or None; read like a log (no link followed, no
    FIFO waited on, a bounded size), since the task owns the directory it is in."""
    try:
        data = json.loads(read_tail(path, MAX_JSON_BYTES) or "null")
    except (json.JSONDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def is_notebook_task(workdir: Path) -> bool:
    return (workdir / TASK_FILE).exists()


def running(workdir: Path, *, host: str | None = None, port: int | None = None) -> RunStatus:
    """A live notebook task: RUNNING (batch), or PREPARING until its server answers and
    then AVAILABLE with its URL. ``host``/``port`` replace the server's own where the
    broker reaches it by another way (a published container port)."""
    task = read_untrusted(workdir / TASK_FILE) or {}
    if task.get("mode") != "interactive":
        return RunStatus(RunState.RUNNING)
    found = endpoint(workdir, host=host, port=port)
    if found is None:
        return RunStatus(RunState.PREPARING, "starting the Jupyter server")
    return RunStatus(RunState.AVAILABLE, endpoints=(found,))


def endpoint(workdir: Path, *, host: str | None = None, port: int | None = None) -> Endpoint | None:
    """The server's URL with its token, once it has answered; None before."""
    task = read_untrusted(workdir / TASK_FILE)
    server = read_untrusted(workdir / SERVER_FILE)
    if task is None or server is None or not task.get("token"):
        return None
    where = host or server["host"]
    where = f"[{where}]" if ":" in where else where
    url = f"http://{where}:{port or server['port']}{server['path']}?token={task['token']}"
    return Endpoint("HTTP", url)


def result(workdir: Path) -> RunStatus | None:
    """How the runner said the task ended (state and message), or None if it did not say."""
    data = read_untrusted(workdir / RESULT_FILE)
    if data is None or data.get("state") not in _STATES:
        return None
    return RunStatus(_STATES[data["state"]], str(data.get("message") or "") or None)
