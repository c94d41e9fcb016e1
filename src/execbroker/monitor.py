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

The passes are the guarantee; wake-ups only make them come sooner. An accept of a session
due to start within a pass interval wakes the loop at its start (``wake``: at once if it is
due now); one that starts later is left to the passes, which queue and start it at no cost to
the accept (a start an hour away needs no look now: at hundreds of accepts a second those
looks cost as much as the booking). A replica starts the sessions it accepted, and those of
another only once they were due at its pass before: replicas (workers on one port) then start
sessions as the kernel spreads their accepts, instead of racing for each one (the quickest
winning all, the others' claims all wasted writes), and a session whose replica died after
the accept starts within two pass intervals. A platform that can tell when a task changes
(docker's event stream, a local runner's exit) calls ``notify`` with the session id and the
session is looked at right away; a session just started is looked at again at once, and one still
PREPARING (a queued job, a server not answering yet) again soon, less often the longer it
takes, until the passes alone cover it. A wake-up that is lost changes nothing but how
soon the next pass notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import threading
import time
import uuid as uuids
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar

from execbroker import logs
from execbroker.model.executables import AnyExecutable
from execbroker.model.sessions import Phase
from execbroker.platforms.base import (
    LaunchSpec,
    Platform,
    PlatformError,
    RunState,
    RunStatus,
    Watching,
    stop_and_release,
)
from execbroker.service import BrokerService, message
from execbroker.store import queries
from execbroker.store.tables import SessionRow
from execbroker.timeutil import format_duration

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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
# A session still PREPARING is looked at again after this share of the time it has been
# preparing (at least FAST_LOOK seconds): often while a start is quick, rarely while a job
# waits in a queue, and once that is as slow as the passes, by the passes alone. (A client
# polling for RUNNING does as often; platforms ask once for all sessions looked at at once.)
FAST_LOOK = 0.01
LOOK_SHARE = 0.02
# Steps block on the platforms (a docker start, an image pull, sbatch): each session's runs
# in a thread of its own from this many, so many launches at once never queue behind a few
# slow ones (asyncio's shared default pool has only CPUs + 4 threads).
STEP_THREADS = 64


def next_look(preparing_for: float, interval: float) -> float | None:
    """Seconds until a session that has been PREPARING for ``preparing_for`` seconds is
    looked at again, or None when the passes every ``interval`` seconds come as often."""
    delay = max(FAST_LOOK, preparing_for * LOOK_SHARE)
    return delay if delay < interval else None


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
        self._again: set[str] = set()  # busy sessions to look at again once their step ends
        self._tasks: set[asyncio.Future[float | None]] = set()
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()
        # Sessions accepted here, and their starts: the ones a wake-up starts. Others' due
        # sessions (another replica's, or from before a restart): those due at the last pass.
        self._accepted_here: dict[str, datetime] = {}
        self._accepted_lock = threading.Lock()  # (``wake`` is called from any thread)
        self._others_due: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Steps may fill the shared worker threads for minutes (a start pulling an image);
        # the survey, which renews the leases, must never wait behind them.
        self._surveyor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-survey")
        self._steps = ThreadPoolExecutor(
            max_workers=STEP_THREADS, thread_name_prefix="monitor-step"
        )
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
        self._loop = asyncio.get_running_loop()
        self.service.wakers.append(self.wake)
        for platform in self.service.platforms.values():
            if isinstance(platform, Watching):
                platform.watch(self.notify)
        next_pass = time.monotonic()
        while not self._stopping.is_set():
            # A wake-up (an accept) only queues and starts what is due; the full pass (leases,
            # take-overs, expiries, following) still comes every interval, however many wake-ups.
            full = time.monotonic() >= next_pass
            if full:
                next_pass = time.monotonic() + self.interval
            self._woken.clear()
            try:
                await self.tick(full=full)
            except Exception:
                log.exception("monitor tick failed")
            await self._pause(max(0.0, next_pass - time.monotonic()))
        self.service.wakers.remove(self.wake)
        await self.settle()
        for platform in self.service.platforms.values():
            if isinstance(platform, Watching):
                try:
                    platform.close()
                except Exception:
                    log.exception("closing platform %s", platform.name)
        try:
            await asyncio.get_running_loop().run_in_executor(self._surveyor, self._release)
        except Exception:
            log.exception("ending the leases of replica %s", self.replica)
        self._surveyor.shutdown(wait=False)
        self._steps.shutdown(wait=False)

    async def _pause(self, seconds: float) -> None:
        """Until the next pass is due, a wake-up, or ``stop``."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stopping, self._woken)]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def stop(self) -> None:
        self._stopping.set()
        await self.settle()

    def wake(self, uuid: str, start: datetime | None = None) -> None:
        """After an accept here of session ``uuid`` starting at ``start`` (None: now): start
        it at its start, at once if that is within a pass interval, else at the first pass
        after it. Callable from any thread."""
        now = self.clock()
        delay = 0.0 if start is None else (start - now).total_seconds()
        with self._accepted_lock:  # (from when it is due or accepted, whichever is later)
            self._accepted_here[uuid] = max(start or now, now)
        if delay <= 0:
            self._call_soon(self._woken.set)
        elif delay < self.interval:
            self._call_soon(self._wake_later, delay)
        # else a pass comes before it is due: waking now would only queue it sooner

    def _wake_later(self, delay: float) -> None:
        if not self._stopping.is_set():
            # a little after: a pass at the very instant might find it not quite due
            asyncio.get_running_loop().call_later(delay + 0.001, self._woken.set)

    def notify(self, session_id: str) -> None:
        """A platform's word that a session's task may have changed: look at it now, if
        this replica drives it. Callable from any thread."""
        self._call_soon(self._look, session_id)

    def _call_soon(self, call: Callable[..., None], *arguments: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not running: the first pass will see it
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(call, *arguments)

    async def tick(self, *, full: bool = True) -> None:
        loop = asyncio.get_running_loop()
        survey = self._survey if full else self._queue
        due, held = await loop.run_in_executor(self._surveyor, survey)
        if full:
            self.last_pass = time.monotonic()
        for row in self._to_launch(due, full=full):
            self._spawn(row.uuid, self._launch, row)
        for row in held:
            self._spawn(row.uuid, self._follow, row)

    def _to_launch(self, due: list[SessionRow], *, full: bool) -> list[SessionRow]:
        """Of the sessions ``due``, those to start now: those accepted here; on a pass, also
        any other that was due at the pass before (its replica had a pass interval to start
        it, and is gone or slow). Each is forgotten once started; one accepted here and left a
        pass interval past its start or accept (cancelled, started elsewhere) too."""
        with self._accepted_lock:
            mine = self._accepted_here
            others = self._others_due if full else set()
            chosen = [row for row in due if row.uuid in mine or row.uuid in others]
            for row in chosen:
                mine.pop(row.uuid, None)
            if full:
                self._others_due = {row.uuid for row in due} - {row.uuid for row in chosen}
                stale = self.clock() - timedelta(seconds=self.interval)
                for uuid in [uuid for uuid, start in mine.items() if start < stale]:
                    del mine[uuid]
        return chosen

    def _survey(self) -> tuple[list[SessionRow], list[SessionRow]]:
        """Renew this replica's leases, take over sessions whose holder is gone, expire old
        offers, queue accepted sessions, and list what needs a step from this replica."""
        now = self.clock()
        with self.database.write() as db:
            queries.renew_leases(db, self.replica, _ACTIVE, self.lease)
            taken = queries.take_over(db, self.replica, _ACTIVE, self.lease)
        if taken:
            log.info("taking over sessions %s: no live replica holds them", ", ".join(taken))
        with self.database.write() as db:
            expired = queries.transition_all(db, Phase.OFFERED, Phase.EXPIRED, now, before=now)
            self.service.metrics.expired(expired)
            queries.transition_all(db, Phase.ACCEPTED, Phase.WAITING, now)
        self.service.retention.tick()  # purges, when due, in a thread of its own
        with self.database.read() as db:
            due = list(queries.due_to_start(db, now))
            return due, list(queries.held_sessions(db, self.replica, _ACTIVE))

    def _queue(self) -> tuple[list[SessionRow], list[SessionRow]]:
        """The part of ``_survey`` an accept needs: queue accepted sessions, list those due."""
        now = self.clock()
        with self.database.write() as db:
            queries.transition_all(db, Phase.ACCEPTED, Phase.WAITING, now)
        with self.database.read() as db:
            return list(queries.due_to_start(db, now)), []

    def _release(self) -> None:
        with self.database.write() as db:
            queries.release_leases(db, self.replica)

    async def settle(self) -> None:
        """Wait for the steps under way (tests use this to run the loop one tick at a time)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, uuid: str, step: Callable[[_T], float | None], argument: _T) -> bool:
        """Run one step for one session in a worker thread (steps block on I/O), one at a
        time; False if one is under way. A step returns when to look at the session again
        (seconds), or None to leave it to the passes."""
        if uuid in self._busy or self._stopping.is_set():
            return False
        self._busy.add(uuid)
        owner = argument.owner if isinstance(argument, SessionRow) else None
        with logs.bind(session=uuid, user=owner):  # the step's thread inherits these ids
            context = contextvars.copy_context()
        task = asyncio.get_running_loop().run_in_executor(self._steps, context.run, step, argument)
        self._tasks.add(task)

        def _done(finished: asyncio.Future[float | None]) -> None:
            self._tasks.discard(finished)
            self._busy.discard(uuid)
            again = None
            if not finished.cancelled() and finished.exception() is not None:
                log.error("session %s step failed", uuid, exc_info=finished.exception())
            elif not finished.cancelled():
                again = finished.result()
            if uuid in self._again:
                self._again.discard(uuid)
                again = 0
            if again is not None and not self._stopping.is_set():
                finished.get_loop().call_later(again, self._look, uuid)

        task.add_done_callback(_done)
        return True

    def _look(self, uuid: str) -> None:
        """Follow one session now (or as soon as its step under way ends)."""
        if not self._spawn(uuid, self._refollow, uuid) and not self._stopping.is_set():
            self._again.add(uuid)

    def _refollow(self, uuid: str) -> float | None:
        with self.database.read() as db:
            row = queries.get_session(db, uuid)
        if row is None or row.claimed_by != self.replica or row.phase not in _ACTIVE:
            return None  # another replica's, or nothing left to follow
        with logs.bind(user=row.owner):  # known only now that the row is read
            return self._follow(row)

    def _platform(self, row: SessionRow) -> Platform | None:
        return self.service.platforms.get(row.platform)

    # -- steps ----------------------------------------------------------------------------

    def _launch(self, row: SessionRow) -> float | None:
        """Claim a due session and start it. The claim is WAITING → PREPARING with this
        replica's lease in one conditional update: whichever replica gets there first
        starts it, and the others find it PREPARING and leave it."""
        began = time.perf_counter()
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
                lease_until=queries.lease_from_now(db, self.lease),
            )
            if not claimed:
                return None
        # This copy as the claim left the row: the first ``_follow`` below moves it on from
        # PREPARING (from the phase read before the claim it would move nothing, and the
        # session would wait for the next pass to be seen running).
        row.phase, row.started, row.claimed_by = Phase.PREPARING, now, self.replica
        platform = self._platform(row)
        if platform is None:
            self._finish(row, Phase.FAILED, f"this broker no longer has platform {row.platform}")
            return None
        if row.end <= now:
            self._finish(row, Phase.FAILED, "the granted time ended before the session could start")
            return None
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
        claimed_in = time.perf_counter() - began
        try:
            handle = platform.start(spec)
        except PlatformError as error:
            self.service.metrics.platform_error(platform.name, "start")
            self._finish(row, Phase.FAILED, f"could not start: {error}")
            return None
        except Exception as error:
            log.exception("starting session %s", row.uuid)
            self._finish(
                row, Phase.FAILED, f"could not start: internal error ({type(error).__name__})"
            )
            return None
        recording = time.perf_counter()
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
            return None
        if not kept:
            # Only if this replica stalled for longer than its lease: the replica that took
            # the session over finds this task by its session id, so it is left alone.
            log.warning("session %s: lease lost while starting it as %s", row.uuid, handle)
            return None
        log.info(  # where a launch's time goes: claim, platform start, recording the handle
            "session %s started on %s as %s in %.0f ms (claimed in %.0f, recorded in %.0f)",
            row.uuid,
            platform.name,
            handle,
            (time.perf_counter() - began) * 1000,
            claimed_in * 1000,
            (time.perf_counter() - recording) * 1000,
        )
        row.handle = handle  # (this copy only: the database has it already)
        return self._follow(row)  # how it is doing: at once

    def _follow(self, row: SessionRow) -> float | None:
        platform = self._platform(row)
        if platform is None:
            self._finish(row, Phase.FAILED, f"this broker no longer has platform {row.platform}")
            return None
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
                    return None
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
                return None
            log.info("session %s re-adopted as %s", row.uuid, handle)
        status = platform.status(handle)
        now = self.clock()
        if not status.state.final and now >= row.end:
            with self.database.write() as db:
                releasing = queries.transition(
                    db, row.uuid, [row.phase], Phase.RELEASING, now, holder=self.replica
                )
            if not releasing:  # cancelled meanwhile (the cancel stops it), or not ours now
                return None
            granted = format_duration(row.end - row.start)
            stop_and_release(platform, handle)
            if status.state == RunState.AVAILABLE:
                # A service (a web server, a notebook server) ends when its time is up: normal.
                self._finish(row, Phase.COMPLETED, f"released at the end of its {granted}", handle)
            else:
                self._finish(
                    row, Phase.FAILED, f"stopped: exceeded the granted duration {granted}", handle
                )
            return None
        self._record(row, status, handle)
        if status.state != RunState.PREPARING:
            return None
        preparing_for = (now - (row.started or now)).total_seconds()
        return next_look(preparing_for, self.interval)

    def _record(self, row: SessionRow, status: RunStatus, handle: str) -> None:
        phase = _PHASE_OF_STATE[status.state]
        if status.state.final:
            text = status.message or f"finished: {phase}"
            if phase == Phase.COMPLETED:  # outputs the broker delivers, before it is done
                failure = self.service.deliver_outputs(row, handle)
                if failure is not None:
                    phase, text = Phase.FAILED, failure
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
