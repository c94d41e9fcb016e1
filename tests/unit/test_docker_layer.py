"""docker_layer's reading of a container's outputs on plain directories laid out as overlay2
lays out an upper and its lower layers (no engine needed): what it reads itself, and where
it steps aside for the engine."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from execbroker.platforms import docker_layer
from execbroker.platforms.docker_layer import Layers, Unsure

OUTPUTS = PurePosixPath("/session/outputs")


@pytest.fixture
def layers(tmp_path: Path) -> Layers:
    for name in ("upper", "lower", "base"):
        (tmp_path / name).mkdir()
    (tmp_path / "upper" / "session" / "outputs").mkdir(parents=True)
    return Layers(str(tmp_path / "upper"), (str(tmp_path / "lower"), str(tmp_path / "base")))


def _copy(layers: Layers, tmp_path: Path, limit: int = 1 << 20) -> list[str]:
    return docker_layer.copy_outputs(layers, OUTPUTS, tmp_path / "got", limit=limit)


def test_regular_files_are_copied_and_odd_names_left(layers, tmp_path):
    outputs = Path(layers.upper) / "session" / "outputs"
    (outputs / "a.txt").write_text("a")
    (outputs / ".hidden").write_text("h")
    assert _copy(layers, tmp_path) == ["a.txt"]
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["a.txt"]
    assert (tmp_path / "got" / "a.txt").read_text() == "a"


def test_an_untouched_or_absent_directory_is_empty(layers, tmp_path):
    outputs = Path(layers.upper) / "session" / "outputs"
    (outputs / "lost").write_text("x")
    os.utime(outputs, (0, 0))
    assert _copy(layers, tmp_path) == []
    (outputs / "lost").unlink()
    outputs.rmdir()
    assert _copy(layers, tmp_path) == []
    assert (tmp_path / "got").is_dir()


@pytest.mark.parametrize("odd", ["symlink", "hardlink", "subdir", "fifo"])
def test_anything_but_single_regular_files_is_the_engine_s(layers, tmp_path, odd):
    outputs = Path(layers.upper) / "session" / "outputs"
    (outputs / "f").write_text("f")
    if odd == "symlink":
        (outputs / "l").symlink_to("/etc/passwd")
    elif odd == "hardlink":
        os.link(outputs / "f", outputs / "g")
    elif odd == "subdir":
        (outputs / "sub").mkdir()
    else:
        os.mkfifo(outputs / "p")
    with pytest.raises(Unsure):
        _copy(layers, tmp_path)


def test_a_link_on_the_way_is_never_followed(layers, tmp_path):
    session = Path(layers.upper) / "session"
    (session / "outputs").rmdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_text("s")
    (session / "outputs").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Unsure):
        _copy(layers, tmp_path)
    assert not (tmp_path / "got" / "secret").exists()


def test_files_in_an_image_layer_there_are_the_engine_s(layers, tmp_path):
    lower = Path(layers.lowers[1]) / "session" / "outputs"
    lower.mkdir(parents=True)
    assert _copy(layers, tmp_path) == []  # an empty directory in the image: nothing to merge
    (lower / "mine").write_text("image's")
    with pytest.raises(Unsure):
        _copy(layers, tmp_path)


def test_a_link_in_an_image_layer_is_the_engine_s(layers, tmp_path):
    (Path(layers.lowers[0]) / "session").symlink_to("/etc")
    with pytest.raises(Unsure):
        _copy(layers, tmp_path)


def test_what_may_not_fit_the_limit_is_the_engine_s(layers, tmp_path):
    (Path(layers.upper) / "session" / "outputs" / "big").write_bytes(b"x" * 50_000)
    assert _copy(layers, tmp_path, limit=100_000) == ["big"]
    with pytest.raises(Unsure):
        _copy(layers, tmp_path, limit=60_000)


def test_layers_of_an_inspect():
    data = {"UpperDir": "/d/x/diff", "LowerDir": "/d/x-init/diff:/d/y/diff"}
    attrs = {"GraphDriver": {"Name": "overlay2", "Data": data}}
    assert docker_layer.layers_of(attrs) == Layers("/d/x/diff", ("/d/x-init/diff", "/d/y/diff"))
    assert docker_layer.layers_of({"GraphDriver": {"Name": "btrfs", "Data": {}}}) is None
    relative = {"GraphDriver": {"Name": "overlay2", "Data": {**data, "UpperDir": "x/diff"}}}
    assert docker_layer.layers_of(relative) is None


def test_reading_layers_needs_cap_sys_admin():
    with_it, without = "CapEff:\t000001ffffffffff\n", "CapEff:\t0000000000000000\n"
    assert docker_layer.can_read_layers(with_it) == (os.geteuid() == 0)
    assert not docker_layer.can_read_layers(without)


def _place(layers: Layers, now: float = 1234.5) -> None:
    docker_layer.place_untouched(layers, OUTPUTS, 0o777, top_mode=0o755, now=now)


@pytest.mark.skipif(os.geteuid() != 0, reason="places files owned by root")
@pytest.mark.parametrize("engine_made_it", [True, False])
def test_the_outputs_are_placed_as_the_engine_would(tmp_path, engine_made_it):
    for name in ("upper", "lower"):
        (tmp_path / name).mkdir()
    if engine_made_it:  # (the working directory, made when the container is created)
        (tmp_path / "upper" / "session").mkdir(mode=0o700)
    _place(Layers(str(tmp_path / "upper"), (str(tmp_path / "lower"),)))
    session, outputs = tmp_path / "upper" / "session", tmp_path / "upper" / "session" / "outputs"
    found = [(p.lstat().st_mode, p.lstat().st_uid, p.stat().st_atime, p.stat().st_mtime)
             for p in (session, outputs)]  # fmt: skip
    assert found == [(0o40755, 0, 0, 1234.5), (0o40777, 0, 0, 0)]
    assert list(outputs.iterdir()) == []


@pytest.mark.parametrize(
    "odd",
    ["lower_has_it", "lower_has_a_file", "outputs_there", "session_is_a_link", "session_not_empty"],
)
def test_placing_steps_aside_where_the_engine_could_differ(tmp_path, odd):
    for name in ("upper", "lower", "elsewhere"):
        (tmp_path / name).mkdir()
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    if odd == "lower_has_it":
        (lower / "session").mkdir()
    elif odd == "lower_has_a_file":
        (lower / "session").write_text("")
    elif odd == "outputs_there":
        (upper / "session" / "outputs").mkdir(parents=True)
    elif odd == "session_is_a_link":
        (upper / "session").symlink_to(tmp_path / "elsewhere")
    else:
        (upper / "session").mkdir()
        (upper / "session" / "x").write_text("")
    with pytest.raises(Unsure):
        _place(Layers(str(upper), (str(lower),)))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_placing_steps_aside_for_a_layer_reached_through_a_link(tmp_path):
    (tmp_path / "real" / "upper").mkdir(parents=True)
    (tmp_path / "lower").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(Unsure):
        _place(Layers(str(tmp_path / "link" / "upper"), (str(tmp_path / "lower"),)))
    assert list((tmp_path / "real" / "upper").iterdir()) == []
