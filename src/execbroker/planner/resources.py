"""Amounts of compute resources and inclusive ranges of wanted values.

Resources are compared per component, never as a total: a platform can run out of memory while
it still has cores, so every quota check must hold for cores, memory and storage separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from .formatting import fmt_value


@dataclass(frozen=True, slots=True)
class Resources:
    """Cores, memory (GiB) and storage (GiB) held or asked for."""

    cores: int = 0
    memory_gib: int = 0
    storage_gib: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cores + other.cores,
            self.memory_gib + other.memory_gib,
            self.storage_gib + other.storage_gib,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cores - other.cores,
            self.memory_gib - other.memory_gib,
            self.storage_gib - other.storage_gib,
        )

    def fits_within(self, limit: Resources) -> bool:
        """True when no component exceeds the limit's."""
        return (
            self.cores <= limit.cores
            and self.memory_gib <= limit.memory_gib
            and self.storage_gib <= limit.storage_gib
        )

    def scaled(self, k: int) -> Resources:
        """k times as much of everything (k units of a standard size)."""
        return Resources(self.cores * k, self.memory_gib * k, self.storage_gib * k)

    def max_with(self, other: Resources) -> Resources:
        """Componentwise max: what alternatives hold when only one of them will be used."""
        return Resources(
            max(self.cores, other.cores),
            max(self.memory_gib, other.memory_gib),
            max(self.storage_gib, other.storage_gib),
        )

    def describe(self) -> str:
        """Human form for reasons, e.g. ``4 cores, 16 GiB memory, 250 GiB storage``."""
        return f"{self.cores} cores, {self.memory_gib} GiB memory, {self.storage_gib} GiB storage"


T = TypeVar("T", int, timedelta, datetime)


@dataclass(frozen=True, slots=True)
class Range(Generic[T]):
    """An inclusive [min, max] of acceptable values; an empty range is a caller's error."""

    min: T
    max: T

    def __post_init__(self) -> None:
        if self.min > self.max:
            raise ValueError(
                f"range minimum {fmt_value(self.min)} is greater than its maximum "
                f"{fmt_value(self.max)}"
            )

    def __contains__(self, value: T) -> bool:
        return self.min <= value <= self.max
