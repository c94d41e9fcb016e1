"""Engines and the booking transaction, for SQLite (the default) and PostgreSQL."""

from __future__ import annotations

import fcntl
import os
import select as selectors
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from execbroker.store.tables import BrokerLock

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_BUSY_TIMEOUT = 60.0  # seconds (SQLite)
_MIGRATION_LOCK = 0x65786563  # any constant: the advisory lock every migrating replica takes
# PostgreSQL: a pooled connection idle longer than this is pinged before use (see _checked).
PING_IDLE = 1.0  # seconds
# PostgreSQL: a booking transaction's BEGIN, sent with its lock of the broker's row in one
# round trip (a simple query: no parameters). "read" reads the version; "bump" counts this
# transaction at once, for one that will book (and answers the version before it).
_LOCKING_BEGIN = {
    "read": "BEGIN; SELECT version FROM broker_lock WHERE id = 1 FOR UPDATE",
    "bump": "BEGIN; UPDATE broker_lock SET version = version + 1 WHERE id = 1"
    " RETURNING version - 1",
}


def _busy_timeout(url: URL) -> float:
    """SQLite: ``?timeout=SECONDS`` in the URL, how long a write waits for another
    connection's lock before it fails with "database is locked" (then answered 503)."""
    return float(url.query.get("timeout", DEFAULT_BUSY_TIMEOUT))


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and immediate write locks."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return _postgres_engine(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    timeout = _busy_timeout(parsed)
    if not timeout > 0:
        raise ValueError(f"database: timeout={timeout!r} must be a number of seconds above 0")
    connect = {"check_same_thread": False, "timeout": timeout}
    engine = create_engine(url, connect_args=connect)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _enter_wal(cursor, timeout)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={round(timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A booking transaction takes SQLite's write lock at BEGIN, so two of them can
        # never read the same free capacity: SQLite's form of SELECT ... FOR UPDATE.
        immediate = connection.get_execution_options().get("booking", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _enter_wal(cursor: sqlite3.Cursor, timeout: float) -> None:
    """Put the file in WAL mode (a no-op once it is), retried for up to ``timeout`` seconds.

    On a new file another process may be creating the schema: the switch reads the file and
    then wants its exclusive lock, and SQLite fails that at once rather than wait (waiting,
    holding a read lock, could deadlock), so the busy timeout never applies. A retry starts
    over without the read lock, and finds the file in WAL mode once the other has done.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _postgres_engine(url: str) -> Engine:
    """PostgreSQL: transactions begun by SQLAlchemy (a booking's with its lock, in one round
    trip), and pooled connections checked without a round trip while in steady use."""
    parsed = make_url(url)
    # A lock held elsewhere (a stuck replica, an operator's transaction) fails the waiting
    # statement after this long, answered 503, as SQLite's busy timeout does: a booking
    # never waits forever. The URL's own ?options=-c lock_timeout=... wins.
    lock_timeout = f"-c lock_timeout={round(DEFAULT_BUSY_TIMEOUT * 1000)}"
    connect = {} if "options" in parsed.query else {"options": lock_timeout}
    # LIFO: the connection used last is used next, so those in steady use stay under
    # PING_IDLE and the others idle (and are pinged) rather than all being used in turn.
    engine = create_engine(
        url, pool_size=10, max_overflow=20, pool_use_lifo=True, connect_args=connect
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # As on SQLite, SQLAlchemy and not the driver begins transactions (see _on_begin).
        dbapi_connection.autocommit = True

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get("alone"):  # the driver's autocommit: each statement commits alone
            return
        lock = options.get("lock")
        version = _begin(connection, _LOCKING_BEGIN[lock] if lock else "BEGIN")
        if lock:
            connection.info["lock_version"] = version or 0

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if not _checked(engine, dbapi_connection, record.info.get("idle_since")):
            raise DisconnectionError("the pooled connection is gone")  # the pool reconnects

    return engine


def _begin(connection: Any, statement: str) -> Any:
    """Run ``statement`` (BEGIN, or BEGIN and a read) through the driver; what it read last.

    Its failure is raised as SQLAlchemy raises any statement's (a lock timeout: an
    OperationalError, answered 503), a lost connection discarded.
    """
    driver = connection.connection.driver_connection
    dialect = connection.dialect
    try:
        cursor = driver.execute(statement)
        if not cursor.nextset():  # past BEGIN's result, to the read's
            return None
        row = cursor.fetchone()
    except dialect.loaded_dbapi.Error as error:
        gone = dialect.is_disconnect(error, driver, None)
        if gone:
            connection.invalidate(error)
        raise DBAPIError.instance(
            statement,
            None,
            error,
            dialect.loaded_dbapi.Error,
            connection_invalidated=gone,
            dialect=dialect,
        ) from error
    return row[0] if row else None


def _checked(engine: Engine, dbapi_connection: Any, idle_since: float | None) -> bool:
    """Whether a pooled PostgreSQL connection is usable, in place of a ping at every checkout.

    An idle connection's socket has nothing to read unless the server ended it (a restart,
    ``pg_terminate_backend``: a FATAL message, or the end of the stream) or sent a message
    unasked; either way it is pinged, as is a connection idle longer than ``PING_IDLE`` (where
    a silent loss, such as a firewall's, would show). One in steady use costs no round trip.
    """
    idle = time.monotonic() - idle_since if idle_since is not None else PING_IDLE
    try:
        readable, _, _ = selectors.select([dbapi_connection.fileno()], [], [], 0)
        if idle < PING_IDLE and not readable:
            return True
        return bool(engine.dialect.do_ping(dbapi_connection))
    except (OSError, engine.dialect.loaded_dbapi.Error):  # closed, or the ping failed
        return False


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creating it on an empty database)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Replicas (or workers) starting at once would each create the tables; one at a time, the
    # later ones find the schema up to date. SQLite: BEGIN IMMEDIATE takes its one writer lock
    # first (a deferred BEGIN would fail at its first write if another migrated meanwhile).
    with engine.execution_options(booking=True).begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class WriterLock:
    """One writer at a time to an SQLite file, across threads and processes: a thread lock for
    this process's threads, then an ``flock`` on a file beside the database for the processes
    sharing it (a broker's workers, replicas on one host).

    SQLite lets one writer in at a time and makes the others poll with growing sleeps (up to
    100 ms each): two processes taking turns would leave the database idle while one sleeps.
    The file lock is polled every millisecond instead, so the next writer gets in at most a
    millisecond after the last one commits. It only orders writers: SQLite's own lock (BEGIN
    IMMEDIATE) still makes them exclusive, against any other writer too. A holder that dies
    releases it (the kernel drops its ``flock``); one waited for longer than ``timeout`` fails
    the write as SQLite's busy timeout does ("database is locked", answered 503).
    """

    POLL = 0.001  # seconds between two tries of a held file lock

    def __init__(self, path: Path, timeout: float) -> None:
        self.timeout = timeout
        self._threads = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            self._lock_file()
        except BaseException:
            self._threads.release()
            raise

    def _lock_file(self) -> None:
        deadline: float | None = None
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = time.monotonic()
            deadline = deadline or now + self.timeout
            if now >= deadline:
                raise OperationalError(
                    "waiting for another process's write",
                    None,
                    sqlite3.OperationalError("database is locked"),
                )
            time.sleep(self.POLL)

    def __exit__(self, *_exc: object) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        os.close(self._fd)


def _writer_lock(engine: Engine) -> AbstractContextManager[object]:
    """How this process's writers queue (see ``WriterLock``): PostgreSQL queues them itself."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    database = engine.url.database
    if not database or database == ":memory:":
        return threading.Lock()  # one process's own database
    return WriterLock(Path(f"{database}-writer"), _busy_timeout(engine.url))


class Database:
    """Sessions over one engine: plain ones for reading, and booking ones that serialise."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = _writer_lock(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._booking = sessionmaker(engine.execution_options(booking=True), expire_on_commit=False)
        self._locking = {
            lock: sessionmaker(
                engine.execution_options(booking=True, lock=lock), expire_on_commit=False
            )
            for lock in _LOCKING_BEGIN
        }
        lock = BrokerLock.__table__
        self._version = select(lock.c.version).where(lock.c.id == 1)  # built once: it costs
        if engine.dialect.name != "sqlite":
            self._version = self._version.with_for_update()
        # PostgreSQL's booking transactions take the lock as they begin (see _on_begin)
        self._locks_at_begin = engine.dialect.name == "postgresql"
        # ... and a transaction that is one statement can be sent as that statement alone
        self.statements_alone = engine.dialect.name == "postgresql"
        self._alone = engine.execution_options(alone=True)

    @classmethod
    def open(cls, url: str) -> Database:
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        # SQLite's write lock at BEGIN too: a transaction that reads first and takes the lock
        # later fails at once ("database is locked", no busy wait) if another wrote meanwhile.
        # Queued on the same lock as bookings: left to SQLite's busy handler, a booking that
        # meets the monitor's write would sleep in steps of up to 100 ms.
        with self._writer, self._booking() as session, session.begin():
            yield session

    @contextmanager
    def alone(self) -> Iterator[Connection]:
        """A connection whose every statement commits on its own, with no BEGIN or COMMIT
        sent (PostgreSQL, ``statements_alone``): a transaction of one statement in one round
        trip. Its statements run in no transaction of this process, under no lock of its."""
        if not self.statements_alone:
            raise NotImplementedError(f"{self.engine.dialect.name}: no statement alone")
        with self._alone.connect() as connection:
            yield connection

    @contextmanager
    def booking(self, *, bump: bool = False) -> Iterator[Session]:
        """A transaction that holds the broker's booking lock until it commits.

        ``session.info["lock_version"]`` is the lock row's version, read under the lock: the
        booking transactions counted so far (see ``execbroker.holdings``). ``bump`` asks for
        this transaction to be counted as it takes the lock (one that will book); whether it
        was is ``session.info["lock_bumped"]`` (on PostgreSQL; SQLite's is counted later).
        """
        makers = self._locking if self._locks_at_begin else None
        maker = makers["bump" if bump else "read"] if makers else self._booking
        with self._writer, maker() as session, session.begin():
            connection = session.connection()  # PostgreSQL: BEGIN with the lock (_on_begin)
            if makers:
                session.info["lock_version"] = connection.info.pop("lock_version")
                session.info["lock_bumped"] = bump
            else:
                # SQLite's BEGIN IMMEDIATE already serialises. (Core, on the session's
                # connection: the ORM's handling of a one-column read cost more than the read)
                session.info["lock_version"] = connection.scalar(self._version) or 0
                session.info["lock_bumped"] = False
            yield session

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._writer, WriterLock):
            self._writer.close()
