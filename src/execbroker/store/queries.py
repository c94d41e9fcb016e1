"""Every query the broker makes. Callers pass the SQLAlchemy session of their transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session

from execbroker.model.sessions import Phase
from execbroker.planner import Booking, Resources
from execbroker.store.tables import (
    EPOCH,
    MICROSECOND,
    BrokerLock,
    OfferSetRow,
    SessionRow,
    UTCDateTime,
    microseconds,
)

# Phases in which a session holds capacity (an OFFERED one only until it expires).
HOLDING = (
    Phase.OFFERED,
    Phase.ACCEPTED,
    Phase.WAITING,
    Phase.PREPARING,
    Phase.AVAILABLE,
    Phase.RUNNING,
    Phase.RELEASING,
)
# Phases in which the task exists (or may) on the platform.
STARTED = (Phase.PREPARING, Phase.AVAILABLE, Phase.RUNNING, Phase.RELEASING)
FINAL = (Phase.REJECTED, Phase.EXPIRED, Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)


def _holding(now: datetime) -> Any:
    return or_(
        and_(SessionRow.phase == Phase.OFFERED, SessionRow.expires > now),
        SessionRow.phase.in_([phase.value for phase in HOLDING if phase != Phase.OFFERED]),
    )


def holds(
    db: Session, start: datetime, end: datetime, now: datetime, *, besides: str | None = None
) -> list[Booking]:
    """Capacity held over [start, end): offers (grouped by offer set) and booked sessions.

    ``besides`` leaves out one offer set, whose offers are the alternatives being accepted.
    """
    query = select(
        SessionRow.start,
        SessionRow.end,
        SessionRow.cores,
        SessionRow.memory_gib,
        SessionRow.storage_gib,
        SessionRow.phase,
        SessionRow.offerset_uuid,
    ).where(_holding(now), SessionRow.end > start, SessionRow.start < end)
    if besides is not None:
        query = query.where(SessionRow.offerset_uuid != besides)
    offered = Phase.OFFERED.value
    return [
        Booking(
            start,
            end,
            Resources(cores, memory, storage),
            group=offerset if phase == offered else None,
        )
        for start, end, cores, memory, storage, phase, offerset in db.execute(query)
    ]


HoldRow = tuple[str, datetime, datetime, int, int, int, str, str, datetime]


def _hold_columns(table: Any) -> Any:
    # the instants as their stored integers, turned into datetimes here: SQLAlchemy's
    # per-value type processing would cost most of a rebuild of many bookings
    return select(
        table.c.uuid,
        type_coerce(table.c.start, BigInteger),
        type_coerce(table.c.end, BigInteger),
        table.c.cores,
        table.c.memory_gib,
        table.c.storage_gib,
        table.c.phase,
        table.c.offerset_uuid,
        type_coerce(table.c.expires, BigInteger),
    )


# Core, built once: with several replicas (or workers) nearly every booking transaction
# catches up on another's bookings, and building this query and running it through the ORM
# cost several times the read itself.
_BOOKED_AFTER = _hold_columns(SessionRow.__table__).where(
    SessionRow.__table__.c.booked > bindparam("after", type_=BigInteger)
)


def hold_rows(db: Session, now: datetime, *, booked_after: int | None = None) -> list[HoldRow]:
    """(uuid, start, end, cores, memory, storage, phase, offerset, expires) of every session
    holding capacity now or, given ``booked_after``, of every session (in any phase) that a
    booking transaction counted after that version changed."""
    if booked_after is None:
        found = db.execute(_hold_columns(SessionRow.__table__).where(_holding(now)))
    else:
        found = db.connection().execute(_BOOKED_AFTER, {"after": booked_after})
    us = MICROSECOND
    return [
        (uuid, EPOCH + start * us, EPOCH + end * us, c, m, s, phase, offerset, EPOCH + exp * us)
        for uuid, start, end, c, m, s, phase, offerset, exp in found
    ]


_TABLE = SessionRow.__table__
# Core, built once: a sweep reads every session released within its margin (at hundreds of
# accepts a second, their rejected siblings: hundreds of rows), and the ORM's handling of
# each row cost more than the read.
_RELEASED = select(_TABLE.c.uuid).where(
    _TABLE.c.modified >= bindparam("since"), _TABLE.c.phase.in_([phase.value for phase in FINAL])
)


def released_since(db: Session, since: datetime) -> list[str]:
    """Sessions that reached a final phase (holding nothing) at or after ``since``."""
    return list(db.connection().execute(_RELEASED, {"since": since}).scalars())


_LOCK = BrokerLock.__table__
# A Core statement built once: the ORM's bulk update (its session synchronisation above
# all) cost more than the UPDATE itself, once per booking transaction.
_BUMP = update(_LOCK).where(_LOCK.c.id == 1).values(version=bindparam("new_version"))


def bump_lock_version(db: Session, version: int) -> None:
    db.connection().execute(_BUMP, {"new_version": version})


# -- retention ------------------------------------------------------------------------------

_UNACCEPTED = (Phase.REJECTED.value, Phase.EXPIRED.value)


def finished_before(db: Session, before: datetime, limit: int) -> list[tuple[str, str, str | None]]:
    """(uuid, platform, handle) of up to ``limit`` sessions that reached a final phase before
    ``before`` (oldest first)."""
    query = (
        select(SessionRow.uuid, SessionRow.platform, SessionRow.handle)
        .where(SessionRow.modified < before, SessionRow.phase.in_([p.value for p in FINAL]))
        .order_by(SessionRow.modified)
        .limit(limit)
    )
    return [tuple(row) for row in db.execute(query)]  # type: ignore[misc]


def unaccepted_before(db: Session, before: datetime, limit: int) -> list[str]:
    """Up to ``limit`` offer sets made before ``before`` none of whose offers was accepted
    (every session REJECTED or EXPIRED, or none at all: a NO)."""
    taken = (
        select(SessionRow.uuid)
        .where(SessionRow.offerset_uuid == OfferSetRow.uuid)
        .where(SessionRow.phase.not_in(_UNACCEPTED))
    )
    query = (
        select(OfferSetRow.uuid)
        .where(OfferSetRow.created < before, ~taken.exists())
        .order_by(OfferSetRow.created)
        .limit(limit)
    )
    return list(db.scalars(query))


def delete_sessions(db: Session, uuids: Sequence[str]) -> int:
    if not uuids:
        return 0
    return db.execute(delete(SessionRow).where(SessionRow.uuid.in_(list(uuids)))).rowcount


def delete_offersets(db: Session, uuids: Sequence[str]) -> int:
    """Delete these offer sets and their sessions (the caller chose sets that hold nothing)."""
    if not uuids:
        return 0
    db.execute(delete(SessionRow).where(SessionRow.offerset_uuid.in_(list(uuids))))
    return db.execute(delete(OfferSetRow).where(OfferSetRow.uuid.in_(list(uuids)))).rowcount


def _values(row: OfferSetRow | SessionRow) -> dict[str, Any]:
    """A record's columns as an INSERT's values, the columns' defaults for those left unset."""
    values = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        if value is None and column.default is not None and column.default.is_scalar:
            value = column.default.arg
        values[column.key] = value
    return values


