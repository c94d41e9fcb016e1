"""The IVOA UWS 1.1 dialect at ``/uws/jobs``: a thin router over ``BrokerService``.

Every rule (ownership, quota, phases, exactly-once accepts) is the service's; this module
only translates form parameters into requests and sessions into UWS documents.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from execbroker.api.dependencies import CurrentUser, Service, base_url
from execbroker.errors import InvalidRequest, NotFound
from execbroker.model import uws
from execbroker.model.sessions import Phase
from execbroker.service import BrokerService, User
from execbroker.store import queries
from execbroker.store.tables import SessionRow
from execbroker.timeutil import format_instant, parse_instant

router = APIRouter(prefix="/uws", tags=["UWS 1.1"])

MAX_LIST = 1000  # jobs in a list without LAST (newest first)
MAX_WAIT = 60.0  # seconds: the server's cap on a blocking WAIT (WAIT=-1 waits this long)
XML = "application/xml"
FORM = "application/x-www-form-urlencoded"
DIALECT = "uws"


async def _parameters(request: Request) -> tuple[uws.JobParameters, Any]:
    """Query and form parameters (UWS names are case-insensitive), and a document body."""
    pairs = list(request.query_params.multi_items())
    media = request.headers.get("content-type", FORM).split(";")[0].strip().lower()
    body = await request.body()
    document = None
    if body and media in ("", FORM):
        pairs += parse_qsl(body.decode(errors="replace"), keep_blank_values=True)
    elif body:  # an ExecutionRequest document posted as the job's description
        document = uws.document(body.decode(errors="replace"))
    return uws.JobParameters.parse(pairs), document


def _xml(element: Any, status_code: int = 200) -> Response:
    return Response(uws.to_xml(element), status_code, media_type=XML)


def _see(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def job_of(row: SessionRow, base: str, service: BrokerService, user: User) -> uws.Job:
    """A session as a UWS job (a session made through any dialect has this view)."""
    meta = row.dialect_meta or {}
    phase = uws.PHASES[row.phase]
    href = f"{base}/uws/jobs/{row.uuid}"
    results = [
        uws.Result(f"endpoint-{index}", endpoint["location"])
        for index, endpoint in enumerate(row.endpoints, start=1)
    ]
    if row.handle is not None:
        results += [
            uws.Result(stream, f"{href}/results/{stream}", "text/plain")
            for stream in ("stdout", "stderr")
        ]
        results += [
            uws.Result(
                f"output-{f.name}", f"{base}/sessions/{row.uuid}/outputs/{f.name}", None, f.size
            )
            for f in service.outputs(user, row.uuid)
        ]
    return uws.Job(
        job_id=row.uuid,
        run_id=meta.get("runId"),
        owner=row.owner,
        phase=phase,
        quote=row.end if row.platform else None,
        created=row.created,
        started=row.started,
        ended=row.finished,
        execution_duration=int((row.end - row.start).total_seconds()),
        destruction=row.expires if row.phase == Phase.OFFERED else row.end,
        parameters=meta.get("parameters") or {},
        results=results,
        error=_error(row) if phase in ("ERROR", "ABORTED") else None,
        href=href,
    )


def _error(row: SessionRow) -> str:
    warnings = [item["message"] for item in row.messages if item.get("level") in ("WARN", "ERROR")]
    said = warnings or [item["message"] for item in row.messages]
    return "; ".join(said) or f"the session ended {row.phase}"


async def _job(request: Request, service: BrokerService, user: User, uuid: UUID) -> uws.Job:
    row = await run_in_threadpool(service.get_job, user, str(uuid))
    return job_of(row, base_url(request), service, user)


# -- the job list -----------------------------------------------------------------------------


@router.get("/jobs", summary="The caller's jobs (PHASE repeatable, AFTER, LAST)")
def list_jobs(request: Request, service: Service, user: CurrentUser) -> Response:
    params = uws.JobParameters.parse(list(request.query_params.multi_items()))
    wanted = [phase.upper() for phase in params.values.get("phase", [])]
    for phase in wanted:
        if phase not in uws.UWS_PHASES:
            raise InvalidRequest(f"PHASE: {phase!r} is not a UWS phase", field="PHASE")
    after = params.one("after")
    try:
        since = parse_instant(after) if after else None
    except ValueError:
        raise InvalidRequest(
            f"AFTER: {after!r} is not an ISO-8601 instant", field="AFTER"
        ) from None
    last = uws.whole(params, "last", minimum=0)
    where = queries.JobFilter(
        owner=None,  # the service's: the caller's own, or everyone's for an admin
        phases=[phase for uws_phase in wanted for phase in uws.sessions_in(uws_phase)],
        # UWS 1.1: ARCHIVED jobs are listed only when asked for
        not_phases=() if wanted else uws.sessions_in("ARCHIVED"),
        created_after=since,
    )
    rows = service.list_jobs(user, where, limit=MAX_LIST if last is None else last)
    base = base_url(request)
    return _xml(uws.jobs_element([_summary(row, base) for row in rows]))


def _summary(row: SessionRow, base: str) -> uws.Job:
    """What a jobref needs (no results: reading outputs for every job would be wasted)."""
    meta = row.dialect_meta or {}
    return uws.Job(
        job_id=row.uuid,
        run_id=meta.get("runId"),
        owner=row.owner,
        phase=uws.PHASES[row.phase],
        quote=None,
        created=row.created,
        started=None,
        ended=None,
        execution_duration=0,
        destruction=None,
        parameters={},
        results=[],
        error=None,
        href=f"{base}/uws/jobs/{row.uuid}",
    )


@router.post("/jobs", summary="Create a job (image=, script= or request=; RUNID, PHASE=RUN)")
async def create_job(request: Request, service: Service, user: CurrentUser) -> Response:
    params, document = await _parameters(request)
    phase = (params.one("phase") or "").upper()
    if phase not in ("", "RUN"):
        raise InvalidRequest(
            f"PHASE: only RUN may be given at creation, not {phase!r}", field="PHASE"
        )
    image = params.one("image")
    ports = {}
    if image and not params.values.get("port"):
        ports[image] = await run_in_threadpool(service.image_ports, image)
    execution = uws.to_request(params, ports, document)
    meta = {"parameters": params.shown(), "runId": params.one("runid")}
    row = await run_in_threadpool(
        lambda: service.submit(user, execution, dialect=DIALECT, meta=meta, run=phase == "RUN")
    )
    return _see(f"{base_url(request)}/uws/jobs/{row.uuid}")


# -- one job ------------------------------------------------------------------------------


@router.get("/jobs/{uuid}", summary="A job (WAIT=N blocks while its phase is PHASE or active)")
async def get_job(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    params = uws.JobParameters.parse(list(request.query_params.multi_items()))
    wait = params.one("wait")
    if wait is not None:
        try:
            seconds = float(wait)
        except ValueError:
            raise InvalidRequest(
                f"WAIT: {wait!r} is not a number of seconds", field="WAIT"
            ) from None
        seconds = MAX_WAIT if seconds < 0 else min(seconds, MAX_WAIT)
        row = await run_in_threadpool(service.get_job, user, str(uuid))
        current = uws.PHASES[row.phase]
        asked = (params.one("phase") or current).upper()
        if current == asked and current in uws.ACTIVE:
            blocking = uws.sessions_in(current)
            await run_in_threadpool(service.wait_while, user, str(uuid), blocking, seconds)
    return _xml(uws.job_element(await _job(request, service, user, uuid)))


@router.post(
    "/jobs/{uuid}", summary="PHASE=RUN|ABORT, ACTION=DELETE, DESTRUCTION, EXECUTIONDURATION"
)
async def post_job(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    params, _ = await _parameters(request)
    if (params.one("action") or "").upper() == "DELETE":
        await run_in_threadpool(service.delete_job, user, str(uuid))
        return _see(f"{base_url(request)}/uws/jobs")
    await _change(params, service, user, uuid)
    return _see(f"{base_url(request)}/uws/jobs/{uuid}")


@router.delete("/jobs/{uuid}", summary="Abort the job and forget it")
async def delete_job(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    await run_in_threadpool(service.delete_job, user, str(uuid))
    return _see(f"{base_url(request)}/uws/jobs")


async def _change(
    params: uws.JobParameters, service: BrokerService, user: User, uuid: UUID
) -> None:
    """Apply EXECUTIONDURATION (the service's ``change_duration``: a job not yet started,
    re-checked against quota and calendar), then PHASE; DESTRUCTION is checked and the
    broker's own kept (the offer's expiry; UWS lets a service answer with what it keeps)."""
    unknown = [name for name in params.values if name not in uws.CONTROL_PARAMETERS]
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: a job cannot be changed by it", field=unknown[0])
    destruction = params.one("destruction")
    if destruction is not None:
        try:
            parse_instant(destruction)
        except ValueError:
            raise InvalidRequest(
                f"DESTRUCTION: {destruction!r} is not an ISO-8601 instant", field="DESTRUCTION"
            ) from None
    phase = params.one("phase")
    action = phase.upper() if phase is not None else None
    if action not in (None, "RUN", "ABORT"):
        raise InvalidRequest(f"PHASE: {phase!r} is not RUN or ABORT", field="PHASE")
    row = await run_in_threadpool(service.get_job, user, str(uuid))
    seconds = uws.whole(params, "executionduration", minimum=0)
    if seconds:  # 0 is UWS's "no limit": a grant always has one, so the broker's is kept
        wanted = timedelta(seconds=seconds)
        await run_in_threadpool(service.change_duration, user, str(uuid), lambda _: wanted)
    if action == "RUN" and row.phase == Phase.OFFERED:
        await run_in_threadpool(service.update_phase, user, str(uuid), Phase.ACCEPTED)
    elif action == "ABORT":
        await run_in_threadpool(service.abandon, user, str(uuid))


@router.post("/jobs/{uuid}/{child}", summary="Change phase, destruction or executionduration")
async def post_child(
    uuid: UUID, child: str, request: Request, service: Service, user: CurrentUser
) -> Response:
    name = child.lower()
    if name not in ("phase", "destruction", "executionduration"):
        raise InvalidRequest(f"{child}: this part of a job cannot be changed", field=child)
    params, _ = await _parameters(request)
    only = uws.JobParameters({name: params.values.get(name, [])} if params.values.get(name) else {})
    if not only.values:
        raise InvalidRequest(f"{name.upper()}: missing", field=name.upper())
    await _change(only, service, user, uuid)
    return _see(f"{base_url(request)}/uws/jobs/{uuid}")


def _plain(value: str | datetime | int | None) -> Response:
    if isinstance(value, datetime):
        value = format_instant(value)
    return PlainTextResponse("" if value is None else str(value))


@router.get("/jobs/{uuid}/{child}", summary="One part of a job")
async def get_child(
    uuid: UUID, child: str, request: Request, service: Service, user: CurrentUser
) -> Response:
    job = await _job(request, service, user, uuid)
    parts: dict[str, Any] = {
        "phase": lambda: _plain(job.phase),
        "executionduration": lambda: _plain(job.execution_duration),
        "destruction": lambda: _plain(job.destruction),
        "quote": lambda: _plain(job.quote),
        "owner": lambda: _plain(job.owner),
        "error": lambda: _plain(job.error),
        "parameters": lambda: _xml(uws.parameters_element(job.parameters)),
        "results": lambda: _xml(uws.results_element(job.results)),
    }
    part = parts.get(child.lower())
    if part is None:
        raise NotFound(f"{child}: a UWS job has no such part ({', '.join(parts)})")
    return part()


@router.get("/jobs/{uuid}/results/{stream}", summary="The job's stdout or stderr")
async def get_stream(
    uuid: UUID, stream: str, request: Request, service: Service, user: CurrentUser
) -> Response:
    if stream not in ("stdout", "stderr"):
        raise InvalidRequest(f"{stream}: results here are stdout and stderr", field=stream)
    await run_in_threadpool(service.get_job, user, str(uuid))
    logs = await run_in_threadpool(service.logs, user, str(uuid))
    return PlainTextResponse(getattr(logs, stream))
