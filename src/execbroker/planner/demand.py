"""What a client asks for: a range for every resource, for the duration and for the start."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .resources import Range


@dataclass(frozen=True, slots=True)
class Demand:
    """Any offer inside every one of these ranges satisfies the client."""

    cores: Range[int]
    memory_gib: Range[int]
    storage_gib: Range[int]
    duration: Range[timedelta]
    start: Range[datetime]
