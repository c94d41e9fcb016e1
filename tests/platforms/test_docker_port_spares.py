"""Spare networks whose holder publishes ports (``port_spares``), against the real engine.

A session that publishes the same ports as sessions before it joins a holder made ahead
that publishes exactly those, and is reached through the holder's host port; nobody else
gets that holder, and the session is as alone on its network as any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from execbroker.model.executables import DockerContainer
from execbroker.platforms import docker_networks
from execbroker.platforms.base import LaunchSpec, RunState
from execbroker.platforms.docker import DockerPlatform
from execbroker.platforms.docker_engine import LABEL_BROKER
from execbroker.platforms.docker_networks import LABEL_NETWORK, Spare
from tests.platforms import support
from tests.platforms.support import BUSYBOX, launch, wait_state

pytestmark = pytest.mark.docker

WEB = ("8080/tcp",)


def _web(tmp_path: Path, port: int = 8080) -> LaunchSpec:
    command = ["busybox", "httpd", "-f", "-p", str(port), "-h", "/www"]
    ports = [{"internal": {"port": port}, "protocol": "HTTP", "path": "/index.html"}]
    executable = {"image": {"locations": [BUSYBOX]}, "command": command}
    container = DockerContainer.model_validate({**executable, "network": {"ports": ports}})
    return launch(container, tmp_path)


def _plain(tmp_path: Path, command: list[str]) -> LaunchSpec:
    executable = {"image": {"locations": [BUSYBOX]}, "command": command}
    return launch(DockerContainer.model_validate(executable), tmp_path)


def _spare_for(platform: DockerPlatform, ports: tuple[str, ...], timeout: float = 60) -> Spare:
    deadline = time.monotonic() + timeout
    while True:
        with platform.networks._lock:
            found = [spare for spare in platform.networks._ready if spare.ports == ports]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no spare publishing {ports} was made"
        time.sleep(0.05)


def _settled(platform: DockerPlatform, timeout: float = 60) -> None:
    """Until the pool makes no more spares (all it wants are ready)."""
    deadline = time.monotonic() + timeout
    while True:
        with platform.networks._lock:
            if not platform.networks._filling and platform.networks._wanted() is None:
                return
        assert time.monotonic() < deadline, "the pool kept making spares"
        time.sleep(0.05)


def _holder_joined(engine: docker.DockerClient, handle: str) -> str | None:
    mode = engine.api.inspect_container(handle)["HostConfig"]["NetworkMode"]
    return mode.removeprefix("container:") if mode.startswith("container:") else None


def _ported_session(
    platform: DockerPlatform, engine: docker.DockerClient, tmp_path: Path
) -> tuple[str, Spare]:
    """A web session on a spare that publishes its port (two sessions before it taught the
    pool the port), AVAILABLE."""
    for _ in range(2):  # published by themselves: the second time makes a spare for it
        earlier = platform.start(_web(tmp_path))
        assert _holder_joined(engine, earlier) is None
        platform.release(earlier)
    spare = _spare_for(platform, WEB)
    handle = platform.start(_web(tmp_path))
    assert _holder_joined(engine, handle) == spare.holder
    wait_state(platform, handle, {RunState.AVAILABLE})
    return handle, spare


def test_a_session_publishing_ports_again_joins_a_holder_that_publishes_them(
    make_platform: Callable[..., DockerPlatform], engine: docker.DockerClient, tmp_path: Path
) -> None:
    platform = make_platform(network_spares=1, port_spares=1)
    handle, spare = _ported_session(platform, engine, tmp_path)
    assert spare.holder is not None
    (endpoint,) = platform.status(handle).endpoints
    assert endpoint.location == f"http://127.0.0.1:{spare.published['8080/tcp']}/index.html"
    assert "It works" in httpx.get(endpoint.location, timeout=5).text
    holder = engine.api.inspect_container(spare.holder)["HostConfig"]
    assert holder["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    host = engine.api.inspect_container(handle)["HostConfig"]  # the grant and hardening
    assert host["NanoCpus"] == 1_000_000_000 and host["PidsLimit"] == 1024
    assert host["CapDrop"] == ["ALL"] and not host["Privileged"]

    platform.release(handle)  # its holder, its network and their ports go with it
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(spare.holder)
    assert not engine.networks.list(names=[spare.network])
    with pytest.raises(httpx.HTTPError):
        httpx.get(endpoint.location, timeout=2)


def test_a_holder_publishing_ports_goes_to_no_session_with_other_ports_or_none(
    make_platform: Callable[..., DockerPlatform], engine: docker.DockerClient, tmp_path: Path
) -> None:
    platform = make_platform(network_spares=1, port_spares=1)
    for _ in range(2):
        platform.release(platform.start(_web(tmp_path)))
    spare = _spare_for(platform, WEB)
    _settled(platform)  # a plain spare is ready too
    quiet = platform.start(_plain(tmp_path, ["sleep", "30"]))
    assert _holder_joined(engine, quiet) not in (None, spare.holder)  # a plain spare's
    other = platform.start(_web(tmp_path, port=9090))
    assert _holder_joined(engine, other) is None  # publishes its own, on a network of its own
    assert engine.containers.get(other).labels[LABEL_NETWORK] != spare.network
    assert wait_state(platform, other, {RunState.AVAILABLE}).endpoints
    with platform.networks._lock:
        assert spare in platform.networks._ready


def test_ports_published_once_make_no_spare(
    make_platform: Callable[..., DockerPlatform], engine: docker.DockerClient, tmp_path: Path
) -> None:
    platform = make_platform(network_spares=1, port_spares=1)
    for port in (9001, 9002, 9003):
        platform.start(_web(tmp_path, port=port))
        _settled(platform)
    with platform.networks._lock:
        assert [spare.ports for spare in platform.networks._ready] == [()]


def test_a_session_on_a_holder_publishing_ports_cannot_be_reached_by_another(
    make_platform: Callable[..., DockerPlatform],
    engine: docker.DockerClient,
    broker_name: str,
    tmp_path: Path,
) -> None:
    platform = make_platform(network_spares=1, port_spares=1)
    server, spare = _ported_session(platform, engine, tmp_path)
    address = support.address_of(engine, server)
    request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} 8080 | grep -q 200"
    probe = ["sh", "-c", request]  # (this busybox's wget crashes on non-local addresses)
    other = platform.start(_plain(tmp_path, probe))
    ended = wait_state(platform, other, {RunState.COMPLETED, RunState.FAILED})
    assert ended.state == RunState.FAILED
    # the same probe from the server's own network does reach it: the test can tell
    neighbour: Any = engine.containers.run(
        BUSYBOX, probe, network=spare.network, detach=True, labels={LABEL_BROKER: broker_name}
    )
    assert neighbour.wait(timeout=30)["StatusCode"] == 0


def test_without_the_holder_image_ports_learned_make_plain_spares_only(
    make_platform: Callable[..., DockerPlatform], engine: docker.DockerClient, tmp_path: Path
) -> None:
    platform = make_platform(network_spares=1, port_spares=1)
    for _ in range(2):  # learned, and a spare publishing them made
        platform.release(platform.start(_web(tmp_path)))
    _spare_for(platform, WEB)
    platform.networks.holder_image = "execbroker/no-such-holder:local"  # as if removed
    with platform.networks._lock:  # the ready spares go (taken by sessions, say)
        taken, platform.networks._ready = platform.networks._ready, []
    for spare in taken:
        docker_networks.discard(platform.engine, spare)
    platform.networks.refill()
    _settled(platform)  # (before: it made plain spares for the ports, on and on)
    with platform.networks._lock:
        ready = list(platform.networks._ready)
    assert [(spare.ports, spare.holder) for spare in ready] == [((), None)]
