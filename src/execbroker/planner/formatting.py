"""How the planner spells instants and durations in its reasons.

Kept here (not borrowed from elsewhere) so the planner stays a leaf package: reasons use the
same ISO-8601 forms the protocol does, so a client can quote them back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import isodate


def fmt_instant(value: datetime) -> str:
    """UTC, second precision, with a ``Z``."""
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_duration(value: timedelta) -> str:
    """ISO-8601, e.g. ``PT2H`` or ``P1DT12H``."""
    return isodate.duration_isoformat(value)


def fmt_value(value: object) -> str:
    """Any value a Range may hold, in the form a reason should show it."""
    if isinstance(value, datetime):
        return fmt_instant(value)
    if isinstance(value, timedelta):
        return fmt_duration(value)
    return str(value)
