"""TES file roots: the config refuses a root that is neither per user nor marked shared, and
the broker's file:// reads and writes never follow a link swapped in while they run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from execbroker import file_roots
from execbroker.config import TesConfig, load_config
from execbroker.launcher import LOCAL_CONFIG


def write_config(tmp_path: Path, roots: list) -> Path:
    import yaml

    path = tmp_path / "broker.yaml"
    path.write_text(yaml.safe_dump({**LOCAL_CONFIG, "tes": {"file_roots": roots}}))
    return path


def test_a_bare_root_is_refused_at_config_load_saying_how_to_mean_it(tmp_path):
    with pytest.raises(ValidationError) as raised:
        load_config(write_config(tmp_path, ["/data/tes"]))
    said = str(raised.value)
    assert "tes.file_roots.0" in said
    assert "/data/tes/{user}" in said and "shared: true" in said


@pytest.mark.parametrize(
    ("root", "said"),
    [
        ("/data/tes-{user}", "whole component"),
        ("/data/{user}/{user}", "whole component"),
        ({"path": "/data/{user}", "shared": True}, "per user, not shared"),
        ("data/{user}", "absolute"),
        ("/data/../{user}", "absolute"),
    ],
)
def test_a_root_that_is_not_clearly_per_user_is_refused(tmp_path, root, said):
    with pytest.raises(ValidationError, match=said):
        load_config(write_config(tmp_path, [root]))


def test_per_user_and_shared_roots_are_each_user_s_own_and_everyone_s():
    tes = TesConfig.model_validate(
        {"file_roots": ["/data/{user}/tes", {"path": "/data/common", "shared": True}]}
    )
    assert [str(root.path) for root in tes.roots_for("alice")] == [
        "/data/alice/tes",
        "/data/common",
    ]
    assert [str(root.path) for root in tes.roots_for("..")] == ["/data/common"]
    assert tes.warnings() == [
        "tes.file_roots: /data/common is shared: every user's TES tasks may read and "
        "overwrite every other user's files there"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "file:///data/alice/../bob/secret",
        "file:///data/alice/a%00b",
        "file://elsewhere/data/alice/x",
        "file:///data/alicex/y",
        "file:///data/bob/secret",
    ],
)
def test_a_url_outside_the_caller_s_roots_by_its_spelling_is_refused_before_any_io(url):
    roots = TesConfig.model_validate({"file_roots": ["/data/{user}"]}).roots_for("alice")
    assert file_roots.locate(url, roots) is None
    with pytest.raises(file_roots.RootError, match="not a file under a directory"):
        file_roots.read_input(url, roots, 1000)


# Alice owns her root: she can swap a folder in it for a link at any moment, over and over.
FLIPPER = """
import ctypes, os, sys
os.chdir(sys.argv[1])
renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
AT_FDCWD, RENAME_EXCHANGE = -100, 2
while True:  # sub and sub.link trade places atomically: sub is a folder, then a link, ...
    if renameat2(AT_FDCWD, b"sub", AT_FDCWD, b"sub.link", RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
"""


@pytest.fixture
def flipping(tmp_path):
    """alice's root whose ``sub`` folder is swapped with a link to bob's ``sub`` in a loop."""
    roots = tmp_path / "roots"
    for user in ("alice", "bob"):
        (roots / user / "sub").mkdir(parents=True)
        (roots / user / "sub" / "secret").write_text(f"{user}'s\n")
    (roots / "alice" / "sub.link").symlink_to("../bob/sub")
    flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, str(roots / "alice")])
    try:
        time.sleep(0.2)  # let it start flipping
        yield roots, TesConfig.model_validate({"file_roots": [str(roots / "{user}")]})
    finally:
        flipper.kill()
        flipper.wait()


def race(attempt, seconds: float = 2.0) -> tuple[int, int]:
    """Run ``attempt`` for ``seconds``: how many tries succeeded and how many were refused."""
    done = refused = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            attempt()
            done += 1
        except file_roots.RootError:
            refused += 1
    return done, refused


def test_an_input_read_never_follows_a_folder_swapped_for_a_link(flipping):
    roots, tes = flipping
    url = (roots / "alice" / "sub" / "secret").as_uri()
    seen: set[bytes] = set()

    def attempt() -> None:
        seen.add(file_roots.read_input(url, tes.roots_for("alice"), 1000))

    done, refused = race(attempt)
    assert seen <= {b"alice's\n"}, seen
    assert done and refused  # the race was run both ways


def test_an_output_write_never_follows_a_folder_swapped_for_a_link(flipping):
    roots, tes = flipping
    url = (roots / "alice" / "sub" / "out.txt").as_uri()
    found = file_roots.locate(url, tes.roots_for("alice"))
    assert found is not None

    def attempt() -> None:
        file_roots.write_file(found, (), b"alice's output\n")

    done, refused = race(attempt)
    assert not (roots / "bob" / "sub" / "out.txt").exists()
    assert done and refused


# -- bounded reads: ``read_regular``, as ``read_input`` and a TES output's delivery use it --


def _alice_root(tmp_path: Path) -> tuple[Path, list]:
    home = tmp_path / "roots" / "alice"
    home.mkdir(parents=True)
    roots = TesConfig.model_validate({"file_roots": [str(tmp_path / "roots" / "{user}")]})
    return home, roots.roots_for("alice")


def _reading(path: Path, limit: int) -> bytes:
    fd = os.open(path, file_roots.READ)
    try:
        return file_roots.read_regular(fd, limit)
    finally:
        os.close(fd)


def test_a_bounded_read_takes_a_file_at_its_limit_and_refuses_a_byte_more(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"x" * 3 * 1024 * 1024)  # more than one chunk
    assert _reading(path, 3 * 1024 * 1024) == b"x" * 3 * 1024 * 1024
    with pytest.raises(file_roots.TooLarge):
        _reading(path, 3 * 1024 * 1024 - 1)
    (tmp_path / "empty").write_bytes(b"")
    assert _reading(tmp_path / "empty", 0) == b""


def test_a_bounded_read_counts_what_it_reads_not_what_the_size_said(tmp_path):
    # /proc files say they are empty and are not: as a file that grows while it is read
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0
    with pytest.raises(file_roots.TooLarge):
        _reading(status, 10)


def test_a_bounded_read_refuses_a_fifo_or_a_directory_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path / "fifo", tmp_path):
        with pytest.raises(file_roots.NotRegular):
            _reading(path, 1000)


@pytest.mark.parametrize("what", ["fifo", "large", "directory"])
def test_an_input_that_is_not_a_small_regular_file_is_refused_by_name(tmp_path, what):
    home, roots = _alice_root(tmp_path)
    target = home / "input"
    if what == "fifo":
        os.mkfifo(target)
    elif what == "large":
        target.write_bytes(b"x" * 1001)
    else:
        target.mkdir()
    with pytest.raises(file_roots.RootError) as raised:
        file_roots.read_input(target.as_uri(), roots, 1000)
    assert str(raised.value) == f"{target.as_uri()}: not a regular file of at most 1000 bytes"
    if what == "directory":
        target.rmdir()
    else:
        target.unlink()
    target.write_bytes(b"x" * 1000)
    assert file_roots.read_input(target.as_uri(), roots, 1000) == b"x" * 1000


def test_a_task_s_outputs_are_read_under_one_budget_for_all_their_files(tmp_path):
    from execbroker import deliveries
    from execbroker.model.tes_script import TASK_ROOT

    area = tmp_path / TASK_ROOT / "out"
    area.mkdir(parents=True)
    (area / "a").write_bytes(b"a" * 600)
    (area / "b").write_bytes(b"b" * 600)
    files = dict(deliveries.read_output(tmp_path, "/out", "DIRECTORY", 1200))
    assert {str(k): len(v) for k, v in files.items()} == {"a": 600, "b": 600}
    with pytest.raises(deliveries.DeliveryError) as raised:
        list(deliveries.read_output(tmp_path, "/out", "DIRECTORY", 1199))
    assert str(raised.value) == "/out/b: the task's outputs are larger than its limit"
    with pytest.raises(deliveries.DeliveryError) as raised:
        list(deliveries.read_output(tmp_path, "/out/a", "FILE", 599))
    assert str(raised.value) == "/out/a: the task's outputs are larger than its limit"
    ((_, content),) = deliveries.read_output(tmp_path, "/out/a", "FILE", 600)
    assert content == b"a" * 600
