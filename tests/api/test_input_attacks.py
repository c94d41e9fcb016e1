"""Attacks through the HTTP API alone, against a real broker on the local platform.

Bodies that a few bytes make huge or deep, times out of range, NUL bytes, and notebook
``location:`` fetches aimed at the broker's own host: each is a clear 4xx or NO (or a FAILED
session saying why), never a 500, never a half-created session, never a fetch made.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.brokers import accept, batch_request, running_broker, wait_for_phase
from tests.notebooks.notebooks import notebook, notebook_request
from tests.sites import Site

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
YAML = {"content-type": "application/yaml"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory.mktemp("attacks")) as broker:
        yield broker


@pytest.fixture
def client(broker):
    with broker.client() as client:
        yield client


def _count(client) -> int:
    return len(client.get("/sessions").json()["sessions"])


# -- bodies -----------------------------------------------------------------------------


def alias_bomb(levels: int = 6, width: int = 9) -> str:
    """A YAML request of ~500 bytes whose notebook parameters hold width**(levels-1) strings:
    each level is an anchor that the next aliases ``width`` times (today's broker echoed them
    in every offer and stored them: megabytes from a few hundred bytes)."""
    anchors = ['a0: &a0 ["echo lol"]']
    for level in range(1, levels):
        anchors.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return (
        "executable:\n  kind: jupyter-notebook\n  location: https://example.org/n.ipynb\n"
        "  parameters:\n"
        + "".join(f"    {line}\n" for line in anchors)
        + f"    p: *a{levels - 1}\n"
        "schedule: {requested: {duration: PT5M}}\n"
    )


def test_a_yaml_alias_bomb_is_refused_before_it_expands(client):
    body = alias_bomb()
    assert len(body) < 700
    before = _count(client)
    response = client.post("/requests", content=body, headers=YAML)
    assert response.status_code == 400, response.text[:300]
    assert "aliases (*a0) are not accepted" in response.json()["detail"]
    assert len(response.content) < 1000
    assert _count(client) == before


def test_json_nested_100000_deep_is_a_400(client):
    depth = 100_000
    body = '{"executable": {"kind": "batch-script", "script": "true"}, "x": '
    body += "[" * depth + "]" * depth + "}"
    response = client.post("/requests", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    assert "deeper than 64 levels" in response.json()["detail"]


def test_json_nested_just_past_the_bound_is_a_400(client):
    # Deep enough to pass json's own limit, deeper than the broker's.
    request = batch_request("true")
    nested: Any = "x"
    for _ in range(70):
        nested = [nested]
    request["meta"] = {"messages": nested}
    response = client.post("/requests", json=request)
    assert response.status_code == 400 and "deeper than 64" in response.json()["detail"]


def test_yaml_nested_50000_deep_is_a_400(client):
    depth = 50_000
    body = "executable: {kind: batch-script, script: 'true'}\nx: " + "[" * depth + "]" * depth
    response = client.post("/requests", content=body, headers=YAML)
    assert response.status_code == 400, response.text[:300]
    assert "nested deeper than 64 levels" in response.json()["detail"]
    block = "executable: {kind: batch-script, script: 'true'}\nx:\n"
    block += "".join("  " * level + "- \n" for level in range(100))
    response = client.post("/requests", content=block, headers=YAML)
    assert response.status_code == 400 and "deeper than 64" in response.json()["detail"]


def test_an_integer_too_long_to_convert_is_a_400(client):
    body = '{"executable": {"kind": "batch-script", "script": "true"}, "x": ' + "9" * 5000 + "}"
    response = client.post("/requests", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text[:300]


# -- times ------------------------------------------------------------------------------

OUT_OF_RANGE = [
    ("duration", "PT99999999999999999999S", "out of range"),
    ("duration", "P999999999D", "out of range"),
    ("duration", {"min": "PT1H", "max": "PT99999999999999999999S"}, "out of range"),
    ("start", "9999-12-31T23:59:59Z/PT1H", "out of range"),
    ("start", "2026-12-31T23:59:59Z/PT99999999999999999999S", "out of range"),
    ("start", "PT1H/0001-01-01T00:00:00Z", "out of range"),
    ("start", "9999-12-31T23:59:59-05:00/PT1H", "out of range"),
]


@pytest.mark.parametrize(("field", "value", "words"), OUT_OF_RANGE)
def test_times_out_of_range_are_a_422_naming_the_field(client, field, value, words):
    request = batch_request("true")
    request["schedule"]["requested"][field] = value
    before = _count(client)
    response = client.post("/requests", json=request)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"schedule.requested.{field}" in detail and words in detail
    assert _count(client) == before


# -- NUL bytes --------------------------------------------------------------------------


def _batch(**executable: Any) -> dict[str, Any]:
    request = batch_request("true")
    request["executable"].update(executable)
    return request


def _container(**executable: Any) -> dict[str, Any]:
    request = batch_request("true")
    request["executable"] = {"kind": "docker-container", "image": {"locations": ["busybox"]}}
    request["executable"].update(executable)
    return request


NUL = [
    (_batch(name="job\x00"), "executable.name"),
    ({**batch_request("true"), "name": "mine\x00"}, "body.name"),
    (_batch(script="echo hi\x00rm -rf /"), "executable.script"),
    (_batch(environment={"GOOD": "a\x00b"}), "executable.environment.GOOD"),
    (_batch(environment={"BAD\x00NAME": "x"}), "executable.environment"),
    (_container(image={"locations": ["busybox\x00:local"]}), "executable.image.locations.0"),
    (
        _container(network={"ports": [{"internal": {"port": 80}, "path": "/a\x00/../b"}]}),
        "executable.network.ports.0.path",
    ),
    (
        {**batch_request("true"), "executable": {"kind": "docker-compose", "compose": "a\x00"}},
        "executable.compose",
    ),
    (
        {**batch_request("true"), "executable": {"kind": "jupyter-notebook", "location": "\x00"}},
        "executable.location",
    ),
]


@pytest.mark.parametrize(("request_body", "field"), NUL, ids=lambda v: str(v)[:40])
def test_nul_bytes_are_a_422_naming_the_field(client, request_body, field):
    before = _count(client)
    for media in ("application/json", "application/yaml"):
        text = json.dumps(request_body)  # JSON is YAML too: the same body either way
        response = client.post("/requests", content=text, headers={"content-type": media})
        assert response.status_code == 422, (media, response.text)
        detail = response.json()["detail"]
        assert field in detail and "NUL" in detail, detail
    assert _count(client) == before


# -- notebook locations -----------------------------------------------------------------


NOTEBOOK = json.dumps(notebook("print(6 * 7)")).encode()


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site("127.0.0.1", {"/nb.ipynb": (200, {}, NOTEBOOK)})
    yield site
    site.close()


def _messages(answer: dict[str, Any]) -> str:
    return " ".join(m["message"] for m in answer["meta"]["messages"])


def test_a_notebook_location_on_127_0_0_1_is_a_no_and_is_never_fetched(client, site):
    answer = client.post("/requests", json=notebook_request(location=f"{site.base}/nb.ipynb"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "NO"
    assert "127.0.0.1 is a loopback address" in _messages(answer.json())
    assert site.hits == []


def test_localhost_is_refused_by_name(client, site):
    url = f"http://localhost:{site.port}/nb.ipynb"
    answer = client.post("/requests", json=notebook_request(location=url)).json()
    assert answer["result"] == "NO" and "loopback" in _messages(answer)
    assert site.hits == []


@pytest.mark.parametrize("host", ["127.1", "2130706433", socket.gethostname()])
def test_a_host_name_resolving_to_loopback_fails_at_start_without_a_fetch(client, site, host):
    # Only the resolver knows these are 127.0.0.1 (this machine's own name is, in /etc/hosts).
    addresses = {info[4][0] for info in socket.getaddrinfo(host, site.port)}
    assert "127.0.0.1" in addresses
    answer = client.post(
        "/requests", json=notebook_request(location=f"http://{host}:{site.port}/nb.ipynb")
    )
    assert answer.json()["result"] == "YES", answer.text
    uuid = answer.json()["offers"][0]["meta"]["uuid"]
    assert accept(client, uuid).status_code == 200
    done = wait_for_phase(client, uuid, FINAL, timeout=60)
    assert done["phase"] == "FAILED"
    assert "(127.0.0.1) is a loopback address" in _messages(done)
    assert site.hits == []


def test_a_redirect_from_an_allowed_host_to_a_forbidden_one_is_not_followed(tmp_path):
    forbidden = Site("127.0.0.2", {"/nb.ipynb": (200, {}, NOTEBOOK)})
    allowed = Site(
        "127.0.0.1",
        {
            "/nb.ipynb": (200, {}, NOTEBOOK),
            "/moved.ipynb": (302, {"Location": f"{forbidden.base}/nb.ipynb"}, b""),
        },
    )
    platforms = [{"type": "local", "fetch": {"allow": ["127.0.0.1/32"]}}]
    try:
        with running_broker(tmp_path, platforms=platforms) as broker, broker.client() as client:
            direct = client.post(
                "/direct", json=notebook_request(location=f"{allowed.base}/moved.ipynb")
            )
            assert direct.status_code == 200, direct.text
            done = wait_for_phase(client, direct.json()["meta"]["uuid"], FINAL, timeout=60)
            assert done["phase"] == "FAILED"
            assert "127.0.0.2 is a loopback address" in _messages(done)
            assert allowed.hits == ["/moved.ipynb"] and forbidden.hits == []
            # The allowance is what it says: the allowed host itself is fetched from.
            fine = client.post(
                "/direct", json=notebook_request(location=f"{allowed.base}/nb.ipynb")
            )
            done = wait_for_phase(client, fine.json()["meta"]["uuid"], FINAL, timeout=60)
            assert done["phase"] == "COMPLETED", _messages(done)
    finally:
        allowed.close()
        forbidden.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("duration", "P36525D"),
        ("start", "2999-12-31T00:00:00Z/PT1H"),
        ("start", "1970-01-01T00:00:00Z/PT1H"),
        ("start", "2026-01-01T00:00:00Z/P36525D"),
    ],
)
def test_the_far_ends_of_the_ranges_are_answered_not_crashed_on(client, field, value):
    request = batch_request("true")
    request["schedule"]["requested"][field] = value
    answer = client.post("/requests", json=request)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] in ("YES", "NO")