# Built once: a statement made anew per request has its cache key computed anew each time.
_INSERT_OFFERSET = insert(OfferSetRow.__table__)
_INSERT_SESSIONS = insert(SessionRow.__table__)
# PostgreSQL's: the offer set and all its sessions in one statement of two parameters, each
# one JSON document (psycopg's work per parameter, 18 a session, cost more than the INSERT).
# The foreign key is checked at the statement's end, so the sessions see the offer set.
_INSERT_OFFER_SET_PG = text(
    "WITH offerset AS (INSERT INTO offersets"
    " SELECT * FROM json_populate_record(NULL::offersets, CAST(:offerset AS json)))"
    " INSERT INTO sessions"
    " SELECT * FROM json_populate_recordset(NULL::sessions, CAST(:sessions AS json))"
)


def _json_values(row: OfferSetRow | SessionRow) -> dict[str, Any]:
    """``_values`` as JSON would hold them: datetimes as the integers their columns store."""
    values = _values(row)
    for column in row.__table__.columns:
        if isinstance(column.type, UTCDateTime):
            values[column.key] = column.type.process_bind_param(values[column.key], None)
    return values


def _documents(offerset: OfferSetRow, sessions: Iterable[SessionRow]) -> dict[str, str]:
    """PostgreSQL's parameters for an offer set and its sessions: two JSON documents."""
    return {
        "offerset": json.dumps(_json_values(offerset)),
        "sessions": json.dumps([_json_values(row) for row in sessions]),
    }


