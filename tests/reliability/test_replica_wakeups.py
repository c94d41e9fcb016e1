"""An accept wakes only its own replica's monitor, and that wake-up starts only the sessions
accepted there; a replica's pass starts those and any other that was due at its pass before.
With several workers on one port the sessions are then started where they were accepted, as
the kernel spread the accepts, instead of each replica racing every other for every session
due; one whose replica died after the accept still starts, a pass later."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from execbroker.monitor import Monitor
from tests.rows import claimant, stored_sessions

TASK = {"executable": {"kind": "batch-script", "script": "true"}}


async def _woken(monitor: Monitor, uuid: str) -> None:
    """``monitor``'s replica accepted ``uuid`` just now: the wake-up's tick, and its steps."""
    monitor.wake(uuid)
    await monitor.tick(full=False)
    await monitor.settle()


async def _pass(monitor: Monitor) -> None:
    await monitor.tick(full=True)
    await monitor.settle()


def test_a_wake_up_starts_the_sessions_accepted_here_and_a_pass_any_due(
    replicas: list[FastAPI],
) -> None:
    first, second = (app.state.monitor for app in replicas)
    database = replicas[0].state.service.database
    # both due now: one accepted through each replica (the second's wake-up still to come)
    here, there = stored_sessions(database, "WAITING", 2, **TASK)
    asyncio.run(_woken(first, here))
    assert claimant(database, here) == first.replica
    assert claimant(database, there) is None, "a wake-up started another replica's session"
    asyncio.run(_woken(second, there))
    assert claimant(database, there) == second.replica
    # one whose replica never woke (it died after the commit), or is slow: a pass of another
    # leaves it that once (its own replica may yet start it), and starts it at the next
    (orphan,) = stored_sessions(database, "WAITING", 1, **TASK)
    asyncio.run(_pass(first))
    assert claimant(database, orphan) is None, "another replica's pass raced its own"
    asyncio.run(_pass(first))
    assert claimant(database, orphan) == first.replica


def test_a_session_accepted_here_is_started_by_the_first_pass_once_due(
    replicas: list[FastAPI],
) -> None:
    """One accepted here to start after the next pass (no wake-up for it) waits no second
    pass: it is this replica's own."""
    first = replicas[0].state.monitor
    database = replicas[0].state.service.database
    (later,) = stored_sessions(database, "WAITING", 1, **TASK)
    first.wake(later, datetime.now(UTC) + timedelta(seconds=10 * first.interval))
    asyncio.run(_pass(first))
    assert claimant(database, later) == first.replica
