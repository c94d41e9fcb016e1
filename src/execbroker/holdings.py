"""This broker process's index of held capacity, kept exact inside every booking transaction.

Reading every booking and sweeping them for each request costs time linear in the calendar;
the index (``planner.index.HoldIndex``) is kept in memory instead and only brought up to date:

* What adds capacity happens only in booking transactions, which hold the broker's lock and
  bump ``broker_lock.version``, marking the rows they book with it (``sessions.booked``). A
  transaction that reads a version other than the one this index has seen reads the rows booked
  since (another replica's) before it plans, so nothing another replica holds is ever missed.
* Offers stop holding at their expiry, by the index's own clock, as the database's holds do.
* Released capacity (rejected, cancelled, finished) is learned at once for this process's own
  changes, and within ``SWEEP_EVERY`` for others' by a sweep of recently finished rows. Until
  then the index holds more than the database, never less: late, never unsafe. Before a
  refusal (no offer, or an accept that no longer fits) the index sweeps at once and, if that
  finds nothing, is rebuilt from the database (at most every ``REBUILD_AFTER``), so a release
  missed by the sweeps (purged while this replica was idle) does not refuse for long.
* Any failure in a transaction that changed the index drops the index; the next one rebuilds
  it from the database, as does start-up.
* On PostgreSQL an offer set is planned on the index outside any transaction and booked in one
  statement that counts it only if the lock row's version is still the index's (``offer``):
  one the index has not seen makes it book nothing, and the offer is planned again under the
  lock. What the index holds is then exactly what a booking transaction would have read.

Accepts are booked in groups (``together``): one writer thread takes every accept queued
meanwhile into one booking transaction, each checked against the index as the ones before it
left it, then commits them at once. The offers a group is about are read in one locked
statement as it starts, and its decisions written in one just before it commits
(``execbroker.offer_group``). An accept refuses only before it writes (it checks, then
writes), so a refused one leaves nothing to undo and needs no savepoint; a failed commit, a
database error in any accept, or anything an accept raises once it has written, fails the
whole group (and drops the index): every accept of it is answered 503, none booked. The
accepts an event loop waits for are answered with one call into that loop per group.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from execbroker.errors import Unavailable
from execbroker.model.sessions import Phase
from execbroker.offer_group import OfferGroup
from execbroker.planner import Booking, Calendar, Resources
from execbroker.planner.index import Hold, HoldIndex
from execbroker.store import queries
from execbroker.store.engine import Database
from execbroker.store.tables import OfferSetRow, SessionRow

SWEEP_EVERY = timedelta(milliseconds=100)
# How far back each sweep looks again: a release committed up to this long after it was stamped
# (a slow transaction, a replica's clock behind ours) is still seen.
SWEEP_MARGIN = timedelta(seconds=2)
# A refusal made on an index that may miss a release even so (a replica idle while retention
# purged it, a clock far behind) is checked on an index rebuilt, at most this often.
REBUILD_AFTER = timedelta(seconds=10)

# At most this many accepts share one transaction: a long group holds the lock long too.
MAX_GROUP = 32

log = logging.getLogger(__name__)
_HOLDING = {phase.value for phase in queries.HOLDING}
T = TypeVar("T")
# What waits for a job's answer: a thread's future, or an event loop's (and its loop).
Waiter = Future[Any] | tuple[asyncio.Future[Any], asyncio.AbstractEventLoop]
Answer = tuple[Any, BaseException | None]
# A queued job, what waits for its answer, and the session it reads (read with its group's).
Queued = tuple[Callable[["Booker"], Any], Waiter, str | None]


def _live(phase: str, hold: Hold, now: datetime) -> Hold | None:
    """``hold`` if it holds at ``now`` (a holding phase, not an expired offer), else None."""
    return hold if phase in _HOLDING and (hold.expires is None or hold.expires > now) else None


def _hold(row: queries.HoldRow | SessionRow) -> Hold:
    if isinstance(row, SessionRow):
        uuid, start, end = row.uuid, row.start, row.end
        cores, memory, storage = row.cores, row.memory_gib, row.storage_gib
        phase, offerset, expires = row.phase, row.offerset_uuid, row.expires
    else:
        uuid, start, end, cores, memory, storage, phase, offerset, expires = row
    del uuid
    offered = phase == Phase.OFFERED
    booking = Booking(
        start, end, Resources(cores, memory, storage), group=offerset if offered else None
    )
    return Hold(booking, expires if offered else None)


def _settle(
    done: Future[Any] | asyncio.Future[Any], answer: Any, error: BaseException | None
) -> None:
    if done.done():  # an event loop's waiter gone (its client went away): booked anyway
        return
    if error is None:
        done.set_result(answer)
    else:
        done.set_exception(error)


def _settle_all(answered: list[tuple[asyncio.Future[Any], Answer]]) -> None:
    for done, (answer, error) in answered:
        _settle(done, answer, error)


def _answer(waiters: list[Waiter], answers: list[Answer]) -> None:
    """Each waiter its answer; an event loop's with one call into that loop for all of them
    (a call per accept would wake the loop, and take the GIL from this thread, as often)."""
    loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Answer]]] = {}
    for waiter, answer in zip(waiters, answers, strict=True):
        if isinstance(waiter, tuple):
            done, loop = waiter
            loops.setdefault(loop, []).append((done, answer))
        else:
            _settle(waiter, *answer)
    for loop, answered in loops.items():
        try:
            loop.call_soon_threadsafe(_settle_all, answered)
        except RuntimeError:  # that loop closed meanwhile: nobody waits any more
            log.warning("%d booked answers found their event loop closed", len(answered))


def _failure(error: BaseException) -> BaseException:
    """What every job of a failed group is answered: 503 for what failed the transaction."""
    if isinstance(error, DBAPIError):
        return _unavailable(error)
    if not isinstance(error, Exception):  # an interrupt, an exit: passed on
        return error
    log.error("a booking transaction failed; none of its accepts was booked", exc_info=error)
    return Unavailable(f"the booking failed ({error}); this accept was not booked: retry later")


def _unavailable(error: DBAPIError) -> Unavailable:
    """What every accept of a group the database failed is answered (503), naming the first
    failure of the chain: a savepoint's failed rollback hides what ended the transaction."""
    first: BaseException = error
    while isinstance(first.__context__, DBAPIError):
        first = first.__context__
    log.warning("a booking transaction failed; none of its accepts was booked", exc_info=error)
    cause = getattr(first, "orig", None) or first
    return Unavailable(
        f"the database could not answer now ({cause}); this accept was not booked: retry later"
    )


