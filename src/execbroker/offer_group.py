"""The offers a group of accepts decides, read once and written once for the whole group.

A group of accepts (``Holdings.together``) shares one booking transaction. Reading each
accept's offer, and writing each decision, with a statement of its own cost a round trip and
a statement's overhead per accept inside the booking lock; here the group's offers, and the
other OFFERED sessions of their offer sets, are read locked in one statement when the group
starts (ordered by uuid, so two replicas lock them in one order), and every decision is
written in one conditional UPDATE run for all just before the transaction commits.

What an accept decides is applied to the rows read here at once, so a later accept of the
same group sees it, as it would reading the database afresh: an offer already accepted, or
rejected as a sibling of one accepted, is no longer OFFERED and is refused before it writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from execbroker.model.sessions import Phase
from execbroker.store import queries
from execbroker.store.tables import SessionRow


class OfferGroup:
    """The offers one booking transaction reads and decides (see the module's docstring)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._rows: dict[str, SessionRow] = {}
        self._sets: dict[str, list[SessionRow]] = {}  # the rows read, by offer set
        self._requests: dict[str, dict[str, Any]] = {}
        self._asked: set[str] = set()
        self._decisions: list[queries.Decision] = []

    def read(self, uuids: Iterable[str]) -> None:
        """Read (and lock) the sessions ``uuids`` not read yet, with the OFFERED sessions of
        their offer sets, in one statement."""
        wanted = sorted(set(uuids) - self._asked)
        if not wanted:
            return
        for row, request in queries.locked_offer_sets(self._connection, wanted):
            if request is not None:
                self._requests[row.uuid] = request
            if row.uuid not in self._rows:  # one read before holds what this group decided
                self._rows[row.uuid] = row
                self._sets.setdefault(row.offerset_uuid, []).append(row)
        self._asked.update(wanted)

    def offer(self, uuid: str) -> tuple[SessionRow, dict[str, Any]] | None:
        """The session ``uuid``, locked, as this group has left it, and the request its offer
        set was made for (as stored); None if there is no such session."""
        self.read([uuid])
        row = self._rows.get(uuid)
        return None if row is None else (row, self._requests.get(uuid) or {})

    def accept(
        self, row: SessionRow, now: datetime, notes: tuple[dict[str, Any], dict[str, Any]]
    ) -> list[str]:
        """Accept ``row`` (an OFFERED session read here) and reject the other OFFERED
        sessions of its offer set, noting ``notes`` (the accepted one's, the siblings'); the
        uuids rejected. Decided here at once, written by ``write``."""
        if row.phase != Phase.OFFERED or self._rows.get(row.uuid) is not row:
            raise ValueError(f"session {row.uuid} is not an OFFERED session of this group")
        siblings = [
            other
            for other in self._sets[row.offerset_uuid]
            if other is not row and other.phase == Phase.OFFERED
        ]
        self._decide(row, Phase.ACCEPTED, now, notes[0])
        for sibling in siblings:
            self._decide(sibling, Phase.REJECTED, now, notes[1])
        return [sibling.uuid for sibling in siblings]

    def _decide(self, row: SessionRow, phase: Phase, now: datetime, note: dict[str, Any]) -> None:
        # the row as the UPDATE will leave it (its ``booked`` is set by the booking's record)
        row.phase, row.modified = phase.value, now
        row.messages = [*row.messages, note]
        self._decisions.append(queries.Decision(row.uuid, phase.value, now, note))

    def write(self, version: int) -> None:
        """Write every decision not written yet, as booking transaction ``version``.

        Raises if one of them found its session no longer OFFERED (never, under the rows'
        locks): the transaction must then be rolled back whole."""
        decisions, self._decisions = self._decisions, []
        queries.decide_offers(self._connection, decisions, version)
