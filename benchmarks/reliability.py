"""Exactly once under crashes and replicas, measured: how many sessions were started twice,
lost (accepted but not COMPLETED) or stuck (still under way at the end).

kills: one broker on ``local`` (SQLite), killed with SIGKILL ``--kills`` times at random
moments while a client keeps offering and accepting short sessions, restarted after each.

replicas: ``--replicas`` brokers (one config, one state directory, one PostgreSQL database,
their own ports) take ``--sessions`` short sessions through all of them at once; the first
replica is killed mid-run, and the others must finish its sessions once its leases lapse.

A task counts its own runs (``echo run >> started.txt`` in its working directory), and the
brokers' logs say how often each was started (``session … started on …``).

    python benchmarks/reliability.py [--kills 100] [--replicas 3] [--sessions 200]
        [--database postgresql+psycopg://…]  (default: a fresh database on
        $EXECBROKER_TEST_POSTGRES_URL's server, dropped afterwards)

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from execbroker.launcher import BrokerProcess, fresh_postgres_database

STARTS = "started.txt"
SCRIPT = f"echo run >> {STARTS}; sleep 0.5"
FINAL = {"REJECTED", "EXPIRED", "COMPLETED", "FAILED", "CANCELLED"}
UNSTARTED = {"OFFERED", "REJECTED", "EXPIRED"}
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
ALICE = {"Authorization": "Bearer bench-alice"}
CONFIG: dict[str, Any] = {
    "name": "reliability",
    "quota": {"cores": 256, "memory": 256, "max_sessions": 256, "max_duration": "PT1H"},
    "platforms": [{"type": "local"}],
    "users": [
        {"name": "alice", "token": "bench-alice"},
        {"name": "admin", "token": "bench-admin", "admin": True},
    ],
}
_STARTED = re.compile(r"session ([0-9a-f-]{36}) started on ")


def _request() -> dict[str, Any]:
    return {
        "executable": {"kind": "batch-script", "script": SCRIPT},
        "compute": {"kind": "simple-compute-resource", "cores": {"min": 1, "max": 1}},
        "schedule": {"requested": {"duration": "PT5M"}},
    }


def _sessions(url: str) -> dict[str, dict[str, Any]]:
    answer = httpx.get(
        f"{url}/sessions", headers={"Authorization": "Bearer bench-admin"}, timeout=30
    )
    return {s["meta"]["uuid"]: s for s in answer.raise_for_status().json()["sessions"]}


def _settle(url: str, timeout: float) -> tuple[dict[str, dict[str, Any]], float]:
    """The sessions once none is under way (or at the timeout), and how long that took."""
    began = time.monotonic()
    sessions: dict[str, dict[str, Any]] = {}
    while time.monotonic() - began < timeout:
        with contextlib.suppress(httpx.HTTPError):
            sessions = _sessions(url)
            if all(s["phase"] in FINAL | UNSTARTED for s in sessions.values()):
                break
        time.sleep(0.5)
    return sessions, time.monotonic() - began


def _count(sessions: dict[str, dict[str, Any]], state: Path, logs: list[Path]) -> dict[str, Any]:
    logged: Counter[str] = Counter()
    for log in logs:
        logged.update(_STARTED.findall(log.read_text(errors="replace")))
    booked = {u: s for u, s in sessions.items() if s["phase"] not in UNSTARTED}
    twice = []
    for uuid in booked:
        runs = sum(
            len(p.read_text().splitlines()) for p in (state / "sessions" / uuid).rglob(STARTS)
        )
        if runs > 1 or logged[uuid] > 1:
            twice.append({"session": uuid, "runs": runs, "starts_logged": logged[uuid]})
    return {
        "sessions_booked": len(booked),
        "completed": sum(s["phase"] == "COMPLETED" for s in booked.values()),
        "started_twice": len(twice),
        "lost": sum(s["phase"] in FINAL - {"COMPLETED"} for s in booked.values()),
        "stuck": sum(s["phase"] not in FINAL for s in booked.values()),
        "twice": twice,
    }


def kills(directory: Path, count: int) -> dict[str, Any]:
    config = {**CONFIG, "monitor": {"interval": "PT0.1S", "lease": "PT1S"}}
    broker = BrokerProcess(config, directory).start()
    stop = threading.Event()

    def keep_accepting() -> None:
        with httpx.Client(base_url=broker.url, headers=ALICE, timeout=10) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError, KeyError, IndexError):
                    offers = client.post("/requests", json=_request()).raise_for_status().json()
                    client.post(f"/sessions/{offers['offers'][0]['meta']['uuid']}", json=ACCEPT)
                time.sleep(0.02)

    driver = threading.Thread(target=keep_accepting, daemon=True)
    driver.start()
    began = time.monotonic()
    try:
        for _ in range(count):
            time.sleep(random.uniform(0.2, 1.5))
            broker.kill()
            broker.start()
        stop.set()
        driver.join(timeout=30)
        sessions, settle_s = _settle(broker.url, 300)
    finally:
        stop.set()
        broker.stop()
    return {
        "kills": count,
        "seconds": round(time.monotonic() - began, 1),
        "settle_seconds": round(settle_s, 1),
        **_count(sessions, directory / "state", [broker.log_path]),
    }


async def _accept_through_all(brokers: list[BrokerProcess], count: int) -> int:
    clients = [httpx.AsyncClient(base_url=b.url, headers=ALICE, timeout=60) for b in brokers]
    gate = asyncio.Semaphore(8)

    async def one(n: int) -> bool:
        async with gate:
            ask, answer = clients[n % len(clients)], clients[(n + 1) % len(clients)]
            for pair in ((ask, answer), (clients[-1], clients[-1])):  # the last one lives
                with contextlib.suppress(httpx.TransportError):
                    offers = (await pair[0].post("/requests", json=_request())).json()
                    uuid = offers["offers"][0]["meta"]["uuid"]
                    (await pair[1].post(f"/sessions/{uuid}", json=ACCEPT)).raise_for_status()
                    return True
            return False

    try:
        return sum(await asyncio.gather(*(one(n) for n in range(count))))
    finally:
        for client in clients:
            await client.aclose()


def replicas(directory: Path, count: int, sessions: int, database: str) -> dict[str, Any]:
    config = {
        **CONFIG,
        "database": database,
        "monitor": {"interval": "PT0.1S", "lease": "PT3S"},
    }
    state = directory / "state"
    brokers = [
        BrokerProcess(config, directory / f"replica-{n}", state_dir=state) for n in range(count)
    ]
    began = time.monotonic()
    try:
        for broker in brokers:
            broker.spawn()

        async def run() -> int:
            await asyncio.gather(*(broker.wait_ready() for broker in brokers))
            accepting = asyncio.create_task(_accept_through_all(brokers, sessions))
            await asyncio.sleep(random.uniform(2.0, 5.0))
            brokers[0].kill()
            return await accepting

        accepted = asyncio.run(run())
        found, settle_s = _settle(brokers[-1].url, 300)
    finally:
        for broker in brokers:
            broker.stop()
    return {
        "replicas": count,
        "killed": 1,
        "accepted": accepted,
        "seconds": round(time.monotonic() - began, 1),
        "settle_seconds": round(settle_s, 1),
        **_count(found, state, [b.log_path for b in brokers]),
    }


@contextlib.contextmanager
def _fresh_database(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    server = os.environ["EXECBROKER_TEST_POSTGRES_URL"]
    with fresh_postgres_database(server, "execbroker_bench") as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--database", default=None)
    parser.add_argument("--only", choices=["kills", "replicas"], default=None)
    options = parser.parse_args()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="eb-reliability-") as scratch:
        if options.only in (None, "replicas"):
            with _fresh_database(options.database) as database:
                result["replicas"] = replicas(
                    Path(scratch) / "replicas", options.replicas, options.sessions, database
                )
        if options.only in (None, "kills"):
            result["kills"] = kills(Path(scratch) / "kills", options.kills)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
