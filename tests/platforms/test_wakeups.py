"""Launches and ends heard at once, not at the monitor's next pass: with passes 30 s apart,
an accepted session runs, and a task that ends is COMPLETED, within a few seconds, through
real brokers on the local platform (its runner's exit) and on docker (the engine's events).
And per-session docker networks made ahead stay one session's each."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid as uuids
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from execbroker.model.executables import DockerContainer
from execbroker.platforms.base import LaunchSpec, RunState
from execbroker.platforms.docker import DockerPlatform
from execbroker.platforms.docker_networks import LABEL_HOLDER, LABEL_NETWORK
from tests.brokers import accept, batch_request, running_broker
from tests.platforms import support
from tests.platforms.support import BUSYBOX, launch, remove_labelled, wait_state

# The first pass comes at start-up; the next 30 s later: anything sooner is a wake-up.
SLOW_PASSES = {"interval": "PT30S"}
SOON = 8.0  # seconds: generous on a loaded machine, far below a pass


def _seconds_until(client: httpx.Client, uuid: str, phases: set[str], timeout: float = 25) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        session = client.get(f"/sessions/{uuid}").raise_for_status().json()
        if session["phase"] in phases:
            return time.monotonic() - started
        assert session["phase"] not in {"FAILED", "CANCELLED"}, session
        time.sleep(0.02)
    raise AssertionError(f"session {uuid} not {phases} after {timeout}s: {session}")


def _accepted(client: httpx.Client, request: dict[str, Any]) -> str:
    time.sleep(0.5)  # past the broker's first pass, so only a wake-up can start it soon
    offers = client.post("/requests", json=request).raise_for_status().json()["offers"]
    uuid = str(offers[0]["meta"]["uuid"])
    accept(client, uuid).raise_for_status()
    return uuid


def test_local_sessions_start_and_end_without_waiting_for_a_pass(tmp_path: Path) -> None:
    with running_broker(tmp_path, monitor=SLOW_PASSES) as broker, broker.client() as client:
        uuid = _accepted(client, batch_request("sleep 2"))
        assert _seconds_until(client, uuid, {"RUNNING", "COMPLETED"}) < SOON
        assert _seconds_until(client, uuid, {"COMPLETED"}) < SOON


def test_a_started_task_is_seen_running_without_an_event_or_a_pass(tmp_path: Path) -> None:
    # A task that neither ends nor has an event to tell of its start: only the monitor's
    # first look after the start can move its session on.
    with running_broker(tmp_path, monitor=SLOW_PASSES) as broker, broker.client() as client:
        uuid = _accepted(client, batch_request("sleep 60"))
        assert _seconds_until(client, uuid, {"RUNNING"}) < SOON


def test_a_session_starting_before_the_next_pass_starts_at_its_start(tmp_path: Path) -> None:
    # Accepted a few seconds before its start, with the next pass 30 s away: the accept
    # cannot start it at once, so the monitor is woken at its start instead.
    with running_broker(tmp_path, monitor=SLOW_PASSES) as broker, broker.client() as client:
        time.sleep(0.5)  # past the broker's first pass
        begin = datetime.now(UTC) + timedelta(seconds=3)
        window = {"start": f"{begin:%Y-%m-%dT%H:%M:%SZ}/PT1S", "duration": "PT5M"}
        request = {**batch_request("sleep 60"), "schedule": {"requested": window}}
        offer = client.post("/requests", json=request).raise_for_status().json()["offers"][0]
        start = datetime.fromisoformat(offer["schedule"]["preparing"]["start"])
        assert start > datetime.now(UTC), offer["schedule"]  # not due at the accept
        uuid = str(offer["meta"]["uuid"])
        accept(client, uuid).raise_for_status()
        _seconds_until(client, uuid, {"RUNNING"})
        assert datetime.now(UTC) - start < timedelta(seconds=SOON)


def _container(command: list[str]) -> dict[str, Any]:
    return {
        "executable": {
            "kind": "docker-container",
            "image": {"locations": [BUSYBOX]},
            "command": command,
        },
        "compute": {"cores": {"min": 1, "max": 1}, "memory": {"min": 1, "max": 1}},
        "schedule": {"requested": {"duration": "PT5M"}},
    }


@pytest.mark.docker
def test_docker_sessions_start_and_end_without_waiting_for_a_pass(
    engine: docker.DockerClient, tmp_path: Path
) -> None:
    name = f"t-{uuids.uuid4().hex[:10]}"
    config = {"name": name, "platforms": [{"type": "docker"}], "monitor": SLOW_PASSES}
    try:
        with running_broker(tmp_path, **config) as broker, broker.client() as client:
            uuid = _accepted(client, _container(["sleep", "2"]))
            assert _seconds_until(client, uuid, {"RUNNING", "COMPLETED"}) < SOON
            assert _seconds_until(client, uuid, {"COMPLETED"}) < SOON
    finally:
        remove_labelled(engine, name)


@pytest.mark.docker
def test_compose_sessions_end_without_waiting_for_a_pass(
    engine: docker.DockerClient, tmp_path: Path
) -> None:
    name = f"t-{uuids.uuid4().hex[:10]}"
    config = {"name": name, "platforms": [{"type": "compose"}], "monitor": SLOW_PASSES}
    compose = f"services:\n  job:\n    image: {BUSYBOX}\n    command: [sleep, '2']\n"
    request = {**_container([]), "executable": {"kind": "docker-compose", "compose": compose}}
    try:
        with running_broker(tmp_path, **config) as broker, broker.client() as client:
            uuid = _accepted(client, request)
            assert _seconds_until(client, uuid, {"RUNNING", "COMPLETED"}) < SOON
            assert _seconds_until(client, uuid, {"COMPLETED"}) < SOON
    finally:
        remove_labelled(engine, name)


def _sleeper(tmp_path: Path, command: list[str]) -> LaunchSpec:
    return launch(DockerContainer.model_validate(_container(command)["executable"]), tmp_path)


def _network(engine: docker.DockerClient, handle: str) -> str:
    return str(engine.containers.get(handle).labels[LABEL_NETWORK])


def _wait_for_spare(platform: DockerPlatform, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not platform.networks._ready:
        assert time.monotonic() < deadline, "no spare network was made"
        time.sleep(0.05)


@pytest.mark.docker
def test_spare_networks_are_each_one_sessions_and_go_with_it(
    make_platform: Callable[..., DockerPlatform],
    engine: docker.DockerClient,
    broker_name: str,
    tmp_path: Path,
) -> None:
    platform = make_platform(network_spares=1)
    mine = {"label": f"execbroker.broker={broker_name}"}
    handles = []
    for _ in range(3):  # the first makes its network; the others take spares
        handles.append(platform.start(_sleeper(tmp_path, ["sleep", "30"])))
        _wait_for_spare(platform)
    networks = [_network(engine, handle) for handle in handles]
    assert len(set(networks)) == 3
    for network in networks:  # each holds its one container, nobody else's
        assert len(engine.api.inspect_network(network)["Containers"]) == 1
    for handle, network in zip(handles, networks, strict=True):
        platform.release(handle)
        assert not engine.networks.list(names=[network])
    assert len(engine.networks.list(filters=mine)) == 1  # the spare, for the next session
    platform.close()
    assert not engine.networks.list(filters=mine)


@pytest.mark.docker
def test_a_session_on_a_spare_network_still_cannot_reach_another(
    make_platform: Callable[..., DockerPlatform], engine: docker.DockerClient, tmp_path: Path
) -> None:
    platform = make_platform(network_spares=1)
    server = platform.start(_sleeper(tmp_path, ["busybox", "httpd", "-f", "-p", "8080"]))
    wait_state(platform, server, {RunState.RUNNING})
    _wait_for_spare(platform)
    address = support.address_of(engine, server)
    request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} 8080 | grep -q 200"
    other = platform.start(_sleeper(tmp_path, ["sh", "-c", request]))
    assert _network(engine, other) != _network(engine, server)
    ended = wait_state(platform, other, {RunState.COMPLETED, RunState.FAILED})
    assert ended.state == RunState.FAILED


@pytest.mark.docker
def test_a_dead_brokers_spares_go_but_not_those_its_sessions_were_given(
    make_platform: Callable[..., DockerPlatform], engine: docker.DockerClient, tmp_path: Path
) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    platform = make_platform(network_spares=1)
    platform.networks.maker = f"{socket.gethostname()}:{ended.pid}"  # as if it had died
    platform.start(_sleeper(tmp_path, ["sleep", "60"]))  # makes its own network
    _wait_for_spare(platform)
    given = platform.start(_sleeper(tmp_path, ["sleep", "60"]))  # takes the spare
    _wait_for_spare(platform)
    (unused,) = platform.networks._ready
    holder = engine.containers.get(given).labels[LABEL_HOLDER]
    successor = make_platform(network_spares=1)
    successor.networks._sweep_dead()
    assert engine.containers.get(holder).status == "running"  # the session's, kept
    assert engine.containers.get(given).status == "running"
    assert not engine.networks.list(names=[unused.network])  # the spare nobody took: gone
