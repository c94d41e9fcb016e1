"""Docker containers and compose applications through real broker processes on the real
Docker Engine: offers, connectors, limits, refusals, other users, cancel, and kill -9."""

from __future__ import annotations

import time
import uuid as uuids
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
import yaml

from tests.brokers import BASE_CONFIG, BrokerProcess, accept, running_broker, update, wait_for_phase
from tests.platforms.support import remove_labelled, session_containers

pytestmark = pytest.mark.docker

EXAMPLES = Path(__file__).parents[2] / "examples" / "brokers"

IMAGE = "busybox:local"
HTTPD = ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
SLEEP = ["sleep", "600"]
PLATFORMS = [{"type": "docker"}, {"type": "compose"}]
UP = {"AVAILABLE", "RUNNING"}
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "EXPIRED"}
THREE_SERVICES = """
services:
  web:
    image: busybox:local
    command: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{target: 8080, app_protocol: http}]
  api:
    image: busybox:local
    command: ["busybox", "httpd", "-f", "-p", "9000", "-h", "/www"]
    ports: [{target: 9000, app_protocol: http}]
  worker:
    image: busybox:local
    command: ["sleep", "600"]
"""


@pytest.fixture
def config(engine: docker.DockerClient, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A broker config with the docker and compose platforms, under a name of its own."""
    name = f"t-{uuids.uuid4().hex[:10]}"
    yield {**BASE_CONFIG, "name": name, "platforms": PLATFORMS}
    remove_labelled(engine, name)


def request(
    executable: dict[str, Any], *, cores: int = 1, memory: int = 1, duration: str = "PT10M"
) -> dict[str, Any]:
    return {
        "executable": executable,
        "compute": {
            "kind": "simple-compute-resource",
            "cores": {"min": cores, "max": cores},
            "memory": {"min": memory, "max": memory},
        },
        "schedule": {"requested": {"duration": duration}},
    }


def web_container(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "docker-container",
        "image": {"locations": [IMAGE]},
        "command": HTTPD,
        "network": {"ports": [{"internal": {"port": 8080}, "protocol": "HTTP"}]},
        **extra,
    }


def start(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/requests", json=body).raise_for_status().json()
    assert answer["result"] == "YES", answer["meta"]["messages"]
    uuid = answer["offers"][0]["meta"]["uuid"]
    assert accept(client, uuid).status_code == 200
    return wait_for_phase(client, uuid, UP | {"FAILED"})


def test_a_container_is_offered_started_reached_and_kept_from_other_users(config, engine, tmp_path):
    with (
        running_broker(tmp_path, **config) as broker,
        broker.client() as alice,
        broker.client("demo-bob") as bob,
    ):
        kinds = {k["alias"] for k in httpx.get(f"{broker.url}/info").json()["kinds"]}
        assert {"docker-container", "docker-compose"} <= kinds
        sleeper = {"kind": "docker-container", "image": {"locations": [IMAGE]}, "command": SLEEP}
        short = start(alice, request(sleeper, duration="PT4S"))["meta"]["uuid"]
        session = start(alice, request(web_container(), cores=2, memory=2))
        uuid = session["meta"]["uuid"]
        assert session["phase"] == "AVAILABLE", session["meta"]["messages"]
        (connector,) = session["connectors"]
        assert connector["protocol"] == "HTTP"
        assert "It works" in httpx.get(connector["location"], timeout=5).text
        (found,) = session_containers(engine, config["name"], uuid)
        host = engine.api.inspect_container(found.id)["HostConfig"]
        assert host["NanoCpus"] == 2_000_000_000 and host["Memory"] == 2 * 1024**3
        assert found.labels["execbroker.owner"] == "alice"

        # bob can neither see, read the logs of, nor cancel alice's container
        assert bob.get(f"/sessions/{uuid}").status_code == 403
        assert bob.get(f"/sessions/{uuid}/logs").status_code == 403
        assert update(bob, uuid, "CANCELLED").status_code == 403
        assert all(s["meta"]["uuid"] != uuid for s in bob.get("/sessions").json()["sessions"])
        assert found.reload() is None and found.status == "running"

        assert update(alice, uuid, "CANCELLED").json()["phase"] == "CANCELLED"
        assert session_containers(engine, config["name"], uuid) == []

        # the short session was stopped at the end of its grant
        ended = wait_for_phase(alice, short, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=10)
        assert ended["phase"] == "FAILED"
        assert "exceeded the granted duration" in ended["meta"]["messages"][-1]["message"]
        assert session_containers(engine, config["name"], short) == []


def test_a_container_s_outputs_are_there_when_its_session_is_first_seen_completed(
    config, engine, tmp_path
):
    """$EXECBROKER_OUTPUTS is copied out of the ended container before its session is
    COMPLETED, not at its release afterwards: a client reading the outputs at once finds them."""
    script = 'sleep 1; echo done > "$EXECBROKER_OUTPUTS/result.txt"'
    writer = {
        "kind": "docker-container",
        "image": {"locations": [IMAGE]},
        "command": ["sh", "-c", script],
    }
    with running_broker(tmp_path, **config) as broker, broker.client() as client:
        uuid = start(client, request(writer))["meta"]["uuid"]
        deadline = time.monotonic() + 60
        while (phase := client.get(f"/sessions/{uuid}").json()["phase"]) not in FINAL:
            assert time.monotonic() < deadline, phase
            time.sleep(0.01)
        listed = client.get(f"/sessions/{uuid}/outputs").json()["outputs"]
        assert phase == "COMPLETED"
        assert "result.txt" in {item["name"] for item in listed}, listed
        assert client.get(f"/sessions/{uuid}/outputs/result.txt").text == "done\n"


def test_desktop_2x_offers_twice_the_unit_and_refuses_with_the_field(tmp_path):
    """The example broker as shipped: only 2x desktops (2 cores, 4 GiB), docker and compose."""
    config = yaml.safe_load((EXAMPLES / "desktop-2x.yaml").read_text())
    config["monitor"] = {"interval": "PT0.2S"}
    broker = BrokerProcess(config, tmp_path).start()
    try:
        with broker.client() as alice:
            body = request(web_container())
            body["compute"]["cores"] = {"min": 1, "max": 4}
            body["compute"]["memory"] = {"min": 1, "max": 8}
            answer = alice.post("/requests", json=body).json()
            assert answer["result"] == "YES", answer["meta"]["messages"]
            for offer in answer["offers"]:
                assert offer["compute"]["cores"] == {"min": 2, "max": 2}
                assert offer["compute"]["memory"] == {"min": 4, "max": 4}
            _assert_refusals(alice)
    finally:
        broker.stop()


def _assert_refusals(alice: httpx.Client) -> None:
    """Every refusal is a NO naming the field; fields the model lacks are a 422."""
    cases = {
        "executable.privileged": web_container(privileged=True),
        "services.web.privileged": {
            "kind": "docker-compose",
            "compose": "services: {web: {image: busybox:local, privileged: true}}",
        },
        "services.web.network_mode": {
            "kind": "docker-compose",
            "compose": "services: {web: {image: busybox:local, network_mode: host}}",
        },
        "services.web.volumes[0]": {
            "kind": "docker-compose",
            "compose": "services: {web: {image: busybox:local, volumes: ['/:/host']}}",
        },
    }
    for words, executable in cases.items():
        answer = alice.post("/requests", json=request(executable, cores=2, memory=4)).json()
        assert answer["result"] == "NO", answer
        messages = " ".join(m["message"] for m in answer["meta"]["messages"])
        assert words in messages, messages
    # compose text that is no compose file at all is a 422 naming the field, never an offer
    for text in ("services: [oops", "volumes: {}", "just words"):
        body = request({"kind": "docker-compose", "compose": text}, cores=2, memory=4)
        for path in ("/requests", "/direct"):
            response = alice.post(path, json=body)
            assert response.status_code == 422, response.text
            assert response.json()["field"] == "executable.compose", response.json()
            assert response.json()["detail"].startswith("executable.compose:")
    # fields the container model does not have are ignored, named in a WARN, and never
    # reach an offer (so never a container)
    for field in ({"cap_add": ["SYS_ADMIN"]}, {"volumes": ["/:/host"]}, {"devices": ["x"]}):
        response = alice.post("/requests", json=request(web_container(**field), cores=2, memory=4))
        assert response.status_code == 200, response.text
        (name,) = field
        warnings = [m["message"] for m in response.json()["meta"]["messages"]]
        assert f"executable.{name}: unknown property, ignored" in warnings, warnings
        assert all(name not in offer["executable"] for offer in response.json()["offers"])


def test_a_compose_application_comes_up_and_goes_down_on_cancel(config, engine, tmp_path):
    with running_broker(tmp_path, **config) as broker, broker.client() as alice:
        executable = {"kind": "docker-compose", "compose": THREE_SERVICES}
        session = start(alice, request(executable, cores=2, memory=3))
        uuid = session["meta"]["uuid"]
        assert session["phase"] == "AVAILABLE", session["meta"]["messages"]
        assert len(session["connectors"]) == 2
        for connector in session["connectors"]:
            assert "It works" in httpx.get(connector["location"], timeout=5).text
        assert len(session_containers(engine, config["name"], uuid)) == 3
        assert update(alice, uuid, "CANCELLED").json()["phase"] == "CANCELLED"
        assert session_containers(engine, config["name"], uuid) == []
        project = {"label": f"com.docker.compose.project=eb-{uuid}"}
        assert engine.networks.list(filters=project) == []


def test_kill_9_restart_re_adopts_running_containers_and_records_finished_ones(
    config, engine, tmp_path
):
    broker = BrokerProcess(config, tmp_path).start()
    try:
        with broker.client() as alice:
            web = start(alice, request(web_container()))
            batch = start(
                alice,
                request(
                    {
                        "kind": "docker-container",
                        "image": {"locations": [IMAGE]},
                        "command": ["sh", "-c", "sleep 2; echo done"],
                    }
                ),
            )
            app = start(
                alice,
                request({"kind": "docker-compose", "compose": THREE_SERVICES}, cores=2, memory=3),
            )
        sessions = {s["meta"]["uuid"]: s for s in (web, batch, app)}
        before = {
            uuid: {c.id for c in session_containers(engine, config["name"], uuid)}
            for uuid in sessions
        }
        broker.kill()
        time.sleep(2.5)  # the batch container finishes while no broker watches
        broker.start()
        with broker.client() as alice:
            done = wait_for_phase(alice, batch["meta"]["uuid"], {"COMPLETED", "FAILED"})
            assert done["phase"] == "COMPLETED", done["meta"]["messages"]
            assert alice.get(f"/sessions/{batch['meta']['uuid']}/logs").json()["stdout"] == "done\n"
            for session in (web, app):
                uuid = session["meta"]["uuid"]
                again = wait_for_phase(alice, uuid, {"AVAILABLE"})
                assert again["connectors"] == session["connectors"]
                for connector in again["connectors"]:
                    assert "It works" in httpx.get(connector["location"], timeout=5).text
                now = {c.id for c in session_containers(engine, config["name"], uuid)}
                assert now == before[uuid], "a container was started again"
            time.sleep(1)  # a few monitor passes: still one of each, still up
            for session in (web, app):
                uuid = session["meta"]["uuid"]
                assert {c.id for c in session_containers(engine, config["name"], uuid)} == before[
                    uuid
                ]
                assert update(alice, uuid, "CANCELLED").status_code == 200
                assert session_containers(engine, config["name"], uuid) == []
    finally:
        broker.stop()
