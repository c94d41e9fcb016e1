"""Prepared images (``docker_prepared``) against the real Docker Engine: once an image's
derived image is made, its sessions start from it with nothing copied in, run as the image
says (its user, command, environment), and their outputs work as before; an image with
ONBUILD triggers is never built from."""

from __future__ import annotations

import io
import tarfile
import time
import uuid as uuids
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from execbroker.model.executables import DockerContainer
from execbroker.platforms import docker_engine, docker_prepared
from execbroker.platforms.base import RunState
from tests.platforms.support import BUSYBOX, launch

pytestmark = pytest.mark.docker


def _build(engine: docker.DockerClient, dockerfile: str) -> Any:
    """A test image from ``dockerfile`` (no RUN: nothing is run to make it)."""
    tag = f"execbroker-test/prepared:{uuids.uuid4().hex[:10]}"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        archive.addfile(info, io.BytesIO(dockerfile.encode()))
    engine.images.build(fileobj=io.BytesIO(context.getvalue()), custom_context=True, tag=tag)
    return engine.images.get(tag)


@pytest.fixture
def user_image(engine: docker.DockerClient) -> Iterator[Any]:
    """busybox running as user 1000, with an environment variable of its own."""
    image = _build(engine, f"FROM {BUSYBOX}\nUSER 1000\nENV GREETING=hello\n")
    yield image
    for tag in (docker_prepared.tag_of(image.id), image.tags[0]):
        engine.images.remove(tag, force=True)


def _until(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)
    return found


def _run(platform: Any, tmp_path: Any, image: str, script: str) -> tuple[str, Any]:
    task = DockerContainer.model_validate(
        {"image": {"locations": [image]}, "command": ["sh", "-c", script]}
    )
    spec = launch(task, tmp_path)
    handle = platform.start(spec)
    _until(lambda: platform.status(handle).state.final)
    return handle, spec


def test_sessions_start_from_the_prepared_image_with_nothing_copied_in(
    make_platform, engine, tmp_path, user_image
):
    platform = make_platform(prepare_images=True)
    derived = _until(lambda: platform.prepared.get(user_image))
    made = engine.api.inspect_image(derived)
    assert made["Parent"] == user_image.id
    assert made["Config"]["User"] == "1000" and "GREETING=hello" in made["Config"]["Env"]

    script = (  # the directory as found, before anything is made in it
        'found=$(stat -c "%a %U %Y" "$EXECBROKER_OUTPUTS"); '
        'printf "%s\n%s %s\n" "$found" "$(id -u)" "$GREETING" > "$EXECBROKER_OUTPUTS/seen.txt"'
    )
    handle, spec = _run(platform, tmp_path, user_image.tags[0], script)
    assert platform.status(handle).state == RunState.COMPLETED
    attrs = engine.api.inspect_container(handle)
    assert attrs["Image"] == derived and attrs["Config"]["Labels"]["execbroker.outputs"] == "image"
    # the task, as the image's user, found the directory empty and writable, and wrote it
    seen = (spec.workdir / "outputs" / "seen.txt").read_text().split("\n")
    assert seen[:2] == ["777 root 0", "1000 hello"]

    # one that writes nothing: nothing of /session in its own layer (nothing was copied
    # in), and its outputs are known empty from the stat alone
    quiet, spec = _run(platform, tmp_path, user_image.tags[0], "true")
    changed = {change["Path"] for change in engine.api.diff(quiet) or []}
    assert not {path for path in changed if path.startswith("/session")}, changed
    stat = docker_engine.path_stat(engine.api, quiet, "/session/outputs")
    assert docker_engine.is_untouched(stat)
    assert list((spec.workdir / "outputs").iterdir()) == []
    for started in (handle, quiet):
        platform.release(started)


def test_without_prepare_images_the_directory_is_copied_in(make_platform, engine, tmp_path):
    platform = make_platform(prepare_images=False)
    handle, spec = _run(platform, tmp_path, BUSYBOX, 'echo x > "$EXECBROKER_OUTPUTS/x.txt"')
    attrs = engine.api.inspect_container(handle)
    assert "execbroker.outputs" not in attrs["Config"]["Labels"]
    assert attrs["Image"] == engine.images.get(BUSYBOX).id
    assert (spec.workdir / "outputs" / "x.txt").read_text() == "x\n"
    platform.release(handle)


def test_an_image_with_onbuild_triggers_is_never_built_from(make_platform, engine, tmp_path):
    image = _build(engine, f"FROM {BUSYBOX}\nONBUILD RUN touch /triggered\n")
    try:
        platform = make_platform(prepare_images=True)
        assert platform.prepared.get(image) is None
        handle, spec = _run(platform, tmp_path, image.tags[0], 'echo y > "$EXECBROKER_OUTPUTS/y"')
        assert platform.status(handle).state == RunState.COMPLETED
        assert engine.api.inspect_container(handle)["Image"] == image.id  # copied in instead
        assert (spec.workdir / "outputs" / "y").read_text() == "y\n"
        platform.release(handle)
        assert engine.images.list(name=docker_prepared.tag_of(image.id)) == []
    finally:
        engine.images.remove(image.id, force=True)
