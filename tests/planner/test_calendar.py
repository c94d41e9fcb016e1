"""Calendar: peak load, group semantics, fits, release times, and the skip-ahead search."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execbroker.planner import Booking, Calendar, Quota, Resources
from execbroker.planner.search import earliest_start, earliest_starts

from .helpers import T0, at, hours, naive_peak

QUOTA = Quota(Resources(8, 32, 100), max_sessions=3, max_duration=hours(8))


def test_empty_calendar_holds_nothing() -> None:
    cal = Calendar([])
    assert len(cal) == 0
    assert cal.peak(at(0), at(10)) == (Resources(), 0)
    assert cal.fits(at(0), at(1), Resources(8, 32, 100), QUOTA)
    assert not cal.fits(at(0), at(1), Resources(9, 1, 1), QUOTA)
    assert cal.release_times(at(0), at(100)) == []


def test_peak_is_componentwise_max_over_window() -> None:
    cal = Calendar(
        [
            Booking(at(0), at(2), Resources(4, 1, 10)),
            Booking(at(1), at(3), Resources(1, 8, 10)),
            Booking(at(5), at(6), Resources(2, 2, 50)),
        ]
    )
    assert cal.peak(at(0), at(1)) == (Resources(4, 1, 10), 1)
    assert cal.peak(at(0), at(3)) == (Resources(5, 9, 20), 2)
    assert cal.peak(at(2), at(4)) == (Resources(1, 8, 10), 1)
    # Cores peak in one place, storage in another: both reported.
    assert cal.peak(at(0), at(6)) == (Resources(5, 9, 50), 2)
    assert cal.peak(at(3), at(5)) == (Resources(), 0)


def test_bookings_are_half_open() -> None:
    cal = Calendar([Booking(at(1), at(2), Resources(8, 32, 100))])
    assert cal.peak(at(0), at(1)) == (Resources(), 0)
    assert cal.peak(at(2), at(3)) == (Resources(), 0)
    assert cal.fits(at(2), at(3), Resources(8, 32, 100), QUOTA)
    assert cal.fits(at(0), at(1), Resources(8, 32, 100), QUOTA)
    assert not cal.fits(at(0), at(1) + timedelta(seconds=1), Resources(1, 0, 0), QUOTA)


def test_back_to_back_bookings_do_not_overlap() -> None:
    cal = Calendar(
        [Booking(at(0), at(1), Resources(8, 0, 0)), Booking(at(1), at(2), Resources(8, 0, 0))]
    )
    assert cal.peak(at(0), at(2)) == (Resources(8, 0, 0), 1)


def test_group_holds_max_of_active_members_and_one_session() -> None:
    cal = Calendar(
        [
            Booking(at(0), at(4), Resources(4, 1, 1), group="g"),
            Booking(at(0), at(2), Resources(2, 8, 1), group="g"),
            Booking(at(6), at(8), Resources(8, 1, 1), group="g"),
        ]
    )
    assert cal.peak(at(0), at(2)) == (Resources(4, 8, 1), 1)
    assert cal.peak(at(2), at(4)) == (Resources(4, 1, 1), 1)
    assert cal.peak(at(4), at(6)) == (Resources(), 0)
    assert cal.peak(at(0), at(8)) == (Resources(8, 8, 1), 1)


def test_groups_add_to_each_other_and_to_ungrouped_bookings() -> None:
    cal = Calendar(
        [
            Booking(at(0), at(2), Resources(2, 0, 0), group="a"),
            Booking(at(0), at(2), Resources(3, 0, 0), group="a"),
            Booking(at(1), at(3), Resources(1, 0, 0), group="b"),
            Booking(at(1), at(3), Resources(1, 0, 0)),
        ]
    )
    assert cal.peak(at(0), at(1)) == (Resources(3, 0, 0), 1)
    assert cal.peak(at(1), at(2)) == (Resources(5, 0, 0), 3)
    # Sessions: "a" ends at 2, "b" and the ungrouped booking run on.
    assert cal.peak(at(2), at(3)) == (Resources(2, 0, 0), 2)


def test_group_alternatives_leave_room_that_their_sum_would_not() -> None:
    offers = [Booking(at(0), at(2), Resources(6, 0, 0), group="set") for _ in range(3)]
    cal = Calendar(offers)
    assert cal.fits(at(0), at(2), Resources(2, 0, 0), QUOTA)
    assert not cal.fits(at(0), at(2), Resources(3, 0, 0), QUOTA)


def test_fits_counts_sessions() -> None:
    cal = Calendar([Booking(at(0), at(1), Resources(1, 1, 1)) for _ in range(2)])
    assert cal.fits(at(0), at(1), Resources(1, 1, 1), QUOTA)
    full = Calendar([Booking(at(0), at(1), Resources(1, 1, 1)) for _ in range(3)])
    assert not full.fits(at(0), at(1), Resources(1, 1, 1), QUOTA)
    assert full.fits(at(1), at(2), Resources(1, 1, 1), QUOTA)


def test_fits_checks_each_component() -> None:
    cal = Calendar([Booking(at(0), at(1), Resources(4, 16, 50))])
    assert cal.fits(at(0), at(1), Resources(4, 16, 50), QUOTA)
    assert not cal.fits(at(0), at(1), Resources(5, 0, 0), QUOTA)
    assert not cal.fits(at(0), at(1), Resources(0, 17, 0), QUOTA)
    assert not cal.fits(at(0), at(1), Resources(0, 0, 51), QUOTA)


def test_release_times_are_sorted_distinct_ends_in_half_open_window() -> None:
    cal = Calendar(
        [
            Booking(at(0), at(3), Resources(1, 0, 0)),
            Booking(at(0), at(1), Resources(1, 0, 0)),
            Booking(at(0), at(3), Resources(1, 0, 0), group="g"),
            Booking(at(0), at(5), Resources(1, 0, 0), group="g"),
        ]
    )
    assert cal.release_times(at(0), at(10)) == [at(1), at(3), at(5)]
    assert cal.release_times(at(1), at(3)) == [at(3)]
    assert cal.release_times(at(3), at(4)) == []


def test_without_group_drops_only_that_group() -> None:
    bookings = [
        Booking(at(0), at(1), Resources(1, 0, 0), group="a"),
        Booking(at(0), at(1), Resources(2, 0, 0), group="a"),
        Booking(at(0), at(1), Resources(4, 0, 0), group="b"),
        Booking(at(0), at(1), Resources(1, 0, 0)),
    ]
    cal = Calendar(bookings)
    assert len(cal) == 4
    assert cal.bookings == tuple(bookings)
    rest = cal.without_group("a")
    assert len(rest) == 2
    assert rest.peak(at(0), at(1)) == (Resources(5, 0, 0), 2)
    assert len(cal.without_group("nope")) == 4


def test_booking_validation() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        Booking(at(2), at(1), Resources())
    with pytest.raises(ValueError, match="timezone-aware"):
        Booking(datetime(2030, 1, 1), datetime(2030, 1, 2), Resources())
    with pytest.raises(ValueError, match="negative"):
        Booking(at(0), at(1), Resources(-1, 0, 0))
    empty = Calendar([Booking(at(1), at(1), Resources(8, 32, 100))])
    assert empty.peak(at(0), at(2)) == (Resources(), 0)


def test_earliest_fit_skips_to_the_end_of_an_over_full_segment() -> None:
    cal = Calendar(
        [Booking(at(0), at(1), Resources(8, 0, 0)), Booking(at(2), at(3), Resources(8, 0, 0))]
    )
    every_half_hour = [at(k / 2) for k in range(12)]
    one = Resources(1, 0, 0)
    assert cal.earliest_fit(every_half_hour, hours(1), one, QUOTA) == at(1)
    assert cal.earliest_fit(every_half_hour, hours(1.5), one, QUOTA) == at(3)
    assert cal.earliest_fit(every_half_hour[:6], hours(1.5), one, QUOTA) is None
    assert cal.earliest_fit(every_half_hour, hours(1), Resources(9, 0, 0), QUOTA) is None
    assert cal.earliest_fit([], hours(1), one, QUOTA) is None


def test_a_long_calendar_uses_block_maxima_correctly() -> None:
    # Enough segments that peak reads whole blocks; compare with the brute-force model.
    bookings = [
        Booking(at(k), at(k + 3), Resources(k % 7, (k * 5) % 11, (k * 3) % 13)) for k in range(600)
    ]
    windows = [(0, 600), (1, 500), (63, 129), (64, 128), (100, 101), (250, 599)]
    cal = Calendar(bookings)
    for lo, hi in windows * 3:  # the first long windows are scanned, the later read blocks
        assert cal.peak(at(lo), at(hi)) == naive_peak(bookings, at(lo), at(hi))
    for lo, hi in windows:  # each on a calendar that has read no window yet: scanned
        assert Calendar(bookings).peak(at(lo), at(hi)) == naive_peak(bookings, at(lo), at(hi))


# --- properties against the brute-force model -------------------------------------------------

instants = st.integers(0, 24).map(at)
resources = st.builds(Resources, st.integers(0, 4), st.integers(0, 4), st.integers(0, 4))


@st.composite
def bookings(draw: st.DrawFn) -> Booking:
    start = draw(st.integers(0, 22))
    end = draw(st.integers(start, 24))
    group = draw(st.none() | st.sampled_from(["a", "b", "c"]))
    return Booking(at(start), at(end), draw(resources), group)


booking_lists = st.lists(bookings(), max_size=25)
quotas = st.builds(
    Quota, resources, st.integers(0, 4), st.just(hours(24)), st.just(timedelta(days=7))
)


@settings(max_examples=75)
@given(booking_lists, instants, instants)
def test_peak_matches_brute_force(items: list[Booking], a: datetime, b: datetime) -> None:
    start, end = min(a, b), max(a, b)
    assert Calendar(items).peak(start, end) == naive_peak(items, start, end)


sorted_instants = st.lists(st.integers(0, 48), unique=True).map(
    lambda ks: [T0 + timedelta(minutes=30 * k) for k in sorted(ks)]
)


@settings(max_examples=75)
@given(booking_lists, sorted_instants, st.integers(0, 12), resources, quotas)
def test_earliest_fit_equals_testing_each_candidate(
    items: list[Booking], candidates: list[datetime], halves: int, size: Resources, quota: Quota
) -> None:
    cal = Calendar(items)
    duration = timedelta(minutes=30 * halves)
    expected = next(
        (t for t in candidates if cal.fits(t, t + duration, size, quota)),
        None,
    )
    assert cal.earliest_fit(candidates, duration, size, quota) == expected
    assert earliest_start(cal, candidates, duration, size, quota) == expected


@settings(max_examples=75)
@given(
    booking_lists,
    st.integers(0, 8),
    st.lists(st.tuples(resources, st.integers(1, 6).map(hours)), min_size=1, max_size=6),
    quotas,
)
def test_earliest_starts_equals_one_search_per_shape(
    items: list[Booking], first: int, shapes: list[tuple[Resources, timedelta]], quota: Quota
) -> None:
    cal = Calendar(items)
    candidates = [at(first), *cal.release_times(at(first), at(24))]
    found = earliest_starts(cal, candidates, shapes, quota)
    assert set(found) == set(shapes)
    for size, duration in shapes:
        assert found[size, duration] == earliest_start(cal, candidates, duration, size, quota)


@settings(max_examples=75)
@given(booking_lists, st.integers(0, 8), st.integers(1, 6), resources, quotas)
def test_earliest_start_equals_linear_scan(
    items: list[Booking], first: int, length: int, size: Resources, quota: Quota
) -> None:
    cal = Calendar(items)
    candidates = [at(first), *cal.release_times(at(first), at(24))]
    duration = hours(length)
    expected = next(
        (t for t in candidates if cal.fits(t, t + duration, size, quota)),
        None,
    )
    assert earliest_start(cal, candidates, duration, size, quota) == expected


def test_earliest_start_skips_a_fully_booked_stretch() -> None:
    cal = Calendar([Booking(at(k), at(k + 2), Resources(8, 0, 0)) for k in range(0, 20)])
    candidates = [T0, *cal.release_times(T0, at(30))]
    assert earliest_start(cal, candidates, hours(1), Resources(1, 0, 0), QUOTA) == at(21)
    assert earliest_start(cal, candidates[:5], hours(1), Resources(1, 0, 0), QUOTA) is None
