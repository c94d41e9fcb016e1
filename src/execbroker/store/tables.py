"""The database tables. Only ``execbroker.store`` knows SQL; the rest sees records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone, so we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class BrokerLock(Base):
    """One row, locked (SELECT ... FOR UPDATE) by every transaction that books capacity."""

    __tablename__ = "broker_lock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)


class OfferSetRow(Base):
    __tablename__ = "offersets"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    created: Mapped[datetime]
    result: Mapped[str] = mapped_column(String(3))
    request: Mapped[dict[str, Any]]
    messages: Mapped[list[Any]]


class SessionRow(Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_phase_end", "phase", "end"),)

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    offerset_uuid: Mapped[str] = mapped_column(ForeignKey("offersets.uuid"), index=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime]
    modified: Mapped[datetime]
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
    finished: Mapped[datetime | None]
    exit_code: Mapped[int | None]
    messages: Mapped[list[Any]]
    endpoints: Mapped[list[Any]]
