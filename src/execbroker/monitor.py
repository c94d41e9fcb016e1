"""The loop that drives accepted sessions through their phases on the platform.

ACCEPTED → WAITING → (at its start time) PREPARING → AVAILABLE/RUNNING → COMPLETED | FAILED,
with CANCELLED from any of them on request; offers past their expiry become EXPIRED.

Nothing here is kept only in memory: each step is read from and written to the
database, so the first pass after a (re)start *is* the reconciliation: sessions the
database says are running are asked of the platform by their handle; one that was
being started when the broker died is looked up by its session id before anything is
started again, so no task is ever started twice.

Several replicas (broker processes on one database) share the work through leases. A
replica drives only the sessions it holds: it claims a session as it starts it (WAITING →
PREPARING and the claim are one conditional update, so exactly one replica starts it),
renews its leases on every pass, and takes over a started session only when nobody holds
it or its holder's lease has lapsed (the holder died). Leases are renewed on a thread of
their own, so a replica busy starting slow tasks never lets them lapse. A restarted broker
is a new replica: it takes its predecessor's sessions over once their leases lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid as uuids
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from execbroker import logs
from execbroker.model.executables import AnyExecutable
from execbroker.model.sessions import Phase
from execbroker.platforms.base import (
    LaunchSpec,
    Platform,
    PlatformError,
    RunState,
    RunStatus,
    stop_and_release,
)
from execbroker.service import BrokerService, message
from execbroker.store import queries
from execbroker.store.tables import SessionRow
from execbroker.timeutil import format_duration

log = logging.getLogger(__name__)

_PHASE_OF_STATE = {
    RunState.PREPARING: Phase.PREPARING,
    RunState.AVAILABLE: Phase.AVAILABLE,
    RunState.RUNNING: Phase.RUNNING,
    RunState.COMPLETED: Phase.COMPLETED,
    RunState.FAILED: Phase.FAILED,
    RunState.CANCELLED: Phase.CANCELLED,
    RunState.LOST: Phase.FAILED,
}
_ACTIVE = [Phase.PREPARING, Phase.AVAILABLE, Phase.RUNNING, Phase.RELEASING]
_RUNNING = (Phase.AVAILABLE, Phase.RUNNING)


def new_replica_id() -> str:
    """A name for this broker process, unique among replicas and across restarts."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuids.uuid4().hex[:8]}"


def _executable(row: SessionRow) -> AnyExecutable:
    from pydantic import TypeAdapter

    return TypeAdapter(AnyExecutable).validate_python(row.executable)


