"""What is already held over time, and whether a new booking still fits under the quota.

A calendar is built once per planning call and queried many times, so ``__init__`` does the
sorting: every booking (or every group of alternative bookings, collapsed first) adds its load at
its start and removes it at its end, running sums over the sorted boundaries give contiguous
segments of constant load, and block maxima over the segments make any window's peak a couple of
bisects plus a few C-speed ``max`` calls.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from itertools import accumulate, pairwise
from typing import TYPE_CHECKING, Protocol, overload

from .formatting import fmt_instant
from .quota import Quota
from .resources import Resources

if TYPE_CHECKING:
    from sortedcontainers import SortedList

    from .steps import Steps

# Segments per block of precomputed maxima: a peak query reads at most 2 partial blocks plus one
# maximum per whole block in between.
_BLOCK = 64
# Segments read at a time by ``earliest_fit``: one slice of each column per chunk.
_CHUNK = 64

# (start, end, cores, memory_gib, storage_gib): one stretch of constant load from one source.
_Piece = tuple[datetime, datetime, int, int, int]


class _Boundaries(Protocol):
    """What a calendar reads of its sorted boundaries: a list, or ``HoldIndex``'s ``Steps``."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[datetime]: ...
    def __getitem__(self, k: slice, /) -> list[datetime]: ...


@dataclass(frozen=True, slots=True)
class Booking:
    """Resources held over [start, end).

    Bookings sharing a non-None ``group`` are alternatives (the offers of one offer set, of which
    at most one will ever be accepted): together they hold, at each instant, the componentwise max
    of the members active then, and count as one session while any member is active.
    """

    start: datetime
    end: datetime
    resources: Resources
    group: str | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("booking start and end must be timezone-aware (UTC)")
        if self.end < self.start:
            raise ValueError(
                f"booking ends at {fmt_instant(self.end)}, "
                f"before it starts at {fmt_instant(self.start)}"
            )
        r = self.resources
        if min(r.cores, r.memory_gib, r.storage_gib) < 0:
            raise ValueError(f"booking holds negative resources: {r}")


def _collapse(members: Sequence[Booking]) -> list[_Piece]:
    """A group's alternatives as non-overlapping pieces carrying the members' componentwise max.

    Quadratic in the group's size, which is an offer set's handful of offers.
    """
    bounds = sorted({t for b in members if b.start < b.end for t in (b.start, b.end)})
    pieces: list[_Piece] = []
    for lo, hi in pairwise(bounds):
        active = [b.resources for b in members if b.start <= lo and b.end >= hi]
        if not active:
            continue
        c = max(r.cores for r in active)
        m = max(r.memory_gib for r in active)
        s = max(r.storage_gib for r in active)
        if pieces and pieces[-1][1] == lo and pieces[-1][2:] == (c, m, s):
            pieces[-1] = (pieces[-1][0], hi, c, m, s)
        else:
            pieces.append((lo, hi, c, m, s))
    return pieces


def _pieces(bookings: Iterable[Booking]) -> list[_Piece]:
    """Every booking as pieces that each count as one session while they last."""
    pieces: list[_Piece] = []
    groups: dict[str, list[Booking]] = {}
    for b in bookings:
        if b.group is not None:
            groups.setdefault(b.group, []).append(b)
        elif b.start < b.end:
            r = b.resources
            pieces.append((b.start, b.end, r.cores, r.memory_gib, r.storage_gib))
    for members in groups.values():
        if len(members) == 1:
            b = members[0]
            if b.start < b.end:
                r = b.resources
                pieces.append((b.start, b.end, r.cores, r.memory_gib, r.storage_gib))
        else:
            pieces.extend(_collapse(members))
    return pieces


