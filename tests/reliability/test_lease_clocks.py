"""Leases are timed by the database's clock, not a replica's: a replica whose clock runs ten
minutes ahead never takes over a session whose holder is alive (it would start it a second
time), and one whose clock runs behind takes over a released session at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from execbroker.monitor import Monitor
from tests.rows import claimant, stored_sessions

SKEW = timedelta(minutes=10)  # far longer than the lease


def _monitor(app: FastAPI, skew: timedelta = timedelta(0)) -> Monitor:
    app.state.service.clock = lambda: datetime.now(UTC) + skew
    return app.state.monitor


def test_a_replica_whose_clock_runs_ahead_leaves_a_live_holder_alone(
    replicas: list[FastAPI],
) -> None:
    holder, ahead = _monitor(replicas[0]), _monitor(replicas[1], SKEW)
    database = replicas[0].state.service.database
    (uuid,) = stored_sessions(database, "RUNNING")
    holder._survey()  # nobody held it: the first replica takes it
    assert claimant(database, uuid) == holder.replica
    ahead._survey()
    assert claimant(database, uuid) == holder.replica
    holder._survey()  # renewed, and still its own
    assert claimant(database, uuid) == holder.replica


def test_a_replica_whose_clock_runs_behind_takes_a_released_session_at_once(
    replicas: list[FastAPI],
) -> None:
    holder, behind = _monitor(replicas[0]), _monitor(replicas[1], -SKEW)
    database = replicas[0].state.service.database
    (uuid,) = stored_sessions(database, "RUNNING")
    holder._survey()
    behind._survey()  # the lease holds: not taken
    assert claimant(database, uuid) == holder.replica
    holder._release()  # a clean shutdown ends its leases now
    behind._survey()
    assert claimant(database, uuid) == behind.replica
