"""Fixtures the Docker backends' tests share: the engine, and a throwaway broker name
that cleans up after itself."""

from __future__ import annotations

import uuid as uuids
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.platforms.support import BUSYBOX, PYTHON, remove_labelled


@pytest.fixture(scope="module")
def engine() -> Any:
    """The Docker engine, with the images scripts/services.sh builds (else the test fails)."""
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        for image in (BUSYBOX, PYTHON):
            client.images.get(image)
    except docker.errors.DockerException as error:
        pytest.fail(f"needs dockerd and its images (scripts/services.sh up docker): {error}")
    return client


@pytest.fixture
def broker_name(engine: Any) -> Iterator[str]:
    """A broker name for this test; whatever it left behind is removed afterwards."""
    name = f"t-{uuids.uuid4().hex[:10]}"
    yield name
    remove_labelled(engine, name)


@pytest.fixture
def make_platform(broker_name: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Docker platforms (``docker.create`` with the options given) under this test's broker
    name; closed afterwards (spares being made are finished and removed)."""
    from execbroker.platforms import docker as docker_platform

    made: list[Any] = []

    def make(**options: Any) -> Any:
        broker = SimpleNamespace(name=broker_name, state_path=tmp_path / "state")
        made.append(docker_platform.create(options, broker=broker))
        return made[-1]

    yield make
    for platform in made:
        platform.close()
