"""A docker task's outputs ($EXECBROKER_OUTPUTS) against the real Docker Engine: what the
task left is copied out when its end is first seen; a directory it never touched is known
empty from the engine's stat alone (no copy), also on the event stream's fast path, where
the ended container is not inspected at all."""

from __future__ import annotations

import time
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
