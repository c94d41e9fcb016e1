"""Each replica keeps its own index of what is held: it learns at once what another replica
booked (offers and accepts, through the lock row's version) and what the other released, on
PostgreSQL and on one SQLite file (as a broker's workers share it)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.brokers import accept, batch_request, update
from tests.reliability.support import replicas

# One session at a time, and every offer overlaps every other (horizon < duration).
ONE = {
    "cores": 2,
    "memory": 4,
    "storage": 10,
    "max_sessions": 1,
    "max_duration": "PT1H",
    "horizon": "PT10M",
}
MONITOR = {"interval": "PT60S"}  # nothing starts or expires by the monitor: bookings only


def _ask(client: httpx.Client) -> dict:
    request = batch_request("true", cores=(1, 2), memory=(1, 4), duration="PT50M")
    return client.post("/requests", json=request).raise_for_status().json()


def _offers(answer: dict) -> list[str]:
    return [offer["meta"]["uuid"] for offer in answer.get("offers", [])]


def _reject_all(client: httpx.Client, answer: dict) -> None:
    for uuid in _offers(answer):
        assert update(client, uuid, "REJECTED").status_code == 200


def test_bookings_and_releases_cross_replicas(tmp_path: Path, database: str) -> None:
    with (
        replicas(tmp_path, 2, database=database, quota=ONE, monitor=MONITOR) as brokers,
        brokers[0].client() as first,
        brokers[1].client() as second,
    ):
        for _ in range(3):  # each round changes indexes the earlier rounds warmed up
            held = _ask(second)
            assert held["result"] == "YES", held
            assert _ask(first)["result"] == "NO"  # second's offers hold the one session
            _reject_all(second, held)
            booked = _ask(first)
            assert booked["result"] == "YES", booked  # first learned of the rejection
            assert accept(second, _offers(booked)[0]).status_code == 200
            assert _ask(second)["result"] == "NO"
            assert _ask(first)["result"] == "NO"
            cancel = update(first, _offers(booked)[0], "CANCELLED")
            assert cancel.status_code == 200, cancel.text
            again = _ask(second)
            assert again["result"] == "YES", again  # second learned of the cancel
            _reject_all(second, again)
            time.sleep(0.1)
