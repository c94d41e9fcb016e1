"""Update paths written as JSON Pointers (``/phase``), as generated clients send them.

The schema says only that ``path`` is "the path this update applies to"; a client
generated from it (and its wrappers) writes ``/phase``, so the broker takes both forms.
"""

from __future__ import annotations

import pytest

from execbroker.model.updates import DURATION, PHASE, UpdateRequest, dotted
from tests.brokers import batch_request, running_broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory.mktemp("update-paths")) as broker:
        yield broker


@pytest.mark.parametrize(
    ("given", "meant"),
    [("/phase", PHASE), ("phase", PHASE), ("/schedule/available/duration", DURATION)],
)
def test_a_pointer_is_read_as_the_dotted_path(given, meant):
    assert dotted(given) == meant


def test_a_pointer_to_anything_else_is_still_refused():
    with pytest.raises(ValueError, match="phase"):
        UpdateRequest.model_validate(
            {"kind": "uri:enum-value-update", "path": "/executable/image", "value": "x"}
        )


def test_accept_and_lengthen_through_pointer_paths(broker):
    with broker.client() as client:
        offer = client.post("/requests", json=batch_request("true")).json()["offers"][0]
        uuid = offer["meta"]["uuid"]
        longer = {"kind": "uri:integer-delta-update", "path": "/schedule/available/duration"}
        response = client.post(f"/sessions/{uuid}", json={**longer, "delta": 60})
        assert response.status_code == 200, response.text
        assert response.json()["schedule"]["available"]["duration"] == "PT6M"
        accept = {"kind": "uri:enum-value-update", "path": "/phase", "value": "ACCEPTED"}
        response = client.post(f"/sessions/{uuid}", json=accept)
        assert response.status_code == 200, response.text
        assert response.json()["phase"] == "ACCEPTED"
        cancel = {**accept, "value": "CANCELLED"}
        assert client.post(f"/sessions/{uuid}", json=cancel).json()["phase"] == "CANCELLED"
