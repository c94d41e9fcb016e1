"""A session answered from its stored row without validating it again
(``render.session_document``) is byte for byte the answer its validated model makes
(``render.session``), in JSON, YAML and XML and in both spellings of the schema, for sessions
of every shape the broker stores: a batch script, a docker container with ports, one with
data, storage, volumes and a price, offered, accepted and finished with its connectors. So is
an offer set with its offers (``render.offerset_document`` and ``render.offerset``): YES with
several, NO with none and with its reasons."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from execbroker.api import render
from execbroker.api.content import respond
from execbroker.kinds import Spelling
from execbroker.model.requests import ExecutionRequest
from execbroker.model.sessions import Phase, SessionList
from execbroker.service import OfferSet, message
from execbroker.store.tables import OfferSetRow, SessionRow

BASE = "http://127.0.0.1:8000"
BATCH = {
    "executable": {"kind": "batch-script", "script": "echo hello"},
    "compute": {"cores": {"min": 1, "max": 2}, "memory": {"min": 1, "max": 2}},
    "schedule": {"requested": {"duration": "PT1H"}},
}
DOCKER = {
    "executable": {
        "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
        "name": "web",
        "image": {"locations": ["httpd:local"], "digest": "sha256:" + "0" * 64},
        "entrypoint": "/bin/httpd",
        "command": ["-f", "-p", "8080"],
        "environment": {"GREETING": "hello", "kind": "docker-container"},
        "network": {
            "ports": [{"internal": {"port": 8080}, "protocol": "HTTP", "path": "/", "access": True}]
        },
    },
    "compute": {"kind": "simple-compute-resource", "cores": {"min": 1}, "memory": {"min": 1}},
}
WITH_DATA = {
    **BATCH,
    "compute": {
        **BATCH["compute"],
        "meta": {"name": "worker", "description": "the one worker"},
        "volumes": [{"kind": "simple-volume-mount", "resource": "catalogue", "path": "/in"}],
    },
    "storage": [{"kind": "simple-storage-resource", "meta": {"name": "scratch"}}],
    "data": [
        {
            "kind": "simple-data-resource",
            "meta": {"name": "catalogue", "uuid": str(uuid.uuid4())},
            "storage": "scratch",
            "location": "https://example.org/data/catalogue.fits",
            "extra": {"kind": "docker-container", "nothing": None},
        }
    ],
}
NOW = datetime(2026, 12, 2, 4, 50, 17, 784585, tzinfo=UTC)


def _row(asked: dict[str, Any], phase: Phase, **changes: Any) -> tuple[SessionRow, dict]:
    """A session as the service stores one for ``asked``, and the request as stored."""
    request = ExecutionRequest.model_validate(asked)
    start = NOW + timedelta(hours=1)
    values: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "offerset_uuid": str(uuid.uuid4()),
        "owner": "alice",
        "phase": phase.value,
        "created": NOW,
        "modified": NOW + timedelta(microseconds=120000),
        "expires": NOW + timedelta(minutes=5),
        "start": start,
        "end": start + timedelta(hours=1, minutes=30),
        "cores": 2,
        "memory_gib": 3,
        "storage_gib": 0,
        "cost": None,
        "cost_type": None,
        "executable": request.executable.model_dump(mode="json", exclude_none=True),
        "platform": "local",
        "messages": [message("offered", now=NOW), message("accepted by alice", "WARN")],
        "endpoints": [],
        "spelling": Spelling.CURRENT.value,
    }
    values.update(changes)
    return SessionRow(**values), request.model_dump(mode="json", exclude_none=True)


SESSIONS = {
    "batch offered": _row(BATCH, Phase.OFFERED),
    "batch accepted": _row(BATCH, Phase.ACCEPTED),
    "batch with booked storage, priced": _row(
        BATCH, Phase.WAITING, storage_gib=5, cost=3, cost_type="EUR"
    ),
    "docker with ports, available": _row(
        DOCKER,
        Phase.AVAILABLE,
        endpoints=[{"protocol": "http", "location": "http://127.0.0.1:32768/"}],
        spelling=Spelling.DRAFT.value,
    ),
    "docker finished": _row(
        DOCKER,
        Phase.COMPLETED,
        endpoints=[{"protocol": "http", "location": "http://127.0.0.1:32768/"}],
        messages=[{"level": "INFO", "message": "odd time", "time": "2026-12-02T04:50:17+00:00"}],
    ),
    "with data, storage and volumes": _row(WITH_DATA, Phase.ACCEPTED, storage_gib=7, cost=0.5),
    "with data, no request kept": _row(WITH_DATA, Phase.CANCELLED),
}


def _request(accept: str) -> Request:
    return Request({"type": "http", "headers": [(b"accept", accept.encode())]})


def _both(row: SessionRow, requested: dict[str, Any] | None, accept: str) -> tuple[bytes, bytes]:
    """The validated answer and the one built without validating, as sent."""
    spelling = Spelling(row.spelling)
    validated = respond(
        _request(accept), render.session(row, BASE, requested), spelling=spelling
    ).body
    document = render.session_document(row, BASE, requested, spelling)
    built = respond(
        _request(accept), document, spelling=spelling, root="execution", spelt=True
    ).body
    return validated, built


@pytest.mark.parametrize("accept", ["application/json", "application/yaml", "application/xml"])
@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_a_session_built_unvalidated_is_answered_byte_for_byte_as_its_model(name, accept):
    row, requested = SESSIONS[name]
    kept = None if name.endswith("no request kept") else requested
    validated, built = _both(row, kept, accept)
    assert built == validated


@pytest.mark.parametrize("spelling", list(Spelling))
def test_the_document_shares_nothing_with_the_stored_row(spelling):
    row, requested = SESSIONS["with data, storage and volumes"]
    row.spelling = spelling.value
    stored = (repr(row.executable), repr(row.messages), repr(requested))
    document = render.session_document(row, BASE, requested, spelling)
    document["executable"]["environment"] = document["data"][0]["extra"]["kind"] = "changed"
    document["compute"]["volumes"][0]["kind"] = document["meta"]["messages"][0]["level"] = "x"
    assert (repr(row.executable), repr(row.messages), repr(requested)) == stored
    assert document["schedule"] is not document["compute"]["schedule"]


_texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=30)
_instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=200, deadline=None)
@given(
    created=_instants,
    modified=_instants,
    times=st.lists(st.tuples(_instants, st.sampled_from(["INFO", "WARN", "ERROR"]), _texts)),
    phase=st.sampled_from(list(Phase)),
    cost=st.none() | st.floats(min_value=0, max_value=1e6) | st.integers(0, 10**6),
    storage=st.integers(0, 1000),
)
def test_any_stored_session_is_built_as_its_model_dumps(
    created, modified, times, phase, cost, storage
):
    messages = [message(text, level, now=at) for at, level, text in times]
    row, requested = _row(
        BATCH,
        phase,
        created=created,
        modified=modified,
        expires=modified,
        messages=messages,
        cost=cost,
        storage_gib=storage,
    )
    validated, built = _both(row, requested, "application/json")
    assert built == validated


@settings(max_examples=300, deadline=None)
@given(session=st.uuids(), part=st.text(max_size=20))
def test_component_uuids_are_uuid5_of_the_session(session, part):
    assert render._component_uuid(str(session), part) == str(uuid.uuid5(session, part))


def _offerset(asked: dict[str, Any], result: str, count: int, spelling: Spelling) -> OfferSet:
    """An offer set as the service stores one for ``asked``, with ``count`` offers."""
    rows = [_row(asked, Phase.OFFERED, spelling=spelling.value)[0] for _ in range(count)]
    requested = _row(asked, Phase.OFFERED)[1]
    notes = [message("the request's kind is spelt as the earlier schema spelt it", "WARN")]
    if result == "NO":
        notes.append(message("no platform has 64 cores free", "ERROR", now=NOW))
    row = OfferSetRow(
        uuid=str(uuid.uuid4()),
        owner="alice",
        created=NOW,
        result=result,
        request=requested,
        messages=notes,
        spelling=spelling.value,
    )
    return OfferSet(row, rows)


@pytest.mark.parametrize("accept", ["application/json", "application/yaml", "application/xml"])
@pytest.mark.parametrize("spelling", list(Spelling))
@pytest.mark.parametrize(
    ("asked", "result", "count"),
    [(BATCH, "YES", 4), (WITH_DATA, "YES", 2), (DOCKER, "YES", 1), (BATCH, "NO", 0)],
)
def test_an_offer_set_built_unvalidated_is_answered_byte_for_byte_as_its_model(
    asked, result, count, spelling, accept
):
    answer = _offerset(asked, result, count, spelling)
    validated = respond(_request(accept), render.offerset(answer, BASE), spelling=spelling).body
    document = render.offerset_document(answer, BASE)
    built = respond(
        _request(accept), document, spelling=spelling, root="offers-response", spelt=True
    ).body
    assert built == validated


@pytest.mark.parametrize("accept", ["application/json", "application/yaml", "application/xml"])
def test_a_list_of_sessions_built_unvalidated_is_answered_byte_for_byte_as_its_model(accept):
    """``GET /sessions`` answers every session in the current spelling, whatever it was
    asked in."""
    rows = list(SESSIONS.values())
    model = SessionList(sessions=[render.session(row, BASE, requested) for row, requested in rows])
    validated = respond(_request(accept), model, root="sessions").body
    documents = [render.session_document(row, BASE, requested) for row, requested in rows]
    built = respond(_request(accept), {"sessions": documents}, root="sessions", spelt=True).body
    assert built == validated
