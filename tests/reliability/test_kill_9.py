"""A broker killed with SIGKILL at random moments, again and again, while sessions are
offered, accepted, started and finished, and started again after each kill: no session is
started twice, none is lost, none is stuck."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.brokers import BASE_CONFIG, BrokerProcess, batch_request
from tests.reliability.support import ACCEPT, counting_script, report, wait_until_settled

ROOMY = {"cores": 64, "memory": 64, "storage": 20, "max_sessions": 64, "max_duration": "PT1H"}


def _keep_accepting(broker: BrokerProcess, stop: threading.Event) -> None:
    """Offer and accept sessions one after another until ``stop``, through kills and restarts
    (a request to a dead broker is simply tried again)."""
    headers = {"Authorization": "Bearer demo-alice"}
    with httpx.Client(base_url=broker.url, headers=headers, timeout=10) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.TransportError, httpx.HTTPStatusError):
                request = batch_request(counting_script("sleep 0.3"), duration="PT5M")
                offers = client.post("/requests", json=request).raise_for_status().json()
                client.post(f"/sessions/{offers['offers'][0]['meta']['uuid']}", json=ACCEPT)
            time.sleep(0.02)


def _kill_and_restart(tmp_path: Path, kills: int) -> None:
    config = {**BASE_CONFIG, "quota": ROOMY, "monitor": {"interval": "PT0.1S", "lease": "PT1S"}}
    broker = BrokerProcess(config, tmp_path).start()
    stop = threading.Event()
    driver = threading.Thread(target=_keep_accepting, args=(broker, stop), daemon=True)
    driver.start()
    rng = random.Random()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.5))
            broker.kill()
            broker.start()
        stop.set()
        driver.join(timeout=30)
        sessions = wait_until_settled(broker.url, timeout=120)
    finally:
        stop.set()
        broker.stop()
    found = report(sessions, tmp_path / "state", [broker.log_path])
    started = [s for s in sessions.values() if s["phase"] == "COMPLETED"]
    assert len(started) >= kills, "too few sessions got past their offer to test anything"
    assert found == {"twice": [], "lost": [], "unrun": []}


def test_twenty_kills_start_no_session_twice_and_lose_none(tmp_path: Path) -> None:
    _kill_and_restart(tmp_path, 20)


@pytest.mark.slow
def test_sixty_kills_start_no_session_twice_and_lose_none(tmp_path: Path) -> None:
    _kill_and_restart(tmp_path, 60)
