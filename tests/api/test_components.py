"""An offer, and the session it becomes, carry the components the request asked for.

The schema's session holds the request's executable, compute, storage and data, and its
ComponentMetadata has a UUID "assigned when a component is created in a service".
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.brokers import batch_request, running_broker, update

LOCATION = "https://example.org/data/catalogue.fits"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory.mktemp("components")) as broker:
        yield broker


def _with_data(storage_ref: str = "scratch") -> dict[str, Any]:
    request = batch_request("true")
    request["compute"]["meta"] = {"name": "worker"}
    request["compute"]["volumes"] = [
        {"kind": "simple-volume-mount", "resource": "catalogue", "path": "/in"}
    ]
    request["storage"] = [{"kind": "simple-storage-resource", "meta": {"name": "scratch"}}]
    request["data"] = [
        {
            "kind": "simple-data-resource",
            "meta": {"name": "catalogue"},
            "storage": storage_ref,
            "location": LOCATION,
        }
    ]
    return request


def _uuids(session: dict[str, Any]) -> list[str]:
    parts = [session["executable"], session["compute"], *session["storage"], *session["data"]]
    return [part["meta"]["uuid"] for part in parts]


def test_offers_and_sessions_show_the_requested_data_storage_and_volumes(broker):
    with broker.client() as client:
        answer = client.post("/requests", json=_with_data()).raise_for_status().json()
        assert answer["result"] == "YES", answer["meta"]["messages"]
        for offer in answer["offers"]:
            read = client.get(f"/sessions/{offer['meta']['uuid']}").raise_for_status().json()
            for session in (offer, read):
                [data] = session["data"]
                assert data["meta"]["name"] == "catalogue"
                assert data["location"] == LOCATION
                assert data["storage"] == "scratch"
                assert [s["meta"]["name"] for s in session["storage"]] == ["scratch"]
                assert session["compute"]["meta"]["name"] == "worker"
                # The schema's compute is a lifecycle component: it has the session's schedule.
                assert session["compute"]["schedule"] == session["schedule"]
                [volume] = session["compute"]["volumes"]
                assert (volume["resource"], volume["path"]) == ("catalogue", "/in")
            update(client, offer["meta"]["uuid"], "REJECTED").raise_for_status()


def test_every_component_has_a_uuid_unique_and_the_same_at_every_reading(broker):
    with broker.client() as client:
        answer = client.post("/requests", json=_with_data()).raise_for_status().json()
        assert answer["result"] == "YES", answer["meta"]["messages"]
        seen: list[str] = []
        for offer in answer["offers"]:
            ids = _uuids(offer)
            assert all(uuid.UUID(item) for item in ids)
            read = client.get(f"/sessions/{offer['meta']['uuid']}").raise_for_status().json()
            assert _uuids(read) == ids
            seen += [offer["meta"]["uuid"], *ids]
            update(client, offer["meta"]["uuid"], "REJECTED").raise_for_status()
        assert len(seen) == len(set(seen))


def test_a_component_keeps_the_uuid_its_client_gave_it(broker):
    """Volumes may name data by ``meta.uuid``: the offer must not change it under them."""
    given = str(uuid.uuid4())
    request = _with_data()
    request["data"][0]["meta"]["uuid"] = given
    request["compute"]["volumes"][0]["resource"] = given
    with broker.client() as client:
        answer = client.post("/requests", json=request).raise_for_status().json()
        assert answer["result"] == "YES", answer["meta"]["messages"]
        offer = answer["offers"][0]
        assert offer["data"][0]["meta"]["uuid"] == given
        assert offer["compute"]["volumes"][0]["resource"] == given
        for item in answer["offers"]:
            update(client, item["meta"]["uuid"], "REJECTED").raise_for_status()


def test_data_naming_no_storage_of_the_request_is_refused(broker):
    with broker.client() as client:
        answer = client.post("/requests", json=_with_data("elsewhere")).raise_for_status().json()
        assert answer["result"] == "NO"
        assert answer["offers"] == []
        messages = " ".join(item["message"] for item in answer["meta"]["messages"])
        assert "data[0].storage" in messages and "'elsewhere'" in messages
