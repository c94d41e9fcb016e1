"""Leases are timed by the database's clock, not a replica's: a replica whose clock runs ten
minutes ahead never takes over a session whose holder is alive (it would start it a second
time), and one whose clock runs behind takes over a released session at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI

from execbroker.api.app import create_app
from execbroker.config import BrokerConfig
from execbroker.launcher import LOCAL_CONFIG
from execbroker.monitor import Monitor
from execbroker.store import queries
from execbroker.store.tables import SessionRow
from tests.rows import offer_set_rows

SKEW = timedelta(minutes=10)  # far longer than the lease


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'broker.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def replicas(database_url: str) -> Iterator[list[FastAPI]]:
    """Two replicas (apps whose monitors are driven by hand) on one database."""
    config = BrokerConfig.model_validate(
        {**LOCAL_CONFIG, "database": database_url, "monitor": {"interval": "PT1S", "lease": "PT5S"}}
    )
    apps = [create_app(config, run_monitor=False) for _ in range(2)]
    try:
        yield apps
    finally:
        for app in apps:
            app.state.service.database.close()


def _monitor(app: FastAPI, skew: timedelta = timedelta(0)) -> Monitor:
    app.state.service.clock = lambda: datetime.now(UTC) + skew
    return app.state.monitor


def _running_session(app: FastAPI) -> str:
    offerset, (session,) = offer_set_rows(datetime.now(UTC), 1)
    session.phase = "RUNNING"
    database = app.state.service.database
    with database.booking(bump=True) as db:
        queries.add_offerset(db, offerset, [session])
    return session.uuid


def _holder(app: FastAPI, uuid: str) -> str | None:
    with app.state.service.database.read() as db:
        return db.get(SessionRow, uuid).claimed_by


def test_a_replica_whose_clock_runs_ahead_leaves_a_live_holder_alone(
    replicas: list[FastAPI],
) -> None:
    holder, ahead = _monitor(replicas[0]), _monitor(replicas[1], SKEW)
    uuid = _running_session(replicas[0])
    holder._survey()  # nobody held it: the first replica takes it
    assert _holder(replicas[0], uuid) == holder.replica
    ahead._survey()
    assert _holder(replicas[0], uuid) == holder.replica
    holder._survey()  # renewed, and still its own
    assert _holder(replicas[0], uuid) == holder.replica


def test_a_replica_whose_clock_runs_behind_takes_a_released_session_at_once(
    replicas: list[FastAPI],
) -> None:
    holder, behind = _monitor(replicas[0]), _monitor(replicas[1], -SKEW)
    uuid = _running_session(replicas[0])
    holder._survey()
    behind._survey()  # the lease holds: not taken
    assert _holder(replicas[0], uuid) == holder.replica
    holder._release()  # a clean shutdown ends its leases now
    behind._survey()
    assert _holder(replicas[0], uuid) == behind.replica
