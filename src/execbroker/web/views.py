"""Pure helpers for the pages: what a template shows, computed from service records.

No I/O and no clock here (``now`` is passed in), so each can be tested on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import yaml
from pydantic import ValidationError

from execbroker import kinds
from execbroker.errors import InvalidRequest
from execbroker.model.requests import ExecutionRequest
from execbroker.model.sessions import Phase
from execbroker.planner import Resources
from execbroker.service import Timeline
from execbroker.timeutil import format_duration

# What the sessions table shows unless filtered: offers have their own section.
OFFER_PHASES = (Phase.OFFERED, Phase.REJECTED, Phase.EXPIRED)
SESSION_PHASES = tuple(phase.value for phase in Phase if phase not in OFFER_PHASES)
ALL_PHASES = tuple(phase.value for phase in Phase)
PER_PAGE = 10


def cores(amount: int) -> str:
    return f"{amount} core" if amount == 1 else f"{amount} cores"


def resources(value: Resources) -> str:
    text = f"{cores(value.cores)}, {value.memory_gib} GiB"
    return f"{text}, {value.storage_gib} GiB disk" if value.storage_gib else text


def clock(value: datetime | None) -> str:
    """An instant as people read it on the page: 2026-12-01 20:15:03Z."""
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else ""


def iso(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else ""


def dialect(row: Any) -> str:
    """Which interface a session came through: execbroker, uws or tes."""
    return str(row.dialect or "execbroker")


def kind_of(executable: dict[str, Any]) -> str:
    return kinds.alias(str(executable.get("kind", "")))


def links(endpoints: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """Connectors as (text, href): a link only for http(s) locations."""
    found = []
    for item in endpoints:
        location = str(item.get("location", ""))
        href = location if location.startswith(("http://", "https://")) else None
        found.append((location, href))
    return found


@dataclass(frozen=True, slots=True)
class View:
    """What one page shows: filters, sort and page of the sessions table, and the open panels."""

    phases: tuple[str, ...] = ()
    owner: str | None = None
    sort: str = "created"
    descending: bool = True
    page: int = 1
    show: str | None = None  # a session whose logs and outputs are open
    answer: str | None = None  # the offer set just asked for
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_query(cls, query: Any) -> View:
        """From the page's query string; out-of-range values are InvalidRequest naming them."""
        phases = tuple(value for value in query.getlist("phase") if value)
        unknown = [value for value in phases if value not in ALL_PHASES]
        if unknown:
            raise InvalidRequest(f"phase: {unknown[0]!r} is not a session phase", field="phase")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order: must be asc or desc", field="order")
        page = query.get("page", "1")
        if not page.isdigit() or int(page) < 1:
            raise InvalidRequest("page: must be a whole number from 1", field="page")
        return cls(
            phases=phases,
            owner=query.get("owner") or None,
            sort=query.get("sort", "created"),
            descending=order == "desc",
            page=int(page),
            show=query.get("show") or None,
            answer=query.get("answer") or None,
        )

    @property
    def table_phases(self) -> tuple[str, ...]:
        return self.phases or SESSION_PHASES

    def query(self, **changes: Any) -> str:
        """This view's query string with some parameters changed (None drops one)."""
        values: dict[str, Any] = {
            "phase": list(self.phases),
            "owner": self.owner,
            "sort": self.sort if self.sort != "created" else None,
            "order": None if self.descending else "asc",
            "page": self.page if self.page != 1 else None,
            "show": self.show,
            "answer": self.answer,
        }
        values.update(changes)
        pairs = [
            (name, item)
            for name, value in values.items()
            for item in (value if isinstance(value, list) else [value])
            if item is not None
        ]
        return "?" + urlencode(pairs) if pairs else "?"

    def sort_link(self, column: str) -> str:
        """Sort by ``column``; the same column again flips the order."""
        descending = not self.descending if column == self.sort else column == "created"
        return self.query(sort=column, order=None if descending else "asc", page=None)

    def sort_state(self, column: str) -> str:
        if column != self.sort:
            return "none"
        return "descending" if self.descending else "ascending"


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    start: str
    end: str
    booked: int
    held: int
    free: int
    booked_height: float
    held_height: float
    label: str


