"""Interoperability with clients of either schema generation (issue 10).

Both kind spellings round-trip (and are remembered), sessions are the schema's scheduled
sessions (validated against a copy of the public schema in ``tests/data/eb-schema``),
schema-valid requests are answered (NO with reasons, WARN for unknown properties),
XML goes in and out, and the schema's integer updates change a session's duration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from execbroker import kinds
from execbroker.api import xmldoc
from tests.brokers import batch_request, running_broker, update, wait_for_phase

SCHEMA = Path(__file__).parent.parent / "data" / "eb-schema" / "execution-broker-combined.yaml"
DRAFT = kinds.DRAFT_BASE
XML = "application/xml"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory.mktemp("interop")) as broker:
        yield broker


@pytest.fixture(scope="module")
def schema_validator():
    document = yaml.safe_load(SCHEMA.read_text())
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:eb", resource)

    def validate(instance: dict[str, Any], name: str) -> None:
        schema = {"$ref": f"urn:eb#/components/schemas/{name}"}
        jsonschema.Draft202012Validator(schema, registry=registry).validate(instance)

    return validate


def draft_request(script: str = "echo hi") -> dict[str, Any]:
    """A request as a client of the earlier schema writes it: its kinds are its URIs."""
    request = batch_request(script)
    request["compute"]["kind"] = f"{DRAFT}compute/simple-compute-resource-1.0"
    return request


def all_kinds(document: Any) -> list[str]:
    return list(kinds._kinds_in(document))


def test_every_kind_round_trips_in_both_spellings():
    for uri in [kinds.DOCKER_CONTAINER, kinds.SIMPLE_DATA, kinds.SCHEDULED_SESSION]:
        for spelling in kinds.Spelling:
            written = kinds.spell(uri, spelling)
            assert kinds.canonical(written) == uri
            assert kinds.spelling_of(written) == spelling
    assert kinds.spell(kinds.SIMPLE_COMPUTE, kinds.Spelling.DRAFT) == (
        f"{DRAFT}compute/simple-compute-resource-1.0"
    )
    assert kinds.canonical("docker-container") == kinds.DOCKER_CONTAINER
    assert kinds.spell(kinds.BATCH_SCRIPT, kinds.Spelling.DRAFT) == kinds.BATCH_SCRIPT


def test_a_draft_client_is_answered_and_remembered_in_its_spelling(broker):
    with broker.client() as client:
        answer = client.post("/requests", json=draft_request()).raise_for_status().json()
        assert answer["result"] == "YES", answer
        offer = answer["offers"][0]
        assert offer["kind"] == f"{DRAFT}session/scheduled-execution-session-1.0"
        assert offer["compute"]["kind"] == f"{DRAFT}compute/simple-compute-resource-1.0"
        again = client.get(f"/sessions/{offer['meta']['uuid']}").raise_for_status().json()
        assert again["kind"] == offer["kind"]
        spellings = {kinds.spelling_of(kind) for kind in all_kinds(again)}
        assert kinds.Spelling.CURRENT not in spellings and kinds.Spelling.DRAFT in spellings
        offerset = client.get(f"/offersets/{answer['meta']['uuid']}").json()
        assert offerset["kind"] == f"{DRAFT}offerset/execution-offerset-1.0"
        # ... and a client of the current schema (or of aliases only) gets the current one.
        current = client.post("/requests", json=batch_request("true")).json()
        assert current["offers"][0]["kind"] == kinds.SCHEDULED_SESSION
        assert current["offers"][0]["compute"]["kind"] == kinds.SIMPLE_COMPUTE


def test_the_older_direct_path_runs_a_session(broker):
    with broker.client() as client:
        response = client.post("/sessions", json=draft_request("echo direct"))
        session = response.raise_for_status().json()
        assert response.headers["location"] == session["meta"]["url"]
        assert session["phase"] in ("ACCEPTED", "WAITING", "PREPARING", "RUNNING", "COMPLETED")
        assert session["kind"].startswith(DRAFT)
        done = wait_for_phase(client, session["meta"]["uuid"], "COMPLETED")
        assert done["kind"].startswith(DRAFT)


def test_sessions_are_scheduled_sessions_of_the_public_schema(broker, schema_validator):
    with broker.client() as client:
        answer = client.post("/requests", json=batch_request("true")).json()
        schema_validator(answer, "OfferSetResponse")
        for offer in answer["offers"]:
            schema_validator(offer, "ScheduledExecutionSession")
            schedule = offer["schedule"]
            assert set(schedule) == {"preparing", "available", "releasing"}
            assert "/" in schedule["available"]["start"]  # an interval, not an instant
        draft = client.post("/requests", json=draft_request()).json()["offers"][0]
        schema_validator(draft, "ScheduledExecutionSession")


def _reasons(answer: dict[str, Any]) -> list[str]:
    return [item["message"] for item in answer["meta"]["messages"]]


def test_valid_but_unservable_requests_are_answered_no_with_each_reason(broker):
    container = {
        "kind": kinds.DOCKER_CONTAINER,
        "image": {"locations": ["busybox"]},
        "network": {
            "ports": [
                {"internal": {"port": -1}, "protocol": "FTP"},
                {"internal": {"port": 8080}, "external": {"port": 70000}},
            ]
        },
    }
    notebook = {"kind": f"{DRAFT}executable/jupyter-notebook-1.0"}
    with broker.client() as client:
        response = client.post("/requests", json={**batch_request("true"), "executable": container})
        answer = response.json()
        assert response.status_code == 200 and answer["result"] == "NO", answer
        reasons = _reasons(answer)
        for expected in (
            "ports[0].protocol: 'FTP'",
            "ports[0].internal.port: -1",
            "ports[1].external.port: 70000",
        ):
            assert any(expected in reason for reason in reasons), reasons
        request = {**batch_request("true"), "executable": notebook}
        answer = client.post("/requests", json=request).raise_for_status().json()
        assert answer["result"] == "NO"
        assert any("executable.notebook" in reason for reason in _reasons(answer))
        blank = {**batch_request("true"), "executable": {"kind": "batch-script", "script": " "}}
        answer = client.post("/requests", json=blank).raise_for_status().json()
        assert answer["result"] == "NO"
        assert any("executable.script" in reason for reason in _reasons(answer))


def test_unknown_properties_are_accepted_and_named_in_a_warning(broker):
    request = batch_request("true", flavour="vanilla")
    request["compute"]["cpus"] = 2
    request["executable"]["scrpt"] = "typo"
    with broker.client() as client:
        answer = client.post("/requests", json=request).raise_for_status().json()
        assert answer["result"] == "YES"
        warnings = [m["message"] for m in answer["meta"]["messages"] if m["level"] == "WARN"]
        for path in ("flavour", "compute.cpus", "executable.scrpt"):
            assert f"{path}: unknown property, ignored" in warnings, warnings
        # Still refused when something else is wrong too, naming that field.
        request["compute"]["cores"] = {"min": 4, "max": 2}
        response = client.post("/requests", json=request)
        assert response.status_code == 422 and "compute.cores" in response.json()["detail"]


def test_xml_in_and_out(broker):
    body = xmldoc.dumps(draft_request("echo xml"), "offers-request")
    headers = {"content-type": XML, "accept": XML}
    with broker.client() as client:
        response = client.post("/requests", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(XML)
        root = SafeET.fromstring(response.content)
        assert root.tag == "offers-response" and root.findtext("result") == "YES"
        offer = root.find("offers")
        assert offer is not None and offer.findtext("kind", "").startswith(DRAFT)
        assert offer.findtext("schedule/available/start", "").count("/") == 1
        uuid = offer.findtext("meta/uuid")
        update = b"<update><kind>uri:enum-value-update</kind><path>phase</path>"
        update += b"<value>ACCEPTED</value></update>"
        accepted = client.post(f"/sessions/{uuid}", content=update, headers=headers)
        assert accepted.status_code == 200, accepted.text
        assert SafeET.fromstring(accepted.content).findtext("phase") == "ACCEPTED"
        yaml_answer = client.get(f"/sessions/{uuid}", headers={"accept": "application/yaml"})
        assert yaml.safe_load(yaml_answer.text)["meta"]["uuid"] == uuid


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<r><executable><kind>batch-script</kind><script>&b;</script></executable></r>",
            "DTD",
        ),
        (
            b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
            "DTD",
        ),
        (b"<r>" + b"<a>" * 200 + b"</a>" * 200 + b"</r>", "deeper"),
        (b"<r><executable>", "well-formed"),
    ],
)
def test_hostile_xml_is_refused(broker, body, text):
    with broker.client() as client:
        response = client.post("/requests", content=body, headers={"content-type": XML})
        assert response.status_code == 400, response.text
        assert text in response.json()["detail"]


def test_duration_updates_before_a_session_starts(broker):
    with broker.client() as client:
        offer = client.post("/requests", json=batch_request("true")).json()["offers"][0]
        uuid = offer["meta"]["uuid"]
        longer = {"kind": "uri:integer-delta-update", "path": "schedule.available.duration"}
        response = client.post(f"/sessions/{uuid}", json={**longer, "delta": 60})
        assert response.status_code == 200, response.text
        assert response.json()["schedule"]["available"]["duration"] == "PT6M"
        value = {"kind": "uri:integer-value-update", "path": "duration", "units": "minutes"}
        response = client.post(f"/sessions/{uuid}", json={**value, "value": 2})
        assert response.json()["schedule"]["available"]["duration"] == "PT2M"
        # Longer than the broker's longest session: 409, saying why.
        response = client.post(f"/sessions/{uuid}", json={**longer, "delta": 10**8})
        assert response.status_code == 409 and "longest session" in response.json()["detail"]
        response = client.post(f"/sessions/{uuid}", json={**longer, "delta": -(10**4)})
        assert response.status_code == 422 and "longer than nothing" in response.json()["detail"]
        string = {"kind": "uri:string-value-update", "path": "phase", "value": "ACCEPTED"}
        assert client.post(f"/sessions/{uuid}", json=string).json()["phase"] == "ACCEPTED"
        assert update(client, uuid, "CANCELLED").status_code == 200
        response = client.post(f"/sessions/{uuid}", json={**longer, "delta": 60})
        assert response.status_code == 409 and "CANCELLED" in response.json()["detail"]
