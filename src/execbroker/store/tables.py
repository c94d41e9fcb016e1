"""The database tables. Only ``execbroker.store`` knows SQL; the rest sees records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def microseconds(value: datetime) -> int:
    """An aware datetime as the integer microseconds since the epoch ``UTCDateTime`` stores."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the database")
    return (value - EPOCH) // MICROSECOND


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes stored as integer microseconds since the epoch.

    Integers, not the backend's own date type: SQLite keeps no time zone, and turning its
    date strings back into datetimes costs 25 µs a row, which a calendar of 10 000
    bookings read on every request cannot afford (an integer costs under 1 µs).
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> int | None:
        return None if value is None else microseconds(value)

    def process_result_value(self, value: int | None, dialect: Any) -> datetime | None:
        return None if value is None else EPOCH + timedelta(microseconds=value)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class BrokerLock(Base):
    """One row, locked (SELECT ... FOR UPDATE) by every transaction that books capacity."""

    __tablename__ = "broker_lock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Bumped by every booking transaction: a replica whose index saw an older value reads
    # the sessions booked since (``SessionRow.booked``) before it answers.
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class OfferSetRow(Base):
    __tablename__ = "offersets"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    created: Mapped[datetime] = mapped_column(index=True)
    result: Mapped[str] = mapped_column(String(3))
    request: Mapped[dict[str, Any]]
    messages: Mapped[list[Any]]
    # The schema generation the client spelt its kinds in (``kinds.Spelling``): its answers,
    # now and later, are spelt the same way.
    spelling: Mapped[str] = mapped_column(String(16), default="current")


class SessionRow(Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_phase_end", "phase", "end"),)

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    offerset_uuid: Mapped[str] = mapped_column(ForeignKey("offersets.uuid"), index=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime]
    modified: Mapped[datetime] = mapped_column(index=True)
    expires: Mapped[datetime]
    start: Mapped[datetime]
    end: Mapped[datetime]
    cores: Mapped[int]
    memory_gib: Mapped[int]
    storage_gib: Mapped[int]
    cost: Mapped[float | None] = mapped_column(Float)
    cost_type: Mapped[str | None] = mapped_column(String(200))
    executable: Mapped[dict[str, Any]]
    platform: Mapped[str] = mapped_column(String(32))
    handle: Mapped[str | None] = mapped_column(String(200))
    started: Mapped[datetime | None]
    finished: Mapped[datetime | None] = mapped_column(index=True)
    exit_code: Mapped[int | None]
    messages: Mapped[list[Any]]
    endpoints: Mapped[list[Any]]
    # The dialect a session was made through (execbroker, uws, tes) and what that dialect
    # remembers of it (a TES task's name and executors, a UWS job's runId and parameters).
    dialect: Mapped[str] = mapped_column(String(16), default="execbroker", index=True)
    dialect_meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    spelling: Mapped[str] = mapped_column(String(16), default="current")
    # The replica driving the session (see ``execbroker.monitor``) and until when its lease
    # holds; another replica takes the session over only once the lease has lapsed.
    claimed_by: Mapped[str | None] = mapped_column(String(64), index=True)
    lease_until: Mapped[datetime | None]
    # The booking transaction (``BrokerLock.version``) that last added or changed what this
    # session holds.
    booked: Mapped[int | None] = mapped_column(BigInteger, index=True)
