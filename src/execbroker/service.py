"""The broker's rules: making offers, accepting, rejecting and cancelling sessions.

Every public method checks who is asking (a session is its owner's, or an admin's),
and every change of capacity happens inside one booking transaction, which re-reads
what is held and re-checks it, so concurrent requests can never overbook.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuids
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from execbroker import deliveries, fetch, kinds, logs
from execbroker.config import BrokerConfig
from execbroker.errors import InvalidRequest, NoOffer, NotFound, PermissionDenied, PhaseConflict
from execbroker.holdings import Booker, Holdings, Offering
from execbroker.metrics import Metrics
from execbroker.model.data import DataMount
from execbroker.model.executables import EXECUTABLE_MODELS
from execbroker.model.requests import ExecutionRequest
from execbroker.model.sessions import Phase
from execbroker.negotiation import data_plan, demand_for, max_cost, unsupported
from execbroker.outputs import OutputFile, list_outputs, open_output
from execbroker.planner import (
    Booking,
    Calendar,
    Offer,
    Plan,
    Quota,
    Resources,
    check_accept,
    plan_offers,
)
from execbroker.platforms.base import Collecting, Logs, Platform, PlatformError, stop_and_release
from execbroker.retention import Retention
from execbroker.store import queries
from execbroker.store.engine import Database
from execbroker.store.tables import OfferSetRow, SessionRow
from execbroker.timeutil import format_duration, format_instant, utcnow

log = logging.getLogger(__name__)

CANCELLABLE = (Phase.ACCEPTED, Phase.WAITING, *queries.STARTED)
# Phases in which a session's booking may still change: nothing of it has run yet.
NOT_STARTED = (Phase.OFFERED, Phase.ACCEPTED, Phase.WAITING)
# Accepted, but not yet in the platform's hands.
STARTING = (Phase.ACCEPTED, Phase.WAITING, Phase.PREPARING)


class Recent:
    """The last ``size`` values put, by key (a bounded cache safe across threads)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        return self._items.get(key)

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                del self._items[next(iter(self._items))]


@dataclass(frozen=True, slots=True)
class User:
    name: str
    admin: bool = False


@dataclass(frozen=True, slots=True)
class OfferSet:
    row: OfferSetRow
    sessions: Sequence[SessionRow]


@dataclass(frozen=True, slots=True)
class _Answer:
    """What an answer carries besides the plan: its spelling and the request's warnings."""

    spelling: kinds.Spelling = kinds.Spelling.CURRENT
    messages: list[dict[str, str]] = field(default_factory=list)


def message(text: str, level: str = "INFO", now: datetime | None = None) -> dict[str, str]:
    """A MessageItem as stored with a session or offer set."""
    return {"level": level, "message": text, "time": format_instant(now or utcnow())}


