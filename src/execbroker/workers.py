"""One broker served by several worker processes on one listening socket (``serve --workers``).

One broker process is bound by its interpreter's lock to one core; workers let it use more.
Each worker is a whole ``execbroker serve`` of the same config on the same database and
state directory: a *replica* in the monitor's sense (its own replica id, leases, index of
holds), so everything that keeps replicas safe (the booking transaction, the WAITING →
PREPARING claim, the holdings version counter, leases and take-overs) keeps workers safe.
The only thing they share beyond the database is the port: each worker listens on it with
``SO_REUSEPORT`` and the kernel spreads new connections over them (a shared socket instead
lets whichever worker wakes first accept a whole burst of connections, leaving the other
idle). The supervisor holds the port bound, not listening, so it stays the broker's while a
worker is restarted.

The supervisor holds no broker state. It checks what it can before any worker starts (the
config, that the database is one the workers can share, that each platform is known to be
safe with several replicas, the schema migrated once), then:

* SIGTERM, SIGINT or SIGHUP: tells every worker to stop (SIGTERM: each finishes its requests and
  ends its leases), waits for them, and exits; a second signal kills them.
* A worker killed (a signal, the OOM killer): started again, at most every few seconds if
  it keeps dying; meanwhile its sessions are taken over by the others once its leases lapse.
* A worker that exits by itself with an error (it refused to start): the broker stops, with
  that worker's exit code, rather than restart it for ever.
* The supervisor killed: its workers die with it (``PR_SET_PDEATHSIG``), so a restarted broker
  never finds the port still held by orphans.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

from execbroker.config import BrokerConfig

log = logging.getLogger(__name__)

# Backends whose state lives on the platform or in the shared state directory, found again
# by session id, and driven only under the database's leases: safe with several replicas
# (tests/reliability). A backend not named here is refused with several workers.
REPLICA_SAFE_PLATFORMS = frozenset({"local", "docker", "compose", "slurm", "kubernetes"})

# A worker that dies this soon after its start is started again only after a growing pause.
STEADY = 10.0  # seconds
FIRST_PAUSE, LONGEST_PAUSE = 0.5, 30.0
_PR_SET_PDEATHSIG = 1


def problems(config: BrokerConfig, workers: int) -> list[str]:
    """Why ``workers`` worker processes cannot serve this broker safely (empty: they can)."""
    if workers <= 1:
        return []
    found = []
    url = make_url(config.database_url)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        found.append(
            "database: an in-memory SQLite database is each process's own; several workers "
            "need one file or a PostgreSQL server they share"
        )
    for platform in config.platforms:
        if platform.type not in REPLICA_SAFE_PLATFORMS:
            found.append(
                f"platforms: {platform.type!r} is not known to be safe with several replicas "
                f"(only {', '.join(sorted(REPLICA_SAFE_PLATFORMS))} are); serve it with one worker"
            )
    return found


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` that other processes of this user may listen on too,
    each getting a share of the new connections from the kernel (``SO_REUSEPORT``)."""
    sock = _shared(host, port)
    sock.listen(2048)
    return sock


def hold(host: str, port: int) -> socket.socket:
    """The supervisor's hold on the port: bound with ``SO_REUSEPORT`` so its workers can listen
    on it, but not listening itself (it is handed no connections). The port is first bound
    without, so one that anything else holds (another broker's workers too) is refused, not
    shared; port 0 chooses one."""
    with _socket(host) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    return _shared(host, port)


def _socket(host: str) -> socket.socket:
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY on accepted connections only then
    # (without it every response waits ~40 ms on the client's delayed ACK)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)


def _shared(host: str, port: int) -> socket.socket:
    sock = _socket(host)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _dying_with(parent: int) -> Callable[[], None]:
    """What a worker runs before its program: be killed when the supervisor dies (however it
    dies). The C library is found here, before the fork, not in the child."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before the line above
            os._exit(1)

    return die_with


@dataclass
class _Slot:
    """One worker's place: its process now, and when it may be started again."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pause: float = 0.0
    not_before: float = 0.0


@dataclass
class Supervisor:
    """Starts ``count`` workers running ``command`` and keeps them."""

    command: Sequence[str]
    count: int
    _slots: list[_Slot] = field(default_factory=list)
    _signals: list[int] = field(default_factory=list)

    def run(self) -> int:
        """Serve until told to stop; the exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda got, _frame: self._signals.append(got))
        self._slots = [_Slot(number) for number in range(self.count)]
        code = 0
        while not self._signals:
            for slot in self._slots:
                failed = self._keep(slot)
                if failed is not None:
                    code = failed
                    break
            else:
                time.sleep(0.1)  # (a signal cuts it short)
                continue
            break
        self._stop_all()
        return code

    def _keep(self, slot: _Slot) -> int | None:
        """Start the slot's worker if due; a worker's own failing exit code, to stop on."""
        process = slot.process
        if process is not None:
            code = process.poll()
            if code is None:
                return None
            slot.process = None
            if code > 0:
                log.error(
                    "worker %d (pid %d) exited with code %d: stopping the broker",
                    slot.number,
                    process.pid,
                    code,
                )
                return code
            lived = time.monotonic() - slot.started
            doubled = min(max(FIRST_PAUSE, 2 * slot.pause), LONGEST_PAUSE)
            slot.pause = 0.0 if lived >= STEADY else doubled
            slot.not_before = time.monotonic() + slot.pause
            how = f"was killed by signal {-code}" if code < 0 else "stopped"
            log.warning(
                "worker %d (pid %d) %s; starting another%s (its sessions are taken over once "
                "their leases lapse)",
                slot.number,
                process.pid,
                how,
                f" in {slot.pause:g} s" if slot.pause else "",
            )
        if time.monotonic() >= slot.not_before:
            self._start(slot)
        return None

    def _start(self, slot: _Slot) -> None:
        slot.process = subprocess.Popen(
            list(self.command),
            preexec_fn=_dying_with(os.getpid()),  # (safe: the supervisor runs no threads)
        )
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d)", slot.number, slot.process.pid)

    def _stop_all(self) -> None:
        """SIGTERM to every worker, then wait; another signal meanwhile: SIGKILL."""
        running = [slot.process for slot in self._slots if slot.process is not None]
        log.info("stopping %d workers", len(running))
        seen = len(self._signals)
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        while any(process.poll() is None for process in running):
            if len(self._signals) > seen:
                log.warning("told again to stop: killing the workers")
                for process in running:
                    if process.poll() is None:
                        process.kill()
                seen = len(self._signals)
            time.sleep(0.05)


def worker_command(
    config: str, *, host: str, port: int, log_level: str, interpreter: str = sys.executable
) -> list[str]:
    """What a worker runs: one broker process listening on the shared port."""
    return [
        interpreter,
        "-m",
        "execbroker.cli",
        "serve",
        "--config",
        config,
        "--host",
        host,
        "--port",
        str(port),
        "--reuse-port",
        "--log-level",
        log_level,
        "--workers",
        "1",
    ]
