"""One broker served by two worker processes on one port (``serve --workers 2``), on SQLite and
on PostgreSQL: concurrent accepts through both never overbook the quota, every session is
started exactly once (and by both workers between them), a worker killed with SIGKILL has its
sessions finished (by the other, or by its replacement), and SIGTERM stops every worker, each
ending its leases."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from execbroker.config import BrokerConfig
from execbroker.launcher import process_cpu_seconds
from execbroker.store.tables import SessionRow
from execbroker.timeutil import utcnow
from execbroker.workers import listen, problems
from tests.brokers import BASE_CONFIG, BrokerProcess, batch_request
from tests.reliability.support import (
    ACCEPT,
    MONITOR,
    NOTHING_WRONG,
    QUOTA,
    ROOMY,
    accept_many,
    all_sessions,
    counting_script,
    overbooking,
    race_for_quota,
    report,
    wait_until_settled,
)


@contextmanager
def two_workers(directory: Path, database: str, **changes: Any) -> Iterator[BrokerProcess]:
    config = {**BASE_CONFIG, "database": database, **changes}
    broker = BrokerProcess(config, directory, workers=2)
    broker.start()
    try:
        deadline = time.monotonic() + 60
        while len(broker.worker_pids()) < 2 or not _all_serving(broker):
            assert time.monotonic() < deadline, broker.log_tail()
            time.sleep(0.1)
        yield broker
    finally:
        broker.stop(timeout=60)


def _all_serving(broker: BrokerProcess) -> bool:
    return broker.log_path.read_text(errors="replace").count("Application startup complete") >= 2


def _column(database: str, column: Any) -> list[Any]:
    """One column of every session, read from the shared database itself."""
    engine = create_engine(database)
    try:
        with Session(engine) as db:
            return list(db.scalars(select(column)))
    finally:
        engine.dispose()


def _starters(database: str) -> Counter[str]:
    """How many sessions each replica (worker) claimed, from the shared database itself."""
    return Counter(h for h in _column(database, SessionRow.claimed_by) if h is not None)


def test_quota_holds_across_workers_under_concurrent_accepts(tmp_path: Path, database: str) -> None:
    # Nothing starts (a long interval, a start an hour away): only the bookings are under test.
    with two_workers(tmp_path, database, quota=QUOTA, monitor={"interval": "PT60S"}) as broker:
        pids = broker.worker_pids()
        before = {pid: process_cpu_seconds(pid) for pid in pids}
        # eight connections (the kernel spreads them over both workers); every offer accepted
        # three times at the same moment, over three of them
        statuses = asyncio.run(race_for_quota([broker.url], clients=8, asks=40, accepts=3))
        used = {pid: process_cpu_seconds(pid) - before[pid] for pid in pids}
        sessions = all_sessions(broker.url)
    assert overbooking(statuses, sessions, QUOTA) == []
    # both workers answered a share of it (each spent CPU on it, not only the one)
    assert all(seconds >= 0.1 for seconds in used.values()), used


def test_two_workers_start_each_session_exactly_once(tmp_path: Path, database: str) -> None:
    with two_workers(tmp_path, database, quota=ROOMY, monitor=MONITOR) as broker:
        uuids = asyncio.run(accept_many([broker.url], 48, counting_script(), clients=8))
        sessions = wait_until_settled(broker.url, timeout=150)
    assert len(uuids) == 48
    found = report(sessions, tmp_path / "state", [broker.log_path], accepted=uuids)
    assert found == NOTHING_WRONG
    starters = _starters(database)
    assert sum(starters.values()) == 48
    assert len(starters) == 2, f"one worker started them all: {starters}"


def test_a_worker_killed_mid_run_has_its_sessions_finished(tmp_path: Path, database: str) -> None:
    with two_workers(tmp_path, database, quota=ROOMY, monitor=MONITOR) as broker:
        doomed = broker.worker_pids()[0]

        async def run() -> list[str]:
            # arriving over about two seconds; a connection the killed worker held fails, and
            # the session is tried again (the port's other worker, or its replacement, answers)
            script = counting_script("sleep 2")
            accepting = asyncio.create_task(
                accept_many([broker.url], 40, script, clients=8, arriving_every=0.05, tries=20)
            )
            await _claimed_some(database, doomed)
            await asyncio.sleep(random.uniform(0.0, 0.5))
            os.kill(doomed, signal.SIGKILL)
            return await accepting

        uuids = asyncio.run(run())
        sessions = wait_until_settled(broker.url, timeout=150)
        workers_now = broker.worker_pids()
    assert len(uuids) >= 30
    found = report(sessions, tmp_path / "state", [broker.log_path], accepted=uuids)
    assert found == NOTHING_WRONG
    log = broker.log_path.read_text()
    assert "taking over sessions" in log, "no worker took the killed one's sessions over"
    assert doomed not in workers_now and len(workers_now) == 2, "the killed worker not replaced"


async def _claimed_some(database: str, pid: int, timeout: float = 90) -> None:
    """Until the worker with this pid has claimed a session (it holds something to lose)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(f"-{pid}-" in holder for holder in _starters(database)):
        assert loop.time() < deadline, f"worker {pid} claimed no session in {timeout:g}s"
        await asyncio.sleep(0.05)


