"""Fixtures the Docker backends' tests share: the engine, and a throwaway broker name
that cleans up after itself."""

from __future__ import annotations

import uuid as uuids
from collections.abc import Iterator
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
