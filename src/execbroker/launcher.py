"""Brokers as child processes: what the demo, the tests and the benchmarks start.

Each broker is its own ``execbroker serve`` process on a free port, with its config and
state in one directory, so a caller sees what users see (real HTTP, a real server) and
can kill it with SIGKILL and start it again on the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

# A broker on this host's processes with the demo's users: what tests and benchmarks start
# from, changing what they measure.
LOCAL_CONFIG: dict[str, Any] = {
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


@contextlib.contextmanager
def fresh_postgres_database(server_url: str, prefix: str = "execbroker") -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url`` (an SQLAlchemy URL
    whose role may create databases), dropped afterwards: for tests and benchmarks."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_database(admin, name)


def _drop_database(admin: str, name: str, attempts: int = 10) -> None:
    """Drop ``name``, ending its connections first. Not ``WITH (FORCE)``: that refuses when an
    autovacuum worker happens to be in the database (a backend of no role), where a plain
    DROP stops the worker itself. Only our own role's backends are ours to end."""
    import psycopg

    with psycopg.connect(admin, autocommit=True) as connection:
        for attempt in range(attempts):
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                " AND pid <> pg_backend_pid() AND usename = current_user",
                (name,),
            )
            try:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except psycopg.errors.ObjectInUse:  # a backend still ending, or a new one
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and the live processes under
    it (a server of several worker processes counts whole), from /proc (Linux). A process
    gone meanwhile counts 0: what benchmarks use to weigh a request on a noisy machine."""
    tick = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    pending += [int(child) for child in (task / "children").read_text().split()]
    return total


class BrokerError(RuntimeError):
    """A broker process that exited or did not answer; the message ends with its log."""


class BrokerProcess:
    """One broker: ``spawn`` it, wait until it answers, ``stop`` (or ``kill``) it, start again.

    ``config`` is a broker config (as in a broker YAML file); its ``state_dir`` is set to
    ``directory/state``, or to ``state_dir`` (replicas of one broker share it, each with a
    directory of its own for its config and log). ``cwd`` is where relative paths in the
    config resolve from. ``workers`` above 1 serves it with that many worker processes on
    one port (``serve --workers``): ``process`` is then their supervisor.
    """

    def __init__(
        self,
        config: dict[str, Any],
        directory: Path,
        *,
        cwd: Path | None = None,
        log_level: str = "info",
        state_dir: Path | None = None,
        workers: int = 1,
    ) -> None:
        self.name = str(config.get("name", directory.name))
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "broker.yaml"
        config = {**config, "state_dir": str(state_dir or directory / "state")}
        # the config holds the users' tokens: the broker's alone (its tasks may run as
        # other accounts that pass through this directory)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write(yaml.safe_dump(config, sort_keys=False))
        self.cwd = cwd
        self.log_level = log_level
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "broker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def client(self, token: str = "demo-alice", timeout: float = 30) -> httpx.Client:
        """An HTTP client for this broker that sends ``token``."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    @classmethod
    def from_file(cls, path: Path, directory: Path, **options: Any) -> BrokerProcess:
        config = yaml.safe_load(path.read_text()) or {}
        return cls(config, directory, cwd=path.parent, **options)

    def spawn(self) -> None:
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
            self.log_level,
            "--workers",
            str(self.workers),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=os.environ.copy(),
            )

    def start(self, timeout: float = 120) -> BrokerProcess:
        """Spawn and wait until ``/health`` answers."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self._answers():
            self._check(deadline, timeout)
            time.sleep(0.1)
        return self

    async def wait_ready(self, timeout: float = 120) -> None:
        """Wait (without blocking the event loop) until a spawned broker answers."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                self._check(deadline, timeout)
                await asyncio.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _check(self, deadline: float, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            raise BrokerError(f"broker {self.name} exited:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise BrokerError(
                f"broker {self.name} did not answer in {timeout:g}s:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, and SIGKILL if it has not stopped in ``timeout`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (no shutdown hooks run)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def worker_pids(self) -> list[int]:
        """The pids of the supervisor's workers now (``[]`` for a broker of one process)."""
        if self.workers <= 1 or self.process is None or self.process.poll() is not None:
            return []
        pid = self.process.pid
        found: list[int] = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found += [int(child) for child in (task / "children").read_text().split()]
        return sorted(found)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