@dataclass
class Booker:
    """What a booking transaction sees and changes: the calendar, and the holds it books."""

    db: Session
    connection: Connection  # the session's, for Core statements (fetched once: it costs)
    now: datetime
    _holdings: Holdings
    _offers: OfferGroup | None = None  # one for all the jobs of a group
    _booked: list[SessionRow] = field(default_factory=list)
    _released: set[str] = field(default_factory=set)
    wrote: bool = False  # set by a job of a group once it has changed the database

    @property
    def offers(self) -> OfferGroup:
        """The offers this transaction reads and decides (written as it commits)."""
        if self._offers is None:
            self._offers = OfferGroup(self.connection)
        return self._offers

    @property
    def version(self) -> int:
        """The booking version this transaction writes (``sessions.booked`` of its rows)."""
        return int(self.db.info["lock_version"]) + 1

    def calendar(self) -> Calendar:
        return self._holdings.index.calendar()

    def without(self, offerset: str, start: datetime, end: datetime) -> Calendar:
        """The load over [start, end) less one offer set's (the alternatives being accepted)."""
        index = self._holdings.index
        return index.calendar().window(start, end, index.group_pieces(offerset))

    def refresh(self) -> bool:
        """Before a refusal: learn every release up to now, or failing any, rebuild the index
        from the database (if not done lately); whether the index changed."""
        if self._holdings.sweep(self.db, self.now):
            return True
        return self._holdings.rebuild_if_due(self.db, self.now)

    def book(self, rows: Iterable[SessionRow]) -> None:
        """Count these rows' holds (new offers, an accepted session) from this transaction."""
        self._booked.extend(rows)

    def add_offerset(self, offerset: OfferSetRow, sessions: list[SessionRow]) -> None:
        """Insert an offer set and its offers (stamped with ``version``), which then hold."""
        queries.add_offerset(self.db, offerset, sessions)
        self.book(sessions)

    def release(self, uuids: Iterable[str]) -> None:
        self._released.update(uuids)


class Offering(Protocol):
    """What planning an offer set sees, in a booking transaction or tentatively (``offer``)."""

    now: datetime

    @property
    def version(self) -> int: ...

    def calendar(self) -> Calendar: ...

    def refresh(self) -> bool: ...

    def add_offerset(self, offerset: OfferSetRow, sessions: list[SessionRow]) -> None: ...


class _UnderTheLock(Exception):
    """A tentative offer needs what only a booking transaction has (a refusal's refresh)."""


