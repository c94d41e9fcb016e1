"""Names of the kinds of things a request can describe, in every spelling we meet.

The ExecutionBroker schema names every kind by a URI, and it has done so in two
generations: the earlier one (``.../EB/schema/v1.0/types/<area>/<name>-1.0``, which the
reference implementation's clients still send) and the current one
(``.../Calycopis-openapi/schema/v1.0/kinds/<area>/<name>.yaml``). People typing requests by
hand use a short alias. Everything inside the broker compares the current URI only; a
request's :class:`Spelling` is found once, from the request, and its answer is written
in it by :func:`respell`, so no other module knows there is more than one spelling.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

SCHEMA_BASE = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
DRAFT_BASE = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/"
# Kinds the schema has no name for yet: ours, under a name we own.
EXECBROKER_BASE = "urn:execbroker:kinds:"


class Spelling(StrEnum):
    """A generation of the schema's kind URIs; a client is answered in the one it used."""

    CURRENT = "current"
    DRAFT = "draft"


def _current(area: str, name: str) -> str:
    return f"{SCHEMA_BASE}{area}/{name}.yaml"


DOCKER_CONTAINER = _current("executable", "docker-container")
JUPYTER_NOTEBOOK = _current("executable", "jupyter-notebook")
SINGULARITY_CONTAINER = _current("executable", "singularity-container")
DOCKER_COMPOSE = EXECBROKER_BASE + "executable:docker-compose"
BATCH_SCRIPT = EXECBROKER_BASE + "executable:batch-script"
SIMPLE_COMPUTE = _current("compute", "simple-compute-resource")
SIMPLE_STORAGE = _current("storage", "simple-storage-resource")
SIMPLE_VOLUME = _current("volume", "simple-volume-mount")
SIMPLE_DATA = _current("data", "simple-data-resource")
S3_DATA = _current("data", "S3-data-resource")
IVOA_DATA = _current("data", "ivoa-data-resource")
RUCIO_DATA = _current("data", "rucio-data-resource")
SKAO_DATA = _current("data", "skao-data-resource")
SIMPLE_COST = _current("costs", "simple-minmax-float-cost")
SIMPLE_METRIC = _current("metrics", "simple-minmax-float-metric")
SIMPLE_SESSION = _current("session", "simple-execution-session")
SCHEDULED_SESSION = _current("session", "scheduled-execution-session")
# The current schema gives an offer set no kind; the earlier one did.
OFFERSET_RESPONSE = EXECBROKER_BASE + "offerset-response"

ENUM_VALUE_UPDATE = "uri:enum-value-update"
STRING_VALUE_UPDATE = "uri:string-value-update"
INTEGER_VALUE_UPDATE = "uri:integer-value-update"
INTEGER_DELTA_UPDATE = "uri:integer-delta-update"
ENUM_VALUE_OPTION = "uri:enum-value-option"

# THE table: every kind we know, by its current URI, with its short alias and its
# spelling in each generation. Extra spellings seen in the wild are accepted only.
_TABLE: dict[str, tuple[str, dict[Spelling, str]]] = {}
_EXTRA_SPELLINGS: dict[str, str] = {
    # The earlier generation's own typo, still sent by some of its clients.
    f"{DRAFT_BASE}computer/simple-compute-resource-1.0": SIMPLE_COMPUTE,
}


def _schema_kind(uri: str) -> None:
    area, file = uri.removeprefix(SCHEMA_BASE).split("/")
    name = file.removesuffix(".yaml")
    _TABLE[uri] = (
        name,
        {Spelling.CURRENT: uri, Spelling.DRAFT: f"{DRAFT_BASE}{area}/{name}-1.0"},
    )


