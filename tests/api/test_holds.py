"""Offers hold their resources until they expire, are rejected, or a sibling is accepted."""

from __future__ import annotations

import time

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
