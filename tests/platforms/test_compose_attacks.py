"""Compose files an attacker would send, through a real broker on the real Docker Engine.

Fields of the wrong shape are a 422 naming them (today: a 500); ulimits, replicas, tmpfs and
shm_size are refused or bounded by the grant; a ``location:`` on the broker's own host is
never fetched.
"""

from __future__ import annotations

import socket
import uuid as uuids
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.brokers import BASE_CONFIG, accept, running_broker, wait_for_phase
from tests.platforms.support import remove_labelled
from tests.sites import Site

pytestmark = pytest.mark.docker

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
APP = b'services: {one: {image: busybox:local, command: ["true"]}}'


@pytest.fixture(scope="module")
def broker(engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    name = f"t-{uuids.uuid4().hex[:10]}"
    config = {**BASE_CONFIG, "name": name, "platforms": [{"type": "compose"}]}
    with running_broker(tmp_path_factory.mktemp("compose-attacks"), **config) as broker:
        yield broker
    remove_labelled(engine, name)


@pytest.fixture
def client(broker: Any) -> Iterator[Any]:
    with broker.client() as client:
        yield client


def request(executable: dict[str, Any], memory: int = 1) -> dict[str, Any]:
    return {
        "executable": {"kind": "docker-compose", **executable},
        "compute": {
            "kind": "simple-compute-resource",
            "cores": {"min": 1, "max": 1},
            "memory": {"min": memory, "max": memory},
        },
        "schedule": {"requested": {"duration": "PT5M"}},
    }


def _messages(answer: dict[str, Any]) -> str:
    return " ".join(m["message"] for m in answer["meta"]["messages"])


WEB = "services:\n  web:\n    image: busybox:local\n    command: [sleep, '30']\n"
WRONG_TYPES = [
    (WEB + "networks: [front, back]\n", "networks"),
    (WEB + "volumes: data\n", "volumes"),
    (WEB + "configs: {c: [1, 2]}\n", "configs.c"),
    (WEB + "secrets: 5\n", "secrets"),
    (WEB + "networks: {n: {labels: 7}}\n", "networks.n.labels"),
    (WEB + "volumes: {v: {labels: true}}\n", "volumes.v.labels"),
    (WEB + "    networks: 5\n", "services.web.networks"),
    (WEB + "    labels: 5\n", "services.web.labels"),
    (WEB + "    labels: {tier: [a, b]}\n", "services.web.labels.tier"),
    (WEB + "    volumes: {data: /data}\n", "services.web.volumes"),
    (WEB + "    configs: {c: x}\n", "services.web.configs"),
    (WEB + "    deploy: [x]\n", "services.web.deploy"),
    (WEB + "    deploy: {resources: 5}\n", "services.web.deploy.resources"),
    (
        WEB + "    deploy: {resources: {reservations: [gpu]}}\n",
        "services.web.deploy.resources.reservations",
    ),
    (WEB + "    cap_add: {NET_ADMIN: true}\n", "services.web.cap_add"),
    (WEB + "    ulimits: [nofile]\n", "services.web.ulimits"),
    (WEB + "    post_start: [id]\n", "services.web.post_start[0]"),
    (WEB + "    ports: [[80, 81]]\n", "services.web.ports[0]"),
    (WEB + "    environment: {A: {b: c}}\n", "services.web.environment.A"),
    (WEB + "    security_opt: {a: b}\n", "services.web.security_opt"),
]


@pytest.mark.parametrize(("text", "field"), WRONG_TYPES, ids=lambda v: str(v)[-40:])
def test_a_field_of_the_wrong_type_is_a_422_naming_it(client, text, field):
    for path in ("/requests", "/direct"):
        response = client.post(path, json=request({"compose": text}))
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["field"] == "executable.compose"
        assert body["detail"].startswith(f"executable.compose: {field}: must be"), body


REFUSED = [
    ("    ulimits: {rtprio: 99}\n", "services.web.ulimits.rtprio"),
    ("    ulimits: {memlock: {soft: -1, hard: -1}}\n", "services.web.ulimits.memlock"),
    ("    ulimits: {nproc: 1000000}\n", "services.web.ulimits.nproc"),
    ("    ulimits: {nofile: 100000000}\n", "services.web.ulimits.nofile"),
    ("    scale: 1000\n", "services.web.scale"),
    ("    deploy: {replicas: 100}\n", "services.web.deploy.replicas"),
    ("    deploy: {replicas: 1e400}\n", "services.web.deploy.replicas"),
    ("    shm_size: lots\n", "services.web.shm_size"),
    ("    tmpfs: ['/run:size=a-lot']\n", "services.web.tmpfs[0].size"),
]


@pytest.mark.parametrize(("extra", "field"), REFUSED, ids=lambda v: str(v).strip()[:40])
def test_ulimits_and_replicas_are_refused_naming_the_field(client, extra, field):
    answer = client.post("/requests", json=request({"compose": WEB + extra}))
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "NO"
    assert field in _messages(answer.json()), _messages(answer.json())


def test_what_is_open_to_all_still_gets_offers(client):
    extra = "    ulimits: {nofile: {soft: 1024, hard: 4096}}\n    scale: 2\n    shm_size: 16m\n"
    answer = client.post("/requests", json=request({"compose": WEB + extra})).json()
    assert answer["result"] == "YES", _messages(answer)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("    shm_size: 64g\n", "services.web.shm_size"),
        ("    tmpfs: ['/big:size=64g']\n", "services.web.tmpfs[0].size"),
        (
            "    volumes: [{type: tmpfs, target: /big, tmpfs: {size: 68719476736}}]\n",
            "services.web.volumes[0].tmpfs.size",
        ),
    ],
    ids=["shm_size", "tmpfs", "tmpfs-volume"],
)
def test_memory_mounts_beyond_the_grant_fail_saying_so(client, engine, broker, extra, field):
    answer = client.post("/requests", json=request({"compose": WEB + extra}, memory=1)).json()
    assert answer["result"] == "YES", _messages(answer)
    uuid = answer["offers"][0]["meta"]["uuid"]
    assert accept(client, uuid).status_code == 200
    done = wait_for_phase(client, uuid, FINAL, timeout=60)
    assert done["phase"] == "FAILED"
    assert f"{field}: 64g" in _messages(done) or f"{field}: 68719476736" in _messages(done)
    assert "share of the grant (1024 MiB)" in _messages(done)
    labels = [f"execbroker.session={uuid}"]
    assert engine.containers.list(all=True, ignore_removed=True, filters={"label": labels}) == []


