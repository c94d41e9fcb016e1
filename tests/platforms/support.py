"""Helpers the platform tests share for driving a backend directly."""

from __future__ import annotations

import time
import uuid as uuids
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from execbroker.planner import Resources
from execbroker.platforms.base import LaunchSpec, RunState, RunStatus

BUSYBOX = "busybox:local"
PYTHON = "execbroker/python:local"


def session_containers(engine: Any, broker: str, session: str) -> list[Any]:
    """The containers of one session of the broker ``broker``. One removed while the engine
    is asked is left out (docker-py lists, then inspects each: the broker releases
    containers while a test polls for their end)."""
    labels = [f"execbroker.broker={broker}", f"execbroker.session={session}"]
    return engine.containers.list(all=True, filters={"label": labels}, ignore_removed=True)


def remove_labelled(engine: Any, broker: str) -> None:
    """Everything the broker ``broker`` left in the engine."""
    label = {"label": f"execbroker.broker={broker}"}
    for container in engine.containers.list(all=True, filters=label, ignore_removed=True):
        container.remove(force=True)
    for network in engine.networks.list(filters=label):
        network.remove()
    for volume in engine.volumes.list(filters=label):
        volume.remove()


def address_of(engine: Any, handle: str) -> str:
    """A container's IP address on its network (one that joined a holder's namespace
    has the holder's)."""
    found = engine.api.inspect_container(handle)
    mode = found["HostConfig"]["NetworkMode"]
    if mode.startswith("container:"):
        found = engine.api.inspect_container(mode.removeprefix("container:"))
    (address,) = [n["IPAddress"] for n in found["NetworkSettings"]["Networks"].values()]
    return str(address)


def launch(
    executable: Any,
    tmp_path: Path,
    *,
    session: str | None = None,
    cores: int = 1,
    memory: int = 1,
    seconds: int = 120,
    workdir: Path | None = None,
) -> LaunchSpec:
    """A LaunchSpec for one session starting now (its work dir under ``tmp_path/state``)."""
    session = session or str(uuids.uuid4())
    now = datetime.now(UTC)
    return LaunchSpec(
        session_id=session,
        broker="unused",
        owner="alice",
        executable=executable,
        resources=Resources(cores, memory, 1),
        start=now,
        deadline=now + timedelta(seconds=seconds),
        workdir=workdir or tmp_path / "state" / "sessions" / session,
    )


def wait_state(platform: Any, handle: str, states: set[RunState], timeout: float = 30) -> RunStatus:
    deadline = time.monotonic() + timeout
    status = platform.status(handle)
    while status.state not in states and time.monotonic() < deadline:
        time.sleep(0.1)
        status = platform.status(handle)
    assert status.state in states, status
    return status
