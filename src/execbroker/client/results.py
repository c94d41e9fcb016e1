"""What a broker answers, as small typed objects parsed from its wire JSON.

The client reads documents leniently (unknown fields are ignored, missing ones become
None) so that it keeps working against brokers a little newer or older than itself;
each object keeps the document it came from in ``raw`` for anything not modelled here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from execbroker import kinds
from execbroker.timeutil import (
    TimeFormatError,
    format_duration,
    format_instant,
    parse_duration,
    parse_instant,
    parse_interval,
)

# Phases after which nothing changes any more.
FINAL_PHASES = frozenset({"REJECTED", "EXPIRED", "COMPLETED", "FAILED", "CANCELLED"})
# Final phases in which the task did what it was asked.
SUCCESS_PHASES = frozenset({"COMPLETED"})


def _instant(text: Any) -> datetime | None:
    try:
        return parse_instant(text) if isinstance(text, str) and text else None
    except TimeFormatError:
        return None


def _start(text: Any) -> datetime | None:
    """The start of a session's available time: an ISO-8601 interval, or (older brokers)
    an instant."""
    try:
        return parse_interval(text)[0] if isinstance(text, str) and text else None
    except TimeFormatError:
        return None


def _duration(text: Any) -> timedelta | None:
    try:
        return parse_duration(text) if isinstance(text, str) and text else None
    except TimeFormatError:
        return None


def _amount(value: Any) -> int:
    """An exact amount from a ``{min, max}`` range (offers give min == max)."""
    if not isinstance(value, dict):
        return 0
    amount = value.get("min", value.get("max"))
    return int(amount) if isinstance(amount, int | float) else 0


@dataclass(frozen=True, slots=True)
class Message:
    level: str
    text: str
    time: datetime | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Message:
        return cls(
            level=str(data.get("level", "INFO")),
            text=str(data.get("message", "")),
            time=_instant(data.get("time")),
        )


@dataclass(frozen=True, slots=True)
class Connector:
    """How to reach a running session, e.g. ``HTTP`` at ``http://127.0.0.1:32768/``."""

    protocol: str
    location: str
    status: str = "AVAILABLE"

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Connector:
        return cls(
            protocol=str(data.get("protocol", "")),
            location=str(data.get("location", "")),
            status=str(data.get("status", "AVAILABLE")),
        )

    @property
    def is_http(self) -> bool:
        return self.protocol.upper() in ("HTTP", "HTTPS") or self.location.startswith(
            ("http://", "https://")
        )


def cores(amount: int | None) -> str:
    """``1 core``, ``4 cores``."""
    return f"{amount} core" if amount == 1 else f"{amount} cores"


def _messages(meta: dict[str, Any]) -> tuple[Message, ...]:
    return tuple(Message.from_wire(item) for item in meta.get("messages") or [])


@dataclass(frozen=True, slots=True)
class Session:
    """An execution session; an *offer* is a session in phase OFFERED."""

    uuid: str
    url: str
    phase: str
    executable_kind: str
    cores: int
    memory: int  # GiB
    storage: int  # GiB
    start: datetime | None
    duration: timedelta | None
    expires: datetime | None = None
    cost: float | None = None
    cost_type: str | None = None
    connectors: tuple[Connector, ...] = ()
    messages: tuple[Message, ...] = ()
    options: tuple[str, ...] = ()  # the phases the client may set next
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Session:
        meta = data.get("meta") or {}
        compute = data.get("compute") or {}
        available = (data.get("schedule") or {}).get("available") or {}
        costs = data.get("costs") or []
        cost = costs[0] if costs else {}
        amount = cost.get("min", cost.get("max"))
        return cls(
            uuid=str(meta.get("uuid", "")),
            url=str(meta.get("url", "")),
            phase=str(data.get("phase", "")),
            executable_kind=kinds.alias(str((data.get("executable") or {}).get("kind", ""))),
            cores=_amount(compute.get("cores")),
            memory=_amount(compute.get("memory")),
            storage=sum(_amount(item.get("size")) for item in data.get("storage") or []),
            start=_start(available.get("start")),
            duration=_duration(available.get("duration")),
            expires=_instant(data.get("expires")),
            cost=float(amount) if isinstance(amount, int | float) else None,
            cost_type=cost.get("type"),
            connectors=tuple(Connector.from_wire(item) for item in data.get("connectors") or []),
            messages=_messages(meta),
            options=tuple(
                value
                for option in meta.get("options") or []
                if option.get("path") == "phase"
                for value in option.get("values") or []
            ),
            raw=data,
        )

    @property
    def end(self) -> datetime | None:
        if self.start is None or self.duration is None:
            return None
        return self.start + self.duration

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def succeeded(self) -> bool:
        return self.phase in SUCCESS_PHASES

    def last_message(self) -> str | None:
        return self.messages[-1].text if self.messages else None

    def summary(self) -> str:
        """One line for people: the grant, when, for how long, and the price if any."""
        parts = [cores(self.cores), f"{self.memory} GiB memory"]
        if self.storage:
            parts.append(f"{self.storage} GiB storage")
        if self.start is not None:
            parts.append(f"from {format_instant(self.start)}")
        if self.duration is not None:
            parts.append(f"for {format_duration(self.duration)}")
        if self.cost is not None:
            parts.append(f"cost {self.cost:g}")
        return ", ".join(parts)


Offer = Session


@dataclass(frozen=True, slots=True)
class OfferSet:
    """A broker's answer to an ExecutionRequest: YES with offers, or NO with reasons."""

    uuid: str
    url: str
    result: str  # YES or NO
    offers: tuple[Session, ...]
    messages: tuple[Message, ...]
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> OfferSet:
        meta = data.get("meta") or {}
        offers = tuple(Session.from_wire(item) for item in data.get("offers") or [])
        result = data.get("result", "YES" if offers else "NO")  # (the schema does not require it)
        if result not in ("YES", "NO"):
            raise ValueError(f"result: {result!r} is neither YES nor NO")
        return cls(
            uuid=str(meta.get("uuid", "")),
            url=str(meta.get("url", "")),
            result=result,
            offers=offers,
            messages=_messages(meta),
            raw=data,
        )

    @property
    def yes(self) -> bool:
        return self.result == "YES"

    @property
    def reasons(self) -> list[str]:
        """What the broker said about its answer: why NO, or what it left out of a YES."""
        return [message.text for message in self.messages]


def session_list(data: dict[str, Any]) -> list[Session]:
    """The sessions of a ``GET /sessions`` answer."""
    return [Session.from_wire(item) for item in data.get("sessions") or []]


@dataclass(frozen=True, slots=True)
class Logs:
    stdout: str
    stderr: str

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Logs:
        return cls(str(data.get("stdout", "")), str(data.get("stderr", "")))


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """What a broker says about itself (``GET /info``)."""

    name: str
    description: str
    platforms: tuple[str, ...]
    kinds: tuple[str, ...]  # short aliases
    quota: dict[str, Any]
    units: tuple[dict[str, Any], ...] = ()
    pricing: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> BrokerInfo:
        return cls(
            name=str(data.get("name", "")),
            description=str(data.get("description", "")),
            platforms=tuple(data.get("platforms") or ()),
            kinds=tuple(
                str(item.get("alias") or kinds.alias(str(item.get("kind", ""))))
                for item in data.get("kinds") or []
            ),
            quota=dict(data.get("quota") or {}),
            units=tuple(data.get("units") or ()),
            pricing=data.get("pricing"),
            raw=data,
        )
