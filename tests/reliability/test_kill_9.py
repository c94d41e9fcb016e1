"""A broker killed with SIGKILL at random moments, again and again, while sessions are
offered, accepted, started and finished, and started again after each kill: no session is
started twice, none is lost, none is stuck."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.brokers import BASE_CONFIG, BrokerProcess, batch_request
from tests.reliability.support import NOTHING_WRONG, counting_script, kill_while_accepting, report

ROOMY = {"cores": 64, "memory": 64, "storage": 20, "max_sessions": 64, "max_duration": "PT1H"}


def _request() -> dict[str, object]:
    return batch_request(counting_script("sleep 0.3"), duration="PT5M")


def _kill_and_restart(tmp_path: Path, kills: int) -> None:
    config = {**BASE_CONFIG, "quota": ROOMY, "monitor": {"interval": "PT0.1S", "lease": "PT1S"}}
    broker = BrokerProcess(config, tmp_path).start()
    try:
        sessions = kill_while_accepting(broker, _request, kills)
    finally:
        broker.stop()
    found = report(sessions, tmp_path / "state", [broker.log_path])
    started = [s for s in sessions.values() if s["phase"] == "COMPLETED"]
    assert len(started) >= kills, "too few sessions got past their offer to test anything"
    assert found == NOTHING_WRONG


def test_twenty_kills_start_no_session_twice_and_lose_none(tmp_path: Path) -> None:
    _kill_and_restart(tmp_path, 20)


@pytest.mark.slow
def test_sixty_kills_start_no_session_twice_and_lose_none(tmp_path: Path) -> None:
    _kill_and_restart(tmp_path, 60)