class Monitor:
    def __init__(
        self,
        *,
        service: BrokerService,
        interval: float | None = None,
        lease: timedelta | None = None,
        replica: str | None = None,
    ) -> None:
        self.service = service
        self.database = service.database
        self.interval = interval or service.config.monitor.interval.total_seconds()
        self.lease = lease or service.config.monitor.lease_length
        self.replica = replica or new_replica_id()
        self._busy: set[str] = set()  # sessions with a step under way
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        # Steps may fill the shared worker threads for minutes (a start pulling an image);
        # the survey, which renews the leases, must never wait behind them.
        self._surveyor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-survey")
        self.last_pass: float | None = None  # time.monotonic() of the last survey (health)

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.service.clock

    async def run(self) -> None:
        """Tick until ``stop``; a failing tick is logged and the loop goes on. On the way out,
        the steps under way finish and this replica's leases end, so nobody waits for them."""
        log.info(
            "monitor started for broker %s as replica %s", self.service.config.name, self.replica
        )
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("monitor tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
        await self.settle()
        try:
            await asyncio.get_running_loop().run_in_executor(self._surveyor, self._release)
        except Exception:
            log.exception("ending the leases of replica %s", self.replica)
        self._surveyor.shutdown(wait=False)

    async def stop(self) -> None:
        self._stopping.set()
        await self.settle()

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        due, held = await loop.run_in_executor(self._surveyor, self._survey)
        self.last_pass = time.monotonic()
        for row in due:
            self._spawn(row, self._launch)
        for row in held:
            self._spawn(row, self._follow)

    def _survey(self) -> tuple[list[SessionRow], list[SessionRow]]:
        """Renew this replica's leases, take over sessions whose holder is gone, expire old
        offers, queue accepted sessions, and list what needs a step from this replica."""
        now = self.clock()
        until = now + self.lease
        with self.database.write() as db:
            queries.renew_leases(db, self.replica, _ACTIVE, until)
            taken = queries.take_over(db, self.replica, _ACTIVE, now, until)
        if taken:
            log.info("taking over sessions %s: no live replica holds them", ", ".join(taken))
        with self.database.write() as db:
            expired = queries.transition_all(db, Phase.OFFERED, Phase.EXPIRED, now, before=now)
            self.service.metrics.expired(expired)
            queries.transition_all(db, Phase.ACCEPTED, Phase.WAITING, now)
        with self.database.read() as db:
            due = list(queries.due_to_start(db, now))
            return due, list(queries.held_sessions(db, self.replica, _ACTIVE))

    def _release(self) -> None:
        with self.database.write() as db:
            queries.release_leases(db, self.replica, self.clock())

    async def settle(self) -> None:
        """Wait for the steps under way (tests use this to run the loop one tick at a time)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, row: SessionRow, step: Callable[[SessionRow], None]) -> None:
        """Run one step for one session in a worker thread (steps block on I/O), one at a time."""
        uuid = row.uuid
        if uuid in self._busy:
            return
        self._busy.add(uuid)
        with logs.bind(session=uuid, user=row.owner):  # the step's thread inherits these ids
            task = asyncio.create_task(asyncio.to_thread(step, row))
        self._tasks.add(task)

        def _done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._busy.discard(uuid)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("session %s step failed", uuid, exc_info=finished.exception())

        task.add_done_callback(_done)

    def _platform(self, row: SessionRow) -> Platform | None:
        return self.service.platforms.get(row.platform)

    # -- steps ----------------------------------------------------------------------------

    def _launch(self, row: SessionRow) -> None:
        """Claim a due session and start it. The claim is WAITING → PREPARING with this
        replica's lease in one conditional update: whichever replica gets there first
        starts it, and the others find it PREPARING and leave it."""
        now = self.clock()
        with self.database.write() as db:
            claimed = queries.transition(
                db,
                row.uuid,
                [Phase.WAITING],
                Phase.PREPARING,
                now,
                started=now,
                claimed_by=self.replica,
                lease_until=now + self.lease,
            )
            if not claimed:
                return
        platform = self._platform(row)
        if platform is None:
            self._finish(row, Phase.FAILED, f"this broker no longer has platform {row.platform}")
            return
        if row.end <= now:
            self._finish(row, Phase.FAILED, "the granted time ended before the session could start")
            return
        spec = LaunchSpec(
            session_id=row.uuid,
            broker=self.service.config.name,
            owner=row.owner,
            executable=_executable(row),
            resources=self.service._resources(row),
            start=row.start,
            deadline=row.end,
            workdir=self.service.workdir(row.uuid),
            # only a platform that stages data is given any (others said NO to it)
            data=self.service.data_of(row.uuid) if getattr(platform, "stages_data", False) else (),
        )
        try:
            handle = platform.start(spec)
        except PlatformError as error:
            self.service.metrics.platform_error(platform.name, "start")
            self._finish(row, Phase.FAILED, f"could not start: {error}")
            return
        except Exception as error:
            log.exception("starting session %s", row.uuid)
            self._finish(
                row, Phase.FAILED, f"could not start: internal error ({type(error).__name__})"
            )
            return
        with self.database.write() as db:
            kept = queries.transition(
                db,
                row.uuid,
                [Phase.PREPARING],
                Phase.PREPARING,
                self.clock(),
                holder=self.replica,
                handle=handle,
            )
            current = None if kept else queries.get_session(db, row.uuid)
            cancelled = current is not None and current.phase in queries.FINAL
            if cancelled:  # cancelled while starting: the task must not outlive its session
                current.handle = handle  # type: ignore[union-attr]
        if cancelled:
            stop_and_release(platform, handle)
        elif not kept:
            # Only if this replica stalled for longer than its lease: the replica that took
            # the session over finds this task by its session id, so it is left alone.
            log.warning("session %s: lease lost while starting it as %s", row.uuid, handle)
            return
        log.info("session %s started on %s as %s", row.uuid, platform.name, handle)

    def _follow(self, row: SessionRow) -> None:
        platform = self._platform(row)
        if platform is None:
            self._finish(row, Phase.FAILED, f"this broker no longer has platform {row.platform}")
            return
        handle = row.handle
        if handle is None:
            # Started (or not) by a replica that died (this one's predecessor, or another):
            # ask the platform by the session id before starting anything again.
            handle = platform.find(row.uuid)
            with self.database.write() as db:
                if handle is None:  # never started: back in the queue, for any replica
                    queries.transition(
                        db,
                        row.uuid,
                        [Phase.PREPARING],
                        Phase.WAITING,
                        self.clock(),
                        holder=self.replica,
                        claimed_by=None,
                        lease_until=None,
                    )
                    return
                adopted = queries.transition(
                    db,
                    row.uuid,
                    [row.phase],
                    row.phase,
                    self.clock(),
                    holder=self.replica,
                    handle=handle,
                )
            if not adopted:
                return
            log.info("session %s re-adopted as %s", row.uuid, handle)
        status = platform.status(handle)
        now = self.clock()
        if not status.state.final and now >= row.end:
            with self.database.write() as db:
                releasing = queries.transition(
                    db, row.uuid, [row.phase], Phase.RELEASING, now, holder=self.replica
                )
            if not releasing:  # cancelled meanwhile (the cancel stops it), or not ours now
                return
            granted = format_duration(row.end - row.start)
            stop_and_release(platform, handle)
            if status.state == RunState.AVAILABLE:
                # A service (a web server, a notebook server) ends when its time is up: normal.
                self._finish(row, Phase.COMPLETED, f"released at the end of its {granted}", handle)
            else:
                self._finish(
                    row, Phase.FAILED, f"stopped: exceeded the granted duration {granted}", handle
                )
            return
        self._record(row, status, handle)

    def _record(self, row: SessionRow, status: RunStatus, handle: str) -> None:
        phase = _PHASE_OF_STATE[status.state]
        if status.state.final:
            text = status.message or f"finished: {phase}"
            if status.state == RunState.LOST:
                text = f"the platform lost the task: {status.message or handle}"
                self.service.metrics.platform_error(row.platform, "lost")
            self._finish(row, phase, text, handle, exit_code=status.exit_code)
            return
        endpoints = [{"protocol": e.protocol, "location": e.location} for e in status.endpoints]
        # A new word on progress (why a job is still queued) is kept, once.
        last = row.messages[-1]["message"] if row.messages else None
        note = status.message if status.message and status.message != last else None
        if phase == row.phase and endpoints == row.endpoints and note is None:
            return
        with self.database.write() as db:
            moved = queries.transition(
                db,
                row.uuid,
                [row.phase],
                phase,
                self.clock(),
                holder=self.replica,
                endpoints=endpoints,
            )
            if moved and note is not None:
                queries.add_message(db, row.uuid, message(note, "INFO", self.clock()))
        if phase in _RUNNING and row.phase not in _RUNNING:
            since_start = (self.clock() - row.start).total_seconds()
            self.service.metrics.running(row.uuid, since_start)

    def _finish(
        self,
        row: SessionRow,
        phase: Phase,
        text: str,
        handle: str | None = None,
        *,
        exit_code: int | None = None,
    ) -> None:
        now = self.clock()
        level = "INFO" if phase == Phase.COMPLETED else "ERROR"
        with self.database.write() as db:
            done = queries.transition(
                db,
                row.uuid,
                [Phase.WAITING, *_ACTIVE],
                phase,
                now,
                holder=self.replica,
                finished=now,
                exit_code=exit_code,
            )
            if done:
                queries.add_message(db, row.uuid, message(text, level, now))
            current = None if done else queries.get_session(db, row.uuid)
        # A session another replica now drives keeps what it holds on the platform.
        ended = done or (current is not None and current.phase in queries.FINAL)
        platform = self._platform(row)
        if handle is not None and platform is not None and ended:
            try:
                platform.release(handle)
            except PlatformError as error:
                self.service.metrics.platform_error(platform.name, "release")
                log.warning("releasing session %s: %s", row.uuid, error)
        if done:
            self.service.metrics.ended(row.uuid, phase)
            log.info("session %s %s: %s", row.uuid, phase, text)