class BrokerService:
    def __init__(
        self,
        *,
        config: BrokerConfig,
        database: Database,
        platforms: Sequence[Platform],
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.database = database
        self.platforms = {platform.name: platform for platform in platforms}
        self.quota = config.quota.to_quota()
        self.rules = config.offer_rules()
        self.clock = clock
        # Called after an accept with the session and its start (the monitor's ``wake``), so
        # a session starts without waiting for the monitor's next pass; the pass would anyway.
        self.wakers: list[Callable[[str, datetime], None]] = []
        self.holdings = Holdings(database, clock)
        self.retention = Retention(self)
        # What each recent offer set asked for (stored once, never changed), so rendering a
        # session after an accept needs no second transaction to read it.
        self._requests = Recent(1024)

    # -- offers ---------------------------------------------------------------------------

    def supported_kinds(self) -> list[str]:
        """Kinds at least one of this broker's platforms runs (asked with an empty executable)."""
        return [
            kind
            for kind, model in EXECUTABLE_MODELS.items()
            if any(platform.check(model()) is None for platform in self.platforms.values())
        ]

    def request_offers(
        self,
        user: User,
        request: ExecutionRequest,
        *,
        dialect: str = "execbroker",
        meta: dict[str, Any] | None = None,
        spelling: kinds.Spelling = kinds.Spelling.CURRENT,
        notes: Sequence[str] = (),
    ) -> OfferSet:
        """Answer YES with offers (each holding its resources until it expires) or NO with reasons.

        A valid request is always answered: what it lacks or asks for that cannot be run
        (a missing image, an unusable port) is a reason for NO, not an error.
        ``dialect`` and ``meta`` are what the offers remember of the dialect that asked,
        ``spelling`` the schema generation its answers are spelt in, and ``notes`` warnings
        the answer carries (the unknown properties the request held).
        Raises InvalidRequest for a request that is self-contradictory.
        """
        with logs.bind(user=user.name):
            return self._request_offers(user, request, dialect, meta, spelling, notes)

    def _request_offers(
        self,
        user: User,
        request: ExecutionRequest,
        dialect: str,
        meta: dict[str, Any] | None,
        spelling: kinds.Spelling,
        notes: Sequence[str],
    ) -> OfferSet:
        now = self.clock()
        answer = _Answer(spelling, [message(note, "WARN", now) for note in notes])
        platform, reasons = self._platform_for(request)
        if request.is_kind_only():
            return self._save_answer(user, request, now, reasons, answer, kind_only=True)
        reasons += [
            f"executable.{name}: required to run a {kinds.alias(request.executable.kind)}"
            for name in request.executable.missing()
        ]
        reasons += request.executable.problems()
        demand = demand_for(request, defaults=self.config.defaults, quota=self.quota, now=now)
        stages = platform is not None and getattr(platform, "stages_data", False)
        policy = getattr(platform, "fetch_policy", None)
        reasons += unsupported(request, stages_data=stages, fetch_policy=policy)
        reasons += self._cost_reasons(request)
        if reasons or platform is None:
            return self._save_answer(user, request, now, reasons, answer)
        pricing = self.config.pricing
        offerset_uuid = str(uuids.uuid4())
        executable = request.executable.model_dump(mode="json", exclude_none=True)

        def offered(booker: Offering) -> tuple[OfferSetRow, list[SessionRow], Plan]:
            now = booker.now
            # What the platform has free, read after the calendar: a session ending
            # meanwhile is then in both (it still holds) or in neither, never only in the
            # platform's own count while out of the calendar (see ``_cancel``).
            quota = self._quota_now(platform)

            def plan_now() -> Plan:
                return plan_offers(
                    demand,
                    quota=quota,
                    calendar=booker.calendar(),
                    now=now,
                    rules=self.rules,
                    max_cost=max_cost(request, pricing.type if pricing else None),
                )

            plan = plan_now()
            if not plan.accepted and booker.refresh():
                quota = self._quota_now(platform)  # read after the calendar, again
                plan = plan_now()  # releases not yet learned must never refuse
            offerset = self._offerset_row(offerset_uuid, user, request, now, plan, answer)
            sessions = [
                self._session_row(offerset_uuid, user, executable, now, offer, platform.name)
                for offer in plan.offers
            ]
            for row in sessions:
                row.dialect, row.dialect_meta, row.spelling = dialect, meta, spelling
                row.booked = booker.version  # inserted as they are: stamped before
            booker.add_offerset(offerset, sessions)
            return offerset, sessions, plan

        offerset, sessions, plan = self.holdings.offer(offered)
        self._requests.put(offerset_uuid, offerset.request)
        log.info(
            "offer set %s for %s: %s, %d offers",
            offerset_uuid,
            user.name,
            offerset.result,
            len(sessions),
        )
        self.metrics.answered(offerset.result, len(sessions), plan.reasons if not sessions else ())
        return OfferSet(offerset, sessions)

    def direct(
        self,
        user: User,
        request: ExecutionRequest,
        *,
        spelling: kinds.Spelling = kinds.Spelling.CURRENT,
        notes: Sequence[str] = (),
    ) -> SessionRow:
        """Make offers and accept the best at once; NoOffer (with the reasons) if there is none."""
        answer = self.request_offers(user, request, spelling=spelling, notes=notes)
        if not answer.sessions:
            reasons = [item["message"] for item in answer.row.messages]
            raise NoOffer("this broker cannot run the request", reasons)
        return self.update_phase(user, answer.sessions[0].uuid, Phase.ACCEPTED)

    def _platform_for(self, request: ExecutionRequest) -> tuple[Platform | None, list[str]]:
        reasons = []
        for platform in self.platforms.values():
            reason = platform.check(request.executable)
            if reason is None:
                return platform, []
            reasons.append(reason)
        return None, reasons or ["this broker has no platform"]

    def _cost_reasons(self, request: ExecutionRequest) -> list[str]:
        pricing = self.config.pricing
        if pricing is None:
            return []
        return [
            f"costs[{index}]: this broker quotes costs of type {pricing.type} only"
            for index, cost in enumerate(request.costs)
            if cost.max is not None and cost.type not in (None, pricing.type)
        ]

    def _quota_now(self, platform: Platform) -> Quota:
        """The quota, further bounded by what the platform says it can still give."""
        free = platform.free()
        if free is None:
            return self.quota
        limit = self.quota.resources
        return replace(
            self.quota,
            resources=Resources(
                min(limit.cores, free.cores),
                min(limit.memory_gib, free.memory_gib),
                min(limit.storage_gib, free.storage_gib) if free.storage_gib else limit.storage_gib,
            ),
        )

    def _save_answer(
        self,
        user: User,
        request: ExecutionRequest,
        now: datetime,
        reasons: list[str],
        answer: _Answer,
        *,
        kind_only: bool = False,
    ) -> OfferSet:
        """An offer set without offers: a NO with reasons, or YES to a kind-only question."""
        if kind_only and not reasons:
            plan = Plan(offers=(), reasons=())
            result, messages = (
                "YES",
                [
                    message(
                        f"this broker runs {kinds.alias(request.executable.kind)}; "
                        "send the resources and schedule you need for concrete offers",
                        now=now,
                    )
                ],
            )
        else:
            plan = Plan(offers=(), reasons=tuple(reasons))
            result, messages = "NO", [message(reason, "WARN", now) for reason in plan.reasons]
        row = OfferSetRow(
            uuid=str(uuids.uuid4()),
            owner=user.name,
            created=now,
            result=result,
            request=request.model_dump(mode="json", exclude_none=True),
            messages=[*answer.messages, *messages],
            spelling=answer.spelling,
        )
        with self.database.write() as db:
            queries.add_offerset(db, row, [])
        self.metrics.answered(result, 0, plan.reasons)
        return OfferSet(row, [])

    def _offerset_row(
        self,
        offerset_uuid: str,
        user: User,
        request: ExecutionRequest,
        now: datetime,
        plan: Plan,
        answer: _Answer,
    ) -> OfferSetRow:
        level = "INFO" if plan.accepted else "WARN"
        return OfferSetRow(
            uuid=offerset_uuid,
            owner=user.name,
            created=now,
            result="YES" if plan.accepted else "NO",
            request=request.model_dump(mode="json", exclude_none=True),
            messages=[*answer.messages, *(message(reason, level, now) for reason in plan.reasons)],
            spelling=answer.spelling,
        )

    def _session_row(
        self,
        offerset_uuid: str,
        user: User,
        executable: dict[str, Any],
        now: datetime,
        offer: Offer,
        platform: str,
    ) -> SessionRow:
        pricing = self.config.pricing
        return SessionRow(
            uuid=str(uuids.uuid4()),
            offerset_uuid=offerset_uuid,
            owner=user.name,
            phase=Phase.OFFERED,
            created=now,
            modified=now,
            expires=offer.expires,
            start=offer.start,
            end=offer.end,
            cores=offer.resources.cores,
            memory_gib=offer.resources.memory_gib,
            storage_gib=offer.resources.storage_gib,
            cost=offer.cost,
            cost_type=pricing.type if pricing and offer.cost is not None else None,
            executable=executable,
            platform=platform,
            handle=None,
            messages=[],
            endpoints=[],
        )

    # -- reading --------------------------------------------------------------------------

    def get_offerset(self, user: User, uuid: str) -> OfferSet:
        with self.database.read() as db:
            row = queries.get_offerset(db, uuid)
            if row is None:
                raise NotFound(f"no offer set {uuid}")
            self._check_owner(user, row.owner, f"offer set {uuid}")
            return OfferSet(row, queries.sessions_of_offerset(db, uuid))

    def get_session(self, user: User, uuid: str) -> SessionRow:
        with self.database.read() as db:
            return self._owned_session(db, user, uuid)

    def list_sessions(self, user: User, phases: Sequence[str] = ()) -> Sequence[SessionRow]:
        """The caller's sessions, newest first; an admin sees everyone's."""
        with self.database.read() as db:
            owner = None if user.admin else user.name
            return queries.list_sessions(db, owner=owner, phases=phases)

    def logs(self, user: User, uuid: str) -> Logs:
        row = self.get_session(user, uuid)
        if row.handle is None:
            return Logs("", "")
        return self.platforms[row.platform].logs(row.handle)

    def workdir(self, uuid: str) -> Path:
        """A session's work directory: where its task runs and leaves its outputs."""
        return self.config.state_path / "sessions" / uuid

    def outputs(self, user: User, uuid: str) -> list[OutputFile]:
        self.get_session(user, uuid)
        return list_outputs(self.workdir(uuid))

    def open_output(self, user: User, uuid: str, name: str) -> BinaryIO:
        self.get_session(user, uuid)
        return open_output(self.workdir(uuid), name)

    def _owned_session(
        self, db: object, user: User, uuid: str, *, lock: bool = False
    ) -> SessionRow:
        row = queries.get_session(db, uuid, lock=lock)  # type: ignore[arg-type]
        if row is None:
            raise NotFound(f"no session {uuid}")
        self._check_owner(user, row.owner, f"session {uuid}")
        return row

    @staticmethod
    def _check_owner(user: User, owner: str, what: str) -> None:
        if owner != user.name and not user.admin:
            raise PermissionDenied(f"{what} belongs to another user")

    # -- changing -------------------------------------------------------------------------

    def update_phase(self, user: User, uuid: str, phase: str) -> SessionRow:
        """Apply an UpdateRequest on ``phase``: ACCEPTED, REJECTED or CANCELLED.

        Raises NotFound, PermissionDenied, or PhaseConflict when the session's phase does not
        allow it (or an accepted offer would no longer fit).
        """
        actions = {
            Phase.ACCEPTED: self._accept,
            Phase.REJECTED: self._reject,
            Phase.CANCELLED: self._cancel,
        }
        try:
            action = actions[Phase(phase)]
        except (ValueError, KeyError):
            allowed = ", ".join(actions)
            raise InvalidRequest(
                f"update.value: {phase!r} cannot be set by a client; use one of {allowed}",
                field="update.value",
            ) from None
        with logs.bind(session=uuid, user=user.name):
            row = action(user, uuid)
        if action == self._accept:
            for wake in self.wakers:
                wake(row.uuid, row.start)
        return row

    async def accept_async(self, user: User, uuid: str) -> SessionRow:
        """``update_phase(user, uuid, ACCEPTED)`` for an event loop: it waits for the booking
        without holding a thread. Raises as ``update_phase``."""
        with logs.bind(session=uuid, user=user.name):
            booked = await self.holdings.booked(
                lambda booker: self._book_accept(booker, user, uuid), reads=uuid
            )
            row = self._accepted(user, uuid, *booked)
        for wake in self.wakers:
            wake(row.uuid, row.start)
        return row

    def _accept(self, user: User, uuid: str) -> SessionRow:
        # booked together with the accepts that arrive meanwhile: one transaction, one commit
        booked = self.holdings.together(
            lambda booker: self._book_accept(booker, user, uuid), reads=uuid
        )
        return self._accepted(user, uuid, *booked)

    def _accepted(self, user: User, uuid: str, row: SessionRow, siblings: list[str]) -> SessionRow:
        log.info("session %s accepted by %s", uuid, user.name)
        self.metrics.accepted(uuid, len(siblings))
        return row

    def _book_accept(self, booker: Booker, user: User, uuid: str) -> tuple[SessionRow, list[str]]:
        """Accept inside a booking transaction: the row, and the sibling offers it rejected."""
        now = booker.now
        # locked (with the rest of its group's): a reject (which takes no booking lock)
        # waits, then finds it ACCEPTED
        found = booker.offers.offer(uuid)
        if found is None:
            raise NotFound(f"no session {uuid}")
        row, request = found
        # kept for the answer, which renders it (another worker's offer set is not cached)
        self._requests.put(row.offerset_uuid, request)
        self._check_owner(user, row.owner, f"session {uuid}")
        if row.phase != Phase.OFFERED:
            raise PhaseConflict(
                f"session {uuid} is {row.phase}: only an OFFERED one can be accepted"
            )
        if row.expires <= now:
            raise PhaseConflict(f"offer {uuid} expired at {format_instant(row.expires)}")
        offer = Offer(row.start, row.end - row.start, self._resources(row), row.expires, row.cost)
        reason = check_accept(
            offer,
            quota=self.quota,
            calendar=booker.without(row.offerset_uuid, row.start, row.end),
        )
        if reason is not None and booker.refresh():
            # a release not yet learned must never refuse an accept
            reason = check_accept(
                offer,
                quota=self.quota,
                calendar=booker.without(row.offerset_uuid, row.start, row.end),
            )
        if reason is not None:
            raise PhaseConflict(f"offer {uuid} can no longer be honoured: {reason}")
        note = message(f"accepted by {user.name}", now=now)
        sibling_note = message(f"a sibling offer {uuid} was accepted", now=now)
        booker.wrote = True  # from here on, no refusal: a failure fails the whole group
        # the offer ACCEPTED and its siblings REJECTED, written with the group's decisions
        # (one conditional UPDATE for all, before the commit; the row is in no ORM session)
        siblings = booker.offers.accept(row, now, (note, sibling_note))
        row.booked = booker.version
        booker.release(siblings)
        booker.book([row])
        return row, siblings

    def change_duration(
        self, user: User, uuid: str, duration: Callable[[timedelta], timedelta]
    ) -> SessionRow:
        """Give a session not yet started the duration ``duration(current)``, its start kept,
        if the quota and the calendar allow it (its price follows its new length).

        Raises NotFound, PermissionDenied, InvalidRequest for a duration of no length, or
        PhaseConflict naming why: the session has started, or the new end does not fit.
        """
        with self.holdings.booking() as booker:
            db, now = booker.db, booker.now
            row = self._owned_session(db, user, uuid, lock=True)
            if row.phase not in NOT_STARTED:
                raise PhaseConflict(
                    f"session {uuid} is {row.phase}: its duration can change only while it is "
                    f"{', '.join(NOT_STARTED)}"
                )
            if row.phase == Phase.OFFERED and row.expires <= now:
                raise PhaseConflict(f"offer {uuid} expired at {format_instant(row.expires)}")
            wanted = duration(row.end - row.start)
            if wanted <= timedelta(0):
                raise InvalidRequest(
                    f"update: the duration would be {format_duration(wanted)}; it must be longer "
                    "than nothing",
                    field="update",
                )
            pricing = self.config.pricing
            cost = pricing.to_pricing().cost(self._resources(row), wanted) if pricing else None
            offer = Offer(row.start, wanted, self._resources(row), row.expires, cost)
            window = booker.without(row.offerset_uuid, row.start, row.start + wanted)
            reason = check_accept(offer, quota=self.quota, calendar=window)
            if reason is not None and booker.refresh():  # a release not yet learned
                window = booker.without(row.offerset_uuid, row.start, row.start + wanted)
                reason = check_accept(offer, quota=self.quota, calendar=window)
            if reason is not None:
                raise PhaseConflict(
                    f"session {uuid} cannot last {format_duration(wanted)}: {reason}"
                )
            row.end, row.modified = row.start + wanted, now
            booker.release([row.uuid])  # its old hold, replaced by the new one
            booker.book([row])
            if row.cost is not None:
                row.cost = cost
            row.messages = [
                *row.messages,
                message(f"duration changed to {format_duration(wanted)} by {user.name}", now=now),
            ]
        log.info("session %s now lasts %s", uuid, format_duration(wanted))
        return row

    def _reject(self, user: User, uuid: str) -> SessionRow:
        now = self.clock()
        with self.database.write() as db:
            row = self._owned_session(db, user, uuid)
            # one conditional UPDATE: an accept committed since the read above (it holds the
            # row until then) leaves this one nothing to change, never an ACCEPTED to overwrite
            if row.phase != Phase.OFFERED or not queries.transition(
                db, uuid, [Phase.OFFERED], Phase.REJECTED, now
            ):
                db.refresh(row)
                raise PhaseConflict(
                    f"session {uuid} is {row.phase}: only an OFFERED one can be rejected"
                )
            db.refresh(row)
        self.metrics.rejected()
        self.holdings.released([uuid])
        return row

    def _cancel(self, user: User, uuid: str) -> SessionRow:
        now = self.clock()
        with self.database.read() as db:
            row = self._owned_session(db, user, uuid)
        if row.phase not in CANCELLABLE:
            hint = " (reject an offer instead)" if row.phase == Phase.OFFERED else ""
            raise PhaseConflict(f"session {uuid} is {row.phase}: it cannot be cancelled{hint}")
        # CANCELLED first, then stop: the monitor, seeing a task end because we stopped it,
        # must not record it as FAILED (or finished) before the cancel does.
        platform, handle = self.platforms.get(row.platform), row.handle
        ending = getattr(platform, "ending", None)
        if handle is not None and ending is not None:
            # Before it leaves the calendar: a platform that adds its own tasks back to
            # what it has free (kubernetes) must stop counting this one first.
            ending(handle)
        with self.database.write() as db:
            note = message(f"cancelled by {user.name}", now=now)
            if not queries.transition(db, uuid, CANCELLABLE, Phase.CANCELLED, now, finished=now):
                raise PhaseConflict(f"session {uuid} finished before it could be cancelled")
            queries.add_message(db, uuid, note)
            row = queries.get_session(db, uuid)
        self.metrics.ended(uuid, Phase.CANCELLED)
        self.holdings.released([uuid])
        if handle is not None and platform is not None:
            stop_and_release(platform, handle)
        # A task still being started is stopped by the monitor once its start returns.
        return row  # type: ignore[return-value]

    def requested(self, row: SessionRow) -> dict[str, Any]:
        """The request ``row`` was offered for, as stored (empty if its offer set is gone)."""
        known = self._requests.get(row.offerset_uuid)
        if known is not None:
            return dict(known)
        with self.database.read() as db:
            answer = queries.get_offerset(db, row.offerset_uuid)
        if answer is None:
            return {}
        self._requests.put(answer.uuid, answer.request or {})
        return dict(answer.request or {})

    def data_of(self, session_id: str) -> tuple[DataMount, ...]:
        """The data a session's task is to be given, as its request asked (checked then)."""
        with self.database.read() as db:
            row = queries.get_session(db, session_id)
            answer = None if row is None else queries.get_offerset(db, row.offerset_uuid)
            stored = None if answer is None else answer.request
        if not stored or not stored.get("data"):
            return ()
        return data_plan(ExecutionRequest.model_validate(stored)).mounts

    @staticmethod
    def _resources(row: SessionRow) -> Resources:
        return Resources(row.cores, row.memory_gib, row.storage_gib)

    # -- dialect jobs (UWS, TES): one session per job, made, waited on and forgotten here ------

    def submit(
        self,
        user: User,
        request: ExecutionRequest,
        *,
        dialect: str,
        meta: dict[str, Any],
        run: bool = False,
        refuse: Sequence[str] = (),
    ) -> SessionRow:
        """Make offers and keep the best as one job (its siblings rejected, so they hold nothing).

        A NO is kept too, as a FAILED session holding nothing whose messages are the reasons:
        a UWS job or a TES task exists either way, in ERROR (SYSTEM_ERROR) with the reasons.
        ``run`` accepts the kept offer at once, with every rule ``update_phase`` applies.
        ``refuse`` are reasons the dialect found already: the answer is NO without offers.
        Raises InvalidRequest (as ``request_offers``) or PhaseConflict (as accepting).
        """
        if refuse:
            answer = self._save_answer(user, request, self.clock(), list(refuse), _Answer())
        else:
            answer = self.request_offers(user, request, dialect=dialect, meta=meta)
        if not answer.sessions:
            return self._refused(user, request, answer.row, dialect, meta)
        best, now = answer.sessions[0], self.clock()
        with self.database.write() as db:
            rejected = [
                sibling.uuid
                for sibling in answer.sessions[1:]
                if queries.transition(db, sibling.uuid, [Phase.OFFERED], Phase.REJECTED, now)
            ]
        # only those this rejected: one accepted meanwhile holds what it holds
        self.holdings.released(rejected)
        return self.update_phase(user, best.uuid, Phase.ACCEPTED) if run else best

    def _refused(
        self,
        user: User,
        request: ExecutionRequest,
        answer: OfferSetRow,
        dialect: str,
        meta: dict[str, Any],
    ) -> SessionRow:
        reasons = answer.messages or [message("this broker made no offer", "WARN")]
        now = answer.created
        row = SessionRow(
            uuid=str(uuids.uuid4()),
            offerset_uuid=answer.uuid,
            owner=user.name,
            phase=Phase.FAILED,
            created=now,
            modified=now,
            expires=now,
            start=now,
            end=now,
            cores=0,
            memory_gib=0,
            storage_gib=0,
            executable=request.executable.model_dump(mode="json", exclude_none=True),
            platform="",
            finished=now,
            messages=reasons,
            endpoints=[],
            dialect=dialect,
            dialect_meta=meta,
        )
        with self.database.write() as db:
            queries.add_session(db, row)
        return row

    def get_job(self, user: User, uuid: str) -> SessionRow:
        """A session seen as a dialect's job: as ``get_session``, but NotFound once deleted."""
        row = self.get_session(user, uuid)
        if (row.dialect_meta or {}).get("deleted"):
            raise NotFound(f"no job {uuid}")
        return row

    def list_jobs(
        self,
        user: User,
        where: queries.JobFilter,
        *,
        before: tuple[datetime, str] | None = None,
        limit: int = 1000,
    ) -> Sequence[SessionRow]:
        """The caller's jobs (an admin's: everyone's) matching ``where``, newest first, less
        the deleted ones, filtered and paged in the database (``before``: a page's last key)."""
        owner = None if user.admin else user.name
        with self.database.read() as db:
            return queries.list_jobs(db, replace(where, owner=owner), before=before, limit=limit)

    def abandon(self, user: User, uuid: str) -> SessionRow:
        """Reject an offer or cancel a session, whichever its phase allows; a finished one is
        left as it is (UWS ABORT, TES cancel). Raises NotFound or PermissionDenied."""
        row = self.get_job(user, uuid)
        if row.phase == Phase.OFFERED:
            try:
                return self._reject(user, uuid)
            except PhaseConflict:  # accepted or expired meanwhile: cancel if it runs
                row = self.get_session(user, uuid)
        if row.phase in CANCELLABLE:
            try:
                return self._cancel(user, uuid)
            except PhaseConflict:  # it finished first: nothing left to stop
                pass
        return self.get_session(user, uuid)

    def delete_job(self, user: User, uuid: str) -> None:
        """Abandon a job and forget it: the dialects no longer list or show it (UWS DELETE)."""
        self.abandon(user, uuid)
        with self.database.write() as db:
            row = self._owned_session(db, user, uuid)
            row.dialect_meta = {**(row.dialect_meta or {}), "deleted": True}

    def wait_while(
        self,
        user: User,
        uuid: str,
        phases: Sequence[str],
        timeout: float,
        *,
        poll: float = 0.2,
        done: Callable[[SessionRow], bool] = lambda row: False,
    ) -> SessionRow:
        """The job once its phase is not one of ``phases`` (or ``done`` says so), or as it
        is after ``timeout`` seconds (UWS's blocking WAIT). Checks ownership as ``get_job``."""
        deadline = time.monotonic() + max(0.0, timeout)
        row = self.get_job(user, uuid)
        while row.phase in phases and not done(row) and time.monotonic() < deadline:
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            row = self.get_job(user, uuid)
        return row

    def copies_out(self) -> bool:
        """Whether this broker can copy a file out of an ended container (for delivery)."""
        return any(isinstance(platform, Collecting) for platform in self.platforms.values())

    def fetch_refusal(self, url: str) -> str | None:
        """Why none of this broker's platforms would fetch from (or deliver to) ``url`` under
        its fetch rules, as far as can be told without DNS; None if one would."""
        reasons = [
            fetch.location_reason(url, getattr(platform, "fetch_policy", None))
            for platform in self.platforms.values()
        ]
        return None if not reasons or None in reasons else reasons[0]

    def deliver_outputs(self, row: SessionRow, handle: str) -> str | None:
        """Deliver the outputs a dialect asked for (``dialect_meta["deliveries"]``: TES's
        ``outputs``) of a task that ended well, before its session is COMPLETED and its task
        released; what was delivered is kept as ``dialect_meta["delivered"]``. Returns why
        one could not be (the session then FAILED, a TES SYSTEM_ERROR), or None."""
        wanted = (row.dialect_meta or {}).get("deliveries") or []
        if not wanted:
            return None
        platform = self.platforms.get(row.platform)
        workdir, left = self.workdir(row.uuid), self.config.tes.max_output_bytes
        delivered: list[deliveries.Delivered] = []
        failure = None
        for index, output in enumerate(wanted):
            try:
                if isinstance(platform, Collecting):
                    source = deliveries.source_of(workdir, output["path"])
                    platform.collect(handle, output["path"], source, limit=left)
                done = deliveries.deliver(
                    workdir,
                    output,
                    roots=self.config.tes.roots_for(row.owner),
                    policy=getattr(platform, "fetch_policy", None),
                    limit=left,
                )
            except (deliveries.DeliveryError, fetch.FetchError, PlatformError) as error:
                failure = f"outputs[{index}] ({output['url']}) was not delivered: {error}"
                break
            left -= sum(item.size for item in done)
            delivered += done
        with self.database.write() as db:
            current = queries.get_session(db, row.uuid)
            if current is not None:
                kept = [
                    {"url": item.url, "path": item.path, "size_bytes": str(item.size)}
                    for item in delivered
                ]
                current.dialect_meta = {**(current.dialect_meta or {}), "delivered": kept}
        log.info("session %s: %d output files delivered", row.uuid, len(delivered))
        return failure

    def wait_started(self, user: User, uuid: str, timeout: float) -> SessionRow:
        """The job once its platform has it (its handle is saved: started, or queued there;
        or it has ended), or as it is after ``timeout`` seconds. A job queued on a busy
        cluster is not waited for: it has its handle."""
        return self.wait_while(user, uuid, STARTING, timeout, poll=0.05, done=_has_handle)

    def image_ports(self, image: str) -> list[int]:
        """The TCP ports ``image`` declares (EXPOSE), as the first platform that knows says:
        what a job naming only an image publishes, as ``docker run -P`` would."""
        for platform in self.platforms.values():
            ports = getattr(platform, "image_ports", None)
            if ports is not None:
                found: list[int] = ports(image)
                if found:
                    return found
        return []

    # -- the web page's views -------------------------------------------------------------

    def session_page(
        self,
        user: User,
        *,
        phases: Sequence[str],
        owner: str | None = None,
        sort: str = "created",
        descending: bool = True,
        page: int = 1,
        per_page: int = 20,
    ) -> Page:
        """One page of sessions in ``phases``: the caller's own; an admin's, anyone's (or
        ``owner``'s). Raises PermissionDenied when a user asks for another's, InvalidRequest
        naming ``sort``, ``page`` or ``per_page`` when those are out of range."""
        if sort not in queries.SORTABLE:
            known = ", ".join(queries.SORTABLE)
            raise InvalidRequest(f"sort: {sort!r} is not one of {known}", field="sort")
        if page < 1:
            raise InvalidRequest("page: must be at least 1", field="page")
        if not 1 <= per_page <= 200:
            raise InvalidRequest("per_page: must be between 1 and 200", field="per_page")
        if not user.admin:
            if owner not in (None, user.name):
                raise PermissionDenied("only an admin sees other users' sessions")
            owner = user.name
        with self.database.read() as db:
            rows, total = queries.page_sessions(
                db,
                owner=owner,
                phases=phases,
                sort=sort,
                descending=descending,
                offset=(page - 1) * per_page,
                limit=per_page,
            )
        return Page(rows, total, page, per_page)

    def open_offers(self, user: User) -> Sequence[SessionRow]:
        """Offers still open (the caller's own; an admin's: everyone's), soonest to expire first."""
        with self.database.read() as db:
            owner = None if user.admin else user.name
            return queries.open_offers(db, owner=owner, now=self.clock())

    def refusals(self, user: User, limit: int = 10) -> Sequence[OfferSetRow]:
        """The latest NO answers with their reasons (the caller's own; an admin's: everyone's)."""
        with self.database.read() as db:
            owner = None if user.admin else user.name
            return queries.refusals(db, owner=owner, limit=limit)

    def phase_counts(self) -> dict[str, int]:
        """How many sessions (and offers) are in each phase: totals only, no one's rows."""
        with self.database.read() as db:
            return queries.phase_counts(db)

    def usage(self) -> Usage:
        """The quota booked by sessions, held by open offers and free, at this instant."""
        now = self.clock()
        with self.database.read() as db:
            held = queries.holds(db, now, now + _INSTANT, now)
        booked, offered = _split(held)
        used, used_sessions = booked.peak(now, now + _INSTANT)
        on_offer, offer_sets = offered.peak(now, now + _INSTANT)
        return Usage(
            self.quota.resources, self.quota.max_sessions, used, used_sessions, on_offer, offer_sets
        )

    def capacity_timeline(self, slots: int = 96) -> Timeline:
        """The capacity calendar over the broker's horizon, in ``slots`` equal slots: the peak
        booked by sessions and held by offers in each (totals only, no one's rows). It starts
        at the whole minute, so the slots stay put while a page follows it."""
        now = self.clock()
        begin = now.replace(second=0, microsecond=0)
        end = begin + self.quota.horizon
        with self.database.read() as db:
            held = queries.holds(db, begin, end, now)
        booked, offered = _split(held)
        step = (end - begin) / slots
        found = []
        for index in range(slots):
            start = begin + step * index
            found.append(
                Slot(
                    start,
                    start + step,
                    booked.peak(start, start + step)[0],
                    offered.peak(start, start + step)[0],
                )
            )
        return Timeline(begin, end, self.quota.resources, tuple(found))


_INSTANT = timedelta(microseconds=1)


def _has_handle(row: SessionRow) -> bool:
    return row.handle is not None


def _split(bookings: Sequence[Booking]) -> tuple[Calendar, Calendar]:
    """Booked sessions and open offers (grouped by offer set) as two calendars."""
    return (
        Calendar(b for b in bookings if b.group is None),
        Calendar(b for b in bookings if b.group is not None),
    )


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[SessionRow]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True, slots=True)
class Usage:
    limit: Resources
    max_sessions: int
    booked: Resources
    booked_sessions: int
    held: Resources
    held_offersets: int

    @property
    def free(self) -> Resources:
        left = self.limit - self.booked - self.held
        return Resources(max(left.cores, 0), max(left.memory_gib, 0), max(left.storage_gib, 0))

    @property
    def free_sessions(self) -> int:
        return max(self.max_sessions - self.booked_sessions - self.held_offersets, 0)


@dataclass(frozen=True, slots=True)
class Slot:
    start: datetime
    end: datetime
    booked: Resources
    held: Resources


@dataclass(frozen=True, slots=True)
class Timeline:
    start: datetime
    end: datetime
    limit: Resources
    slots: tuple[Slot, ...]
