"""The ExecutionBroker dialect: offer sets and sessions (thin: the service has the rules).

Each request is answered in the schema generation it spelt its kinds in (found once, by
``content.read_body``, and remembered with the offer set and its sessions), so a client of
the earlier schema reads its own URIs back later too. The earlier generation's paths
(``POST /offersets``, ``POST /sessions`` for direct execution) answer in its spelling
unless the body itself uses the current one.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from execbroker.api import render
from execbroker.api.content import MEDIA_TYPES, read_body, respond
from execbroker.api.dependencies import CurrentUser, Service, base_url
from execbroker.api.errors import error_responses
from execbroker.kinds import Spelling
from execbroker.model.requests import ExecutionRequest
from execbroker.model.sessions import (
    ExecutionSession,
    OfferSetResponse,
    OutputItem,
    OutputList,
    Phase,
    SessionList,
    SessionLogs,
)
from execbroker.model.updates import DurationUpdate, UpdateRequest
from execbroker.service import BrokerService, OfferSet
from execbroker.store.tables import SessionRow

router = APIRouter()


def _ref(schema: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema}"}


def _body_doc(schema: str) -> dict[str, Any]:
    """OpenAPI for a body we parse ourselves (so YAML and XML work too)."""
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": _ref(schema)} for media in MEDIA_TYPES},
        }
    }


def _answers(model: type, *errors: int) -> dict[str, Any]:
    """The route's documented answers: ``model`` in every media type, and its errors."""
    ok = {200: {"content": {media: {"schema": _ref(model.__name__)} for media in MEDIA_TYPES}}}
    return {"response_model": model, "responses": {**ok, **error_responses(*errors)}}


# 400 malformed body, 401 no token, 415 media type, 422 body the schema forbids, 503 platform.
ASKING = (400, 401, 415, 422, 503)
READING = (401, 403, 404, 422)


def _asked(default: Spelling):
    async def post_request(request: Request, service: Service, user: CurrentUser) -> Response:
        parsed = await read_body(request, ExecutionRequest, spelling=default, lenient=True)
        answer = await run_in_threadpool(
            lambda: service.request_offers(
                user, parsed.body, spelling=parsed.spelling, notes=parsed.notes()
            )
        )
        return _offerset(request, answer, created=True)

    return post_request


def _stored(
    request: Request, document: dict[str, Any], spelling: Spelling, root: str, created: bool
) -> Response:
    """A document built from stored rows as its model dumps to (not validated again: every
    offer and accept answers one), in the spelling it was asked in; ``created``: with its
    ``Location``."""
    headers = {"Location": document["meta"]["url"]} if created else None
    return respond(request, document, headers=headers, spelling=spelling, root=root, spelt=True)


def _offerset(request: Request, answer: OfferSet, *, created: bool = False) -> Response:
    """An offer set with its offers."""
    document = render.offerset_document(answer, base_url(request))
    return _stored(request, document, Spelling(answer.row.spelling), "offers-response", created)


def _session(
    request: Request, service: BrokerService, row: SessionRow, *, created: bool = False
) -> Response:
    """A session."""
    spelling = Spelling(row.spelling)
    document = render.session_document(row, base_url(request), service.requested(row), spelling)
    return _stored(request, document, spelling, "execution", created)


def _direct(default: Spelling):
    async def post_direct(request: Request, service: Service, user: CurrentUser) -> Response:
        parsed = await read_body(request, ExecutionRequest, spelling=default, lenient=True)
        row = await run_in_threadpool(
            lambda: service.direct(
                user, parsed.body, spelling=parsed.spelling, notes=parsed.notes()
            )
        )
        return _session(request, service, row, created=True)

    return post_direct