def test_a_tmpfs_without_a_size_gets_the_share_not_half_the_host(client, engine, broker):
    text = WEB.replace("[sleep, '30']", "[sh, -c, 'df -k /scratch; sleep 30']")
    answer = client.post("/requests", json=request({"compose": text + "    tmpfs: /scratch\n"}))
    uuid = answer.json()["offers"][0]["meta"]["uuid"]
    assert accept(client, uuid).status_code == 200
    wait_for_phase(client, uuid, {"RUNNING", "AVAILABLE", *FINAL}, timeout=60)
    (container,) = engine.containers.list(
        all=True, filters={"label": [f"execbroker.session={uuid}"]}
    )
    assert container.attrs["HostConfig"]["Tmpfs"] == {"/scratch": f"size={1024**3}"}
    client.post(
        f"/sessions/{uuid}",
        json={"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"},
    )


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site("127.0.0.1", {"/app.yaml": (200, {}, APP)})
    yield site
    site.close()


def test_a_location_on_127_0_0_1_is_a_no_and_is_never_fetched(client, site):
    answer = client.post("/requests", json=request({"location": f"{site.base}/app.yaml"}))
    assert answer.json()["result"] == "NO", answer.text
    assert "executable.location: 127.0.0.1 is a loopback address" in _messages(answer.json())
    assert site.hits == []


def test_a_location_resolving_to_loopback_fails_at_start_without_a_fetch(client, site):
    host = socket.gethostname()  # this machine's own name: 127.0.0.1 in its /etc/hosts
    assert "127.0.0.1" in {info[4][0] for info in socket.getaddrinfo(host, site.port)}
    for url in (f"http://{host}:{site.port}/app.yaml", f"http://127.1:{site.port}/app.yaml"):
        answer = client.post("/requests", json=request({"location": url})).json()
        assert answer["result"] == "YES", _messages(answer)
        uuid = answer["offers"][0]["meta"]["uuid"]
        assert accept(client, uuid).status_code == 200
        done = wait_for_phase(client, uuid, FINAL, timeout=60)
        assert done["phase"] == "FAILED"
        assert "(127.0.0.1) is a loopback address" in _messages(done), _messages(done)
    assert site.hits == []


def test_an_allowed_network_is_fetched_from(engine, tmp_path: Path, site):
    name = f"t-{uuids.uuid4().hex[:10]}"
    platforms = [{"type": "compose", "fetch": {"allow": ["127.0.0.1/32"]}}]
    config = {**BASE_CONFIG, "name": name, "platforms": platforms}
    try:
        with running_broker(tmp_path, **config) as broker, broker.client() as client:
            answer = client.post("/direct", json=request({"location": f"{site.base}/app.yaml"}))
            assert answer.status_code == 200, answer.text
            done = wait_for_phase(client, answer.json()["meta"]["uuid"], FINAL, timeout=90)
            assert done["phase"] == "COMPLETED", _messages(done)
            assert site.hits == ["/app.yaml"]
    finally:
        remove_labelled(engine, name)
