"""Each user sees and changes only their own sessions; an admin sees all."""

from __future__ import annotations

from tests.brokers import batch_request, running_broker, update


def test_user_isolation(tmp_path):
    with (
        running_broker(tmp_path) as broker,
        broker.client() as alice,
        broker.client("demo-bob") as bob,
        broker.client("demo-admin") as admin,
    ):
        answer = alice.post("/requests", json=batch_request("sleep 30", duration="PT1M")).json()
        offer = answer["offers"][0]["meta"]["uuid"]
        offerset = answer["meta"]["uuid"]
        # bob can neither read, accept, nor see alice's offers and offer sets
        assert bob.get(f"/sessions/{offer}").status_code == 403
        assert bob.get(f"/offersets/{offerset}").status_code == 403
        assert update(bob, offer, "ACCEPTED").status_code == 403
        assert bob.get(f"/sessions/{offer}/logs").status_code == 403
        assert alice.get(f"/sessions/{offer}").json()["phase"] == "OFFERED"
        assert update(alice, offer, "ACCEPTED").status_code == 200
        assert update(bob, offer, "CANCELLED").status_code == 403
        assert all(s["meta"]["uuid"] != offer for s in bob.get("/sessions").json()["sessions"])
        # an admin sees and may cancel anyone's session
        assert admin.get(f"/sessions/{offer}").status_code == 200
        assert update(admin, offer, "CANCELLED").json()["phase"] == "CANCELLED"
        assert (
            "cancelled by admin"
            in alice.get(f"/sessions/{offer}").json()["meta"]["messages"][-1]["message"]
        )
