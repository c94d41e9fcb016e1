"""Data resources on the docker platform: a named volume each, filled before the task
starts and mounted read-only where asked, through a real broker on the real engine."""

from __future__ import annotations

import time
import uuid as uuids
from collections.abc import Iterator

import httpx
import pytest

from tests.brokers import BrokerProcess, running_broker, wait_for_phase
from tests.data_resources import ALLOW_LOOPBACK, data_site, expect_probe, probe, sha256, with_data
from tests.platforms.support import BUSYBOX, remove_labelled
from tests.sites import Site

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    served = data_site()
    yield served
    served.close()


@pytest.fixture(scope="module")
def broker(engine, tmp_path_factory) -> Iterator[BrokerProcess]:
    name = f"t-{uuids.uuid4().hex[:10]}"
    platform = {"type": "docker", "pull": "never", "fetch": ALLOW_LOOPBACK}
    config = {"name": name, "platforms": [platform]}
    try:
        with running_broker(tmp_path_factory.mktemp("docker-data"), **config) as broker:
            yield broker
    finally:
        remove_labelled(engine, name)


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[httpx.Client]:
    with broker.client() as client:
        yield client


def _container_request(script: str) -> dict:
    return {
        "executable": {
            "kind": "docker-container",
            "image": {"locations": [BUSYBOX]},
            "command": ["sh", "-c", script],
        },
        "compute": {"kind": "simple-compute-resource", "cores": {"min": 1, "max": 1}},
        "schedule": {"requested": {"duration": "PT2M"}},
    }


def _volumes(engine, broker: BrokerProcess, session: str) -> list:
    labels = [f"execbroker.broker={broker.name}", f"execbroker.session={session}"]
    return engine.volumes.list(filters={"label": labels})


def test_the_data_is_in_the_container_at_its_mount_path_read_only_where_asked(
    client, broker, engine, site
):
    request = with_data(_container_request(probe()), site, checksum=sha256())
    session = client.post("/direct", json=request).raise_for_status().json()
    uuid = session["meta"]["uuid"]
    done = wait_for_phase(client, uuid, {"COMPLETED", "FAILED"}, timeout=90)
    assert done["phase"] == "COMPLETED", done
    logs = client.get(f"/sessions/{uuid}/logs")
    assert logs.status_code == 200, logs.text
    expect_probe(logs.json()["stdout"])
    # its volumes go with its container, never a host directory
    deadline = time.monotonic() + 30
    while _volumes(engine, broker, uuid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _volumes(engine, broker, uuid) == []


def test_a_checksum_mismatch_fails_the_session_before_any_container(client, broker, engine, site):
    request = with_data(_container_request("echo ran"), site)
    # the second resource is wrong: the first one's volume, made already, goes too
    request["data"][1]["checksum"] = sha256(b"other")
    session = client.post("/direct", json=request).raise_for_status().json()
    uuid = session["meta"]["uuid"]
    done = wait_for_phase(client, uuid, {"COMPLETED", "FAILED"}, timeout=60)
    assert done["phase"] == "FAILED"
    assert any("checksum mismatch" in item["message"] for item in done["meta"]["messages"])
    labels = [f"execbroker.broker={broker.name}", f"execbroker.session={uuid}"]
    assert engine.containers.list(all=True, ignore_removed=True, filters={"label": labels}) == []
    assert _volumes(engine, broker, uuid) == []
