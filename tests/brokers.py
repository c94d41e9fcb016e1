"""Real brokers for tests: each one a separate ``execbroker serve`` process on its own port.

A separate process (not an in-process TestClient) so tests see what users see: real
HTTP, real uvicorn, and a process that can be killed with SIGKILL and started again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from execbroker import launcher
from execbroker.launcher import free_port as free_port  # re-exported for tests

# A restarted broker takes its own earlier sessions over once their leases lapse.
BASE_CONFIG: dict[str, Any] = {
    **launcher.LOCAL_CONFIG,
    "monitor": {**launcher.LOCAL_CONFIG["monitor"], "lease": "PT2S"},
}
BrokerProcess = launcher.BrokerProcess


@contextmanager
def running_broker(directory: Path, **changes: Any) -> Iterator[BrokerProcess]:
    """A broker from BASE_CONFIG with top-level ``changes``, stopped at the end."""
    broker = BrokerProcess({**BASE_CONFIG, **changes}, directory)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def wait_for_phase(
    client: httpx.Client, uuid: str, phases: set[str], timeout: float = 30
) -> dict[str, Any]:
    """Poll a session until it reaches one of ``phases``; fail with its last state if not."""
    deadline = time.monotonic() + timeout
    session: dict[str, Any] = {}
    while time.monotonic() < deadline:
        session = client.get(f"/sessions/{uuid}").raise_for_status().json()
        if session["phase"] in phases:
            return session
        time.sleep(0.1)
    raise AssertionError(f"session {uuid} stayed {session.get('phase')}: {session}")


def batch_request(
    script: str,
    *,
    cores: tuple[int, int] = (1, 1),
    memory: tuple[int, int] = (1, 1),
    duration: str = "PT5M",
    **extra: Any,
) -> dict[str, Any]:
    """An ExecutionRequest for a batch script."""
    return {
        "executable": {"kind": "batch-script", "script": script},
        "compute": {
            "kind": "simple-compute-resource",
            "cores": {"min": cores[0], "max": cores[1]},
            "memory": {"min": memory[0], "max": memory[1]},
        },
        "schedule": {"requested": {"duration": duration}},
        **extra,
    }


def accept(client: httpx.Client, uuid: str) -> httpx.Response:
    return client.post(
        f"/sessions/{uuid}",
        json={"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"},
    )


def update(client: httpx.Client, uuid: str, phase: str) -> httpx.Response:
    return client.post(
        f"/sessions/{uuid}", json={"kind": "uri:enum-value-update", "path": "phase", "value": phase}
    )
