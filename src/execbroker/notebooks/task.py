"""A notebook task described for any backend: the files to place, the command, the port.

``prepare`` is the whole of what a backend needs to start a notebook: it fetches a
``location`` (so call it in ``start``, in PREPARING), checks the notebook, and returns a
``NotebookTask`` whose files go into the session's work directory and whose ``argv`` runs
the self-contained ``runner`` there with nothing but python3 and Jupyter's own packages.

Work directory layout (``TASK_DIR`` below is where the task sees it, e.g. a container's
mount point; everything is relative to it):

    notebook_runner.py      the runner (a copy of ``notebooks/runner.py``)
    notebook-task.json      what to run: mode, parameters, kernel, stop time, port, token
    notebook.ipynb          the notebook as given
    outputs/                the executed notebook (batch), the server's root (interactive):
                            files here are the session's outputs, fetchable over the API
    notebook-server.json    written once an interactive server answers: host, port, path
    notebook-result.json    written last: state, message, the failing cell and error
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from execbroker.model.executables import JupyterNotebook
from execbroker.notebooks.fetch import NotebookError, fetch_notebook
from execbroker.notebooks.support import DEFAULT_KERNEL
from execbroker.outputs import OUTPUTS_DIR
from execbroker.platforms.base import LaunchSpec

RUNNER_FILE = "notebook_runner.py"
TASK_FILE = "notebook-task.json"
INPUT_FILE = "notebook.ipynb"
RESULT_FILE = "notebook-result.json"
SERVER_FILE = "notebook-server.json"
RUNTIME_DIR = "jupyter-runtime"
DEFAULT_OUTPUT = "notebook.ipynb"
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}\.ipynb$")
MIN_MARGIN, MAX_MARGIN = 3.0, 10.0  # seconds before the grant's end the runner stops itself


@dataclass(frozen=True, slots=True)
class NotebookTask:
    mode: str  # "batch" | "interactive"
    files: dict[str, bytes]  # path relative to the work directory → content
    argv: tuple[str, ...]  # the command; paths in it are as the task sees the work directory
    output: str  # the notebook's name in outputs/ (executed, or opened by the server)
    port: int  # the server's port inside the task (0: the runner picks a free one)
    token: str | None  # the server's token (interactive only)

    def write(self, workdir: Path) -> None:
        """Place the files in ``workdir`` (the task file, holding the token, owner-only)."""
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / OUTPUTS_DIR).mkdir(exist_ok=True)
        for name, content in self.files.items():
            mode = 0o600 if name == TASK_FILE else 0o644
            fd = os.open(workdir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as stream:
                stream.write(content)


def runner_source() -> bytes:
    return (Path(__file__).parent / "runner.py").read_bytes()


def prepare(
    spec: LaunchSpec,
    *,
    python: str = "python3",
    task_dir: PurePosixPath | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> NotebookTask:
    """The task for ``spec``'s notebook. Fetches a ``location``; NotebookError if it cannot.

    ``python`` runs the runner where the task runs; ``task_dir`` is the work directory as
    the task sees it (default: ``spec.workdir``); an interactive server binds ``host:port``.
    """
    executable = spec.executable
    if not isinstance(executable, JupyterNotebook) or executable.missing():
        raise NotebookError("a jupyter-notebook with a notebook or a location is needed")
    if executable.notebook is not None:
        notebook = executable.notebook
    else:
        assert executable.location is not None
        notebook = fetch_notebook(executable.location)
    notebook = _with_kernel(notebook, executable.kernel)
    kernelspec = notebook.get("metadata", {}).get("kernelspec", {})
    kernel = executable.kernel or kernelspec.get("name") or DEFAULT_KERNEL
    language = kernelspec.get("language") or notebook.get("metadata", {}).get(
        "language_info", {}
    ).get("name")
    if language is None and kernel.startswith("python"):
        language = "python"
    grant = (spec.deadline - spec.start).total_seconds()
    # Time to stop the kernel, save the notebook and say so before the backend's hard stop.
    margin = min(MAX_MARGIN, max(MIN_MARGIN, grant * 0.05), grant / 2)
    token = secrets.token_urlsafe(32) if executable.mode == "interactive" else None
    output = _output_name(executable.location)
    task: dict[str, Any] = {
        "version": 1,
        "mode": executable.mode,
        "notebook": INPUT_FILE,
        "output": output,
        "outputs": OUTPUTS_DIR,
        "parameters": executable.parameters,
        "kernel": kernel,
        "language": language,
        "stop_at": spec.deadline.timestamp() - margin,
        "result": RESULT_FILE,
        "server": SERVER_FILE,
        "runtime": RUNTIME_DIR,
        "host": host,
        "port": port,
        "token": token,
    }
    where = task_dir or PurePosixPath(spec.workdir)
    return NotebookTask(
        mode=executable.mode,
        files={
            RUNNER_FILE: runner_source(),
            TASK_FILE: json.dumps(task).encode(),
            INPUT_FILE: json.dumps(notebook).encode(),
        },
        argv=(python, str(where / RUNNER_FILE), str(where / TASK_FILE)),
        output=output,
        port=port,
        token=token,
    )


def _with_kernel(notebook: dict[str, Any], kernel: str | None) -> dict[str, Any]:
    """The notebook, asking for ``kernel`` in its metadata (so an opened notebook uses it)."""
    if kernel is None:
        return notebook
    metadata = dict(notebook.get("metadata", {}))
    spec = dict(metadata.get("kernelspec", {}))
    if spec.get("name") != kernel:
        spec = {"name": kernel, "display_name": kernel}
    metadata["kernelspec"] = spec
    return {**notebook, "metadata": metadata}


def _output_name(location: str | None) -> str:
    """The name the notebook is known by: its URL's file name when that is a plain one."""
    if location is None:
        return DEFAULT_OUTPUT
    name = PurePosixPath(urlsplit(location).path).name
    return name if _OUTPUT_NAME.match(name) else DEFAULT_OUTPUT
