"""``Steps`` in tiny blocks (split and merged all the time) reads back as one flat list would."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from execbroker.planner.steps import Steps

from .helpers import T0

instants = st.integers(0, 60).map(lambda k: T0 + timedelta(minutes=k))
loads = st.lists(st.integers(0, 9), min_size=4, max_size=4)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), instants, loads),
        st.tuples(st.just("delete"), instants, st.none()),
        st.tuples(st.just("add"), st.tuples(instants, instants), loads),
    ),
    max_size=80,
)


def _check(steps: Steps, times: list[datetime], columns: list[list[int]]) -> None:
    assert len(steps) == len(times)
    assert list(steps) == times
    for i in range(len(times) + 1):
        for j in range(i, len(times) + 1):
            assert steps[i:j] == times[i:j]
            assert steps.columns(i, j) == tuple(column[i:j] for column in columns)
    for k in range(-1, 62):
        t = T0 + timedelta(minutes=k)
        assert steps.bisect_left(t) == bisect_left(times, t)
        assert steps.bisect_right(t) == bisect_right(times, t)
        p = bisect_left(times, t)
        before = [column[p - 1] for column in columns] if p else [0, 0, 0, 0]
        assert steps.load_before(t) == before


@settings(max_examples=300, deadline=None)
@given(st.lists(instants, unique=True, max_size=12), st.sampled_from([1, 2, 4]), operations)
def test_steps_in_tiny_blocks_read_as_flat_lists(
    initial: list[datetime], block: int, ops: list[tuple[str, object, object]]
) -> None:
    times = sorted(initial)
    columns = [[k * (n + 1) for k in range(len(times))] for n in range(4)]
    steps = Steps(list(times), tuple(list(column) for column in columns), load=block)
    _check(steps, times, columns)
    for op, where, load in ops:
        if op == "insert":
            assert isinstance(where, datetime) and isinstance(load, list)
            if where in times:
                continue
            p = bisect_left(times, where)
            times.insert(p, where)
            for column, value in zip(columns, load, strict=True):
                column.insert(p, value)
            steps.insert(where, load)
        elif op == "delete":
            assert isinstance(where, datetime)
            if where not in times:
                continue
            p = times.index(where)
            del times[p]
            for column in columns:
                del column[p]
            steps.delete(where)
        else:
            assert isinstance(where, tuple) and isinstance(load, list)
            lo, hi = sorted(where)
            if lo not in times or hi not in times:
                continue  # the index only adds load between boundaries it has
            i, j = times.index(lo), times.index(hi)
            for column, delta in zip(columns, load, strict=True):
                column[i:j] = [value + delta for value in column[i:j]]
            steps.add(lo, hi, tuple(load))
        _check(steps, times, columns)
