"""The SQLite writer lock that orders the writers of every process on one database file (a
broker's workers): a write waits for another process's, and past the busy timeout fails as
SQLite's own lock does, never waiting for ever."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from execbroker.store.engine import Database
from execbroker.store.tables import BrokerLock


def _held_elsewhere(path: Path) -> int:
    """The file lock taken on an open file description of its own (as another process's)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_write_waits_for_another_writer_then_fails_past_the_timeout(tmp_path: Path) -> None:
    database = Database.open(f"sqlite:///{tmp_path / 'broker.db'}?timeout=0.5")
    try:
        fd = _held_elsewhere(tmp_path / "broker.db-writer")
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"), database.write() as db:
            db.scalar(select(BrokerLock.version))
        waited = time.monotonic() - started
        assert 0.5 <= waited < 5, waited
        os.close(fd)  # the other writer is done (or died): the next write goes through
        with database.booking() as db:
            assert db.info["lock_version"] == 0
    finally:
        database.close()


def test_an_in_memory_database_needs_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    database = Database.open("sqlite:///:memory:")
    try:
        with database.write() as db:
            db.scalar(select(BrokerLock.version))
    finally:
        database.close()
    assert list(tmp_path.iterdir()) == []  # (no ":memory:-writer" file)
