"""JSON, YAML and XML in and out, by ``Content-Type`` and ``Accept``, as the schema lists.

Bodies are parsed here rather than by FastAPI so that YAML and XML are accepted too and
every failure names the field: malformed text is a 400, a body of the wrong shape a 422.
What a small body can become is bounded before any model sees it: YAML aliases are
refused (a few hundred bytes of nested aliases expand to megabytes), XML may carry no DTD
(so no entity), lists, mappings and elements nest at most ``MAX_DEPTH`` levels, and no
string or key may hold a NUL byte (no file name, environment, script or database column
can carry one).

A request's unknown properties are not an error (the schema does not forbid them):
:func:`read_body` drops them and names them, so the answer can carry a WARN saying so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import yaml
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from execbroker import kinds
from execbroker.api import xmldoc
from execbroker.errors import BrokerError
from execbroker.safeyaml import MAX_DEPTH, AliasError, DepthError, depth_of, load_body

JSON = "application/json"
YAML = "application/yaml"
XML = "application/xml"
YAML_TYPES = (YAML, "application/x-yaml", "text/yaml", "text/x-yaml")
XML_TYPES = (XML, "text/xml")
# Every type a body may be sent or answered in (the OpenAPI document lists them).
MEDIA_TYPES = (JSON, YAML, XML)
MAX_BODY_BYTES = 4_000_000
M = TypeVar("M", bound=BaseModel)


class MalformedBody(BrokerError):
    status_code = 400


class UnsupportedMediaType(BrokerError):
    status_code = 415


def _media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Parsed(Generic[M]):
    """A request body as its model, with what the answer needs to know of how it was sent."""

    body: M
    spelling: kinds.Spelling
    unknown: tuple[str, ...] = ()

    def notes(self) -> list[str]:
        """One WARN per unknown property, naming it."""
        return [f"{path}: unknown property, ignored" for path in self.unknown]


async def read_body(
    request: Request,
    model: type[M],
    *,
    spelling: kinds.Spelling = kinds.Spelling.CURRENT,
    lenient: bool = False,
) -> Parsed[M]:
    """The body as ``model``, in the spelling its kinds use (``spelling`` if none does).

    ``lenient`` drops unknown properties (and names them) instead of refusing them.
    """
    data = await _document(request, model)
    unknown: list[str] = []
    while True:
        try:
            body = model.model_validate(data)
            break
        except ValidationError as error:
            problems = error.errors(include_url=False)
            extra = [item["loc"] for item in problems if item["type"] == "extra_forbidden"]
            paths = [_dotted(data, loc) for loc in extra]
            # Unknown properties dropped, the body is validated again: what is left wrong
            # (if anything) is refused on the next round.
            if not lenient or not _drop(data, extra):
                raise RequestValidationError(
                    [{**item, "loc": ("body", *item["loc"])} for item in problems]
                ) from None
            unknown += paths
    return Parsed(body, kinds.spelling_used(data, spelling), tuple(unknown))


async def parse_body(request: Request, model: type[M]) -> M:
    return (await read_body(request, model)).body


def _walk(data: Any, loc: tuple[Any, ...]) -> list[tuple[Any, Any]]:
    """The (container, key) steps of a pydantic error location in the raw document,
    leaving out the tags pydantic adds for the members of unions."""
    steps, node = [], data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and (isinstance(part, int) and 0 <= part < len(node))
        ):
            steps.append((node, part))
            node = node[part]
    return steps


def _dotted(data: Any, loc: tuple[Any, ...]) -> str:
    return ".".join(str(key) for _, key in _walk(data, loc))


def _drop(data: Any, locations: list[tuple[Any, ...]]) -> bool:
    """Remove the unknown properties at ``locations``; whether any was removed."""
    dropped = False
    for loc in locations:
        steps = _walk(data, loc)
        if steps and isinstance(steps[-1][0], dict):
            container, key = steps[-1]
            del container[key]
            dropped = True
    return dropped


async def _document(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    """The body as a bounded, NUL-free JSON-like object, whatever its media type."""
    raw = await _read(request)
    media = _media_type(request.headers.get("content-type"))
    try:
        if media in YAML_TYPES:
            data: Any = load_body(raw)
        elif media in XML_TYPES or media.endswith("+xml"):
            data = xmldoc.shape(xmldoc.loads(raw, max_depth=MAX_DEPTH), model)
        elif media in ("", JSON) or media.endswith("+json"):
            data = json.loads(raw)
        else:
            raise UnsupportedMediaType(
                f"content-type {media!r}: send one of {', '.join(MEDIA_TYPES)}"
            )
    except xmldoc.XmlError as error:
        raise MalformedBody(f"request body: {error}") from None
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
    return data


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


def answer_type(request: Request) -> str:
    """JSON, YAML or XML, whichever the client's Accept prefers; JSON for ``*/*``, for no
    Accept at all, and between equals."""
    accept = request.headers.get("accept", "")
    best, best_q = JSON, -1.0
    for part in accept.split(","):
        media, *params = (item.strip().lower() for item in part.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        found = (
            YAML if media in YAML_TYPES else XML if media in XML_TYPES else JSON
        )  # */*, application/json and the rest are all answered in JSON
        if quality > best_q or (quality == best_q and best == JSON and found != JSON):
            best, best_q = found, quality
    return best


def wants_yaml(request: Request) -> bool:
    return answer_type(request) == YAML


# Root elements of the documents answered as XML (the schema's own names where it has one).
_XML_ROOTS = {"OfferSetResponse": "offers-response", "ExecutionSession": "execution"}


def respond(
    request: Request,
    body: BaseModel | dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    *,
    spelling: kinds.Spelling = kinds.Spelling.CURRENT,
    root: str | None = None,
    spelt: bool = False,
) -> Response:
    """``body`` in the type the client accepts, its kinds written in ``spelling``;
    ``spelt``: ``body`` is a document made for this answer with its kinds so written already
    (taken as it is, neither copied nor respelt)."""
    if isinstance(body, BaseModel):  # a fresh dump, ours to respell where it lies
        data = kinds.respell_in_place(body.model_dump(mode="json", exclude_none=True), spelling)
    elif spelt:
        data = body
    else:
        data = kinds.respell(body, spelling)
    media = answer_type(request)
    if media == YAML:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return Response(text, status_code, headers, media_type=YAML)
    if media == XML:
        name = root or _XML_ROOTS.get(type(body).__name__, "document")
        return Response(xmldoc.dumps(data, name), status_code, headers, media_type=XML)
    return JSONResponse(data, status_code, headers)
