"""The Docker fixtures of the platform tests (the engine, a broker name cleaned up after
itself), for the reliability tests that run a docker broker; the database replicas (or a
broker's workers) share; and two replicas in this process whose monitors the test drives."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from execbroker.api.app import create_app
from execbroker.config import BrokerConfig
from execbroker.launcher import LOCAL_CONFIG
from tests.platforms.conftest import broker_name, engine

__all__ = ["broker_name", "database", "engine", "replicas"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database several broker processes share: an SQLite file, or a fresh PostgreSQL
    database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def replicas(database: str) -> Iterator[list[FastAPI]]:
    """Two replicas (apps whose monitors are driven by hand) on one database."""
    config = BrokerConfig.model_validate(
        {**LOCAL_CONFIG, "database": database, "monitor": {"interval": "PT1S", "lease": "PT5S"}}
    )
    apps = [create_app(config, run_monitor=False) for _ in range(2)]
    try:
        yield apps
    finally:
        for app in apps:
            app.state.service.database.close()
