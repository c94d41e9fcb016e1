"""Bad input gets a clear 4xx naming the problem: never a 500, never a half-created session."""

from __future__ import annotations

import uuid

import pytest

from tests.brokers import batch_request, running_broker, update


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory.mktemp("bad")) as broker:
        yield broker


def _count(client) -> int:
    return len(client.get("/sessions").json()["sessions"])


def _with(path: list[str], value) -> dict:
    request = batch_request("true")
    target = request
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return request


BAD_BODIES = [
    # (body, status, text the answer must name)
    ('{"executable": ', 400, "not valid JSON"),
    ("[1, 2]", 422, "object"),
    ('"just a string"', 422, "object"),
    ("{}", 422, "executable"),
]

BAD_REQUESTS = [
    (_with(["compute", "cores", "min"], -1), "compute.cores.min"),
    (_with(["compute", "cores"], {"min": 4, "max": 2}), "compute.cores"),
    (_with(["compute", "cores", "max"], "many"), "compute.cores.max"),
    (_with(["compute", "memory"], {"min": 3, "max": 1}), "compute.memory"),
    (_with(["compute", "cores"], {"max": 0}), "compute.cores.max"),
    (_with(["compute", "kind"], "quantum-compute-resource"), "compute.kind"),
    (_with(["schedule", "requested", "duration"], "two hours"), "schedule.requested.duration"),
    (_with(["schedule", "requested", "duration"], "P1M"), "schedule.requested.duration"),
    (
        _with(["schedule", "requested", "duration"], {"min": "PT2H", "max": "PT1H"}),
        "schedule.requested.duration",
    ),
    (_with(["schedule", "requested", "start"], "tomorrow/PT1H"), "schedule.requested.start"),
    (
        _with(["schedule", "requested", "start"], "2026-01-02T00:00:00Z/2026-01-01T00:00:00Z"),
        "schedule.requested.start",
    ),
    (_with(["executable", "script"], 42), "executable.script"),
    (_with(["executable", "environment"], {"BAD NAME": "x"}), "executable.environment"),
    (
        _with(["storage"], [{"kind": "simple-storage-resource", "size": {"min": 5, "max": 1}}]),
        "storage.0.size",
    ),
    (_with(["costs"], [{"kind": "simple-minmax-float-cost", "max": -1}]), "costs.0.max"),
]


@pytest.mark.parametrize(("body", "status", "text"), BAD_BODIES)
def test_malformed_bodies(broker, body, status, text):
    with broker.client() as client:
        before = _count(client)
        response = client.post(
            "/requests", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert text in response.json()["detail"]
        assert _count(client) == before


@pytest.mark.parametrize(("request_body", "field"), BAD_REQUESTS)
def test_invalid_requests_name_the_field(broker, request_body, field):
    with broker.client() as client:
        before = _count(client)
        response = client.post("/requests", json=request_body)
        assert response.status_code == 422, response.text
        assert field in response.json()["detail"], response.json()
        assert _count(client) == before


def test_bad_yaml_and_unknown_media_type(broker):
    with broker.client() as client:
        response = client.post(
            "/requests", content="a: [b", headers={"content-type": "application/yaml"}
        )
        assert response.status_code == 400 and "YAML" in response.json()["detail"]
        response = client.post("/requests", content="x", headers={"content-type": "text/plain"})
        assert response.status_code == 415


def test_unknown_and_malformed_uuids(broker):
    with broker.client() as client:
        missing = uuid.uuid4()
        assert client.get(f"/sessions/{missing}").status_code == 404
        assert client.get(f"/offersets/{missing}").status_code == 404
        assert update(client, str(missing), "ACCEPTED").status_code == 404
        response = client.get("/sessions/not-a-uuid")
        assert response.status_code == 422 and "uuid" in response.json()["detail"]


def test_illegal_updates(broker):
    with broker.client() as client:
        offer = client.post("/requests", json=batch_request("true")).json()["offers"][0]
        uuid_ = offer["meta"]["uuid"]
        for value, status in [
            ("RUNNING", 422),
            ("COMPLETED", 422),
            ("BOGUS", 422),
            ("CANCELLED", 409),
        ]:
            response = update(client, uuid_, value)
            assert response.status_code == status, (value, response.text)
            assert (
                "update.value" in response.json()["detail"]
                or "cannot be cancelled" in response.json()["detail"]
            )
        response = client.post(
            f"/sessions/{uuid_}",
            json={"kind": "uri:enum-value-update", "path": "cores", "value": "9"},
        )
        assert response.status_code == 422 and "path" in response.json()["detail"]
        assert update(client, uuid_, "REJECTED").status_code == 200
        assert update(client, uuid_, "ACCEPTED").status_code == 409
        assert update(client, uuid_, "REJECTED").status_code == 409
        assert client.get(f"/sessions/{uuid_}").json()["phase"] == "REJECTED"


def test_the_earlier_drafts_wrapped_update_is_accepted(broker):
    with broker.client() as client:
        offer = client.post("/requests", json=batch_request("true")).json()["offers"][0]
        body = {"update": {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}}
        assert (
            client.post(f"/sessions/{offer['meta']['uuid']}", json=body).json()["phase"]
            == "REJECTED"
        )


def test_no_token_or_a_wrong_one_is_401(broker):
    with broker.client(token="not-a-token") as client:
        assert client.get("/sessions").status_code == 401
        response = client.post("/requests", json=batch_request("true"))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    import httpx

    assert httpx.get(f"{broker.url}/sessions").status_code == 401
    assert httpx.get(f"{broker.url}/health").status_code == 200
