"""The ExecutionBroker dialect: offer sets and sessions (thin: the service has the rules)."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from execbroker.api import render
from execbroker.api.content import parse_body, respond
from execbroker.model.requests import ExecutionRequest
from execbroker.model.sessions import OfferSetResponse, Phase
from execbroker.model.updates import UpdateRequest
from execbroker.service import BrokerService, User

router = APIRouter()


def _service(request: Request) -> BrokerService:
    return request.app.state.service


def _user(request: Request) -> User:
    return request.app.state.authenticate(request)


Service = Annotated[BrokerService, Depends(_service)]
CurrentUser = Annotated[User, Depends(_user)]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _body_doc(schema: str) -> dict[str, Any]:
    """OpenAPI for a body we parse ourselves (so YAML works too)."""
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref}, "application/yaml": {"schema": ref}},
        }
    }


async def post_request(request: Request, service: Service, user: CurrentUser) -> Response:
    body = await parse_body(request, ExecutionRequest)
    answer = await run_in_threadpool(service.request_offers, user, body)
    document = render.offerset(answer, _base(request))
    return respond(request, document, headers={"Location": document.meta.url or ""})


# The current schema's path, and the earlier draft's for the clients written against it.
for _path, _summary in (
    ("/requests", "Ask for offers (ExecutionRequest → OfferSetResponse)"),
    ("/offersets", "Ask for offers (the earlier draft's name for POST /requests)"),
):
    router.add_api_route(
        _path,
        post_request,
        methods=["POST"],
        summary=_summary,
        response_model=OfferSetResponse,
        operation_id=f"post{_path.replace('/', '_')}",
        openapi_extra=_body_doc("ExecutionRequest"),
    )


@router.post(
    "/direct",
    summary="Run at once on the best offer, or 400 with the reasons",
    openapi_extra=_body_doc("ExecutionRequest"),
)
async def post_direct(request: Request, service: Service, user: CurrentUser) -> Response:
    body = await parse_body(request, ExecutionRequest)
    row = await run_in_threadpool(service.direct, user, body)
    document = render.session(row, _base(request))
    return respond(request, document, headers={"Location": document.meta.url or ""})


@router.get("/offersets/{uuid}", summary="An offer set and its offers")
def get_offerset(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    answer = service.get_offerset(user, str(uuid))
    return respond(request, render.offerset(answer, _base(request)))


@router.get("/sessions", summary="The caller's sessions, newest first (an admin's: everyone's)")
def list_sessions(
    request: Request,
    service: Service,
    user: CurrentUser,
    phase: Annotated[list[Phase] | None, Query(description="only sessions in these phases")] = None,
) -> Response:
    rows = service.list_sessions(user, [item.value for item in phase or []])
    return respond(
        request,
        {
            "sessions": [
                render.session(row, _base(request)).model_dump(mode="json", exclude_none=True)
                for row in rows
            ]
        },
    )


@router.get("/sessions/{uuid}", summary="One session")
def get_session(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    return respond(request, render.session(service.get_session(user, str(uuid)), _base(request)))


@router.post(
    "/sessions/{uuid}",
    summary="Accept, reject or cancel a session (UpdateRequest on phase)",
    openapi_extra=_body_doc("UpdateRequest"),
)
async def update_session(
    uuid: UUID, request: Request, service: Service, user: CurrentUser
) -> Response:
    body = await parse_body(request, UpdateRequest)
    row = await run_in_threadpool(service.update_phase, user, str(uuid), body.update.value)
    return respond(request, render.session(row, _base(request)))


@router.get("/sessions/{uuid}/logs", summary="What the session's task has written so far")
def get_logs(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    logs = service.logs(user, str(uuid))
    return respond(request, {"stdout": logs.stdout, "stderr": logs.stderr})


@router.get("/sessions/{uuid}/outputs", summary="The files the session's task left as outputs")
def list_outputs(uuid: UUID, request: Request, service: Service, user: CurrentUser) -> Response:
    base = f"{_base(request)}/sessions/{uuid}/outputs"
    files = service.outputs(user, str(uuid))
    return respond(
        request,
        {"outputs": [{"name": f.name, "size": f.size, "url": f"{base}/{f.name}"} for f in files]},
    )


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(1 << 16):
            yield chunk


@router.get("/sessions/{uuid}/outputs/{name}", summary="One output file, as it is now")
def get_output(uuid: UUID, name: str, service: Service, user: CurrentUser) -> Response:
    stream = service.open_output(user, str(uuid), name)
    media = "application/x-ipynb+json" if name.endswith(".ipynb") else None
    media = media or mimetypes.guess_type(name)[0] or "application/octet-stream"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(_chunks(stream), media_type=media, headers=disposition)
