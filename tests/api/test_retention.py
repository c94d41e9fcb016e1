"""With a short retention, what a steady load leaves behind is purged: the database's rows and
the state directory stay bounded, and a purged session is simply not found any more."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.brokers import accept, batch_request, running_broker, update, wait_for_phase

RETENTION = {"offers": "PT1S", "sessions": "PT1S"}
QUOTA = {"cores": 4, "memory": 8, "max_sessions": 8, "max_duration": "PT1H"}


def _rows(state: Path) -> tuple[int, int]:
    with sqlite3.connect(state / "broker.db") as db:
        sessions = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
        offersets = db.execute("SELECT count(*) FROM offersets").fetchone()[0]
    return offersets, sessions


def _entries(state: Path) -> int:
    """Work directories and local run records left in the state directory."""
    return sum(len(list((state / name).glob("*"))) for name in ("sessions", "local"))


def _round(client) -> str:
    """Ten offer sets rejected (and left to expire) and one short task run to the end."""
    for _ in range(10):
        answer = client.post("/requests", json=batch_request("true", duration="PT5M")).json()
        assert answer["result"] == "YES", answer
        assert update(client, answer["offers"][0]["meta"]["uuid"], "REJECTED").status_code == 200
    answer = client.post("/requests", json=batch_request("echo hi > out.txt")).json()
    task = answer["offers"][0]["meta"]["uuid"]
    assert accept(client, task).status_code == 200
    wait_for_phase(client, task, {"COMPLETED"}, timeout=60)
    return task


def _wait_until_empty(state: Path, timeout: float = 90) -> tuple[tuple[int, int], int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows, entries = _rows(state), _entries(state)
        if rows == (0, 0) and entries == 0:
            return rows, entries
        time.sleep(0.5)
    return _rows(state), _entries(state)


def test_a_steady_load_leaves_the_database_and_state_bounded(tmp_path: Path) -> None:
    with (
        running_broker(tmp_path, quota=QUOTA, offers={"ttl": "PT2S"}, retention=RETENTION) as b,
        b.client() as client,
    ):
        state = tmp_path / "state"
        peaks = []
        for _ in range(3):
            task = _round(client)
            assert (state / "sessions" / task / "out.txt").exists()
            peaks.append(_rows(state))
            # each round's leftovers go once the retention (and the purge's margin) has passed
            assert _wait_until_empty(state) == ((0, 0), 0)
        assert client.get(f"/sessions/{task}").status_code == 404
        # what a round leaves before the purge does not grow from round to round
        assert max(sessions for _, sessions in peaks) <= 25, peaks


def test_without_retention_nothing_is_purged(tmp_path: Path) -> None:
    keep = {"offers": None, "sessions": None}
    with (
        running_broker(tmp_path, quota=QUOTA, offers={"ttl": "PT1S"}, retention=keep) as b,
        b.client() as client,
    ):
        state = tmp_path / "state"
        task = _round(client)
        time.sleep(7)  # past the purge's minimum age
        offersets, sessions = _rows(state)
        assert offersets == 11 and sessions >= 11
        assert client.get(f"/sessions/{task}").status_code == 200
        assert (state / "sessions" / task / "out.txt").exists()
