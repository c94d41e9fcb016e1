"""Two broker replicas on one PostgreSQL database: every session is started exactly once,
none is lost or stuck, a replica killed mid-run has its sessions finished by the other,
and the quota holds across replicas under concurrent accepts."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import httpx
import pytest
from isodate import parse_duration

from execbroker.timeutil import parse_interval
from tests.brokers import BrokerProcess, batch_request
from tests.reliability.support import (
    ACCEPT,
    alice,
    all_sessions,
    counting_script,
    offer_and_accept,
    replicas,
    report,
    wait_until_settled,
)

pytestmark = pytest.mark.postgres

ROOMY = {"cores": 64, "memory": 64, "storage": 20, "max_sessions": 64, "max_duration": "PT1H"}
# A lease long enough that a replica slowed down by this shared machine keeps its sessions.
MONITOR = {"interval": "PT0.05S", "lease": "PT3S"}


async def _accept_through_both(brokers: list[BrokerProcess], count: int, script: str) -> list[str]:
    """``count`` sessions at once, each asked of one replica and accepted through the other
    for half of them; a replica that has died is replaced by the last one, which lives."""
    clients = [alice(broker.url) for broker in brokers]
    gate = asyncio.Semaphore(8)

    async def one(n: int) -> str | None:
        async with gate:
            pair = (clients[n % 2], clients[(n + n // 2) % 2])
            for ask, answer in (pair, (clients[-1], clients[-1])):
                with contextlib.suppress(httpx.TransportError):
                    return await offer_and_accept(ask, answer, script, duration="PT5M")
            return None

    try:
        found = await asyncio.gather(*(one(n) for n in range(count)))
        return [uuid for uuid in found if uuid is not None]
    finally:
        for client in clients:
            await client.aclose()


def test_two_replicas_start_each_session_exactly_once(tmp_path: Path, postgres_url: str) -> None:
    with replicas(tmp_path, 2, database=postgres_url, quota=ROOMY, monitor=MONITOR) as brokers:
        uuids = asyncio.run(_accept_through_both(brokers, 60, counting_script()))
        sessions = wait_until_settled(brokers[0].url, timeout=150)
    assert set(uuids) <= set(sessions)
    found = report(sessions, tmp_path / "state", [b.log_path for b in brokers])
    assert found == {"twice": [], "lost": [], "unrun": []}
    assert sum(sessions[u]["phase"] == "COMPLETED" for u in uuids) == 60


async def _started_one(broker: BrokerProcess, timeout: float = 90) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while " started on " not in broker.log_path.read_text(errors="replace"):
        assert loop.time() < deadline, f"{broker.name} started no session in {timeout:g}s"
        await asyncio.sleep(0.05)


def test_a_replica_killed_mid_run_has_its_sessions_finished_by_the_other(
    tmp_path: Path, postgres_url: str
) -> None:
    with replicas(tmp_path, 2, database=postgres_url, quota=ROOMY, monitor=MONITOR) as brokers:
        doomed, survivor = brokers

        async def run() -> list[str]:
            # Sessions arrive through both while the first replica dies among them.
            accepting = asyncio.create_task(
                _accept_through_both(brokers, 40, counting_script("sleep 2"))
            )
            # Killed once it is running sessions of its own (a loaded machine may take a while
            # to get there), at a random moment among them.
            await _started_one(doomed)
            await asyncio.sleep(random.uniform(0.0, 1.0))
            doomed.kill()
            return await accepting

        uuids = asyncio.run(run())
        sessions = wait_until_settled(survivor.url, timeout=150)
    assert len(uuids) == 40
    found = report(sessions, tmp_path / "state", [b.log_path for b in brokers])
    assert found == {"twice": [], "lost": [], "unrun": []}
    assert all(sessions[uuid]["phase"] == "COMPLETED" for uuid in uuids)
    log = survivor.log_path.read_text()
    assert "taking over sessions" in log, "the survivor never took a session over"


QUOTA = {"cores": 4, "memory": 8, "storage": 10, "max_sessions": 3, "max_duration": "PT1H"}


def _peak(sessions: list[dict]) -> tuple[int, ...]:
    """Most cores, memory and sessions booked at any one instant."""
    spans = []
    for s in sessions:
        begin = parse_interval(s["schedule"]["available"]["start"])[0]
        end = begin + parse_duration(s["schedule"]["available"]["duration"])
        spans.append((begin, end, s["compute"]["cores"]["min"], s["compute"]["memory"]["min"]))
    peak: tuple[int, ...] = (0, 0, 0)
    for t in sorted({span[0] for span in spans}):
        now = [span for span in spans if span[0] <= t < span[1]]
        total = (sum(s[2] for s in now), sum(s[3] for s in now), len(now))
        peak = tuple(max(a, b) for a, b in zip(peak, total, strict=True))
    return peak


# The booking lock (SELECT ... FOR UPDATE of one row) already held across replicas before
# leases: this guards it, it is not a bug found.
def test_quota_holds_across_replicas_under_concurrent_accepts(
    tmp_path: Path, postgres_url: str
) -> None:
    # Nothing starts (a long interval): only the bookings are under test.
    monitor = {"interval": "PT60S"}
    with replicas(tmp_path, 2, database=postgres_url, quota=QUOTA, monitor=monitor) as brokers:

        async def race() -> list[int]:
            clients = [alice(broker.url) for broker in brokers]
            rng = random.Random(11)
            try:
                asked = await asyncio.gather(
                    *(
                        clients[n % 2].post(
                            "/requests", json=_request(rng.choice([1, 2]), rng.choice([1, 4]))
                        )
                        for n in range(30)
                    )
                )
                offers = [o["meta"]["uuid"] for a in asked for o in a.json()["offers"]]
                # every offer accepted through both replicas at the same moment
                answers = await asyncio.gather(
                    *(c.post(f"/sessions/{u}", json=ACCEPT) for u in offers for c in clients)
                )
                return [a.status_code for a in answers]
            finally:
                for client in clients:
                    await client.aclose()

        statuses = asyncio.run(race())
        sessions = all_sessions(brokers[0].url)
    assert set(statuses) <= {200, 409}, statuses
    booked = [s for s in sessions.values() if s["phase"] == "ACCEPTED"]
    assert len(booked) == statuses.count(200) >= 1
    cores, memory, count = _peak(booked)
    assert cores <= QUOTA["cores"] and memory <= QUOTA["memory"] and count <= QUOTA["max_sessions"]


def _request(cores: int, memory: int) -> dict:
    return batch_request("true", cores=(1, cores), memory=(1, memory), duration="PT10M")
