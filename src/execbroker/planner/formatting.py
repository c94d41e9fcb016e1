"""How the planner spells values in its reasons: the protocol's own ISO-8601 forms, so a
client can quote them back (``execbroker.timeutil`` is pure, so the planner stays I/O-free)."""

from __future__ import annotations

from datetime import datetime, timedelta

from execbroker.timeutil import format_duration as fmt_duration
from execbroker.timeutil import format_instant as fmt_instant

__all__ = ["fmt_duration", "fmt_instant", "fmt_value"]


def fmt_value(value: object) -> str:
    """Any value a Range may hold, in the form a reason should show it."""
    if isinstance(value, datetime):
        return fmt_instant(value)
    if isinstance(value, timedelta):
        return fmt_duration(value)
    return str(value)
