"""Offers hold their resources until they expire, are rejected, or a sibling is accepted."""

from __future__ import annotations

import time

import pytest

from tests.brokers import accept, batch_request, running_broker, update

ONE_CORE = {"cores": 1, "memory": 2, "max_sessions": 4, "max_duration": "PT1H", "horizon": "PT10M"}


def _ask(client) -> dict:
    return client.post("/requests", json=batch_request("true", duration="PT50M")).json()


def test_an_offer_holds_until_it_expires(tmp_path):
    with (
        running_broker(tmp_path, quota=ONE_CORE, offers={"ttl": "PT1S"}) as broker,
        broker.client() as alice,
        broker.client("demo-bob") as bob,
    ):
        first = _ask(alice)
        assert first["result"] == "YES"
        # the one core is held by alice's offer for longer than the horizon: bob is told NO
        assert _ask(bob)["result"] == "NO"
        time.sleep(1.5)
        # expired: the hold is gone at once, even before the monitor marks it
        assert _ask(bob)["result"] == "YES"
        offer = first["offers"][0]["meta"]["uuid"]
        response = accept(alice, offer)
        assert response.status_code == 409 and "expired" in response.json()["detail"].lower()


def test_rejecting_frees_at_once_and_accepting_keeps_one(tmp_path):
    with (
        running_broker(tmp_path, quota=ONE_CORE) as broker,
        broker.client() as alice,
        broker.client("demo-bob") as bob,
    ):
        first = _ask(alice)
        for offer in first["offers"]:
            update(alice, offer["meta"]["uuid"], "REJECTED")
        second = _ask(bob)
        assert second["result"] == "YES"
        assert accept(bob, second["offers"][0]["meta"]["uuid"]).status_code == 200
        assert _ask(alice)["result"] == "NO"


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_an_accept_notes_itself_and_rejects_each_sibling_with_a_note(tmp_path, database, request):
    changes = {"monitor": {"interval": "PT60S"}}
    if database == "postgres":
        changes["database"] = request.getfixturevalue("postgres_url")
    with running_broker(tmp_path, **changes) as broker, broker.client() as alice:
        asked = alice.post("/requests", json=batch_request("true", cores=(1, 4))).json()
        offers = [offer["meta"]["uuid"] for offer in asked["offers"]]
        assert len(offers) >= 2, asked  # siblings to reject
        other = alice.post("/requests", json=batch_request("true")).json()["offers"][0]
        chosen, siblings = offers[-1], offers[:-1]
        answer = accept(alice, chosen)
        assert answer.status_code == 200
        # due now, so the monitor may have queued it already
        assert answer.json()["phase"] in {"ACCEPTED", "WAITING"}
        session = alice.get(f"/sessions/{chosen}").json()
        assert session["phase"] in {"ACCEPTED", "WAITING", "PREPARING", "RUNNING", "COMPLETED"}
        assert "accepted by alice" in [m["message"] for m in session["meta"]["messages"]]
        for sibling in siblings:
            session = alice.get(f"/sessions/{sibling}").json()
            assert session["phase"] == "REJECTED"
            notes = [m["message"] for m in session["meta"]["messages"]]
            assert f"a sibling offer {chosen} was accepted" in notes, notes
        # another offer set's offer is none of its business
        assert alice.get(f"/sessions/{other['meta']['uuid']}").json()["phase"] == "OFFERED"
        assert accept(alice, siblings[0]).status_code == 409