for _uri in (
    DOCKER_CONTAINER,
    JUPYTER_NOTEBOOK,
    SINGULARITY_CONTAINER,
    SIMPLE_COMPUTE,
    SIMPLE_STORAGE,
    SIMPLE_VOLUME,
    SIMPLE_DATA,
    S3_DATA,
    IVOA_DATA,
    RUCIO_DATA,
    SKAO_DATA,
    SIMPLE_COST,
    SIMPLE_METRIC,
    SIMPLE_SESSION,
    SCHEDULED_SESSION,
):
    _schema_kind(_uri)
_TABLE[DOCKER_COMPOSE] = ("docker-compose", {})
_TABLE[BATCH_SCRIPT] = ("batch-script", {})
_TABLE[OFFERSET_RESPONSE] = (
    "offerset-response",
    {Spelling.DRAFT: f"{DRAFT_BASE}offerset/execution-offerset-1.0"},
)
# Kinds a request may name (the rest are kinds of answers).
_ANSWER_KINDS = frozenset({SIMPLE_SESSION, SCHEDULED_SESSION, OFFERSET_RESPONSE})


def _spellings() -> dict[str, str]:
    """Map every accepted spelling (and its lower case) to the current URI."""
    table: dict[str, str] = {}
    for uri, (alias_, spelt) in _TABLE.items():
        for text in (uri, alias_, f"{alias_}-1.0", *spelt.values()):
            table[text] = uri
            table[text.lower()] = uri
    for text, uri in _EXTRA_SPELLINGS.items():
        table[text] = table[text.lower()] = uri
    return table


_SPELLINGS = _spellings()


def canonical(kind: str) -> str:
    """The current URI for any accepted spelling of a kind; unknown kinds come back as given."""
    text = kind.strip()
    return _SPELLINGS.get(text, _SPELLINGS.get(text.lower(), text))


def alias(kind: str) -> str:
    """The short alias of a kind (for people and logs); unknown kinds come back as given."""
    uri = canonical(kind)
    return _TABLE[uri][0] if uri in _TABLE else uri


def is_known(kind: str) -> bool:
    uri = canonical(kind)
    return uri in _TABLE and uri not in _ANSWER_KINDS


def spell(kind: str, spelling: Spelling) -> str:
    """``kind`` as the ``spelling`` generation writes it (as given when it has no such name)."""
    uri = canonical(kind)
    return _TABLE[uri][1].get(spelling, uri) if uri in _TABLE else kind


def spelling_of(kind: str) -> Spelling | None:
    """The generation a kind's text belongs to, or None for aliases and our own kinds."""
    text = kind.strip().lower()
    if text.startswith(DRAFT_BASE.lower()):
        return Spelling.DRAFT
    if text.startswith(SCHEMA_BASE.lower()):
        return Spelling.CURRENT
    return None


def spelling_used(document: Any, default: Spelling = Spelling.CURRENT) -> Spelling:
    """The generation a raw request document is written in: the first schema URI it uses
    for a kind decides; a document of aliases only is answered in ``default``."""
    for kind in _kinds_in(document):
        found = spelling_of(kind)
        if found is not None:
            return found
    return default


def _kinds_in(document: Any) -> Iterable[str]:
    stack = [document]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            kind = node.get("kind")
            if isinstance(kind, str):
                yield kind
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def respell_in_place(document: Any, spelling: Spelling) -> Any:
    """``respell`` without the copy, for a document the caller has just made (an answer's
    dump): the same ``kind`` values rewritten, found without a call per node."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, dict | list):
                    stack.append(value)
                elif key == "kind" and isinstance(value, str):
                    node[key] = spell(value, spelling)
        elif isinstance(node, list):
            stack.extend(item for item in node if isinstance(item, dict | list))
    return document


def respell(document: Any, spelling: Spelling) -> Any:
    """A copy of a JSON-like answer with every ``kind`` written in ``spelling``."""
    if isinstance(document, dict):
        return {
            key: spell(value, spelling)
            if key == "kind" and isinstance(value, str)
            else respell(value, spelling)
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [respell(item, spelling) for item in document]
    return document
