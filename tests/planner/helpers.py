"""Shared test helpers: a fixed clock origin and a brute-force model of what a calendar holds.

The brute-force model is deliberately naive (evaluate every instant where anything changes) so
that it can judge the Calendar's sweep rather than repeat it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from execbroker.planner import Booking, Quota, Resources

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(hours: float) -> datetime:
    """T0 plus some hours."""
    return T0 + timedelta(hours=hours)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def load_at(bookings: Iterable[Booking], instant: datetime) -> tuple[Resources, int]:
    """What is held at one instant: ungrouped bookings add up, a group adds its members' max."""
    held = Resources()
    sessions = 0
    groups: dict[str, Resources] = {}
    for b in bookings:
        if not b.start <= instant < b.end:
            continue
        if b.group is None:
            held += b.resources
            sessions += 1
        else:
            groups[b.group] = groups.get(b.group, Resources()).max_with(b.resources)
    for r in groups.values():
        held += r
        sessions += 1
    return held, sessions


def naive_peak(bookings: list[Booking], start: datetime, end: datetime) -> tuple[Resources, int]:
    """Componentwise max of load_at over [start, end), by evaluating every change point."""
    if start >= end:
        return Resources(), 0
    instants = {start} | {t for b in bookings for t in (b.start, b.end) if start < t < end}
    peak = Resources()
    most = 0
    for instant in instants:
        held, sessions = load_at(bookings, instant)
        peak = peak.max_with(held)
        most = max(most, sessions)
    return peak, most


def overbooked(bookings: list[Booking], quota: Quota) -> str | None:
    """The first instant at which the bookings exceed the quota, described, or None."""
    for instant in sorted({b.start for b in bookings}):
        held, sessions = load_at(bookings, instant)
        if not held.fits_within(quota.resources) or sessions > quota.max_sessions:
            return f"at {instant}: {held} held in {sessions} sessions, quota {quota}"
    return None
