"""A docker broker killed with SIGKILL at random moments while busybox containers are
offered, accepted, started and finished: no session is started twice, none is lost, none
is stuck.

A container cannot write to its session's work directory (its files are copied, never
mounted), so what ran is counted by the engine itself: every container it created and
started for a session, from its event stream (a finished container is removed, so a
listing at the end would not see it), next to the brokers' own ``started on`` lines.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.brokers import BASE_CONFIG, BrokerProcess
from tests.platforms.support import BUSYBOX
from tests.reliability.support import NOTHING_WRONG, kill_while_accepting, report, starting_now

pytestmark = pytest.mark.docker

KILLS = 5
QUOTA = {"cores": 16, "memory": 16, "storage": 16, "max_sessions": 16, "max_duration": "PT1H"}
LABEL_BROKER = "execbroker.broker"
LABEL_SESSION = "execbroker.session"


def _request() -> dict[str, Any]:
    return {
        "executable": {
            "kind": "docker-container",
            "image": {"locations": [BUSYBOX]},
            "command": ["sleep", "0.5"],
        },
        "compute": {
            "kind": "simple-compute-resource",
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": {"duration": "PT1M", "start": starting_now()}},
    }


class EngineEvents:
    """The engine's ``create`` and ``start`` events for one broker's containers, counted
    by session (read in a thread until ``close``)."""

    def __init__(self, engine: docker.DockerClient, broker: str) -> None:
        filters = {
            "type": "container",
            "event": ["create", "start"],
            "label": f"{LABEL_BROKER}={broker}",
        }
        self._stream = engine.events(decode=True, filters=filters)
        self.counts: dict[str, Counter[str]] = {"create": Counter(), "start": Counter()}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when closed
            for event in self._stream:
                session = event.get("Actor", {}).get("Attributes", {}).get(LABEL_SESSION)
                if session and event.get("Action") in self.counts:
                    self.counts[event["Action"]][session] += 1

    def close(self) -> None:
        self._stream.close()
        self._reader.join(timeout=10)


@pytest.fixture
def events(engine: docker.DockerClient, broker_name: str) -> Iterator[EngineEvents]:
    watching = EngineEvents(engine, broker_name)
    try:
        yield watching
    finally:
        watching.close()


def test_five_kills_start_no_container_twice_and_lose_none(
    tmp_path: Path, broker_name: str, events: EngineEvents
) -> None:
    config = {
        **BASE_CONFIG,
        "name": broker_name,
        "platforms": [{"type": "docker"}],
        "quota": QUOTA,
        "monitor": {"interval": "PT0.1S", "lease": "PT1S"},
    }
    broker = BrokerProcess(config, tmp_path).start()
    try:
        sessions = kill_while_accepting(
            broker, _request, KILLS, pause=(0.5, 3.0), gap=1.0, settle=90
        )
    finally:
        broker.stop()
    created, started = events.counts["create"], events.counts["start"]
    found = report(sessions, tmp_path / "state", [broker.log_path], ran=started)
    completed = [u for u, s in sessions.items() if s["phase"] == "COMPLETED"]
    assert len(completed) >= KILLS, "too few sessions got past their offer to test anything"
    assert found == NOTHING_WRONG
    assert {u: n for u, n in created.items() if n > 1} == {}, "a session's container made twice"
    assert set(started) <= set(sessions), "a container for no session of the broker"
