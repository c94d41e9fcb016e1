"""Finding the earliest start at which a booking fits, with ``Calendar.fits`` as the last word."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import datetime, timedelta

from .calendar import Calendar
from .quota import Quota
from .resources import Resources


def earliest_start(
    calendar: Calendar,
    candidates: Sequence[datetime],
    duration: timedelta,
    resources: Resources,
    quota: Quota,
) -> datetime | None:
    """The first of the sorted ``candidates`` t at which ``calendar.fits(t, t + duration, ...)``.

    ``Calendar.earliest_fit`` finds it in one pass; ``fits`` then confirms it, so the planner
    never offers a start that the acceptance check (which uses ``fits``) would refuse.
    """
    if not candidates:
        return None
    # Most often the first candidate fits: ``fits`` says so at C speed (a max over each
    # column's slice), where ``earliest_fit`` steps through every segment in Python.
    first = candidates[0]
    if calendar.fits(first, first + duration, resources, quota):
        return first
    rest = candidates
    while rest:
        start = calendar.earliest_fit(rest, duration, resources, quota)
        if start is None or calendar.fits(start, start + duration, resources, quota):
            return start
        rest = rest[bisect_right(rest, start) :]  # pragma: no cover - only if the two disagree
    return None


Shape = tuple[Resources, timedelta]


def earliest_starts(
    calendar: Calendar,
    candidates: Sequence[datetime],
    shapes: Sequence[Shape],
    quota: Quota,
) -> dict[Shape, datetime | None]:
    """``earliest_start`` for each (size, duration), sharing work between them.

    A shape at least as large and as long as another cannot fit anywhere the smaller one does
    not, so shapes are searched smallest first and each search starts where the largest smaller
    shape's ended (and is skipped when a smaller shape fits nowhere). On a fully booked window
    that turns one full pass per shape into one pass in all.
    """
    found: dict[Shape, datetime | None] = {}
    ordered = sorted(
        set(shapes), key=lambda s: (s[0].cores, s[0].memory_gib, s[0].storage_gib, s[1])
    )
    for size, duration in ordered:
        below = [
            when
            for (smaller, shorter), when in found.items()
            if shorter <= duration and smaller.fits_within(size)
        ]
        if None in below:
            found[size, duration] = None
            continue
        floor = max((w for w in below if w is not None), default=None)
        rest = candidates if floor is None else candidates[bisect_left(candidates, floor) :]
        found[size, duration] = earliest_start(calendar, rest, duration, size, quota)
    return found
