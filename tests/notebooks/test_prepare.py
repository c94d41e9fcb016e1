"""The pure part: validating notebooks, refusing what a platform cannot run, and the task
(files, command, token) a backend is handed. No broker, no kernel."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path, PurePosixPath

import pytest
from pydantic import TypeAdapter, ValidationError

from execbroker.fetch import FetchPolicy, allowing
from execbroker.model.executables import AnyExecutable, JupyterNotebook
from execbroker.notebooks import NotebookError, Support, check_notebook, prepare, refusal
from execbroker.notebooks import task as tasks
from execbroker.notebooks.fetch import fetch_notebook
from execbroker.platforms.base import LaunchSpec
from tests.notebooks.notebooks import notebook
from tests.platforms.support import launch

GOOD = notebook("print(x)", parameters="x = 1")
EVERYTHING = Support(
    batch="papermill", interactive="jupyter_server", kernels=frozenset({"python3"})
)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({}, "nbformat is missing"),
        ({**GOOD, "nbformat": 3}, "nbformat is 3"),
        ({**GOOD, "nbformat": "4"}, "nbformat is '4'"),
        ({k: v for k, v in GOOD.items() if k != "cells"}, "not a valid nbformat v4"),
        ({**GOOD, "cells": [{"cell_type": "banana", "source": "", "metadata": {}}]}, "cells[0]"),
        ({**GOOD, "metadata": "none"}, "metadata"),
    ],
)
def test_invalid_notebooks_are_refused_saying_why(bad, named):
    with pytest.raises(ValueError, match="nbformat") as raised:
        check_notebook(bad)
    assert named in str(raised.value)
    with pytest.raises(ValidationError) as invalid:
        TypeAdapter(AnyExecutable).validate_python({"kind": "jupyter-notebook", "notebook": bad})
    assert invalid.value.errors()[0]["loc"][-1] == "notebook"


def test_a_valid_notebook_is_kept_as_given():
    assert check_notebook(GOOD) is GOOD
    parsed = TypeAdapter(AnyExecutable).validate_python(
        {
            "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/jupyter-notebook-1.0",
            "notebook": GOOD,
        }
    )
    assert isinstance(parsed, JupyterNotebook) and parsed.notebook == GOOD


def _nb(**fields) -> JupyterNotebook:
    return JupyterNotebook(notebook=GOOD, **fields)


@pytest.mark.parametrize(
    ("executable", "support", "reason"),
    [
        (_nb(), EVERYTHING, None),
        (_nb(mode="interactive", kernel="python3", parameters={"x": 2}), EVERYTHING, None),
        (_nb(), Support(batch=None, interactive="jupyter_server"), "no papermill/nbclient"),
        (_nb(mode="interactive"), Support(batch="nbclient", interactive=None), "no jupyter_server"),
        (_nb(kernel="ir"), EVERYTHING, "no Jupyter kernel 'ir' (python3)"),
        (_nb(kernel="ir"), Support(batch="papermill", interactive=None), None),  # not known
        (_nb(kernel="../x y"), EVERYTHING, "not a kernel name"),
        (_nb(parameters={"a b": 1}), EVERYTHING, "'a b' is not a name"),
        (_nb(parameters={"class": 1}), EVERYTHING, "'class' is not a name"),
        (JupyterNotebook(location="file:///etc/passwd"), EVERYTHING, "http or https URL"),
        (JupyterNotebook(location="https://example.org/a.ipynb"), EVERYTHING, None),
    ],
)
def test_refusals_name_what_is_missing(executable, support, reason):
    found = refusal(executable, support, platform="test")
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def _spec(executable: JupyterNotebook, workdir: Path, minutes: int = 10) -> LaunchSpec:
    return launch(executable, workdir, workdir=workdir, seconds=minutes * 60)


def test_a_batch_task_is_files_and_a_command(tmp_path):
    spec = _spec(_nb(parameters={"x": 21}, kernel="python3"), tmp_path / "w")
    task = prepare(spec, python="python3", task_dir=PurePosixPath("/session"))
    assert task.argv == ("python3", "/session/notebook_runner.py", "/session/notebook-task.json")
    assert task.token is None and task.output == "notebook.ipynb"
    assert task.files[tasks.RUNNER_FILE] == Path(tasks.__file__).with_name("runner.py").read_bytes()
    assert json.loads(task.files[tasks.INPUT_FILE])["cells"] == GOOD["cells"]
    described = json.loads(task.files[tasks.TASK_FILE])
    assert described["parameters"] == {"x": 21} and described["kernel"] == "python3"
    assert described["language"] == "python"
    # The runner stops itself a little before the grant ends, never after.
    assert spec.deadline.timestamp() - 10 <= described["stop_at"] < spec.deadline.timestamp()
    task.write(spec.workdir)
    assert (spec.workdir / tasks.TASK_FILE).stat().st_mode & 0o077 == 0
    assert (spec.workdir / "outputs").is_dir()


def test_an_interactive_task_has_a_fresh_unguessable_token(tmp_path):
    spec = _spec(_nb(mode="interactive"), tmp_path)
    first, second = (prepare(spec, port=8888) for _ in range(2))
    assert first.token and second.token and first.token != second.token
    assert len(first.token) >= 40 and first.port == 8888
    assert json.loads(first.files[tasks.TASK_FILE])["token"] == first.token
    assert first.token not in " ".join(first.argv)  # never on a command line


# The test web server is on 127.0.0.1: fetched from only when a policy says so.
LOOPBACK = FetchPolicy(allow=["127.0.0.1/32"])


def test_a_location_is_fetched_at_prepare_and_names_the_output(tmp_path, web):
    with allowing(LOOPBACK):
        _fetched_at_prepare(tmp_path, web)
    with pytest.raises(NotebookError, match=r"127\.0\.0\.1 is a loopback address"):
        prepare(_spec(JupyterNotebook(location=web.url("/lab/analysis.ipynb")), tmp_path))


def _fetched_at_prepare(tmp_path, web):
    web["/lab/analysis.ipynb"] = json.dumps(GOOD).encode()
    web["/not-a-notebook.ipynb"] = b'{"hello": "world"}'
    web["/text.ipynb"] = b"<html>"
    task = prepare(_spec(JupyterNotebook(location=web.url("/lab/analysis.ipynb")), tmp_path))
    assert task.output == "analysis.ipynb"
    assert json.loads(task.files[tasks.INPUT_FILE]) == GOOD
    for path, reason in [
        ("/missing.ipynb", "HTTP 404"),
        ("/not-a-notebook.ipynb", "nbformat is missing"),
        ("/text.ipynb", "not JSON"),
    ]:
        with pytest.raises(NotebookError, match=reason):
            prepare(_spec(JupyterNotebook(location=web.url(path)), tmp_path))


def test_a_fetch_stops_at_the_size_limit(web):
    web["/big.ipynb"] = json.dumps({**GOOD, "metadata": {"pad": "x" * 100_000}}).encode()
    with allowing(LOOPBACK):
        with pytest.raises(NotebookError, match="larger than 50000 bytes"):
            fetch_notebook(web.url("/big.ipynb"), max_bytes=50_000)
        assert fetch_notebook(web.url("/big.ipynb"))["nbformat"] == 4


ALLOWED_OUTSIDE_STDLIB = {"papermill", "nbclient", "nbformat", "jupyter_server", "jupyterlab"}


def test_the_runner_is_self_contained():
    """It must run where execbroker is not installed: the standard library and Jupyter's
    own packages only, and those only inside functions (so an absent one is a message)."""
    source = Path(tasks.__file__).with_name("runner.py").read_text()
    tree = ast.parse(source)
    imported: dict[str, bool] = {}  # top-level module → imported at module level
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            imported[top] = imported.get(top, False) or node in tree.body
    outside = {name for name in imported if name not in sys.stdlib_module_names}
    assert outside <= ALLOWED_OUTSIDE_STDLIB, outside
    assert not [name for name in outside if imported[name]], "Jupyter imports must be lazy"
    assert "__future__" in imported  # annotations stay strings on older Pythons