def add_offerset(db: Session, offerset: OfferSetRow, sessions: Iterable[SessionRow]) -> None:
    """Insert an offer set and its sessions (Core INSERTs, one for all the sessions: the
    records stay as they were made, in no ORM session)."""
    connection = db.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(_INSERT_OFFER_SET_PG, _documents(offerset, sessions))
        return
    connection.execute(_INSERT_OFFERSET, [_values(offerset)])
    rows = [_values(row) for row in sessions]
    if rows:
        connection.execute(_INSERT_SESSIONS, rows)


# PostgreSQL: the same, as a transaction of its own counted as a booking, made only if no
# booking transaction was counted since ``version``. The lock row's UPDATE waits for any
# transaction holding it, then re-reads the version that one left (read committed): a booking
# committed meanwhile, this replica's or another's, makes it update nothing and insert nothing.
_OFFER_SET_IF_CURRENT_PG = text(
    "WITH counted AS (UPDATE broker_lock SET version = version + 1"
    " WHERE id = 1 AND version = :version RETURNING version),"
    " offerset AS (INSERT INTO offersets"
    " SELECT * FROM json_populate_record(NULL::offersets, CAST(:offerset AS json))"
    " WHERE EXISTS (SELECT FROM counted)),"
    " booked AS (INSERT INTO sessions"
    " SELECT * FROM json_populate_recordset(NULL::sessions, CAST(:sessions AS json))"
    " WHERE EXISTS (SELECT FROM counted))"
    " SELECT count(*) FROM counted"
)


def add_offerset_if_current(
    connection: Connection, version: int, offerset: OfferSetRow, sessions: Iterable[SessionRow]
) -> bool:
    """``add_offerset`` in one statement that commits on its own (``Database.alone``), if
    ``broker_lock.version`` is still ``version``, which it moves on to ``version + 1`` (the
    sessions' ``booked``, stamped before); whether it booked them."""
    values = {"version": version, **_documents(offerset, sessions)}
    return bool(connection.execute(_OFFER_SET_IF_CURRENT_PG, values).scalar())


def get_offerset(db: Session, uuid: str) -> OfferSetRow | None:
    return db.get(OfferSetRow, uuid)


def get_session(db: Session, uuid: str, *, lock: bool = False) -> SessionRow | None:
    """One session; ``lock`` holds its row until the transaction ends (PostgreSQL's
    ``FOR UPDATE``: a concurrent conditional UPDATE of it waits, then sees what this wrote)."""
    # locked, it is read afresh too: a row of this transaction's identity map may be stale
    # (changed by a conditional UPDATE, or by another replica before the lock was had)
    return db.get(SessionRow, uuid, with_for_update=lock or None, populate_existing=lock)


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _statement(connection: Connection, name: str) -> tuple[str, Any]:
    """A Core statement of the booking path, built once per dialect (its parameters bound at
    each call: no ORM bookkeeping, no statement to compile again)."""
    dialect = connection.dialect.name
    found = _STATEMENTS.get((dialect, name))
    if found is None:
        found = _STATEMENTS[dialect, name] = _BUILDERS[name](dialect)
    return dialect, found


def _locked_offer_sets(dialect: str) -> Any:
    # The sessions asked for (in any phase: a refusal names it) and the OFFERED ones of their
    # offer sets (the siblings an accept rejects), each asked-for one with its request.
    table, offersets = SessionRow.__table__, OfferSetRow.__table__
    asked = table.c.uuid.in_(bindparam("uuids", expanding=True))
    sets = select(table.c.offerset_uuid).where(asked).scalar_subquery()
    request = type_coerce(case((asked, offersets.c.request), else_=None), JSON)
    return (
        select(table, request.label("offerset_request"))
        .join(offersets, offersets.c.uuid == table.c.offerset_uuid)
        .where(table.c.offerset_uuid.in_(sets), or_(asked, table.c.phase == Phase.OFFERED.value))
        .order_by(table.c.uuid)  # locked in one order by every transaction: no deadlock
        .with_for_update(of=table)
    )


def _decide_offer(dialect: str) -> Any:
    # SQLite's, run once per decision (PostgreSQL's is _DECIDE_OFFERS_PG)
    table = SessionRow.__table__
    return (
        update(table)
        .where(table.c.uuid == bindparam("session"), table.c.phase == Phase.OFFERED.value)
        .values(
            phase=bindparam("to_phase"),
            modified=bindparam("now"),
            messages=func.json_insert(table.c.messages, "$[#]", func.json(bindparam("note"))),
            # the siblings too: another replica's index then learns their release when it
            # catches up, at once and with the accept, not at its next sweep
            booked=bindparam("version"),
        )
    )


