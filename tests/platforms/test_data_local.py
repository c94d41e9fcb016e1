"""Data resources on the local platform: fetched at start, bound into the sandbox.

A real broker process, a real HTTP server on 127.0.0.1 (allowed by the platform's
``fetch`` config, as a site would allow its own data server) and the task in its
bubblewrap sandbox under its owner's account."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.brokers import BrokerProcess, batch_request, running_broker, wait_for_phase
from tests.data_resources import ALLOW_LOOPBACK, data_site, expect_probe, probe, sha256, with_data
from tests.sites import Site


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    served = data_site()
    yield served
    served.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[BrokerProcess]:
    platforms = [{"type": "local", "fetch": ALLOW_LOOPBACK}]
    with running_broker(tmp_path_factory.mktemp("data"), platforms=platforms) as broker:
        yield broker


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[httpx.Client]:
    with broker.client() as client:
        yield client


def _run(client: httpx.Client, request: dict) -> tuple[dict, str]:
    session = client.post("/direct", json=request).raise_for_status().json()
    uuid = session["meta"]["uuid"]
    done = wait_for_phase(client, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=60)
    return done, client.get(f"/sessions/{uuid}/logs").json()["stdout"]


def _messages(session: dict) -> str:
    return " | ".join(item["message"] for item in session["meta"]["messages"])


def test_the_data_is_at_its_mount_path_read_only_where_asked(client, site):
    request = with_data(batch_request(probe(), duration="PT2M"), site, checksum=sha256())
    done, stdout = _run(client, request)
    assert done["phase"] == "COMPLETED", done
    expect_probe(stdout)
    assert "data0=/input" in stdout


def test_the_offer_books_the_staging_time_on_top_of_the_task_time(client, site):
    request = with_data(batch_request("true", duration="PT2M"), site)
    answer = client.post("/requests", json=request).raise_for_status().json()
    assert answer["result"] == "YES", answer
    # two resources, a minute's allowance each, before the task's two minutes
    assert answer["offers"][0]["schedule"]["available"]["duration"] == "PT4M"


def test_a_checksum_mismatch_fails_the_session_saying_so(client, site):
    request = with_data(batch_request("echo ran", duration="PT2M"), site, checksum=sha256(b"x"))
    done, stdout = _run(client, request)
    assert done["phase"] == "FAILED"
    assert "data[0]: checksum mismatch" in _messages(done)
    assert "ran" not in stdout


def test_an_address_the_platform_may_not_fetch_from_is_a_no_at_offer_time(tmp_path, site):
    # The same request on a platform with the default policy: loopback is refused.
    with running_broker(tmp_path) as broker, broker.client() as client:
        request = with_data(batch_request("echo ran", duration="PT2M"), site)
        answer = client.post("/requests", json=request).raise_for_status().json()
    assert answer["result"] == "NO"
    assert "data[0]: 127.0.0.1 is a loopback address" in _messages(answer)


def test_a_redirect_to_an_address_not_allowed_fails_the_session(client, site):
    # 127.0.0.1 is allowed, 127.0.0.2 (loopback too) is not: checked again on the redirect.
    away = Site("127.0.0.1", {"/away": (302, {"Location": f"http://127.0.0.2:{site.port}/"}, b"")})
    try:
        request = with_data(batch_request("echo ran", duration="PT2M"), away, path="/away")
        done, stdout = _run(client, request)
    finally:
        away.close()
    assert done["phase"] == "FAILED"
    assert "data[0]: 127.0.0.2 is a loopback address" in _messages(done)
    assert "ran" not in stdout


def test_kinds_that_cannot_be_staged_get_no_with_the_reason(client):
    request = batch_request("true")
    request["data"] = [{"kind": "S3-data-resource", "bucket": "b", "object": "o"}]
    answer = client.post("/requests", json=request).raise_for_status().json()
    assert answer["result"] == "NO"
    assert "data[0]: cannot stage a S3-data-resource" in answer["meta"]["messages"][0]["message"]


def test_data_no_volume_names_is_at_data_index_read_only(client, site):
    request = batch_request(
        'head -n 1 "$EXECBROKER_DATA_0/content"; touch /data/0/x 2>/dev/null || echo refused',
        duration="PT2M",
    )
    request["data"] = [{"kind": "simple-data-resource", "location": site.base + "/data.txt"}]
    done, stdout = _run(client, request)
    assert done["phase"] == "COMPLETED", done
    assert stdout.splitlines() == ["the staged data", "refused"]
