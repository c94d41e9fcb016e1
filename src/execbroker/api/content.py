"""JSON and YAML in, JSON or YAML out, as the ExecutionBroker draft asks.

Bodies are parsed here rather than by FastAPI so that YAML is accepted too and every
failure names the field: malformed text is a 400, a body of the wrong shape a 422.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import yaml
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from execbroker.errors import BrokerError

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MAX_BODY_BYTES = 4_000_000
M = TypeVar("M", bound=BaseModel)


class MalformedBody(BrokerError):
    status_code = 400


class UnsupportedMediaType(BrokerError):
    status_code = 415


def _media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


async def parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise MalformedBody(f"request body is larger than {MAX_BODY_BYTES} bytes")
    media = _media_type(request.headers.get("content-type"))
    try:
        if media in YAML_TYPES:
            data: Any = yaml.safe_load(raw)
        elif media in ("", "application/json") or media.endswith("+json"):
            data = json.loads(raw)
        else:
            raise UnsupportedMediaType(
                f"content-type {media!r}: send application/json or application/yaml"
            )
    except json.JSONDecodeError as error:
        raise MalformedBody(f"request body is not valid JSON: {error}") from error
    except yaml.YAMLError as error:
        raise MalformedBody(f"request body is not valid YAML: {error}") from error
    except UnicodeDecodeError as error:
        raise MalformedBody("request body is not UTF-8 text") from error
    if not isinstance(data, dict):
        raise RequestValidationError(
            [
                {
                    "type": "model_type",
                    "loc": ("body",),
                    "msg": "the body must be an object",
                    "input": None,
                }
            ]
        )
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors(include_url=False)]
        ) from None


def wants_yaml(request: Request) -> bool:
    """YAML only when the client prefers it; JSON for ``*/*`` and no Accept at all."""
    accept = request.headers.get("accept", "")
    best, best_q = "", -1.0
    for part in accept.split(","):
        media, *params = (item.strip() for item in part.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality > best_q or (quality == best_q and media in YAML_TYPES):
            best, best_q = media.lower(), quality
    return best in YAML_TYPES


def respond(
    request: Request,
    body: BaseModel | dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    data = body.model_dump(mode="json", exclude_none=True) if isinstance(body, BaseModel) else body
    if wants_yaml(request):
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return Response(text, status_code, headers, media_type="application/yaml")
    return JSONResponse(data, status_code, headers)