_BUILDERS = {
    "locked_offer_sets": _locked_offer_sets,
    "decide_offer": _decide_offer,
}


# The booking path's statements run on the transaction's connection (``Booker.connection``),
# fetched once per transaction: the ORM session's ``connection()`` cost more than a read.


def locked_offer_sets(
    connection: Connection, uuids: Sequence[str]
) -> list[tuple[SessionRow, dict[str, Any] | None]]:
    """The sessions ``uuids`` and every other OFFERED session of their offer sets, locked
    until the transaction ends, in one statement ordered by uuid (so concurrent transactions
    lock them in one order); each of ``uuids`` with the request its offer set was made for
    (as stored), the others with None. Records of their own, in no ORM session."""
    _, statement = _statement(connection, "locked_offer_sets")
    found = []
    for values in connection.execute(statement, {"uuids": list(uuids)}).mappings():
        values = dict(values)
        request = values.pop("offerset_request")
        found.append((SessionRow(**values), request))
    return found


@dataclass(frozen=True, slots=True)
class Decision:
    """An OFFERED session's new phase (ACCEPTED, or REJECTED as a sibling) and its note."""

    uuid: str
    phase: str
    now: datetime
    note: dict[str, Any]


# PostgreSQL's: every decision of a group in one UPDATE of one JSON parameter (psycopg's work
# for five parameters a decision, run as many statements, cost more than the UPDATE).
_DECIDE_OFFERS_PG = text(
    "UPDATE sessions SET phase = d.phase, modified = d.now, booked = :version,"
    " messages = CAST(CAST(sessions.messages AS jsonb) || d.note AS json)"
    " FROM json_to_recordset(CAST(:decisions AS json))"
    " AS d(uuid text, phase text, now bigint, note jsonb)"
    " WHERE sessions.uuid = d.uuid AND sessions.phase = 'OFFERED'"
)


def decide_offers(connection: Connection, decisions: Sequence[Decision], version: int) -> None:
    """Move each session of ``decisions`` from OFFERED to its phase, noting its note, in one
    statement (one round trip). Raises if any of them was no longer OFFERED: the caller,
    which read them locked, must then roll back the whole transaction."""
    if not decisions:
        return
    if connection.dialect.name == "postgresql":
        rows = [
            {
                "uuid": decision.uuid,
                "phase": decision.phase,
                "now": microseconds(decision.now),
                "note": [decision.note],
            }
            for decision in decisions
        ]
        parameters: Any = {"decisions": json.dumps(rows), "version": version}
        statement: Any = _DECIDE_OFFERS_PG
    else:
        _, statement = _statement(connection, "decide_offer")
        parameters = [
            {
                "session": decision.uuid,
                "to_phase": decision.phase,
                "now": decision.now,
                "note": json.dumps(decision.note),
                "version": version,
            }
            for decision in decisions
        ]
    changed = connection.execute(statement, parameters).rowcount
    if changed != len(decisions):  # never, under the rows' locks
        raise RuntimeError(f"{len(decisions) - changed} of the offers decided were not OFFERED")


def sessions_of_offerset(db: Session, offerset_uuid: str) -> Sequence[SessionRow]:
    query = select(SessionRow).where(SessionRow.offerset_uuid == offerset_uuid)
    return db.scalars(query.order_by(SessionRow.start, SessionRow.cores.desc())).all()


