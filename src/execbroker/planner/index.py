"""What is held, kept up to date booking by booking instead of rebuilt for every question.

``Calendar`` sorts every booking each time it is built: linear-logarithmic in the bookings,
which at 10 000 of them is most of a request. ``HoldIndex`` keeps the same step function (the
boundary times, and from each to the next the cores, memory, storage and sessions held) in
``Steps``, blocked lists that each change edits in place: a booking inserts at most two
boundaries and adds its load to the segments it covers (C-speed slices). Flat lists would
shift every later entry at each new boundary (at 100 000 bookings, ~100 us a list); a block
shifts its few hundred, so a change costs the segments it spans, not the calendar's size. Its
``calendar`` is a ``Calendar`` with exactly the load ``Calendar`` would compute from the same
bookings, which the property tests check against the sweep.

Offers expire: a booking given an ``expires`` instant stops counting once ``expire(now)``
passes it, as the database's holds stop counting an OFFERED session after its expiry.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sortedcontainers import SortedList

from .calendar import Booking, Calendar, _Piece, _pieces, _sweep
from .steps import BLOCK, Steps

_COLUMNS = 4  # cores, memory, storage, sessions


@dataclass(frozen=True, slots=True)
class Hold:
    """One session's booking and, for an offer, when it stops holding."""

    booking: Booking
    expires: datetime | None = None


