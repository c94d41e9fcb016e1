"""A broker killed with SIGKILL loses nothing: sessions survive, tasks are re-adopted,
none is started twice."""

from __future__ import annotations

import time

import pytest

from tests.brokers import BASE_CONFIG, BrokerProcess, accept, batch_request, wait_for_phase

# Runs until the test lets it finish, however slow the machine is.
# The task's cwd is its work directory (sessions/<uuid>), where the test drops "go".
SCRIPT = "echo started >> starts.txt; while [ ! -e go ]; do sleep 0.1; done; echo finished"


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_kill_9_and_restart(tmp_path, database, request):
    config = dict(BASE_CONFIG)
    if database == "postgres":
        config["database"] = request.getfixturevalue("postgres_url")
    broker = BrokerProcess(config, tmp_path).start()
    try:
        with broker.client() as client:
            running = client.post("/direct", json=batch_request(SCRIPT, duration="PT5M")).json()
            offered = client.post("/requests", json=batch_request("true")).json()["offers"][0]
            wait_for_phase(client, running["meta"]["uuid"], {"RUNNING"})
        broker.kill()
        time.sleep(1)
        broker.start()
        with broker.client() as client:
            uuid = running["meta"]["uuid"]
            # the session and the offer are still there, as they were
            assert client.get(f"/sessions/{uuid}").json()["phase"] == "RUNNING"
            assert client.get(f"/sessions/{offered['meta']['uuid']}").json()["phase"] == "OFFERED"
            (tmp_path / "state" / "sessions" / uuid / "go").touch()
            done = wait_for_phase(client, uuid, {"COMPLETED", "FAILED"})
            assert done["phase"] == "COMPLETED", done["meta"]["messages"]
            assert client.get(f"/sessions/{uuid}/logs").json()["stdout"] == "finished\n"
            starts = (tmp_path / "state" / "sessions" / uuid / "starts.txt").read_text()
            assert starts == "started\n", "the task was started more than once"
            # the offer made before the crash can still be accepted
            assert accept(client, offered["meta"]["uuid"]).status_code == 200
    finally:
        broker.stop()


def test_task_that_finished_while_the_broker_was_down_gets_its_final_phase(tmp_path):
    broker = BrokerProcess(BASE_CONFIG, tmp_path).start()
    try:
        with broker.client() as client:
            session = client.post(
                "/direct", json=batch_request("sleep 1; exit 3", duration="PT5M")
            ).json()
            wait_for_phase(client, session["meta"]["uuid"], {"RUNNING"})
        broker.kill()
        time.sleep(2.5)
        broker.start()
        with broker.client() as client:
            done = wait_for_phase(client, session["meta"]["uuid"], {"COMPLETED", "FAILED"})
            assert done["phase"] == "FAILED"
            assert "exited with code 3" in done["meta"]["messages"][-1]["message"]
    finally:
        broker.stop()
