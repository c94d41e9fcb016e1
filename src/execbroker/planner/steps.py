"""A step function kept in blocks: boundaries and per-segment load, edited in place.

``HoldIndex`` adds and removes boundaries as bookings come and go. In one flat list each new
boundary shifts every later entry (at 100 000 bookings, ~100 us per list, five lists); here the
boundaries and the four load columns are cut into blocks of at most ``2 * BLOCK`` entries, so an
insert or delete shifts one block, and adding a booking's load is still a C-speed slice per
block it covers. A block list is plain data, simpler than a tree, and reading a window back
(``times``, ``columns``) is one slice per block it spans.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from datetime import datetime
from itertools import accumulate, chain

_COLUMNS = 4  # cores, memory, storage, sessions
BLOCK = 512  # a block splits past twice this; neighbours merge below half of it


class Steps:
    """Sorted distinct boundaries, each with the load held from it to the next one.

    The last boundary's load is zeros (nothing is held after it). Positions are global
    (0 .. len - 1), as in one flat list; ``columns(i, j)`` is the load over [i, j).
    """

    __slots__ = ("_columns", "_firsts", "_length", "_load", "_offsets", "_times")

    def __init__(
        self, times: list[datetime], columns: tuple[list[int], ...], *, load: int = BLOCK
    ) -> None:
        """From sorted ``times`` and one load per time in each of the four ``columns``;
        ``load`` is the block size (small only in tests, to split and merge often)."""
        self._load = load
        self._times: list[list[datetime]] = [
            times[k : k + load] for k in range(0, len(times), load)
        ] or [[]]
        self._columns: list[tuple[list[int], ...]] = [
            tuple(column[k : k + load] for column in columns) for k in range(0, len(times), load)
        ] or [tuple([] for _ in range(_COLUMNS))]
        self._firsts = [block[0] for block in self._times if block]
        self._length = len(times)
        self._offsets: list[int] | None = None

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[datetime]:
        return chain.from_iterable(self._times)

    def __getitem__(self, k: slice) -> list[datetime]:
        """The boundaries at positions ``k`` (a slice without step)."""
        i, j, step = k.indices(self._length)
        if step != 1:
            raise ValueError("Steps slices take no step")
        return self._gather(self._times, i, j)

    def bisect_left(self, time: datetime) -> int:
        b = self._block(time)
        return self._offset(b) + bisect_left(self._times[b], time)

    def bisect_right(self, time: datetime) -> int:
        b = self._block(time)
        return self._offset(b) + bisect_right(self._times[b], time)

    def columns(self, i: int, j: int) -> tuple[list[int], ...]:
        """Each column's load over positions [i, j)."""
        if i >= j:
            return tuple([] for _ in range(_COLUMNS))
        offsets = self._offset_list()
        first = bisect_right(offsets, i) - 1
        if j <= offsets[first + 1]:  # within one block: the common case
            lo = offsets[first]
            return tuple(column[i - lo : j - lo] for column in self._columns[first])
        return tuple(
            self._gather([cols[n] for cols in self._columns], i, j) for n in range(_COLUMNS)
        )

    def _gather(self, blocks: list[list], i: int, j: int) -> list:
        if i >= j:
            return []
        offsets = self._offset_list()
        b = bisect_right(offsets, i) - 1
        out: list = []
        while i < j:
            lo, hi = offsets[b], offsets[b + 1]
            out.extend(blocks[b][i - lo : min(j, hi) - lo])
            i = hi
            b += 1
        return out

    def _block(self, time: datetime) -> int:
        """The block where ``time`` is or would go."""
        return max(bisect_right(self._firsts, time) - 1, 0)

    def _offset(self, b: int) -> int:
        return self._offset_list()[b]

    def _offset_list(self) -> list[int]:
        if self._offsets is None:  # after a change: one C-speed pass over the block sizes
            self._offsets = list(accumulate(map(len, self._times), initial=0))
        return self._offsets

    # -- changes -------------------------------------------------------------------------

    def load_before(self, time: datetime) -> list[int]:
        """The load of the segment that ``time`` falls in (zeros outside every segment)."""
        b = self._block(time)
        p = bisect_left(self._times[b], time)
        if p == 0:
            if b == 0:
                return [0] * _COLUMNS
            b -= 1
            p = len(self._times[b])
        return [column[p - 1] for column in self._columns[b]]

    def insert(self, time: datetime, load: list[int]) -> None:
        """Add the boundary ``time`` (not present) with the load from it to the next."""
        b = self._block(time)
        times = self._times[b]
        p = bisect_left(times, time)
        times.insert(p, time)
        for column, value in zip(self._columns[b], load, strict=True):
            column.insert(p, value)
        if p == 0:
            if self._firsts:
                self._firsts[b] = time
            else:
                self._firsts.append(time)
        self._length += 1
        self._offsets = None
        if len(times) > 2 * self._load:
            self._split(b)

    def delete(self, time: datetime) -> None:
        """Remove the boundary ``time`` (present)."""
        b = self._block(time)
        times = self._times[b]
        p = bisect_left(times, time)
        del times[p]
        for column in self._columns[b]:
            del column[p]
        self._length -= 1
        self._offsets = None
        if not times:
            if len(self._times) > 1:
                del self._times[b], self._columns[b], self._firsts[b]
            else:
                self._firsts.clear()
            return
        if p == 0:
            self._firsts[b] = times[0]
        if len(times) < self._load // 2 and b + 1 < len(self._times):
            self._merge(b)

    def add(self, start: datetime, end: datetime, deltas: tuple[int, ...]) -> None:
        """Add ``deltas`` (one per column) to the load of every segment in [start, end)."""
        b = self._block(start)
        p = bisect_left(self._times[b], start)
        while b < len(self._times):
            times = self._times[b]
            q = bisect_left(times, end)
            for column, delta in zip(self._columns[b], deltas, strict=True):
                if delta:  # a slice at once: a third of the time of an indexed loop
                    column[p:q] = [value + delta for value in column[p:q]]
            if q < len(times):
                return
            b += 1
            p = 0

    def _split(self, b: int) -> None:
        half = self._load
        times = self._times[b]
        self._times[b + 1 : b + 1] = [times[half:]]
        del times[half:]
        columns = self._columns[b]
        self._columns[b + 1 : b + 1] = [tuple(column[half:] for column in columns)]
        for column in columns:
            del column[half:]
        self._firsts.insert(b + 1, self._times[b + 1][0])

    def _merge(self, b: int) -> None:
        if len(self._times[b]) + len(self._times[b + 1]) > 2 * self._load:
            return
        self._times[b].extend(self._times[b + 1])
        for column, more in zip(self._columns[b], self._columns[b + 1], strict=True):
            column.extend(more)
        del self._times[b + 1], self._columns[b + 1], self._firsts[b + 1]
