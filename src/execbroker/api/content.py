"""JSON and YAML in, JSON or YAML out, as the ExecutionBroker draft asks.

Bodies are parsed here rather than by FastAPI so that YAML is accepted too and every
failure names the field: malformed text is a 400, a body of the wrong shape a 422.
What a small body can become is bounded before any model sees it: YAML aliases are
refused (a few hundred bytes of nested aliases expand to megabytes), lists and mappings
nest at most ``MAX_DEPTH`` levels, and no string or key may hold a NUL byte (no file name,
environment, script or database column can carry one).
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
from execbroker.safeyaml import MAX_DEPTH, AliasError, DepthError, depth_of, load_body

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
    raw = await _read(request)
    media = _media_type(request.headers.get("content-type"))
    try:
        if media in YAML_TYPES:
            data: Any = load_body(raw)
        elif media in ("", "application/json") or media.endswith("+json"):
            data = json.loads(raw)
        else:
            raise UnsupportedMediaType(
                f"content-type {media!r}: send application/json or application/yaml"
            )
    except json.JSONDecodeError as error:
        raise MalformedBody(f"request body is not valid JSON: {error}") from error
    except (AliasError, DepthError) as error:
        mark = error.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MalformedBody(f"request body: YAML {error.problem}{at}") from None
    except yaml.YAMLError as error:
        raise MalformedBody(f"request body is not valid YAML: {error}") from error
    except UnicodeDecodeError as error:
        raise MalformedBody("request body is not UTF-8 text") from error
    except RecursionError:  # json's own decoder, far past MAX_DEPTH
        raise MalformedBody(f"request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise MalformedBody(f"request body cannot be read: {error}") from None
    if depth_of(data) > MAX_DEPTH:
        raise MalformedBody(f"request body nests deeper than {MAX_DEPTH} levels")
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
    nul = nul_path(data)
    if nul is not None:
        raise RequestValidationError(
            [
                {
                    "type": "string_nul",
                    "loc": ("body", *nul),
                    "msg": "NUL bytes are not allowed",
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


def nul_path(data: Any) -> tuple[str | int, ...] | None:
    """Where the first string or key holding a NUL byte is, or None."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and "\x00" in key:
                    return (*path, key.replace("\x00", "\\0"))
                stack.append((value, (*path, str(key))))
        elif isinstance(node, list):
            stack.extend((item, (*path, index)) for index, item in enumerate(node))
    return None


async def _read(request: Request) -> bytes:
    """The body, refused as soon as it grows past MAX_BODY_BYTES (not read whole first)."""
    too_large = MalformedBody(f"request body is larger than {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


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
