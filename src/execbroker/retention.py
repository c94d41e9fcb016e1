"""Purging what no longer holds anything, so the database and the state directory stay bounded.

Two kinds of leftovers grow with history: offer sets nobody accepted (every offer rejected or
expired, or a NO), kept ``retention.offers``; and finished sessions (completed, failed,
cancelled, or the rejected siblings of an accepted offer), kept ``retention.sessions`` and then
removed with their work directory (outputs) and whatever the platform keeps of them (the local
platform's run records and logs). Nothing here takes the booking lock: the rows purged hold no
capacity, and each batch is one short write transaction, so bookings never wait long on it.

The monitor calls ``Retention.tick`` on every survey; a pass runs in a thread of its own, at
most one at a time, so a slow file system never delays a survey.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from execbroker.store import queries

if TYPE_CHECKING:
    from execbroker.service import BrokerService

log = logging.getLogger(__name__)

BATCH = 200  # rows per transaction
MAX_BATCHES = 25  # per pass: a backlog is worked off over several passes
# Never purge a row changed this recently, whatever the retention: a replica's index of holds
# that is busy has learned of the release by then (an idle one rebuilds before it refuses:
# see ``execbroker.holdings``).
MIN_AGE = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class Purged:
    offersets: int = 0
    sessions: int = 0


class Retention:
    def __init__(self, service: BrokerService) -> None:
        self.service = service
        self.config = service.config.retention
        self._running = threading.Lock()
        self._last: datetime | None = None

    @property
    def every(self) -> timedelta:
        """How often a pass runs: a tenth of the shortest retention, from 1 s to 1 min."""
        kept = [t for t in (self.config.offers, self.config.sessions) if t is not None]
        if not kept:
            return timedelta.max
        return min(max(min(kept) / 10, timedelta(seconds=1)), timedelta(minutes=1))

    def tick(self) -> None:
        """Start a pass in the background if one is due and none is running."""
        now = self.service.clock()
        if self._last is not None and now - self._last < self.every:
            return
        if not self._running.acquire(blocking=False):
            return
        self._last = now
        threading.Thread(target=self._pass, name="retention", daemon=True).start()

    def _pass(self) -> None:
        try:
            purged = self.purge(self.service.clock())
            if purged.offersets or purged.sessions:
                log.info(
                    "retention: purged %d offer sets and %d sessions",
                    purged.offersets,
                    purged.sessions,
                )
        except Exception:  # a pass that fails is retried at the next; the broker goes on
            log.exception("retention pass failed")
        finally:
            self._running.release()

    def purge(self, now: datetime) -> Purged:
        """One pass: up to ``MAX_BATCHES`` batches of each kind, oldest first."""
        sessions = offersets = 0
        if self.config.sessions is not None:
            before = min(now - self.config.sessions, now - MIN_AGE)
            for _ in range(MAX_BATCHES):
                done = self._sessions_batch(before)
                sessions += done
                if done < BATCH:
                    break
        if self.config.offers is not None:
            before = min(now - self.config.offers, now - MIN_AGE)
            for _ in range(MAX_BATCHES):
                with self.service.database.write() as db:
                    chosen = queries.unaccepted_before(db, before, BATCH)
                    offersets += queries.delete_offersets(db, chosen)
                if len(chosen) < BATCH:
                    break
        return Purged(offersets, sessions)

    def _sessions_batch(self, before: datetime) -> int:
        with self.service.database.read() as db:
            rows = queries.finished_before(db, before, BATCH)
        # files first: a crash between leaves a row whose files are gone (purged next pass),
        # never files no row leads to
        for uuid, platform_name, handle in rows:
            platform = self.service.platforms.get(platform_name)
            if handle is not None and platform is not None:
                try:
                    platform.forget(handle)
                except Exception as error:  # one task's leftovers must not stop the others
                    log.warning("retention: %s could not forget %s: %s", platform_name, uuid, error)
            shutil.rmtree(self.service.workdir(uuid), ignore_errors=True)
        with self.service.database.write() as db:
            # only rows still final and old: none can have moved on, but the check is free
            still = {uuid for uuid, _, _ in queries.finished_before(db, before, len(rows) or 1)}
            queries.delete_sessions(db, [uuid for uuid, _, _ in rows if uuid in still])
        return len(rows)