def timeline_bars(timeline: Timeline, height: float = 80, width: float = 960) -> list[Bar]:
    """The capacity calendar as bars of cores: booked at the bottom, held by offers above."""
    limit = max(timeline.limit.cores, 1)
    step = width / max(len(timeline.slots), 1)
    bars = []
    for index, slot in enumerate(timeline.slots):
        booked, held = slot.booked.cores, slot.held.cores
        free = max(timeline.limit.cores - booked - held, 0)
        bars.append(
            Bar(
                x=round(index * step, 2),
                width=round(step, 2),
                start=iso(slot.start),
                end=iso(slot.end),
                booked=booked,
                held=held,
                free=free,
                booked_height=round(min(booked / limit, 1) * height, 2),
                held_height=round(min(held / limit, 1 - min(booked / limit, 1)) * height, 2),
                label=(
                    f"{clock(slot.start)} to {clock(slot.end)}: booked {booked}, "
                    f"held by offers {held}, free {free} of {timeline.limit.cores} cores"
                ),
            )
        )
    return bars


def timeline_ticks(
    timeline: Timeline, count: int = 4, width: float = 960
) -> list[tuple[float, str]]:
    span = timeline.end - timeline.start
    return [
        (round(width * k / count, 2), clock(timeline.start + span * k / count)[:16] + "Z")
        for k in range(count + 1)
    ]


def horizon(timeline: Timeline) -> str:
    return format_duration(timeline.end - timeline.start)


# -- the request form ---------------------------------------------------------------------


def _problems(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = [part for part in item["loc"] if not (isinstance(part, str) and kinds.is_known(part))]
        path = ".".join(str(part) for part in loc)
        parts.append(f"{path}: {item['msg']}")
    return "; ".join(parts)


def parse_task(text: str) -> ExecutionRequest:
    """A task file's text (YAML or JSON) as a request; InvalidRequest naming the field if not."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InvalidRequest(f"task: not valid YAML or JSON: {error}", field="task") from None
    if not isinstance(data, dict):
        raise InvalidRequest("task: must be a mapping (an ExecutionRequest)", field="task")
    return _validated(data)


def _validated(data: dict[str, Any]) -> ExecutionRequest:
    try:
        return ExecutionRequest.model_validate(data)
    except ValidationError as error:
        raise InvalidRequest(_problems(error), field="task") from None


def _number(form: Any, name: str) -> int | None:
    value = (form.get(name) or "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise InvalidRequest(f"{name}: must be a whole number", field=name)
    return int(value)


def request_from_fields(form: Any) -> ExecutionRequest:
    """The form's fields (kind, script or image, ranges, duration) as a request."""
    kind = form.get("kind") or "batch-script"
    executable: dict[str, Any] = {"kind": kind}
    if kind == "batch-script":
        executable["script"] = form.get("script") or ""
    elif kind == "docker-container":
        executable["image"] = {"locations": [form.get("image") or ""]}
    else:
        raise InvalidRequest(f"kind: {kind!r}: use a task file for this kind", field="kind")
    compute: dict[str, Any] = {"kind": "simple-compute-resource"}
    for name in ("cores", "memory"):
        low, high = _number(form, f"{name}_min"), _number(form, f"{name}_max")
        if low is not None or high is not None:
            compute[name] = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
    requested: dict[str, Any] = {}
    if form.get("duration"):
        requested["duration"] = form.get("duration").strip()
    if form.get("start"):
        requested["start"] = form.get("start").strip()
    data: dict[str, Any] = {"executable": executable, "compute": compute}
    if requested:
        data["schedule"] = {"requested": requested}
    return _validated(data)


def sse(event: str, data: Any) -> str:
    """One server-sent event; JSON keeps the data on one line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def stopping(app: Any) -> bool:
    """Whether the server running ``app`` has been told to stop: event streams must end then,
    or the server waits for every open page before it exits."""
    server = getattr(app.state, "server", None)
    return bool(getattr(server, "should_exit", False))


def health(monitor: Any, now: float) -> tuple[bool, str]:
    """Whether the monitor is passing over the sessions as often as it should, in words."""
    last = getattr(monitor, "last_pass", None)
    if last is None:
        return False, "the monitor has not run yet"
    age = now - last
    if age > max(10 * monitor.interval, 5.0):
        return False, f"monitor late: its last pass was {age:.0f} s ago"
    # No age when all is well: the fragment then stays the same from one tick to the next.
    return True, f"monitor running (a pass every {monitor.interval:g} s)"
