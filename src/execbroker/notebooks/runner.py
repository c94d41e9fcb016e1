"""Runs one Jupyter notebook task under its grant: the one program a platform needs for it.

Self-contained on purpose: it imports the standard library and, once running, papermill
(or nbclient) for a batch notebook or jupyter_server (JupyterLab when installed) for an
interactive one, and never execbroker, so it runs unchanged on the broker's host, inside
the ``execbroker/python:local`` image and on a Slurm node. execbroker copies this file
into the session's work directory next to the task file written by ``notebooks.prepare``.

Usage: ``python3 notebook_runner.py notebook-task.json``

It writes, next to the task file: the server file (host, port, path) once an interactive
server answers ``/api/status`` with its token, and the result file (state, message, the
failing cell) as its last act. Exit code 0 is COMPLETED. SIGTERM stops it (CANCELLED);
so does ``stop_at``, a little before the grant ends: a batch run is then FAILED, an
interactive session COMPLETED (its time is over). Kernels and the server are ended with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

END_GRACE = 2.0  # seconds the server and kernels get to end before SIGKILL
PROBE_EVERY = 0.1
# Listening on all addresses: probed on loopback; the URL names this host instead.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
SOURCE_HEAD = 120


class Stop(BaseException):
    """Raised in the main thread by SIGTERM or by the end of the grant; a BaseException
    (like KeyboardInterrupt) so no library's ``except Exception`` swallows it."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.message = message


class CellFailed(Exception):
    def __init__(
        self, index: int | None, count: int | None, source: str, name: str, value: str
    ) -> None:
        head = " ".join(source.strip().splitlines()[:1])[:SOURCE_HEAD]
        where = f"cell {index}" if index is not None else "a cell"
        where += f" (In [{count}])" if count is not None else ""
        shown = f" (in `{head}`)" if head else ""
        super().__init__(f"{where} failed with {name}: {value}{shown}")
        self.details = {
            "cell": {"index": index, "execution_count": count, "source": head},
            "error": {"name": name, "value": value},
        }


