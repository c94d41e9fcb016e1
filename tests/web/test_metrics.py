"""``GET /metrics`` of a real broker, read with Prometheus' own text parser, moves with a
session's life; the broker's JSON log names the session and user on every line about it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.brokers import (
    BrokerProcess,
    accept,
    batch_request,
    running_broker,
    update,
    wait_for_phase,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(broker: BrokerProcess) -> Samples:
    answer = httpx.get(f"{broker.url}/metrics", timeout=10).raise_for_status()
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_counters_move_with_a_session(tmp_path: Path) -> None:
    with running_broker(tmp_path, monitor={"interval": "PT0.1S"}) as broker:
        before = scrape(broker)
        with broker.client() as http:
            answer = http.post("/requests", json=batch_request("echo hi", cores=(1, 2))).json()
            offers = answer["offers"]
            accept(http, offers[0]["meta"]["uuid"]).raise_for_status()
            during = scrape(broker)
            wait_for_phase(http, offers[0]["meta"]["uuid"], {"COMPLETED"})
            refused = http.post("/requests", json=batch_request("echo", cores=(64, 64))).json()
            assert refused["result"] == "NO"
            other = http.post("/requests", json=batch_request("echo")).json()["offers"][0]
            update(http, other["meta"]["uuid"], "REJECTED").raise_for_status()
        after = scrape(broker)

    assert moved(before, after, "execbroker_offers_total", event="made") == len(offers) + 1
    assert moved(before, after, "execbroker_offers_total", event="accepted") == 1
    # The accepted offer's siblings, and the one rejected by hand.
    assert moved(before, after, "execbroker_offers_total", event="rejected") == len(offers)
    assert moved(before, after, "execbroker_answers_total", result="YES") == 2
    assert moved(before, after, "execbroker_answers_total", result="NO") == 1
    assert moved(before, after, "execbroker_no_reasons_total", reason="cores") == 1
    assert moved(before, after, "execbroker_sessions_ended_total", phase="COMPLETED") == 1
    assert moved(before, after, "execbroker_accept_to_running_seconds_count") == 1
    assert moved(before, after, "execbroker_sessions", phase="COMPLETED") == 1
    # While it was booked, the quota it used was counted; once done, it is free again.
    assert (
        value(during, "execbroker_quota_used", resource="cores")
        + value(during, "execbroker_quota_held", resource="cores")
        >= 1
    )
    assert value(after, "execbroker_quota_used", resource="cores") == 0
    assert value(after, "execbroker_quota_limit", resource="cores") == 4
    requests = ("execbroker_http_request_seconds_count", "POST", "/requests", "200")
    name, method, route, status = requests
    assert moved(before, after, name, method=method, route=route, status=status) == 3


def test_json_log_lines_about_a_session_name_it_and_its_user(tmp_path: Path) -> None:
    with running_broker(
        tmp_path, logging={"format": "json"}, monitor={"interval": "PT0.1S"}
    ) as broker:
        with broker.client("demo-bob") as http:
            offer = http.post("/requests", json=batch_request("echo hi")).json()["offers"][0]
            uuid = offer["meta"]["uuid"]
            accept(http, uuid).raise_for_status()
            wait_for_phase(http, uuid, {"COMPLETED"})
        log = broker.log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines, log
    about = [line for line in lines if uuid in line["message"]]
    assert len(about) >= 3, about  # accepted, started, completed at least
    for line in about:
        assert line["session"] == uuid, line
        assert line["user"] == "bob", line
    assert {"time", "level", "logger", "message"} <= set(about[0])
