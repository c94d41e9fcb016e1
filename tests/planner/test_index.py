"""The hold index, changed a booking at a time, always equals the sweep over the raw bookings."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from execbroker.planner import Booking, Calendar, Quota, Resources
from execbroker.planner.index import Hold, HoldIndex

from .helpers import T0, load_at

KEYS = [f"s{k}" for k in range(12)]
GROUPS = [None, None, "a", "b", "c"]
QUOTA = Quota(Resources(6, 12, 4), max_sessions=3, max_duration=timedelta(days=1))
HOUR3, BIG = timedelta(hours=3), Resources(4, 8, 2)

instants = st.integers(0, 40).map(lambda k: T0 + timedelta(minutes=15 * k))


@st.composite
def holds(draw: st.DrawFn) -> Hold:
    start = draw(instants)
    length = draw(st.integers(0, 16)) * timedelta(minutes=15)
    resources = Resources(draw(st.integers(0, 4)), draw(st.integers(0, 8)), draw(st.integers(0, 3)))
    expires = draw(st.none() | instants)
    return Hold(Booking(start, start + length, resources, draw(st.sampled_from(GROUPS))), expires)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(KEYS), holds()),
        st.tuples(st.just("discard"), st.sampled_from(KEYS), st.none()),
        st.tuples(st.just("expire"), st.none(), instants),
    ),
    max_size=60,
)


def _live(model: dict[str, Hold], now: datetime | None) -> list[Booking]:
    return [
        h.booking for h in model.values() if h.expires is None or now is None or h.expires > now
    ]


def _apply(
    index: HoldIndex, model: dict[str, Hold], op: str, key: object, arg: object
) -> dict[str, Hold]:
    """One operation on the index and on the plain model beside it; the model after it."""
    if op == "put":
        assert isinstance(key, str) and isinstance(arg, Hold)
        index.put(key, arg)
        return {**model, key: arg}
    if op == "discard":
        assert isinstance(key, str)
        index.discard(key)
        return {k: h for k, h in model.items() if k != key}
    assert isinstance(arg, datetime)
    index.expire(arg)
    return {k: h for k, h in model.items() if h.expires is None or h.expires > arg}


@settings(max_examples=300, deadline=None)
@given(operations)
def test_index_equals_sweep_after_every_change(ops: list[tuple[str, object, object]]) -> None:
    index = HoldIndex()
    model: dict[str, Hold] = {}
    for op, key, arg in ops:
        model = _apply(index, model, op, key, arg)
        swept = Calendar(_live(model, None))
        assert index.calendar().profile() == swept.profile()
        assert len(index) == len(model)
        assert HoldIndex(model).calendar().profile() == swept.profile()  # rebuilt at once


changes = st.lists(st.tuples(st.sampled_from(KEYS), st.none() | holds()), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(changes, max_size=4))
def test_a_batch_of_changes_equals_them_one_at_a_time(
    batches: list[list[tuple[str, Hold | None]]],
) -> None:
    # ``update`` collapses each offer set once per batch, not once per member
    batched, single = HoldIndex(), HoldIndex()
    model: dict[str, Hold] = {}
    for batch in batches:
        batched.update(batch)
        for key, hold in batch:
            if hold is None:
                single.discard(key)
                model.pop(key, None)
            else:
                single.put(key, hold)
                model[key] = hold
        assert batched.calendar().profile() == single.calendar().profile()
        assert batched.calendar().profile() == Calendar(_live(model, None)).profile()
        assert batched.holds() == single.holds() == model
        for group in GROUPS[2:]:
            assert batched.group_pieces(group) == single.group_pieces(group)
            assert batched.group_members(group) == single.group_members(group)


@settings(max_examples=100, deadline=None)
@given(operations, instants, instants)
def test_index_answers_as_the_brute_force_model(
    ops: list[tuple[str, object, object]], lo: datetime, hi: datetime
) -> None:
    index = HoldIndex()
    model: dict[str, Hold] = {}
    for op, key, arg in ops:
        if op == "put":
            assert isinstance(key, str) and isinstance(arg, Hold)
            index.put(key, arg)
            model[key] = arg
        elif op == "discard":
            assert isinstance(key, str)
            index.discard(key)
            model.pop(key, None)
    bookings = list(model.values())
    calendar = index.calendar()
    start, end = min(lo, hi), max(lo, hi)
    instants_in = sorted(
        {start}
        | {t for h in bookings for t in (h.booking.start, h.booking.end) if start <= t < end}
    )
    if start < end:
        peak = Resources()
        most = 0
        for instant in instants_in:
            held, sessions = load_at([h.booking for h in bookings], instant)
            peak = peak.max_with(held)
            most = max(most, sessions)
        assert calendar.peak(start, end) == (peak, most)
        quota = Quota(Resources(6, 12, 4), max_sessions=3, max_duration=timedelta(days=1))
        assert calendar.fits(start, end, Resources(1, 1, 0), quota) == Calendar(
            [h.booking for h in bookings]
        ).fits(start, end, Resources(1, 1, 0), quota)


def test_a_view_follows_changes_once_asked_again() -> None:
    index = HoldIndex()
    hour = timedelta(hours=1)
    index.put("x", Hold(Booking(T0, T0 + hour, Resources(2, 2, 0))))
    assert index.calendar().peak(T0, T0 + hour) == (Resources(2, 2, 0), 1)
    index.put("y", Hold(Booking(T0, T0 + hour, Resources(1, 1, 0))))
    assert index.calendar().peak(T0, T0 + hour) == (Resources(3, 3, 0), 2)
    index.discard("x")
    index.discard("y")
    assert index.calendar().profile() == ([], ([], [], [], []), [])


@settings(max_examples=200, deadline=None)
@given(operations, instants, instants, st.sampled_from(["a", "b", "c"]))
def test_a_window_less_one_group_equals_the_sweep_without_it(
    ops: list[tuple[str, object, object]], lo: datetime, hi: datetime, group: str
) -> None:
    index = HoldIndex()
    for op, key, arg in ops:
        if op == "put":
            assert isinstance(key, str) and isinstance(arg, Hold)
            index.put(key, arg)
        elif op == "discard":
            assert isinstance(key, str)
            index.discard(key)
    start, end = min(lo, hi), max(lo, hi) + timedelta(minutes=15)
    rest = Calendar(h.booking for h in index.holds().values() if h.booking.group != group)
    window = index.calendar().window(start, end, index.group_pieces(group))
    assert window.peak(start, end) == rest.peak(start, end)
    quota = Quota(Resources(6, 12, 4), max_sessions=3, max_duration=timedelta(days=1))
    for size in (Resources(1, 1, 0), Resources(3, 6, 2)):
        assert window.fits(start, end, size, quota) == rest.fits(start, end, size, quota)


def test_an_offer_stops_holding_when_it_expires() -> None:
    index = HoldIndex()
    hour = timedelta(hours=1)
    index.put("o", Hold(Booking(T0, T0 + hour, Resources(1, 1, 0), "set"), expires=T0))
    index.put("o", Hold(Booking(T0, T0 + hour, Resources(1, 1, 0)), expires=None))  # accepted
    assert index.expire(T0 + hour) == []
    assert index.calendar().peak(T0, T0 + hour) == (Resources(1, 1, 0), 1)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_an_index_in_tiny_blocks_holds_the_brute_force_sum(
    ops: list[tuple[str, object, object]],
) -> None:
    # blocks of two boundaries split and merge at nearly every change
    index = HoldIndex(block=2)
    model: dict[str, Hold] = {}
    for op, key, arg in ops:
        model = _apply(index, model, op, key, arg)
        calendar = index.calendar()
        live = _live(model, None)
        for k in range(-1, 58):
            instant = T0 + timedelta(minutes=15 * k)
            held = calendar.peak(instant, instant + timedelta(minutes=15))
            assert held == load_at(live, instant)
        assert calendar.release_times(T0, T0 + timedelta(days=1)) == sorted(
            {b.end for b in live if b.end > T0}
        )
        candidates = calendar.candidate_starts(T0, T0 + timedelta(days=1))
        for duration, size in ((timedelta(hours=1), Resources(1, 1, 0)), (HOUR3, BIG)):
            expected = next(
                (t for t in candidates if calendar.fits(t, t + duration, size, QUOTA)), None
            )
            assert calendar.earliest_fit(candidates, duration, size, QUOTA) == expected
    assert HoldIndex(model, block=2).calendar().profile() == index.calendar().profile()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.booleans(), min_size=100, max_size=400), st.integers(1, 8))
def test_a_long_fragmented_index_finds_the_first_fit_across_blocks_and_chunks(
    full: list[bool], block: int
) -> None:
    # hundreds of segments: ``earliest_fit`` reads them a chunk at a time, over many blocks
    minute = timedelta(minutes=1)
    holds = {
        f"b{k}": Hold(Booking(T0 + 2 * k * minute, T0 + (2 * k + 1) * minute, BIG))
        for k, taken in enumerate(full)
        if taken
    }
    index = HoldIndex(block=block)
    index.update(holds.items())
    calendar = index.calendar()
    candidates = calendar.candidate_starts(T0, T0 + timedelta(days=1))
    for duration in (minute, 3 * minute, 5 * minute):
        expected = next((t for t in candidates if calendar.fits(t, t + duration, BIG, QUOTA)), None)
        assert calendar.earliest_fit(candidates, duration, BIG, QUOTA) == expected
        swept = Calendar(h.booking for h in holds.values())
        assert swept.earliest_fit(candidates, duration, BIG, QUOTA) == expected
    assert calendar.profile() == Calendar(h.booking for h in holds.values()).profile()
