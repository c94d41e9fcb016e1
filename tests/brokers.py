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

BASE_CONFIG: dict[str, Any] = {
    "name": "test",
    "quota": {"cores": 4, "memory": 8, "storage": 20, "max_sessions": 8, "max_duration": "PT1H"},
    "offers": {"max": 4, "ttl": "PT5M"},
    "platforms": [{"type": "local"}],
    "users": [
        {"name": "alice", "token": "demo-alice"},
        {"name": "bob", "token": "demo-bob"},
        {"name": "admin", "token": "demo-admin", "admin": True},
    ],
    # A restarted broker takes its own earlier sessions over once their leases lapse.
    "monitor": {"interval": "PT0.2S", "lease": "PT2S"},
}


class BrokerProcess(launcher.BrokerProcess):
    """A broker process, plus an authenticated HTTP client for a test."""

    def client(self, token: str = "demo-alice", timeout: float = 30) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )


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
