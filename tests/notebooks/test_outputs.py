"""A session's outputs are the regular files its task left in ``outputs/``, and nothing
the task could point elsewhere (it writes that directory, possibly as root)."""

from __future__ import annotations

import os

import pytest

from execbroker.errors import NotFound
from execbroker.outputs import list_outputs, open_output


@pytest.fixture
def workdir(tmp_path):
    outputs = tmp_path / "w" / "outputs"
    outputs.mkdir(parents=True)
    (outputs / "result.ipynb").write_text("{}")
    (outputs / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "secret").write_text("broker's own")
    (outputs / "link").symlink_to(tmp_path / "secret")
    (outputs / ".hidden").write_text("x")
    (outputs / "sub").mkdir()
    os.mkfifo(outputs / "pipe")
    return tmp_path / "w"


def test_only_regular_files_directly_in_outputs_are_listed(workdir):
    assert [(item.name, item.size) for item in list_outputs(workdir)] == [
        ("result.ipynb", 2),
        ("table.csv", 8),
    ]
    with open_output(workdir, "table.csv") as stream:
        assert stream.read() == b"a,b\n1,2\n"


@pytest.mark.parametrize("name", ["link", "pipe", "sub", ".hidden", "../secret", "missing"])
def test_links_pipes_directories_and_escapes_are_not_found(workdir, name):
    with pytest.raises(NotFound):
        open_output(workdir, name).close()


def test_outputs_replaced_by_a_link_serves_nothing(tmp_path, workdir):
    elsewhere = tmp_path / "elsewhere"
    (workdir / "outputs").rename(elsewhere)
    (workdir / "outputs").symlink_to(elsewhere)
    assert list_outputs(workdir) == []
    with pytest.raises(NotFound):
        open_output(workdir, "table.csv")
    assert list_outputs(tmp_path / "none") == []
