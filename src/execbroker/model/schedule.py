"""The schedule a request asks for: a start window and a duration, or a range of durations."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import field_validator

from execbroker.model.common import WireModel
from execbroker.timeutil import parse_duration, parse_interval


class DurationRange(WireModel):
    """The seeds negotiate duration like cores: the least the task needs, the most it can use."""

    min: str | None = None
    max: str | None = None

    @field_validator("min", "max")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    def bounds(self) -> tuple[timedelta | None, timedelta | None]:
        low = parse_duration(self.min) if self.min else None
        high = parse_duration(self.max) if self.max else None
        if low is not None and high is not None and low > high:
            raise ValueError(f"min ({self.min}) is longer than max ({self.max})")
        return low, high


class RequestedSchedule(WireModel):
    start: str | None = None
    duration: str | DurationRange | None = None

    @field_validator("start")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is not None:
            parse_interval(value)
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | DurationRange | None) -> str | DurationRange | None:
        if isinstance(value, str):
            parse_duration(value)
        elif isinstance(value, DurationRange):
            value.bounds()
        return value

    def start_window(self) -> tuple[datetime, datetime] | None:
        return parse_interval(self.start) if self.start else None

    def duration_bounds(self) -> tuple[timedelta | None, timedelta | None]:
        if isinstance(self.duration, str):
            exact = parse_duration(self.duration)
            return exact, exact
        if isinstance(self.duration, DurationRange):
            return self.duration.bounds()
        return None, None


class ScheduleBlock(WireModel):
    requested: RequestedSchedule | None = None
