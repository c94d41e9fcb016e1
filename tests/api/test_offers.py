"""Offers end to end, over HTTP, against a real broker process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from execbroker import kinds
from execbroker.timeutil import parse_interval
from tests.brokers import accept, batch_request, running_broker, update, wait_for_phase


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    pricing = {"type": "urn:test:credits", "per_core_hour": 1.0, "per_memory_gib_hour": 0.5}
    with running_broker(tmp_path_factory.mktemp("offers"), pricing=pricing) as broker:
        yield broker


def test_offers_are_concrete_and_within_the_request(broker):
    with broker.client() as client:
        answer = (
            client.post(
                "/requests",
                json=batch_request("true", cores=(1, 3), memory=(1, 2), duration="PT10M"),
            )
            .raise_for_status()
            .json()
        )
        assert answer["result"] == "YES"
        assert 1 <= len(answer["offers"]) <= 4
        for offer in answer["offers"]:
            assert offer["phase"] == "OFFERED"
            assert offer["kind"] == kinds.SCHEDULED_SESSION
            cores = offer["compute"]["cores"]
            assert cores["min"] == cores["max"] and 1 <= cores["min"] <= 3
            assert 1 <= offer["compute"]["memory"]["min"] <= 2
            assert offer["schedule"]["available"]["duration"] == "PT10M"
            assert datetime.fromisoformat(offer["expires"]) > datetime.now(UTC)
            assert offer["meta"]["options"][0]["values"] == ["ACCEPTED", "REJECTED"]
            assert offer["costs"][0]["max"] == pytest.approx(
                (cores["min"] * 1.0 + offer["compute"]["memory"]["min"] * 0.5) / 6, abs=1e-3
            )
        # best first: the first offer is the largest of those starting now
        assert answer["offers"][0]["compute"]["cores"]["min"] == 3
        for offer in answer["offers"]:
            update(client, offer["meta"]["uuid"], "REJECTED").raise_for_status()


def test_offer_set_can_be_read_back_and_old_path_works(broker):
    with broker.client() as client:
        response = client.post("/offersets", json=batch_request("true"))
        answer = response.raise_for_status().json()
        assert response.headers["location"] == answer["meta"]["url"]
        again = client.get(f"/offersets/{answer['meta']['uuid']}").raise_for_status().json()
        assert [o["meta"]["uuid"] for o in again["offers"]] == [
            o["meta"]["uuid"] for o in answer["offers"]
        ]
        for offer in again["offers"]:
            update(client, offer["meta"]["uuid"], "REJECTED").raise_for_status()


@pytest.mark.parametrize(
    "kind",
    [
        "batch-script",
        kinds.BATCH_SCRIPT,
    ],
)
def test_kind_only_question_answers_yes_at_once(broker, kind):
    with broker.client() as client:
        answer = client.post("/requests", json={"executable": {"kind": kind}}).json()
        assert answer["result"] == "YES"
        assert answer["offers"] == []


@pytest.mark.parametrize(
    "kind",
    [
        "silly-example",
        "docker-container",
        kinds.DOCKER_CONTAINER,
        "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
    ],
)
def test_kind_only_question_says_no_with_a_reason(broker, kind):
    with broker.client() as client:
        answer = client.post("/requests", json={"executable": {"kind": kind}}).json()
        assert answer["result"] == "NO"
        assert answer["offers"] == []
        assert answer["meta"]["messages"], "a NO must say why"


def test_no_with_reasons_when_above_quota(broker):
    request = batch_request("true", cores=(8, 16), memory=(64, 64))
    request["schedule"]["requested"]["duration"] = "PT3H"
    with broker.client() as client:
        answer = client.post("/requests", json=request).json()
    assert answer["result"] == "NO"
    text = " ".join(message["message"] for message in answer["meta"]["messages"])
    assert "cores" in text and "memory" in text and "duration" in text


def test_costs_above_the_clients_max_are_never_offered(broker):
    request = batch_request("true", cores=(1, 4), memory=(1, 1), duration="PT1H")
    request["costs"] = [
        {"kind": "simple-minmax-float-cost", "type": "urn:test:credits", "max": 2.6}
    ]
    with broker.client() as client:
        answer = client.post("/requests", json=request).json()
        assert answer["result"] == "YES"
        assert all(offer["costs"][0]["max"] <= 2.6 for offer in answer["offers"])
        assert max(offer["compute"]["cores"]["min"] for offer in answer["offers"]) == 2
        for offer in answer["offers"]:
            update(client, offer["meta"]["uuid"], "REJECTED")
        request["costs"][0]["max"] = 0.1
        answer = client.post("/requests", json=request).json()
        assert answer["result"] == "NO"
        assert "cost" in answer["meta"]["messages"][0]["message"]


def test_yaml_in_and_out(broker):
    body = yaml.safe_dump({"executable": {"kind": "batch-script"}})
    with broker.client() as client:
        response = client.post(
            "/requests",
            content=body,
            headers={"content-type": "application/yaml", "accept": "application/yaml"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(response.text)["result"] == "YES"


def test_accept_runs_and_rejects_siblings(broker):
    with broker.client() as client:
        answer = client.post(
            "/requests",
            json=batch_request("echo hello from $EXECBROKER_CORES", cores=(1, 2), duration="PT1M"),
        ).json()
        chosen = answer["offers"][-1]["meta"]["uuid"]
        assert accept(client, chosen).json()["phase"] == "ACCEPTED"
        done = wait_for_phase(client, chosen, {"COMPLETED", "FAILED"})
        assert done["phase"] == "COMPLETED", done["meta"]["messages"]
        logs = client.get(f"/sessions/{chosen}/logs").json()
        assert logs["stdout"].startswith("hello from ")
        for offer in answer["offers"][:-1]:
            assert client.get(f"/sessions/{offer['meta']['uuid']}").json()["phase"] == "REJECTED"
        assert accept(client, chosen).status_code == 409


def test_direct_runs_at_once_or_says_why_not(broker):
    with broker.client() as client:
        response = client.post("/direct", json=batch_request("echo direct", duration="PT1M"))
        assert response.status_code == 200
        session = response.json()
        assert session["phase"] == "ACCEPTED"
        assert wait_for_phase(client, session["meta"]["uuid"], {"COMPLETED"})
        response = client.post("/direct", json=batch_request("true", cores=(9, 9)))
        assert response.status_code == 400
        assert response.json()["result"] == "NO"
        assert "cores" in response.json()["messages"][0]["message"]


def test_scheduled_start_waits_for_its_window(broker):
    start = datetime.now(UTC) + timedelta(seconds=3)
    request = batch_request("date +%s", duration="PT1M")
    request["schedule"]["requested"]["start"] = start.strftime("%Y-%m-%dT%H:%M:%SZ") + "/PT1M"
    with broker.client() as client:
        offer = client.post("/requests", json=request).json()["offers"][0]
        assert parse_interval(offer["schedule"]["available"]["start"])[0] >= start.replace(
            microsecond=0
        )
        uuid = offer["meta"]["uuid"]
        accept(client, uuid).raise_for_status()
        assert wait_for_phase(client, uuid, {"WAITING"})["phase"] == "WAITING"
        wait_for_phase(client, uuid, {"COMPLETED"})
        started = int(client.get(f"/sessions/{uuid}/logs").json()["stdout"].strip())
        assert started >= int(start.timestamp())


def test_cancel_stops_a_running_task(broker):
    with broker.client() as client:
        session = client.post("/direct", json=batch_request("sleep 60", duration="PT2M")).json()
        uuid = session["meta"]["uuid"]
        wait_for_phase(client, uuid, {"RUNNING"})
        cancelled = update(client, uuid, "CANCELLED")
        assert cancelled.status_code == 200 and cancelled.json()["phase"] == "CANCELLED"
        assert update(client, uuid, "CANCELLED").status_code == 409


def test_exceeding_the_granted_time_fails_the_session(tmp_path):
    # A tiny grant: the runner (and the monitor) stop the task at the grant's end.
    with (
        running_broker(tmp_path, quota={"cores": 2, "memory": 2, "max_duration": "PT2S"}) as broker,
        broker.client() as client,
    ):
        session = client.post("/direct", json=batch_request("sleep 30", duration="PT2S")).json()
        done = wait_for_phase(client, session["meta"]["uuid"], {"COMPLETED", "FAILED"})
        assert done["phase"] == "FAILED"
        assert "exceeded the granted duration" in done["meta"]["messages"][-1]["message"]


def test_sessions_list_is_the_callers(broker):
    with (
        broker.client() as alice,
        broker.client("demo-bob") as bob,
        broker.client("demo-admin") as admin,
    ):
        mine = alice.post("/direct", json=batch_request("true", duration="PT1M")).json()["meta"][
            "uuid"
        ]
        listed = {s["meta"]["uuid"] for s in alice.get("/sessions").json()["sessions"]}
        assert mine in listed
        assert mine not in {s["meta"]["uuid"] for s in bob.get("/sessions").json()["sessions"]}
        assert mine in {s["meta"]["uuid"] for s in admin.get("/sessions").json()["sessions"]}
        phases = alice.get("/sessions", params={"phase": "REJECTED"}).json()["sessions"]
        assert all(s["phase"] == "REJECTED" for s in phases)