def test_sigterm_stops_every_worker_and_ends_their_leases(tmp_path: Path, database: str) -> None:
    broker = BrokerProcess(
        {**BASE_CONFIG, "database": database, "quota": ROOMY, "monitor": MONITOR},
        tmp_path,
        workers=2,
    )
    broker.start()
    try:
        # sessions running on both workers: each accept on a new connection (which either
        # worker may take), until each worker has claimed one
        deadline = time.monotonic() + 60
        while len(_starters(database)) < 2:
            assert time.monotonic() < deadline, f"not both workers running: {_starters(database)}"
            with broker.client() as client:
                asked = client.post("/requests", json=batch_request("sleep 60")).raise_for_status()
                uuid = asked.json()["offers"][0]["meta"]["uuid"]
                client.post(f"/sessions/{uuid}", json=ACCEPT).raise_for_status()
            time.sleep(0.2)
        pids = broker.worker_pids()
        assert len(pids) == 2
        assert broker.process is not None
        broker.process.send_signal(signal.SIGTERM)
        assert broker.process.wait(timeout=60) == 0
    finally:
        broker.kill()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its supervisor"
    now = utcnow()
    left = [lease for lease in _column(database, SessionRow.lease_until) if lease and lease > now]
    assert not left, f"leases still held after a clean stop: {left}"
    log = broker.log_path.read_text()
    assert log.count("Application shutdown complete") == 2


def test_a_killed_supervisor_takes_its_workers_with_it(tmp_path: Path) -> None:
    broker = BrokerProcess({**BASE_CONFIG}, tmp_path, workers=2)
    broker.start()
    try:
        deadline = time.monotonic() + 60
        while len(pids := broker.worker_pids()) < 2:
            assert time.monotonic() < deadline, broker.log_tail()
            time.sleep(0.1)
        broker.kill()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, f"workers {pids} outlived a SIGKILLed supervisor"
            time.sleep(0.05)
        broker.start()  # the port is free again at once
    finally:
        broker.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_several_workers_refuse_what_they_cannot_share(tmp_path: Path) -> None:
    config = {**BASE_CONFIG, "database": "sqlite:///:memory:"}
    broker = BrokerProcess(config, tmp_path, workers=2)
    broker.spawn()
    assert broker.process is not None
    assert broker.process.wait(timeout=60) != 0
    log = broker.log_path.read_text()
    assert "refusing 2 workers" in log and "in-memory SQLite" in log, log
    unknown = BrokerConfig.model_validate({**BASE_CONFIG, "platforms": [{"type": "elsewhere"}]})
    assert problems(unknown, 1) == []
    (why,) = problems(unknown, 2)
    assert why.startswith("platforms: 'elsewhere' is not known to be safe with several replicas")


def test_workers_must_be_a_positive_number(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("name: x\nquota: {cores: 1, memory: 1}\nplatforms: [{type: local}]\n")
    command = [sys.executable, "-m", "execbroker.cli", "serve", "-c", str(config), "--workers", "0"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--workers" in done.stderr, done.stderr


def test_a_workers_connections_do_not_wait_for_delayed_acks() -> None:
    """A worker's own listening socket gets what uvicorn's would: TCP_NODELAY on every
    connection (else each response waits ~40 ms for the client's delayed ACK)."""

    async def nodelay() -> int:
        found: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                found.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        sock = listen("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname())
            try:
                return await asyncio.wait_for(found, 10)
            finally:
                writer.close()

    assert asyncio.run(nodelay()) != 0
