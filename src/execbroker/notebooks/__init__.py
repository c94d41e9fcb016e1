"""Jupyter notebooks as tasks: batch execution (papermill) and interactive Jupyter servers.

Pure preparation, shared by every backend; nothing here starts a process:

- ``validate.check_notebook``: nbformat v4 or a ValueError (the wire model uses it);
- ``support.refusal``: why a platform cannot run a notebook (for ``Platform.check``);
- ``task.prepare``: a ``NotebookTask`` (files, argv, port, token) for ``Platform.start``;
- ``progress``: what the task is doing, read from the files its runner writes.

``runner.py`` is the program that runs in the task; it imports no execbroker code.
"""

from __future__ import annotations

from execbroker.notebooks.fetch import NotebookError, fetch_notebook
from execbroker.notebooks.progress import endpoint, is_notebook_task, result, running
from execbroker.notebooks.support import Support, refusal
from execbroker.notebooks.task import OUTPUTS_DIR, NotebookTask, prepare
from execbroker.notebooks.validate import check_notebook

__all__ = [
    "OUTPUTS_DIR",
    "NotebookError",
    "NotebookTask",
    "Support",
    "check_notebook",
    "endpoint",
    "fetch_notebook",
    "is_notebook_task",
    "prepare",
    "refusal",
    "result",
    "running",
]