def list_sessions(
    db: Session, *, owner: str | None, phases: Sequence[str] = (), limit: int = 1000
) -> Sequence[SessionRow]:
    query = select(SessionRow)
    if owner is not None:
        query = query.where(SessionRow.owner == owner)
    if phases:
        query = query.where(SessionRow.phase.in_(list(phases)))
    return db.scalars(query.order_by(SessionRow.created.desc()).limit(limit)).all()


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which sessions a dialect's job list shows; every part is a SQL condition.

    ``exit_error`` splits FAILED sessions by how their task ended: True keeps those whose
    task exited non-zero (TES EXECUTOR_ERROR), False the others (SYSTEM_ERROR).
    """

    owner: str | None
    phases: Sequence[str] = ()  # any of these (none given: every phase but ``not_phases``)
    not_phases: Sequence[str] = ()
    created_after: datetime | None = None
    name_prefix: str | None = None  # of the name the dialect kept (TES ``name``)
    tags: Sequence[tuple[str, str | None]] = ()  # TES tags: the key, and its value if given
    exit_error: bool | None = None


def list_jobs(
    db: Session,
    where: JobFilter,
    *,
    before: tuple[datetime, str] | None = None,
    limit: int,
) -> Sequence[SessionRow]:
    """Dialect jobs (not deleted) matching ``where``, newest first (then by uuid, so a page
    boundary is exact), those after the ``before`` key (created, uuid) only, ``limit`` of them."""
    meta = SessionRow.dialect_meta
    query = select(SessionRow).where(not_(func.coalesce(meta["deleted"].as_boolean(), false())))
    if where.owner is not None:
        query = query.where(SessionRow.owner == where.owner)
    if where.phases:
        query = query.where(SessionRow.phase.in_(list(where.phases)))
    if where.not_phases:
        query = query.where(SessionRow.phase.not_in(list(where.not_phases)))
    if where.created_after is not None:
        query = query.where(SessionRow.created > where.created_after)
    if where.name_prefix:
        query = query.where(meta["name"].as_string().startswith(where.name_prefix, autoescape=True))
    for key, value in where.tags:
        tag = meta[("task", "tags", key)].as_string()
        query = query.where(tag.is_not(None) if value is None else tag == value)
    if where.exit_error is not None:
        exited = and_(SessionRow.exit_code.is_not(None), SessionRow.exit_code != 0)
        query = query.where(
            or_(SessionRow.phase != Phase.FAILED, exited if where.exit_error else not_(exited))
        )
    if before is not None:
        created, uuid = before
        query = query.where(
            or_(
                SessionRow.created < created,
                and_(SessionRow.created == created, SessionRow.uuid < uuid),
            )
        )
    order = (SessionRow.created.desc(), SessionRow.uuid.desc())
    return db.scalars(query.order_by(*order).limit(limit)).all()


def due_to_start(db: Session, now: datetime) -> Sequence[SessionRow]:
    query = select(SessionRow).where(SessionRow.phase == Phase.WAITING, SessionRow.start <= now)
    return db.scalars(query).all()


def transition(
    db: Session,
    uuid: str,
    from_phases: Sequence[str],
    to_phase: str,
    now: datetime,
    *,
    holder: str | None = None,
    **fields: Any,
) -> bool:
    """Move one session on, only if it is still in one of ``from_phases`` (no lost updates)
    and, given a ``holder``, only while that replica still holds its lease."""
    query = update(SessionRow).where(
        SessionRow.uuid == uuid, SessionRow.phase.in_(list(from_phases))
    )
    if holder is not None:
        query = query.where(SessionRow.claimed_by == holder)
    result = db.execute(query.values(phase=to_phase, modified=now, **fields))
    return result.rowcount == 1


def transition_all(
    db: Session, from_phase: str, to_phase: str, now: datetime, *, before: datetime | None = None
) -> int:
    """Move every session in ``from_phase`` on (offers: only those expired by ``before``).

    Rows another transaction holds (an accept, a cancel, another replica doing the same)
    are skipped, not waited for: the next pass takes them, and no two replicas can
    deadlock over the order in which they lock the same rows.
    """
    chosen = select(SessionRow.uuid).where(SessionRow.phase == from_phase)
    if before is not None:
        chosen = chosen.where(SessionRow.expires <= before)
    uuids = list(db.scalars(chosen.with_for_update(skip_locked=True)))
    if not uuids:
        return 0
    query = update(SessionRow).where(SessionRow.uuid.in_(uuids), SessionRow.phase == from_phase)
    return db.execute(query.values(phase=to_phase, modified=now)).rowcount


# -- leases ------------------------------------------------------------------------------
# A lease's times are the database's clock, never a replica's: a replica whose clock ran
# ahead would otherwise see a live holder's lease as lapsed and start its session again.


def _database_now(dialect: str) -> Any:
    """The database's clock as the integer microseconds since the epoch its columns store."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", func.clock_timestamp()) * 1_000_000, BigInteger)
    return cast((func.julianday("now") - 2440587.5) * 86_400_000_000, BigInteger)  # SQLite


