"""ISO-8601 instants, durations and intervals, as the schema spells them.

isodate does the parsing; this module only adds the interval forms the schema allows
(``start/end``, ``start/duration``, ``duration/end``) and our rules: every instant is
UTC-aware (a naive one is taken as UTC) and durations are exact (no years or months,
whose length depends on the calendar). Both are bounded (``EARLIEST``..``LATEST``,
``MAX_DURATION``) so that no sum of an instant and a duration can overflow a datetime:
an out-of-range value is a TimeFormatError (a 422 naming the field), never an overflow.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import isodate

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
MAX_DURATION = timedelta(days=36_525)  # a century: far beyond any grant, far below overflow


class TimeFormatError(ValueError):
    """A string that is not the ISO-8601 form it should be, or out of range."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_instant(text: str) -> datetime:
    """An ISO-8601 date-time (or a date, meaning its midnight), as an aware UTC datetime."""
    text = text.strip()
    if len(text) > 64:
        raise TimeFormatError(f"{text[:64]!r}... is too long for an ISO-8601 date-time")
    try:
        if "T" in text or " " in text:
            value = isodate.parse_datetime(text.replace(" ", "T"))
        else:
            day = isodate.parse_date(text)
            value = datetime(day.year, day.month, day.day)
    except (isodate.ISO8601Error, ValueError, OverflowError) as error:
        raise TimeFormatError(f"{text!r} is not an ISO-8601 date-time") from error
    if isinstance(value, date) and not isinstance(value, datetime):  # pragma: no cover
        value = datetime(value.year, value.month, value.day)
    try:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        value = LATEST
    if not EARLIEST <= value < LATEST:
        raise TimeFormatError(
            f"{text!r} is out of range: give an instant from {EARLIEST.year} to {LATEST.year - 1}"
        )
    return value


def parse_duration(text: str) -> timedelta:
    """A positive ISO-8601 duration such as ``PT2H30M`` or ``P1DT12H``."""
    text = text.strip()
    if len(text) > 64:
        raise TimeFormatError(f"{text[:64]!r}... is too long for an ISO-8601 duration")
    return _duration(text)


@lru_cache(maxsize=256)
def _duration(text: str) -> timedelta:
    """``parse_duration`` of a stripped, short text: the same few durations (a request's,
    the configuration's) are read at every request, ~8 us each by isodate. Errors are
    raised anew each time (``lru_cache`` keeps only results)."""
    try:
        value = isodate.parse_duration(text)
    except (OverflowError, ArithmeticError):
        raise TimeFormatError(
            f"{text!r} is out of range: at most {MAX_DURATION.days} days"
        ) from None
    except (isodate.ISO8601Error, ValueError) as error:
        raise TimeFormatError(f"{text!r} is not an ISO-8601 duration") from error
    if not isinstance(value, timedelta):
        raise TimeFormatError(
            f"{text!r}: years and months have no fixed length; give days, hours or minutes"
        )
    if value <= timedelta(0):
        raise TimeFormatError(f"{text!r}: a duration must be positive")
    if value > MAX_DURATION:
        raise TimeFormatError(f"{text!r} is out of range: at most {MAX_DURATION.days} days")
    return value


def parse_interval(text: str) -> tuple[datetime, datetime]:
    """An ISO-8601 interval as (start, end); a single instant is the interval [t, t]."""
    parts = text.strip().split("/")
    if len(parts) == 1:
        instant = parse_instant(parts[0])
        return instant, instant
    if len(parts) != 2 or not all(parts):
        raise TimeFormatError(f"{text!r} is not an ISO-8601 interval (start/end)")
    first, second = parts
    if first.upper().startswith("P"):
        end = parse_instant(second)
        return end - parse_duration(first), end
    start = parse_instant(first)
    if second.upper().startswith("P"):
        return start, start + parse_duration(second)
    end = parse_instant(second)
    if end < start:
        raise TimeFormatError(f"{text!r}: the interval ends before it starts")
    return start, end


def format_instant(value: datetime) -> str:
    """UTC, second precision, with a ``Z``: the form people can read and every parser takes."""
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(value: timedelta) -> str:
    return isodate.duration_isoformat(value)


def format_interval(start: datetime, end: datetime) -> str:
    return f"{format_instant(start)}/{format_instant(end)}"
