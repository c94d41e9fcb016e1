"""The runner on its own, where the broker is not: with nbclient alone (no papermill), and
inside the ``execbroker/python:local`` image (python3 + Jupyter packages, no execbroker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from execbroker.model.executables import JupyterNotebook
from execbroker.notebooks import prepare
from execbroker.notebooks import task as tasks
from execbroker.platforms.base import LaunchSpec
from tests.notebooks.notebooks import notebook
from tests.platforms.support import launch

IMAGE = "execbroker/python:local"


def _spec(executable: JupyterNotebook, workdir: Path) -> LaunchSpec:
    return launch(executable, workdir, workdir=workdir, seconds=120)


def _result(workdir: Path) -> dict:
    return json.loads((workdir / tasks.RESULT_FILE).read_text())


def _outputs(workdir: Path) -> list[dict]:
    return json.loads((workdir / "outputs" / "notebook.ipynb").read_text())["cells"]


def test_without_papermill_nbclient_runs_it_with_parameters_and_names_the_failing_cell(tmp_path):
    content = notebook("print('got', n)", "n.missing", parameters="n = 0")
    task = prepare(_spec(JupyterNotebook(notebook=content, parameters={"n": 3}), tmp_path))
    task.write(tmp_path)
    no_papermill = (
        "import runpy, sys; sys.modules['papermill'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", no_papermill, *task.argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "with nbclient" in done.stdout
    result = _result(tmp_path)
    assert result["state"] == "FAILED"
    assert result["cell"] == {"index": 3, "execution_count": 4, "source": "n.missing"}
    assert result["error"]["name"] == "AttributeError"
    cells = _outputs(tmp_path)
    assert cells[1]["metadata"]["tags"] == ["injected-parameters"] and "n = 3" in cells[1]["source"]
    assert "".join(cells[2]["outputs"][0]["text"]) == "got 3\n"


@pytest.mark.docker
def test_the_runner_runs_in_the_python_image_without_execbroker(tmp_path):
    docker = pytest.importorskip("docker")
    try:
        engine = docker.from_env()
        engine.images.get(IMAGE)
    except docker.errors.DockerException as error:
        pytest.fail(f"needs dockerd and {IMAGE} (scripts/services.sh up docker): {error}")
    content = notebook("import sys\nprint(sys.version_info[0], x)", parameters="x = 1")
    spec = _spec(JupyterNotebook(notebook=content, parameters={"x": "inside"}), tmp_path)
    task = prepare(spec, python="python3", task_dir=PurePosixPath("/session"))
    task.write(tmp_path)
    engine.containers.run(
        IMAGE,
        list(task.argv),
        volumes={str(tmp_path): {"bind": "/session", "mode": "rw"}},
        network_disabled=True,
        mem_limit="1g",
        remove=True,
    )
    assert _result(tmp_path)["state"] == "COMPLETED", _result(tmp_path)
    assert "".join(_outputs(tmp_path)[-1]["outputs"][0]["text"]) == "3 inside\n"