@dataclass
class _Tentative:
    """An offer set planned on the index as it is, outside any transaction, kept to be
    booked in one statement if no booking was counted since the index's version."""

    now: datetime
    version: int
    _holdings: Holdings
    made: tuple[OfferSetRow, list[SessionRow]] | None = None

    def calendar(self) -> Calendar:
        return self._holdings.index.calendar()

    def refresh(self) -> bool:
        raise _UnderTheLock  # a refusal is decided in a booking transaction, after a sweep

    def add_offerset(self, offerset: OfferSetRow, sessions: list[SessionRow]) -> None:
        self.made = (offerset, sessions)


class Holdings:
    """The index and the version of the booking transactions it has seen, behind one lock."""

    def __init__(self, database: Database, clock: Callable[[], datetime]) -> None:
        self.database = database
        self.clock = clock
        self.index = HoldIndex()
        self._version: int | None = None  # None: rebuild before use
        self._lock = threading.Lock()
        self._swept: datetime | None = None
        self._rebuilt: datetime | None = None
        self._queue: queue.SimpleQueue[Queued] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    def together(self, job: Callable[[Booker], T], *, reads: str | None = None) -> T:
        """``job(booker)``'s answer, run in a booking transaction shared with the jobs queued
        meanwhile, once committed. The job may refuse (raise) only before it writes; once it
        has, it sets ``booker.wrote``, and what it raises then fails the whole group.
        ``reads``: the offer the job will ask ``booker.offers`` for, read with the group's.

        Raises what the job raised, or what failed the group.
        """
        done: Future[T] = Future()
        self._put(job, done, reads)
        return done.result()

    async def booked(self, job: Callable[[Booker], T], *, reads: str | None = None) -> T:
        """``together`` for an event loop: awaited without a thread of its own meanwhile."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._put(job, (done, loop), reads)
        return await done

    def _put(self, job: Callable[[Booker], Any], waiter: Waiter, reads: str | None) -> None:
        self._queue.put((job, waiter, reads))
        writer = self._writer
        if writer is not None and writer.is_alive():
            return
        with self._writer_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_groups, name="booking-writer", daemon=True
                )
                self._writer.start()

    def _write_groups(self) -> None:
        while True:
            group = [self._queue.get()]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._book_group(group)

    def _book_group(self, group: list[Queued]) -> None:
        answers: list[Answer] = []
        try:
            with self.booking(bump=True) as booker:  # most groups book: counted at the lock
                booker.offers.read(reads for _, _, reads in group if reads is not None)
                for job, _, _ in group:
                    own = Booker(booker.db, booker.connection, self.clock(), self, booker.offers)
                    try:
                        answer = job(own)
                    except DBAPIError:
                        # The database's failure, not the job's refusal: it may have ended the
                        # whole transaction (SQLite rolls back by itself on a full disk or an
                        # I/O error), and the jobs after it would then run, and commit, each
                        # on its own outside the lock. The whole group fails instead.
                        raise
                    except Exception as error:
                        if own.wrote:  # its writes cannot be undone alone: none is kept
                            raise
                        answers.append((None, error))  # a refusal: it changed nothing
                        continue
                    # learned at once, so the next job of the group is checked against it;
                    # a failed commit drops the whole index (see ``booking``)
                    self._apply(own)
                    booker.book(own._booked)
                    booker.release(own._released)
                    answers.append((answer, None))
        except BaseException as error:
            answers = [(None, _failure(error))] * len(group)
        _answer([waiter for _, waiter, _ in group], answers)

    def offer(self, job: Callable[[Offering], T]) -> T:
        """``job``'s answer, which plans an offer set and adds it (``add_offerset``).

        Where the database can (PostgreSQL), the offer set is planned first on the index as
        this process has it, outside any transaction, and booked in one statement that commits
        on its own and books only if no booking transaction was counted since the index's
        version: nothing the index has not seen holds anything, so the plan is as safe as one
        made under the lock, and the lock is held for that one statement, not for the plan
        and three round trips. Otherwise (a booking counted meanwhile, the index stale or due
        a sweep, a refusal, which is decided after a sweep) the job runs again in a booking
        transaction, as it always does on SQLite.
        """
        if self.database.statements_alone:
            with self._lock:
                tentative = self._tentative()
                if tentative is not None:
                    try:
                        answer = job(tentative)
                    except _UnderTheLock:
                        pass
                    else:
                        if tentative.made is not None and self._book_alone(tentative):
                            return answer
        with self.booking(bump=True) as booker:
            return job(booker)

    def _tentative(self) -> _Tentative | None:
        """A tentative offering on the index as it is, unless it must be brought up to date
        in a transaction first (not built yet, or due a sweep)."""
        now = self.clock()
        if self._version is None or self._swept is None or now - self._swept >= SWEEP_EVERY:
            return None
        self.index.expire(now)
        return _Tentative(now, self._version + 1, self)

    def _book_alone(self, tentative: _Tentative) -> bool:
        """Book a tentative offer set if the index is still current; whether it was."""
        assert tentative.made is not None
        offerset, sessions = tentative.made
        try:
            with self.database.alone() as connection:
                booked = queries.add_offerset_if_current(
                    connection, tentative.version - 1, offerset, sessions
                )
        except BaseException:
            self._version = None  # it may have committed unseen: rebuilt before the next
            raise
        if booked:
            self._learn(tentative.now, (), sessions)
            self._version = tentative.version
        return booked

    @contextmanager
    def booking(self, *, bump: bool = False) -> Iterator[Booker]:
        """A booking transaction (see ``Database.booking``) with the index brought up to date.

        ``bump``: this transaction will book, so it is counted as it takes the lock (one round
        trip fewer on PostgreSQL); if it books nothing after all, the count it moved on costs
        the next transaction one read of the rows booked since (none).
        """
        with self._lock:
            booker: Booker | None = None
            try:
                with self.database.booking(bump=bump) as db:
                    now = self.clock()
                    self._catch_up(db, now)
                    booker = Booker(db, db.connection(), now, self)
                    yield booker
                    self._record(booker)
            except BaseException:
                # a refusal before any change leaves the index right; anything else (a
                # failed commit above all) may not have: the next transaction rebuilds it
                if booker is None or booker._booked or booker._released:
                    self._version = None
                raise

    def released(self, uuids: Iterable[str]) -> None:
        """Sessions this process moved to a final phase (after that transaction committed)."""
        with self._lock:
            self.index.update((uuid, None) for uuid in uuids)

    def forget(self) -> None:
        with self._lock:
            self._version = None

    # -- inside the booking transaction ------------------------------------------------------

    def _catch_up(self, db: Session, now: datetime) -> None:
        version = db.info["lock_version"]
        if self._version is None:
            self.rebuild(db, now)
            return
        if version != self._version:
            rows = queries.hold_rows(db, now, booked_after=self._version)
            self.index.update((row[0], _live(row[6], _hold(row), now)) for row in rows)
            self._version = version
        if self._swept is None or now - self._swept >= SWEEP_EVERY:
            self.sweep(db, now)
        self.index.expire(now)

    def sweep(self, db: Session, now: datetime) -> bool:
        """Forget the sessions that reached a final phase since the last sweep (and a margin)."""
        since = (self._swept or now) - SWEEP_MARGIN
        known = [uuid for uuid in queries.released_since(db, since) if uuid in self.index]
        self.index.update((uuid, None) for uuid in known)  # (an offer set's regrouped once)
        self._swept = now
        return bool(known)

    def rebuild_if_due(self, db: Session, now: datetime) -> bool:
        if self._rebuilt is not None and now - self._rebuilt < REBUILD_AFTER:
            return False
        before = self.index.holds()
        self.rebuild(db, now)
        return self.index.holds() != before

    def rebuild(self, db: Session, now: datetime) -> None:
        self.index = HoldIndex(
            {row[0]: _hold(row) for row in queries.hold_rows(db, now)}  # type: ignore[misc]
        )
        self.index.expire(now)
        self._version = db.info["lock_version"]
        self._swept = self._rebuilt = now

    def _apply(self, booker: Booker) -> None:
        self._learn(booker.now, booker._released, booker._booked)

    def _learn(self, now: datetime, released: Iterable[str], booked: Iterable[SessionRow]) -> None:
        # one update for all, releases first: an offer set's alternatives are collapsed once
        # (an accept's siblings leaving it, the accepted offer too), not once per offer
        gone: Iterable[tuple[str, Hold | None]] = ((uuid, None) for uuid in released)
        held = ((row.uuid, _live(row.phase, _hold(row), now)) for row in booked)
        self.index.update(itertools.chain(gone, held))

    def _record(self, booker: Booker) -> None:
        if booker._offers is not None:  # the decisions of its accepts, in one statement
            booker._offers.write(booker.version)
        if not booker._booked and not booker._released:
            return
        version = booker.version
        for row in booker._booked:  # before the UPDATE below flushes them: one write per row
            row.booked = version
        if not booker.db.info["lock_bumped"]:  # else counted as it took the lock
            queries.bump_lock_version(booker.db, version)
        self._apply(booker)
        # the version moves on only once the transaction commits (see ``booking``); were it
        # to fail, the except clause drops the index instead
        self._version = version
