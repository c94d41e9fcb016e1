"""The most a broker may hold: the ceiling every plan and every acceptance is checked against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .resources import Resources


@dataclass(frozen=True, slots=True)
class Quota:
    """Limits at any instant (resources, sessions) and per session (duration, how far ahead)."""

    resources: Resources
    max_sessions: int
    max_duration: timedelta
    horizon: timedelta = timedelta(days=7)
