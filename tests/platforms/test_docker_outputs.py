"""A docker task's outputs ($EXECBROKER_OUTPUTS) against the real Docker Engine: what the
task left is copied out when its end is first seen; a directory it never touched is known
empty from the engine's stat alone (no copy), also on the event stream's fast path, where
the ended container is not inspected at all."""

from __future__ import annotations

import io
import time
import uuid as uuids
from typing import Any

import pytest

from execbroker.model.executables import DockerContainer
from execbroker.platforms import docker_engine
from execbroker.platforms.base import RunState
from tests.platforms.support import BUSYBOX, launch

pytestmark = pytest.mark.docker

OUTPUTS = "/session/outputs"


def _task(script: str) -> DockerContainer:
    return DockerContainer.model_validate(
        {"image": {"locations": [BUSYBOX]}, "command": ["sh", "-c", script]}
    )


def _until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


def test_outputs_are_copied_when_touched_and_only_stat_when_not(make_platform, engine, tmp_path):
    platform = make_platform()
    platform.watch(lambda session: None)  # the event stream: ends heard as they happen
    _until(lambda: platform.events.token("none") is not None)
    scripts = {
        "nothing": "true",
        "wrote": 'echo done > "$EXECBROKER_OUTPUTS/result.txt"',
        "emptied": 'touch "$EXECBROKER_OUTPUTS/x" && rm "$EXECBROKER_OUTPUTS/x"',
        # a task that writes and then sets the directory's time back to the epoch on
        # purpose is taken at its word: it loses its own outputs, and shows that an
        # untouched directory is not copied at all
        "hid": 'echo lost > "$EXECBROKER_OUTPUTS/lost.txt" && touch -d @0 "$EXECBROKER_OUTPUTS"',
    }
    specs = {name: launch(_task(script), tmp_path) for name, script in scripts.items()}
    handles = {name: platform.start(spec) for name, spec in specs.items()}
    for name, handle in handles.items():
        # heard from the stream first: ``status`` then takes the fast path (no inspect)
        _until(lambda handle=handle: handle in platform.events.completed)
        assert platform.status(handle).state == RunState.COMPLETED, name
        stat = docker_engine.path_stat(engine.api, handle, OUTPUTS)
        assert docker_engine.is_untouched(stat) == (name in ("nothing", "hid")), (name, stat)

    listed = {name: sorted(p.name for p in (specs[name].workdir / "outputs").iterdir())
              for name in scripts}  # fmt: skip
    assert listed == {"nothing": [], "wrote": ["result.txt"], "emptied": [], "hid": []}
    assert (specs["wrote"].workdir / "outputs" / "result.txt").read_text() == "done\n"
    for handle in handles.values():
        platform.release(handle)


def test_a_failed_task_s_outputs_are_copied_too(make_platform, tmp_path):
    """Exit code 1: the engine is asked (no fast path), and what the task left still comes out."""
    platform = make_platform()
    spec = launch(_task('echo partial > "$EXECBROKER_OUTPUTS/part.txt"; exit 1'), tmp_path)
    handle = platform.start(spec)
    _until(lambda: platform.status(handle).state.final)
    assert platform.status(handle).state == RunState.FAILED
    assert (spec.workdir / "outputs" / "part.txt").read_text() == "partial\n"
    platform.release(handle)