def _sweep(pieces: Sequence[_Piece]) -> tuple[list[datetime], tuple[list[int], ...]]:
    """Boundary times and, for each segment [times[k], times[k+1]), the load held throughout.

    Returns ``times`` and four columns (cores, memory, storage, sessions) one shorter than it:
    per-boundary deltas, then running sums (``accumulate`` runs at C speed).
    """
    times = sorted({p[0] for p in pieces}.union([p[1] for p in pieces]))
    index = {t: k for k, t in enumerate(times)}
    n = len(times)
    dc, dm, ds, dn = [0] * n, [0] * n, [0] * n, [0] * n
    for start, end, c, m, s in pieces:
        i = index[start]
        j = index[end]
        dc[i] += c
        dc[j] -= c
        dm[i] += m
        dm[j] -= m
        ds[i] += s
        ds[j] -= s
        dn[i] += 1
        dn[j] -= 1
    return times, tuple(list(accumulate(d[:-1])) for d in (dc, dm, ds, dn))


def _block_maxima(values: list[int]) -> list[int]:
    return [max(values[k : k + _BLOCK]) for k in range(0, len(values), _BLOCK)]


def _range_max(values: list[int], blocks: list[int], i: int, j: int) -> int:
    """max(values[i:j]) for non-negative values, reading whole blocks from their maxima."""
    if j - i <= 2 * _BLOCK:
        return max(values[i:j], default=0)
    first = -(-i // _BLOCK)
    last = j // _BLOCK
    return max(
        max(values[i : first * _BLOCK], default=0),
        max(blocks[first:last], default=0),
        max(values[last * _BLOCK : j], default=0),
    )


class Starts(Sequence[datetime]):
    """``[first, *ends[lo:hi]]`` without copying: the candidate starts of one planning call,
    which over a crowded week would otherwise be a list of every booking's end."""

    __slots__ = ("_ends", "_first", "_hi", "_lo")

    def __init__(self, first: datetime | None, ends: Sequence[datetime], lo: int, hi: int) -> None:
        self._first, self._ends, self._lo, self._hi = first, ends, lo, max(lo, hi)

    def __len__(self) -> int:
        return (self._first is not None) + self._hi - self._lo

    @overload
    def __getitem__(self, k: int) -> datetime: ...
    @overload
    def __getitem__(self, k: slice) -> Starts: ...
    def __getitem__(self, k: int | slice) -> datetime | Starts:
        head = self._first is not None
        if isinstance(k, slice):
            a, b, step = k.indices(len(self))
            if step != 1:
                raise ValueError("Starts slices take no step")
            if b <= a:
                return Starts(None, self._ends, 0, 0)
            if head and a == 0:
                return Starts(self._first, self._ends, self._lo, self._lo + b - 1)
            return Starts(None, self._ends, self._lo + a - head, self._lo + b - head)
        if k < 0:
            k += len(self)
        if head:
            if k == 0:
                return self._first  # type: ignore[return-value]
            k -= 1
        if not 0 <= k < self._hi - self._lo:
            raise IndexError(k)
        return self._ends[self._lo + k]


class Calendar:
    """An immutable set of bookings, indexed for peak-load queries over any window."""

    __slots__ = (
        "_blocks",
        "_bookings",
        "_columns",
        "_ends",
        "_ends_right",
        "_left",
        "_right",
        "_scanned",
        "_source",
        "_steps",
        "_times",
    )

    def __init__(self, bookings: Iterable[Booking]) -> None:
        self._bookings: tuple[Booking, ...] | None = tuple(bookings)
        self._source: Callable[[], tuple[Booking, ...]] | None = None
        times, columns = _sweep(_pieces(self._bookings))
        self._lists(times, columns, sorted({b.end for b in self._bookings}))

    def _lists(
        self, times: list[datetime], columns: tuple[list[int], ...], ends: list[datetime]
    ) -> None:
        """Read the load from plain sorted lists (see ``from_profile``)."""
        self._times: _Boundaries = times
        self._columns: tuple[list[int], ...] | None = columns
        self._steps: Steps | None = None
        self._left: Callable[[datetime], int] = partial(bisect_left, times)
        self._right: Callable[[datetime], int] = partial(bisect_right, times)
        self._ends: Sequence[datetime] = ends
        self._ends_right: Callable[[datetime], int] = partial(bisect_right, ends)
        self._blocks: tuple[list[int], ...] | None = None
        self._scanned = 0

    @classmethod
    def from_profile(
        cls,
        times: list[datetime],
        columns: tuple[list[int], ...],
        ends: list[datetime],
        bookings: Callable[[], tuple[Booking, ...]],
    ) -> Calendar:
        """A calendar from its load already swept (see ``HoldIndex``), taking the lists as they
        are (not copied): ``times`` the boundaries, ``columns`` the load per segment, ``ends``
        the distinct booking ends, all sorted, exactly as ``__init__`` would compute from what
        ``bookings`` returns (called only if they are asked for)."""
        calendar = cls.__new__(cls)
        calendar._bookings, calendar._source = None, bookings
        calendar._lists(times, columns, ends)
        return calendar

    @classmethod
    def from_steps(
        cls,
        steps: Steps,
        ends: SortedList,
        bookings: Callable[[], tuple[Booking, ...]],
    ) -> Calendar:
        """A calendar over ``HoldIndex``'s live load, taken as it is (not copied): ``steps``
        the boundaries with the load from each to the next, ``ends`` the distinct booking
        ends; the same load as ``from_profile`` would be given, read a window at a time."""
        calendar = cls.__new__(cls)
        calendar._bookings, calendar._source = None, bookings
        calendar._times = steps
        calendar._columns = None
        calendar._steps = steps
        calendar._left, calendar._right = steps.bisect_left, steps.bisect_right
        calendar._ends, calendar._ends_right = ends, ends.bisect_right
        calendar._blocks = None
        calendar._scanned = 0
        return calendar

    def _slice(self, i: int, j: int) -> tuple[list[int], ...]:
        """Each column's load over segments [i, j) (0 <= i <= j <= the number of segments),
        as new lists."""
        if self._columns is not None:
            return tuple(column[i:j] for column in self._columns)
        assert self._steps is not None
        return self._steps.columns(i, j)

    def _segments(self) -> int:
        return max(len(self._times) - 1, 0)

    def _full(self) -> tuple[list[int], ...]:
        """Every column as a list (a copy when the load is read from ``Steps``)."""
        if self._columns is not None:
            return self._columns
        return self._slice(0, self._segments())

    def window(self, start: datetime, end: datetime, less: Sequence[_Piece] = ()) -> Calendar:
        """Only the load over [start, end), less ``less`` (pieces of what it holds): peaks and
        fits within the window as on the whole, built in time proportional to the window."""
        i, j = self._span(start, end)
        if i >= j:
            return Calendar(())
        times = list(self._times[i : j + 1])
        columns = self._slice(i, j)
        for lo, hi, c, m, s in less:
            a = max(bisect_left(times, lo), 0)
            b = bisect_left(times, hi)
            for column, amount in zip(columns, (c, m, s, 1), strict=True):
                for k in range(a, min(b, len(column))):
                    column[k] -= amount
        return Calendar.from_profile(times, columns, [], tuple)

    def _maxima(self) -> tuple[list[int], ...]:
        if self._blocks is None:
            if self._columns is None:  # long windows again and again: copy the steps once
                times = list(self._times)
                self._lists(times, self._full(), list(self._ends))
            assert self._columns is not None
            self._blocks = tuple(_block_maxima(col) for col in self._columns)
        return self._blocks

    def _all(self) -> tuple[Booking, ...]:
        if self._bookings is None:
            assert self._source is not None
            self._bookings = self._source()
        return self._bookings

    def profile(self) -> tuple[list[datetime], tuple[list[int], ...], list[datetime]]:
        """The swept load: boundaries, per-segment (cores, memory, storage, sessions), ends."""
        return list(self._times), self._full(), list(self._ends)

    def __len__(self) -> int:
        return len(self._all())

    @property
    def bookings(self) -> tuple[Booking, ...]:
        """The bookings this calendar was built from, in the order given."""
        return self._all()

    def _span(self, start: datetime, end: datetime) -> tuple[int, int]:
        """Indices [i, j) of the segments that overlap [start, end); empty when i >= j."""
        count = len(self._times)
        if start >= end or not count:
            return 0, 0
        i = max(self._right(start) - 1, 0)
        j = min(self._left(end), count - 1)
        return i, j

    def peak(self, start: datetime, end: datetime) -> tuple[Resources, int]:
        """The componentwise max held at any instant of [start, end), and the most sessions.

        Taking each component's max separately (possibly at different instants) is exact for the
        quota test, because the quota constrains each component at each instant on its own.
        """
        i, j = self._span(start, end)
        if i >= j:
            return Resources(), 0
        # A short window needs no block maxima. Building them is a pass over the whole
        # calendar, and the index's view is new after every booking: until the windows
        # scanned add up to that pass, scan a long window itself (same maxima, less work).
        scanned = self._scanned + j - i
        if j - i <= 2 * _BLOCK or (self._blocks is None and scanned <= len(self._times)):
            self._scanned = scanned
            cores, memory, storage, sessions = (max(col) for col in self._slice(i, j))
        else:
            blocks = self._maxima()
            assert self._columns is not None
            cores, memory, storage, sessions = (
                _range_max(col, maxima, i, j)
                for col, maxima in zip(self._columns, blocks, strict=True)
            )
        return Resources(cores, memory, storage), sessions

    def fits(self, start: datetime, end: datetime, resources: Resources, quota: Quota) -> bool:
        """Whether one more session holding ``resources`` over [start, end) stays within quota."""
        held, sessions = self.peak(start, end)
        within = (held + resources).fits_within(quota.resources)
        return within and sessions + 1 <= quota.max_sessions

    def earliest_fit(
        self,
        candidates: Sequence[datetime],
        duration: timedelta,
        resources: Resources,
        quota: Quota,
    ) -> datetime | None:
        """The first of the sorted ``candidates`` t with ``fits(t, t + duration, ...)``, or None.

        Same answer as calling ``fits`` on each candidate in turn, but found in one forward pass
        over the segments: on meeting an over-full segment, every candidate before its end is
        skipped (each would overlap it too). Cost is linear in the segments and candidates
        passed, however fragmented a fully booked window is, instead of one peak per candidate.
        """
        q = quota.resources
        lc = q.cores - resources.cores
        lm = q.memory_gib - resources.memory_gib
        ls = q.storage_gib - resources.storage_gib
        ln = quota.max_sessions - 1
        if not candidates or min(lc, lm, ls, ln) < 0:
            return None
        start = candidates[0]
        if duration <= timedelta(0):
            return start
        last = self._segments()
        count = len(candidates)
        c = 0
        end = start + duration
        k = max(self._right(start) - 1, 0)
        while k < last:  # a chunk of segments at a time: one slice each, not one read each
            hi = min(k + _CHUNK, last)
            times = self._times[k : hi + 1]
            cores, memory, storage, sessions = self._slice(k, hi)
            for n in range(hi - k):
                if times[n] >= end:
                    return start
                if times[n + 1] > start and (
                    cores[n] > lc or memory[n] > lm or storage[n] > ls or sessions[n] > ln
                ):
                    free = times[n + 1]
                    while c < count and candidates[c] < free:
                        c += 1
                    if c == count:
                        return None
                    start = candidates[c]
                    end = start + duration
            k = hi
        return start

    def candidate_starts(self, first: datetime, until: datetime) -> Starts:
        """``first``, then ``release_times(first, until)``: where a booking may start."""
        right = self._ends_right
        return Starts(first, self._ends, right(first), right(until))

    def release_times(self, after: datetime, until: datetime) -> list[datetime]:
        """Sorted distinct booking ends e with after < e <= until: when capacity may free up."""
        right = self._ends_right
        return list(self._ends[right(after) : right(until)])

    def without_group(self, group: str) -> Calendar:
        """This calendar minus one offer set (e.g. to re-check one of its offers on accept)."""
        return Calendar(b for b in self._all() if b.group != group)