def lease_from_now(db: Session, length: timedelta) -> Any:
    """A lease's end, ``length`` from now by the database's clock (a column's new value)."""
    now = _database_now(db.get_bind().dialect.name)
    return type_coerce(now + length // MICROSECOND, UTCDateTime)


def _lapsed(db: Session) -> Any:
    now = _database_now(db.get_bind().dialect.name)
    return SessionRow.lease_until <= now


def renew_leases(db: Session, holder: str, phases: Sequence[str], length: timedelta) -> int:
    """Extend every lease ``holder`` has on sessions in ``phases`` to ``length`` from now."""
    query = update(SessionRow).where(
        SessionRow.claimed_by == holder, SessionRow.phase.in_(list(phases))
    )
    return db.execute(query.values(lease_until=lease_from_now(db, length))).rowcount


def take_over(db: Session, holder: str, phases: Sequence[str], length: timedelta) -> list[str]:
    """Claim, for ``length``, the sessions in ``phases`` that nobody holds, or whose lease
    has lapsed.

    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: two replicas looking at once each take
    different rows, and neither waits on a row the other (or its holder) is changing.
    SQLite has one writer at a time, so the conditional UPDATE alone decides there.
    """
    free = or_(SessionRow.claimed_by.is_(None), _lapsed(db))
    chosen = select(SessionRow.uuid).where(SessionRow.phase.in_(list(phases)), free)
    uuids = list(db.scalars(chosen.with_for_update(skip_locked=True)))
    if not uuids:
        return []
    db.execute(
        update(SessionRow)
        .where(SessionRow.uuid.in_(uuids), SessionRow.phase.in_(list(phases)), free)
        .values(claimed_by=holder, lease_until=lease_from_now(db, length))
    )
    claimed = select(SessionRow.uuid).where(
        SessionRow.uuid.in_(uuids), SessionRow.claimed_by == holder
    )
    return list(db.scalars(claimed))


def held_sessions(db: Session, holder: str, phases: Sequence[str]) -> Sequence[SessionRow]:
    query = select(SessionRow).where(
        SessionRow.claimed_by == holder, SessionRow.phase.in_(list(phases))
    )
    return db.scalars(query).all()


def release_leases(db: Session, holder: str) -> int:
    """End ``holder``'s leases now (a clean shutdown), so another replica need not wait."""
    query = update(SessionRow).where(SessionRow.claimed_by == holder, ~_lapsed(db))
    return db.execute(query.values(lease_until=lease_from_now(db, timedelta(0)))).rowcount


def add_message(db: Session, uuid: str, message: dict[str, Any]) -> None:
    row = db.get(SessionRow, uuid)
    if row is not None:
        row.messages = [*row.messages, message]


def count_sessions(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(SessionRow)) or 0


def add_session(db: Session, row: SessionRow) -> None:
    db.add(row)


# -- pages (the web page reads these) -------------------------------------------------------

SORTABLE = {
    "created": SessionRow.created,
    "start": SessionRow.start,
    "end": SessionRow.end,
    "phase": SessionRow.phase,
    "owner": SessionRow.owner,
    "cores": SessionRow.cores,
    "memory": SessionRow.memory_gib,
}


def page_sessions(
    db: Session,
    *,
    owner: str | None,
    phases: Sequence[str],
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[Sequence[SessionRow], int]:
    """One page of sessions in ``phases`` (sorted, ties newest first) and how many there are."""
    where = [SessionRow.phase.in_(list(phases))]
    if owner is not None:
        where.append(SessionRow.owner == owner)
    column = SORTABLE[sort]
    order = column.desc() if descending else column.asc()
    query = select(SessionRow).where(*where).order_by(order, SessionRow.created.desc())
    rows = db.scalars(query.offset(offset).limit(limit)).all()
    total = db.scalar(select(func.count()).select_from(SessionRow).where(*where)) or 0
    return rows, total


def open_offers(db: Session, *, owner: str | None, now: datetime) -> Sequence[SessionRow]:
    """Offers not yet accepted, rejected or expired, the soonest to expire first."""
    query = select(SessionRow).where(SessionRow.phase == Phase.OFFERED, SessionRow.expires > now)
    if owner is not None:
        query = query.where(SessionRow.owner == owner)
    return db.scalars(query.order_by(SessionRow.expires, SessionRow.start)).all()


def refusals(db: Session, *, owner: str | None, limit: int) -> Sequence[OfferSetRow]:
    """The latest NO answers, newest first."""
    query = select(OfferSetRow).where(OfferSetRow.result == "NO")
    if owner is not None:
        query = query.where(OfferSetRow.owner == owner)
    return db.scalars(query.order_by(OfferSetRow.created.desc()).limit(limit)).all()


def phase_counts(db: Session) -> dict[str, int]:
    query = select(SessionRow.phase, func.count()).group_by(SessionRow.phase)
    return {phase: count for phase, count in db.execute(query)}
