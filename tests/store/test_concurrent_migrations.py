"""Replicas (or a broker's workers) starting at once on a new SQLite file all migrate it: one
at a time, so each starts and the schema ends at the newest revision. With a deferred BEGIN,
each read the empty schema first, and all but the first then failed at once at their first
write ("database is locked": a transaction that has read cannot wait for the write lock, so
SQLite's busy timeout never came into it)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy.exc import OperationalError

from execbroker.store.engine import MIGRATIONS, Database, make_engine

PROCESSES = 4  # brokers starting at once on each file
ROUNDS = 3  # new files, one after another, each raced for by all of them
WAIT = 60  # seconds: generous, for a loaded machine; a round takes well under one


def _open_each(urls: list[str], start: Barrier, results: Queue) -> None:
    """One broker process's start-ups: released with the others on each new file in turn,
    it opens (migrates) the database and says how that went (``None``: it worked)."""
    for url in urls:
        start.wait(WAIT)
        try:
            Database.open(url).close()
        except Exception as error:  # what a failed start-up would have said: reported, not lost
            results.put(f"{type(error).__name__}: {str(error).splitlines()[0]}")
        else:
            results.put(None)


def _revision(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def test_brokers_starting_at_once_on_a_new_file_all_migrate_it(tmp_path: Path) -> None:
    paths = [tmp_path / f"round-{n}" / "broker.db" for n in range(ROUNDS)]
    urls = [f"sqlite:///{path}" for path in paths]
    # Real processes, as replicas are (threads would share one interpreter). Forked from a
    # server that imported the package once (cheap, and safe whatever threads this process
    # runs); each is ready before the barrier, so the start-ups themselves overlap.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    start = context.Barrier(PROCESSES)
    results: Queue = context.Queue()
    brokers = [
        context.Process(target=_open_each, args=(urls, start, results)) for _ in range(PROCESSES)
    ]
    for broker in brokers:
        broker.start()
    try:
        said = [results.get(timeout=WAIT) for _ in range(PROCESSES * ROUNDS)]
    finally:
        start.abort()  # a process still waiting (one died) is let go, not left behind
        for broker in brokers:
            broker.join(WAIT)
    failed = [message for message in said if message is not None]
    assert not failed, f"{len(failed)} of {len(said)} start-ups failed: {sorted(set(failed))}"
    assert [broker.exitcode for broker in brokers] == [0] * PROCESSES
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert [_revision(path) for path in paths] == [[head]] * ROUNDS


def _held_while_it_connects(tmp_path: Path, url_query: str, hold: float) -> tuple[str, float]:
    """A broker connecting to a new file while another process's connection (here a plain
    sqlite3 one) is creating the schema under its write lock, released after ``hold``
    seconds: what the broker's connection then says of the journal mode (or its error), and
    how long it took."""
    path = tmp_path / "broker.db"
    creator = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    creator.execute("BEGIN IMMEDIATE")
    creator.execute("CREATE TABLE being_made (x)")
    release = threading.Timer(hold, creator.execute, ("COMMIT",))
    release.start()
    began = time.monotonic()
    try:
        with make_engine(f"sqlite:///{path}{url_query}").connect() as connection:
            said = str(connection.exec_driver_sql("PRAGMA journal_mode").scalar())
    except OperationalError as error:
        said = str(error.orig)
    took = time.monotonic() - began
    release.join()
    creator.close()
    return said, took


def test_a_connection_to_a_file_being_created_waits_to_switch_it_to_wal(tmp_path: Path) -> None:
    # SQLite fails the switch to WAL at once, busy timeout or not, while another holds the
    # write lock: the first broker connection on a new file failed its start-up (seen in CI).
    said, took = _held_while_it_connects(tmp_path, "", hold=0.3)
    assert said == "wal"
    assert took >= 0.25


def test_a_connection_waits_to_switch_to_wal_no_longer_than_its_timeout(tmp_path: Path) -> None:
    said, took = _held_while_it_connects(tmp_path, "?timeout=0.2", hold=1.0)
    assert said == "database is locked"
    assert 0.15 <= took < 0.9