def _archive_reads(platform: Any) -> list[str]:
    """The engine's archive API calls that read (HEAD: a stat, GET: a copy), as they go."""
    api = platform.engine.client.api
    seen: list[str] = []
    request = api.request

    def recording(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method in ("GET", "HEAD") and url.split("?")[0].endswith("/archive"):
            seen.append(f"{method} {url}")
        return request(method, url, *args, **kwargs)

    api.request = recording
    return seen


@pytest.mark.parametrize("prepare", [False, True])
def test_an_ended_task_s_outputs_are_read_from_its_layer_not_through_the_engine(
    make_platform, tmp_path, prepare
):
    """The broker runs as root on the engine's host here: the files a task left are read
    from its container's writable layer (no archive API: no wait for the engine to let go
    of the container, no tar helper), from a prepared image's container too."""
    platform = make_platform(prepare_images=prepare)
    if prepare:
        _until(lambda: platform.prepared.get(platform.engine.client.images.get(BUSYBOX)))
    platform.watch(lambda session: None)
    _until(lambda: platform.events.token("none") is not None)
    spec = launch(_task('echo done > "$EXECBROKER_OUTPUTS/result.txt"'), tmp_path)
    handle = platform.start(spec)
    reads = _archive_reads(platform)
    _until(lambda: handle in platform.events.completed)
    assert platform.status(handle).state == RunState.COMPLETED
    assert (spec.workdir / "outputs" / "result.txt").read_text() == "done\n"
    assert reads == []
    platform.release(handle)


# Tasks whose outputs only the engine can tell (the layer's reader must step aside) next to
# ones it reads itself: each must come out the same both ways.
_TRICKY = {
    "nothing": "true",
    "plain": 'echo a > "$O/a.txt" && printf "b\\0" > "$O/b.bin"',
    "odd_names": 'echo x > "$O/.hidden" && echo y > "$O/with space" && echo z > "$O/ok"',
    "links": 'ln -s /etc/passwd "$O/passwd" && echo f > "$O/f" && ln "$O/f" "$O/g"',
    "subdir_fifo": 'mkdir "$O/sub" && echo s > "$O/sub/s" && mkfifo "$O/pipe" && echo t > "$O/t"',
    "replaced_by_link": 'rmdir "$O" && ln -s /etc "$O"',
    "replaced_by_file": 'rmdir "$O" && echo no > "$O"',
    "removed": 'rmdir "$O"',
    "hid": 'echo lost > "$O/lost.txt" && touch -d @0 "$O"',
    "near_limit": 'head -c 70000 /dev/zero > "$O/big" && echo s > "$O/a"',
    "within_limit": 'head -c 20000 /dev/zero > "$O/mid"',
    "failed": 'echo partial > "$O/part.txt"; exit 3',
}
_LIMIT = 64 * 1024


def _outputs(workdir: Any) -> dict[str, bytes]:
    outputs = workdir / "outputs"
    return {p.name: p.read_bytes() for p in sorted(outputs.iterdir())} if outputs.is_dir() else {}


def _run_all(
    platform: Any, tmp_path: Any, image: str, tasks: dict[str, str]
) -> tuple[dict[str, Any], set[str]]:
    """Each task's outputs, and the tasks whose outputs were read through the engine."""
    platform.watch(lambda session: None)
    _until(lambda: platform.events.token("none") is not None)
    specs, handles = {}, {}
    for name, script in tasks.items():
        task = DockerContainer.model_validate(
            {
                "image": {"locations": [image]},
                "command": ["sh", "-c", f'O="$EXECBROKER_OUTPUTS"; {script}'],
            }
        )
        specs[name] = launch(task, tmp_path)
        handles[name] = platform.start(specs[name])
    found, reads = {}, _archive_reads(platform)
    for name, handle in handles.items():
        _until(lambda handle=handle: platform.status(handle).state.final)
        found[name] = _outputs(specs[name].workdir)
        platform.release(handle)
    return found, {name for name, h in handles.items() if any(h in read for read in reads)}


def test_the_layer_and_the_engine_give_the_same_outputs(make_platform, tmp_path):
    by_layer = make_platform(notebook_outputs_limit=_LIMIT)
    by_engine = make_platform(notebook_outputs_limit=_LIMIT, read_layers=False)
    assert by_layer._read_layers and not by_engine._read_layers
    layer, asked = _run_all(by_layer, tmp_path, BUSYBOX, _TRICKY)
    engine, _ = _run_all(by_engine, tmp_path, BUSYBOX, _TRICKY)
    assert layer == engine
    unsure = {"links", "subdir_fifo", "replaced_by_link", "replaced_by_file", "near_limit"}
    assert asked == unsure
    assert layer["plain"] == {"a.txt": b"a\n", "b.bin": b"b\0"}
    assert layer["links"] == {"f": b"f\n"} and layer["subdir_fifo"] == {"t": b"t\n"}
    assert layer["hid"] == {} and layer["near_limit"] == {"a": b"s\n"}


def test_files_the_image_has_in_outputs_come_out_the_same_way_too(make_platform, engine, tmp_path):
    """An image with files of its own in /session/outputs: what the task saw there is the
    image's files and its own, which only the engine's merged view tells."""
    tag = f"execbroker-test/outputs:{uuids.uuid4().hex[:10]}"
    dockerfile = f"FROM {BUSYBOX}\nCOPY mine /session/outputs/mine\n".encode()
    context = docker_engine.tar_of(
        [("Dockerfile", dockerfile, 0o644, 0), ("mine", b"image's\n", 0o644, 0)]
    )
    engine.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag)
    try:
        tasks = {"wrote": 'echo t > "$O/t"', "nothing": "true"}
        layer, asked = _run_all(make_platform(), tmp_path, tag, tasks)
        by_engine, _ = _run_all(make_platform(read_layers=False), tmp_path, tag, tasks)
        assert layer == by_engine == {"wrote": {"mine": b"image's\n", "t": b"t\n"}, "nothing": {}}
        assert asked == {"wrote", "nothing"}  # (the untouched one: the engine's stat)
    finally:
        engine.images.remove(tag, force=True)


