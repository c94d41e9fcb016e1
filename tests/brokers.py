"""Real brokers for tests: each one a separate ``execbroker serve`` process on its own port.

A separate process (not an in-process TestClient) so tests see what users see: real
HTTP, real uvicorn, and a process that can be killed with SIGKILL and started again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

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
    "monitor": {"interval": "PT0.2S"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BrokerProcess:
    """One broker: ``start``, ``kill`` (SIGKILL, no clean-up), ``start`` again on its state."""

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {**config, "state_dir": str(directory / "state")}
        self.config_path = directory / "broker.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "broker.log"

    def start(self, timeout: float = 30) -> BrokerProcess:
        log = self.log_path.open("ab")
        command = [
            sys.executable,
            "-m",
            "execbroker.cli",
            "serve",
            "--config",
            str(self.config_path),
            "--port",
            str(self.port),
            "--log-level",
            "info",
        ]
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=os.environ.copy())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"broker did not answer in {timeout}s: {self.log_path.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (no shutdown hooks run)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

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