def _quiet_jsonschema() -> None:
    """Keep jsonschema from compiling an RFC 3987 grammar on import (seconds of CPU) for a
    format no notebook or Jupyter schema uses."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def _say(text: str) -> None:
    print(f"[notebook-runner] {text}", flush=True)


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


# -- batch ------------------------------------------------------------------------------


def run_batch(task: dict, task_path: Path, outputs: Path) -> tuple[str, str, dict]:
    source = task_path.parent / task["notebook"]
    target = outputs / task["output"]
    timeout = max(1, int(task["stop_at"] - time.time()))
    _quiet_jsonschema()
    try:
        import papermill
    except ImportError:
        papermill = None
    engine = "papermill" if papermill is not None else "nbclient"
    _say(f"running {source.name} with {engine}, kernel {task['kernel']}, cell timeout {timeout} s")
    started = time.monotonic()
    try:
        if papermill is not None:
            cells = _with_papermill(papermill, task, source, target, timeout)
        else:
            cells = _with_nbclient(task, source, target, timeout)
    except CellFailed as failed:
        return "FAILED", str(failed), failed.details
    except Exception as error:  # a dead kernel, a cell timeout, a missing kernel ...
        text = " ".join(str(error).split())[:300]
        return "FAILED", f"the notebook could not be executed: {type(error).__name__}: {text}", {}
    seconds = time.monotonic() - started
    return "COMPLETED", f"executed {cells} cells in {seconds:.1f} s; output {target.name}", {}


def _with_papermill(papermill, task: dict, source: Path, target: Path, timeout: int) -> int:
    try:
        done = papermill.execute_notebook(
            str(source),
            str(target),
            parameters=task["parameters"],
            kernel_name=task["kernel"],
            language=task["language"],
            cwd=str(target.parent),
            execution_timeout=timeout,
            progress_bar=False,
            stdout_file=sys.stdout,  # cells' streams in the task's own too: logs show them live
            stderr_file=sys.stderr,
        )
    except papermill.PapermillExecutionError as error:
        raise CellFailed(
            error.cell_index, error.exec_count, error.source or "", error.ename, error.evalue
        ) from None
    return len(done.cells)


def _with_nbclient(task: dict, source: Path, target: Path, timeout: int) -> int:
    """papermill's essentials with nbclient alone: parameters in a cell after the one tagged
    ``parameters`` (as Python literals: this fallback is for Python kernels)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = _injected(nbformat.read(str(source), as_version=4), task["parameters"])
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=task["kernel"],
        resources={"metadata": {"path": str(target.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        index = next(
            (
                number
                for number, item in enumerate(notebook.cells)
                if any(out.get("output_type") == "error" for out in item.get("outputs", []))
            ),
            None,
        )
        cell = notebook.cells[index] if index is not None else {}
        raise CellFailed(
            index, cell.get("execution_count"), cell.get("source", ""), error.ename, error.evalue
        ) from None
    finally:
        nbformat.write(notebook, str(target))
    return len(notebook.cells)


def _injected(notebook: Any, parameters: dict) -> Any:  # nbformat NotebookNodes
    """``notebook`` with a cell setting ``parameters`` after the one tagged ``parameters``
    (or first), as Python literals; papermill does this itself, for any kernel language."""
    if not parameters:
        return notebook
    import nbformat

    lines = [f"{name} = {value!r}" for name, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("# Parameters\n" + "\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    tagged = [
        index
        for index, item in enumerate(notebook.cells)
        if "parameters" in item.get("metadata", {}).get("tags", [])
    ]
    notebook.cells.insert(tagged[0] + 1 if tagged else 0, cell)
    return notebook


# -- interactive ------------------------------------------------------------------------


def _open_notebook(task: dict, source: Path, target: Path) -> None:
    """Put the notebook, with its parameters, in the server's root (outputs/), once."""
    if target.exists():
        return
    import nbformat

    try:
        from papermill.iorw import load_notebook_node
        from papermill.parameterize import parameterize_notebook
    except ImportError:
        notebook = _injected(nbformat.read(str(source), as_version=4), task["parameters"])
    else:
        notebook = load_notebook_node(str(source))  # gives every cell the tags papermill reads
        if task["parameters"]:
            notebook = parameterize_notebook(
                notebook, task["parameters"], kernel_name=task["kernel"], language=task["language"]
            )
    nbformat.write(notebook, str(target))


def run_server(task: dict, task_path: Path, outputs: Path) -> tuple[str, str, dict]:
    _quiet_jsonschema()
    _open_notebook(task, task_path.parent / task["notebook"], outputs / task["output"])
    port = task["port"] or _free_port(task["host"])
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(task_path), str(port)]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    probe = LOOPBACK.get(task["host"], task["host"])
    url = f"http://{_url_host(probe)}:{port}/api/status"
    while server.poll() is None and not _answers(url, task["token"]):
        time.sleep(PROBE_EVERY)
    if server.poll() is None:
        host = socket.getfqdn() if task["host"] in LOOPBACK else task["host"]
        path = f"/lab/tree/{task['output']}" if _has("jupyterlab") else "/"
        _write_json(task_path.parent / task["server"], {"host": host, "port": port, "path": path})
        _say(f"the Jupyter server answers on port {port}")
        server.wait()
    return "FAILED", f"the Jupyter server exited with code {server.returncode}", {}


def serve(task_path: Path, port: int) -> int:
    """The server process itself (``--serve``): the token comes by environment, never argv."""
    task = json.loads(task_path.read_text())
    base = task_path.parent
    os.environ["JUPYTER_TOKEN"] = task["token"]
    _quiet_jsonschema()
    argv = [
        f"--ServerApp.ip={task['host']}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={base / task['outputs']}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",  # in a container one is root; the grant is the fence
    ]
    if _has("jupyterlab"):
        from jupyterlab.labapp import LabApp as App
    else:
        from jupyter_server.serverapp import ServerApp as App
    App.launch_instance(argv=argv)
    return 0


def _answers(url: str, token: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- the task's life --------------------------------------------------------------------

MODES = {"batch": run_batch, "interactive": run_server}
AT_END = {  # what reaching stop_at means, per mode
    "batch": ("FAILED", "stopped: the granted time ran out before the notebook finished"),
    "interactive": ("COMPLETED", "the granted time is over: the Jupyter server was stopped"),
}


def _stop_on(signum: int, stop: Stop) -> None:
    def handler(_signum: int, _frame: object) -> None:
        raise stop

    signal.signal(signum, handler)


def _children() -> list[int]:
    """Our live child processes (kernels run in sessions of their own, so no process group
    holds them all). Linux /proc; elsewhere none are found and the kernels' own parent
    polling ends them once this process is gone."""
    me, found = str(os.getpid()), []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me and fields[0] != "Z":
            found.append(int(entry.parent.name))
    return found


def _end_children() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 0)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _children()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + END_GRACE
        while pids and time.monotonic() < deadline:
            for pid in list(pids):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        pids.remove(pid)
                except ChildProcessError:
                    pids.remove(pid)
            time.sleep(0.05)
        if not pids:
            return


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        return serve(Path(argv[1]), int(argv[2]))
    task_path = Path(argv[0]).resolve()
    base = task_path.parent
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    task = json.loads(task_path.read_text())
    # Kernel connection files and the server's secrets stay with the task, not in a home.
    os.environ["JUPYTER_RUNTIME_DIR"] = str(base / task["runtime"])
    outputs = base / task["outputs"]
    outputs.mkdir(parents=True, exist_ok=True)
    _stop_on(signal.SIGTERM, Stop("CANCELLED", "stopped on request"))
    _stop_on(signal.SIGALRM, Stop(*AT_END[task["mode"]]))
    state, message, details = "FAILED", "the granted time was over before start", {}
    try:
        if time.time() < task["stop_at"]:
            signal.setitimer(signal.ITIMER_REAL, task["stop_at"] - time.time())
            state, message, details = MODES[task["mode"]](task, task_path, outputs)
    except Stop as stop:
        state, message = stop.state, stop.message
    except Exception as error:  # the runner's own failure: the trace to stderr, a result anyway
        traceback.print_exc()
        state, message = "FAILED", f"the notebook runner failed: {type(error).__name__}: {error}"
    finally:
        _end_children()
    _write_json(base / task["result"], {"state": state, "message": message, **details})
    _say(f"{state}: {message}")
    return 0 if state == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
