"""Three real brokers with different quotas, started once (in parallel) for the client tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import BASE_CONFIG, BrokerProcess, free_port

QUOTAS: dict[str, dict[str, Any]] = {
    "small": {"cores": 1, "memory": 2, "storage": 0, "max_sessions": 4, "max_duration": "PT1H"},
    "medium": {"cores": 2, "memory": 4, "storage": 0, "max_sessions": 4, "max_duration": "PT1H"},
    "large": {"cores": 4, "memory": 8, "storage": 0, "max_sessions": 4, "max_duration": "PT1H"},
}


def start_all(configs: dict[str, dict[str, Any]], root: Path) -> dict[str, BrokerProcess]:
    """Start several brokers side by side (each takes a second or two to come up)."""
    brokers = {
        name: BrokerProcess({**BASE_CONFIG, "name": name, **changes}, root / name)
        for name, changes in configs.items()
    }
    with ThreadPoolExecutor(len(brokers)) as pool:
        list(pool.map(BrokerProcess.start, brokers.values()))
    return brokers


# A broker whose offers expire after a second: lets a test lose an offer between offer and accept.
FAST_EXPIRY = {
    "quota": {"cores": 8, "memory": 16, "max_sessions": 4, "max_duration": "PT1H"},
    "offers": {"max": 4, "ttl": "PT1S"},
}


@pytest.fixture(scope="session")
def client_brokers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, BrokerProcess]]:
    root = tmp_path_factory.mktemp("client-brokers")
    configs = {name: {"quota": quota} for name, quota in QUOTAS.items()}
    brokers = start_all({**configs, "fast": FAST_EXPIRY}, root)
    try:
        yield brokers
    finally:
        for broker in brokers.values():
            broker.stop()


@pytest.fixture
def three_brokers(client_brokers: dict[str, BrokerProcess]) -> dict[str, BrokerProcess]:
    """small (1 core, 2 GiB), medium (2 cores, 4 GiB), large (4 cores, 8 GiB)."""
    return {name: client_brokers[name] for name in QUOTAS}


@pytest.fixture
def fast_expiry(client_brokers: dict[str, BrokerProcess]) -> BrokerProcess:
    """8 cores, 16 GiB, offers that expire after one second."""
    return client_brokers["fast"]


@pytest.fixture
def dead_url() -> str:
    """A port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that takes connections (the kernel's backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