def _archive_puts(platform: Any) -> list[str]:
    """The engine's archive API calls that copy files into a container (PUT), as they go."""
    api = platform.engine.client.api
    seen: list[str] = []
    put = api.put

    def recording(url: str, *args: Any, **kwargs: Any) -> Any:
        if url.split("?")[0].endswith("/archive"):
            seen.append(url)
        return put(url, *args, **kwargs)

    api.put = recording
    return seen


# Before writing anything: owner, mode and mtime of /session and of the outputs directory,
# and how many entries it has; then a file in it made by a user other than root. Not the
# atime: anything on the host that reads the engine's layers (a disk-usage walk, a kubelet's
# monitor) moves it, and nothing here relies on it.
_STAT = (
    'stat -c "%n %u %g %a %Y" /session "$O" > /tmp/stat && ls -A "$O" | wc -l >> /tmp/stat'
    ' && su nobody -s /bin/sh -c "cat /tmp/stat > $O/stat.txt"'
)


@pytest.mark.parametrize("read_layers", [True, False])
def test_a_task_sees_the_same_empty_outputs_placed_in_its_layer_or_by_the_engine(
    make_platform, tmp_path, read_layers
):
    """Made in the created container's layer (no archive PUT, no tar helper) or copied in
    by the engine: what the task finds is the same, and a user other than root writes it."""
    platform = make_platform(read_layers=read_layers)
    assert platform._read_layers == read_layers  # (the broker runs as root on the host here)
    puts = _archive_puts(platform)
    before = int(time.time())
    spec = launch(_task(f'O="$EXECBROKER_OUTPUTS"; {_STAT}'), tmp_path)
    handle = platform.start(spec)
    after = time.time()
    assert len(puts) == (0 if read_layers else 1)
    _until(lambda: platform.status(handle).state.final)
    assert platform.status(handle).state == RunState.COMPLETED
    session, outputs, entries = (spec.workdir / "outputs" / "stat.txt").read_text().splitlines()
    name, uid, gid, mode, mtime = session.split()
    assert (name, uid, gid, mode) == ("/session", "0", "0", "755")
    assert before <= int(mtime) <= after
    assert outputs.split() == [OUTPUTS, "0", "0", "777", "0"] and entries == "0"
    platform.release(handle)


def test_outputs_are_placed_by_the_engine_where_the_image_has_a_session_directory(
    make_platform, engine, tmp_path
):
    """The image has /session (here, an empty one) in its layers: the engine's copy would
    change that directory, so the engine places the outputs, and the task sees them so."""
    tag = f"execbroker-test/session:{uuids.uuid4().hex[:10]}"
    dockerfile = f"FROM {BUSYBOX}\nRUN mkdir -m 700 /session\n".encode()
    context = docker_engine.tar_of([("Dockerfile", dockerfile, 0o644, 0)])
    engine.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag)
    try:
        platform = make_platform()
        puts = _archive_puts(platform)
        task = DockerContainer.model_validate(
            {
                "image": {"locations": [tag]},
                "command": ["sh", "-c", f'O="$EXECBROKER_OUTPUTS"; {_STAT}'],
            }
        )
        spec = launch(task, tmp_path)
        handle = platform.start(spec)
        assert len(puts) == 1
        _until(lambda: platform.status(handle).state.final)
        session, outputs, _ = (spec.workdir / "outputs" / "stat.txt").read_text().splitlines()
        assert session.split()[:4] == ["/session", "0", "0", "755"]
        assert outputs.split() == [OUTPUTS, "0", "0", "777", "0"]
        platform.release(handle)
    finally:
        engine.images.remove(tag, force=True)