class HoldIndex:
    """A mutable calendar keyed by session: ``put``, ``discard``, ``expire``, then ``calendar``.

    Not thread-safe: callers serialise access (the broker does under its own lock).
    """

    def __init__(self, holds: dict[str, Hold] | None = None, *, block: int = BLOCK) -> None:
        """``block`` is the ``Steps`` block size (small only in tests, to split and merge)."""
        self._block = block
        self._steps = Steps([], tuple([] for _ in range(_COLUMNS)), load=block)
        self._refs: dict[datetime, int] = {}  # pieces starting or ending at each boundary
        self._ends = SortedList()  # distinct booking ends
        self._end_refs: dict[datetime, int] = {}
        self._holds: dict[str, Hold] = {}
        self._groups: dict[str, set[str]] = {}  # offer set -> its sessions here
        self._applied: dict[str, list[_Piece]] = {}  # "s:"+key or "g:"+group -> its pieces
        self._expiry: list[tuple[datetime, str]] = []  # heap; stale entries are skipped
        self._view: Calendar | None = None
        if holds:
            self._bulk(holds)

    def _bulk(self, holds: dict[str, Hold]) -> None:
        """Start from many holds at once: one sort, as ``Calendar`` does, not one insert each."""
        grouped: dict[str, list[Booking]] = {}
        for key, hold in holds.items():
            self._holds[key] = hold
            self._end_refs[hold.booking.end] = self._end_refs.get(hold.booking.end, 0) + 1
            if hold.expires is not None:
                self._expiry.append((hold.expires, key))
            group = hold.booking.group
            if group is None:
                pieces = _pieces([hold.booking])
                if pieces:
                    self._applied[f"s:{key}"] = pieces
            else:
                self._groups.setdefault(group, set()).add(key)
                grouped.setdefault(group, []).append(hold.booking)
        for group, members in grouped.items():
            pieces = _pieces(members)
            if pieces:
                self._applied[f"g:{group}"] = pieces
        every = [piece for pieces in self._applied.values() for piece in pieces]
        times, columns = _sweep(every)
        if times:  # nothing is held after the last boundary
            columns = tuple([*column, 0] for column in columns)
        self._steps = Steps(times, columns, load=self._block)
        refs = Counter(t for piece in every for t in (piece[0], piece[1]))
        self._refs = dict(refs)
        self._ends = SortedList(self._end_refs)
        heapq.heapify(self._expiry)

    def __len__(self) -> int:
        return len(self._holds)

    def __contains__(self, key: object) -> bool:
        return key in self._holds

    def get(self, key: str) -> Hold | None:
        return self._holds.get(key)

    def holds(self) -> dict[str, Hold]:
        return dict(self._holds)

    # -- changes ---------------------------------------------------------------------------

    def put(self, key: str, hold: Hold) -> None:
        """Add the session ``key``'s hold, or replace the one it had."""
        self.update([(key, hold)])

    def update(self, changes: Iterable[tuple[str, Hold | None]]) -> None:
        """``put`` each (key, hold) in turn, or ``discard`` the key where hold is None.

        The same end state as one call each, but an offer set's pieces are collapsed once for
        all the members it gained or lost, not once per member (each time re-editing every
        segment it spans): an accept's siblings and the accepted offer leave it in one go.
        """
        dirty: dict[str, None] = {}  # groups whose pieces are due, in order
        for key, hold in changes:
            if hold is not None and self._holds.get(key) == hold:
                continue
            left = self._forget(key)
            if left is not None:
                dirty[left] = None
            if hold is None:
                continue
            self._holds[key] = hold
            self._end_ref(hold.booking.end, +1)
            if hold.expires is not None:
                heapq.heappush(self._expiry, (hold.expires, key))
            group = hold.booking.group
            if group is None:
                self._apply(f"s:{key}", _pieces([hold.booking]))
            else:
                self._groups.setdefault(group, set()).add(key)
                dirty[group] = None
            self._view = None
        for group in dirty:
            self._regroup(group)

    def discard(self, key: str) -> None:
        """Forget the session ``key`` (it no longer holds anything); no-op if unknown."""
        self.update([(key, None)])

    def _forget(self, key: str) -> str | None:
        """Drop ``key``'s hold; the offer set it leaves (its pieces then due), if any."""
        hold = self._holds.pop(key, None)
        if hold is None:
            return None
        self._end_ref(hold.booking.end, -1)
        self._view = None
        group = hold.booking.group
        if group is None:
            self._apply(f"s:{key}", [])
            return None
        members = self._groups[group]
        members.discard(key)
        if not members:
            del self._groups[group]
        return group

    def expire(self, now: datetime) -> list[str]:
        """Drop every hold whose ``expires`` is at or before ``now``; returns their keys."""
        dropped = []
        while self._expiry and self._expiry[0][0] <= now:
            expires, key = heapq.heappop(self._expiry)
            hold = self._holds.get(key)
            if hold is not None and hold.expires == expires:
                dropped.append(key)
        self.update((key, None) for key in dropped)  # (an offer set's expire together)
        if len(self._expiry) > 2 * len(self._holds) + 64:  # replaced holds leave stale entries
            self._expiry = [(h.expires, k) for k, h in self._holds.items() if h.expires]
            heapq.heapify(self._expiry)
        return dropped

    def group_members(self, group: str) -> list[str]:
        return sorted(self._groups.get(group, ()))

    # -- reading ---------------------------------------------------------------------------

    def calendar(self) -> Calendar:
        """A ``Calendar`` of what is held now, valid until the index next changes.

        It reads the index's own structures, not a copy (copying would cost what the index
        saves): ask again after a change, never keep one across it.
        """
        if self._view is None:
            self._view = Calendar.from_steps(self._steps, self._ends, self._holds_view)
        return self._view

    def group_pieces(self, group: str) -> list[_Piece]:
        """What an offer set's alternatives add to the load, collapsed (see ``Calendar``)."""
        return list(self._applied.get(f"g:{group}", ()))

    def _holds_view(self) -> tuple[Booking, ...]:
        return tuple(hold.booking for hold in self._holds.values())

    # -- the step function -----------------------------------------------------------------

    def _regroup(self, group: str) -> None:
        members = [self._holds[key].booking for key in self._groups.get(group, ())]
        self._apply(f"g:{group}", _pieces(members) if members else [])

    def _apply(self, owner: str, pieces: list[_Piece]) -> None:
        """Make ``owner``'s contribution ``pieces`` (removing what it contributed before)."""
        old = self._applied.pop(owner, [])
        for piece in old:
            self._add(piece, -1)
        for piece in pieces:
            self._add(piece, +1)
        if pieces:
            self._applied[owner] = pieces
        for piece in old:  # boundaries last, once every column is back to its plain sum
            self._unref(piece[0])
            self._unref(piece[1])

    def _add(self, piece: _Piece, sign: int) -> None:
        start, end, cores, memory, storage = piece
        if sign > 0:
            self._ref(start)
            self._ref(end)
        self._steps.add(start, end, (sign * cores, sign * memory, sign * storage, sign))

    def _ref(self, time: datetime) -> None:
        """Count one more piece starting or ending at ``time``, a new boundary if need be."""
        refs = self._refs
        if time in refs:
            refs[time] += 1
            return
        refs[time] = 1
        # the segment it falls in splits in two of equal load (none outside every segment)
        self._steps.insert(time, self._steps.load_before(time))

    def _unref(self, time: datetime) -> None:
        self._refs[time] -= 1
        if self._refs[time]:
            return
        # nothing starts or ends here any more: the load is the same on both sides
        del self._refs[time]
        self._steps.delete(time)

    def _end_ref(self, end: datetime, sign: int) -> None:
        count = self._end_refs.get(end, 0) + sign
        if count:
            if count == 1 and sign > 0:
                self._ends.add(end)
            self._end_refs[end] = count
        else:
            del self._end_refs[end]
            self._ends.remove(end)
