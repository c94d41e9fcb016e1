"""Resources arithmetic and Range validation."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execbroker.planner import Range, Resources

from .helpers import at

amounts = st.builds(Resources, st.integers(0, 100), st.integers(0, 100), st.integers(0, 100))


def test_defaults_are_zero() -> None:
    assert Resources() == Resources(0, 0, 0)


def test_add_and_sub_are_componentwise() -> None:
    a = Resources(4, 16, 250)
    b = Resources(1, 2, 3)
    assert a + b == Resources(5, 18, 253)
    assert a - b == Resources(3, 14, 247)


def test_fits_within_needs_every_component() -> None:
    limit = Resources(4, 16, 100)
    assert Resources(4, 16, 100).fits_within(limit)
    assert Resources(0, 0, 0).fits_within(limit)
    assert not Resources(5, 1, 1).fits_within(limit)
    assert not Resources(1, 17, 1).fits_within(limit)
    assert not Resources(1, 1, 101).fits_within(limit)


def test_scaled_and_max_with() -> None:
    assert Resources(4, 16, 250).scaled(2) == Resources(8, 32, 500)
    assert Resources(4, 1, 9).max_with(Resources(2, 8, 9)) == Resources(4, 8, 9)


def test_resources_are_frozen_and_slotted() -> None:
    r = Resources(1, 2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.cores = 5  # type: ignore[misc]
    assert not hasattr(r, "__dict__")
    assert hash(r) == hash(Resources(1, 2, 3))


@given(amounts, amounts)
def test_arithmetic_laws(a: Resources, b: Resources) -> None:
    assert (a + b) - b == a
    assert a.fits_within(a + b)
    m = a.max_with(b)
    assert a.fits_within(m) and b.fits_within(m)
    assert m == b.max_with(a)
    assert a.scaled(3) == a + a + a


@pytest.mark.parametrize(
    ("low", "high"),
    [(1, 4), (3, 3), (timedelta(hours=1), timedelta(hours=2)), (at(0), at(1))],
)
def test_range_accepts_ordered_bounds(low: object, high: object) -> None:
    r = Range(low, high)
    assert (r.min, r.max) == (low, high)
    assert low in r and high in r


def test_range_rejects_min_above_max_naming_both() -> None:
    with pytest.raises(ValueError, match=r"8.*4"):
        Range(8, 4)


def test_range_rejects_reversed_durations_and_instants_in_iso_form() -> None:
    with pytest.raises(ValueError, match=r"PT3H.*PT2H"):
        Range(timedelta(hours=3), timedelta(hours=2))
    with pytest.raises(ValueError, match=r"2030-01-01T05:00:00Z.*2030-01-01T01:00:00Z"):
        Range(at(5), at(1))