# The current schema's paths, and the earlier generation's for the clients written against it:
# each path, what it does, its handler, and what it answers (besides ASKING's errors).
_POSTS: tuple[tuple[str, str, Any, Any, tuple[int, ...]], ...] = (
    ("/requests", "Ask for offers (ExecutionRequest → OfferSetResponse)",
     _asked(Spelling.CURRENT), OfferSetResponse, ()),
    ("/offersets", "Ask for offers (the earlier schema's POST /requests)",
     _asked(Spelling.DRAFT), OfferSetResponse, ()),
    ("/direct", "Run at once on the best offer, or 400 with the reasons",
     _direct(Spelling.CURRENT), ExecutionSession, (409,)),
    ("/sessions", "Run at once (the earlier schema's direct execution)",
     _direct(Spelling.DRAFT), ExecutionSession, (409,)),
)  # fmt: skip
for _path, _summary, _handler, _model, _more in _POSTS:
    router.add_api_route(
        _path,
        _handler,
        methods=["POST"],
        summary=_summary,
        operation_id=f"post{_path.replace('/', '_')}",
        openapi_extra=_body_doc("ExecutionRequest"),
        **_answers(_model, *ASKING, *_more),
    )


@router.get(
    "/offersets/{uuid}",
    summary="An offer set and its offers",
    operation_id="get_offerset",
    **_answers(OfferSetResponse, *READING),
)
def get_offerset(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    return _offerset(request, service.get_offerset(user, str(uuid)))


@router.get(
    "/sessions",
    summary="The caller's sessions, newest first (an admin's: everyone's), in current spelling",
    operation_id="list_sessions",
    **_answers(SessionList, 401, 422),
)
def list_sessions(
    request: Request,
    service: Service,
    user: CurrentUser,
    phase: Annotated[list[Phase] | None, Query(description="only sessions in these phases")] = None,
) -> Response:
    rows = service.list_sessions(user, [item.value for item in phase or []])
    url = base_url(request)
    sessions = [render.session_document(row, url, service.requested(row)) for row in rows]
    return respond(request, {"sessions": sessions}, root="sessions", spelt=True)


@router.get(
    "/sessions/{uuid}",
    summary="One session",
    operation_id="get_session",
    **_answers(ExecutionSession, *READING),
)
def get_session(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    row = service.get_session(user, str(uuid))
    return _session(request, service, row)


@router.post(
    "/sessions/{uuid}",
    summary="Accept, reject or cancel a session (phase), or change its duration before it starts",
    operation_id="update_session",
    openapi_extra=_body_doc("UpdateRequest"),
    **_answers(ExecutionSession, 400, *READING, 409, 415),
)
async def update_session(
    uuid: UUID, request: Request, service: Service, user: CurrentUser
) -> Response:
    update = (await read_body(request, UpdateRequest)).body.update
    if isinstance(update, DurationUpdate):
        row = await run_in_threadpool(service.change_duration, user, str(uuid), update.duration)
    else:
        row = (
            await service.accept_async(user, str(uuid))
            if update.value == Phase.ACCEPTED  # booked without a thread of its own
            else await run_in_threadpool(service.update_phase, user, str(uuid), update.value)
        )
    return _session(request, service, row)


@router.get(
    "/sessions/{uuid}/logs",
    summary="What the session's task has written so far",
    operation_id="get_logs",
    **_answers(SessionLogs, *READING),
)
def get_logs(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    logs = service.logs(user, str(uuid))
    return respond(request, SessionLogs(stdout=logs.stdout, stderr=logs.stderr), root="logs")


@router.get(
    "/sessions/{uuid}/outputs",
    summary="The files the session's task left as outputs",
    operation_id="list_outputs",
    **_answers(OutputList, *READING),
)
def list_outputs(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    base = f"{base_url(request)}/sessions/{uuid}/outputs"
    files = service.outputs(user, str(uuid))
    items = [OutputItem(name=f.name, size=f.size, url=f"{base}/{f.name}") for f in files]
    return respond(request, OutputList(outputs=items), root="outputs")


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(1 << 16):
            yield chunk


@router.get(
    "/sessions/{uuid}/outputs/{name}",
    summary="One output file, as it is now",
    operation_id="get_output",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **error_responses(*READING),
    },
)
def get_output(uuid: UUID, name: str, service: Service, user: CurrentUser) -> Response:
    stream = service.open_output(user, str(uuid), name)
    media = "application/x-ipynb+json" if name.endswith(".ipynb") else None
    media = media or mimetypes.guess_type(name)[0] or "application/octet-stream"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(_chunks(stream), media_type=media, headers=disposition)
