"""One place where failures become HTTP responses: always a 4xx naming what was wrong."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from execbroker import kinds
from execbroker.errors import BrokerError, NoOffer, Unauthenticated
from execbroker.platforms.base import PlatformError

log = logging.getLogger(__name__)


class FieldProblem(BaseModel):
    field: str
    message: str
    type: str


class ReasonMessage(BaseModel):
    level: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: what was wrong, the field when one is to blame, and for a NO to
    direct execution the reasons."""

    detail: str
    field: str | None = None
    errors: list[FieldProblem] | None = None
    result: str | None = None
    messages: list[ReasonMessage] | None = None


_MEANINGS = {
    400: "Malformed body (not JSON, YAML or XML), or no offer for a direct execution",
    401: "No or an unknown bearer token",
    403: "The session or offer set belongs to another user",
    404: "No such session or offer set",
    409: "The session's phase, or the calendar, does not allow the change (the answer says why)",
    415: "A Content-Type the broker does not read",
    422: "The body is not what the schema allows (the field is named)",
    503: "The platform or the database could not answer now (retry later)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` for the error codes a route answers, all with an ErrorBody."""
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        code: {"description": _MEANINGS[code], "content": {"application/json": {"schema": ref}}}
        for code in sorted(set(codes))
    }


def _location(loc: tuple[object, ...]) -> str:
    """``body.executable.script``; drops the tags pydantic adds for each member of a union."""
    parts = [
        str(part)
        for part in loc
        if not (
            isinstance(part, str) and (kinds.is_known(part) or part == "unknown" or "[" in part)
        )
    ]
    return ".".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(BrokerError)
    async def _broker_error(request: Request, error: BrokerError) -> Response:
        body: dict[str, object] = {"detail": error.message}
        if error.field:
            body["field"] = error.field
        if isinstance(error, NoOffer):
            body["result"] = "NO"
            body["messages"] = [{"level": "WARN", "message": reason} for reason in error.reasons]
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthenticated) else None
        return JSONResponse(body, error.status_code, headers)

    @app.exception_handler(PlatformError)
    async def _platform_error(request: Request, error: PlatformError) -> Response:
        # Not the client's fault and not a bug of ours: the platform could not answer now.
        log.warning("%s %s: platform error: %s", request.method, request.url.path, error)
        return JSONResponse({"detail": f"the platform could not answer: {error}"}, 503)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_error(request: Request, error: Exception) -> Response:
        # Locked past the busy timeout, unreachable, a disk error: not the client's fault and
        # no bug of ours to answer 500 for. The transaction was rolled back (a lost COMMIT
        # may not have been: the session's phase says which), so a retry is safe.
        log.warning(
            "%s %s: database error: %s", request.method, request.url.path, error, exc_info=error
        )
        cause = getattr(error, "orig", None) or error
        detail = f"the database could not answer now ({cause}); retry later"
        return JSONResponse({"detail": detail}, 503, {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        problems = [
            {"field": _location(tuple(item["loc"])), "message": item["msg"], "type": item["type"]}
            for item in error.errors()
        ]
        summary = "; ".join(f"{item['field']}: {item['message']}" for item in problems)
        return JSONResponse({"detail": summary, "errors": problems}, 422)
