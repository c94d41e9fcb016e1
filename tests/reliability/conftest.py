"""The Docker fixtures of the platform tests (the engine, a broker name cleaned up after
itself), for the reliability tests that run a docker broker; and the database replicas (or a
broker's workers) share."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.platforms.conftest import broker_name, engine

__all__ = ["broker_name", "database", "engine"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database several broker processes share: an SQLite file, or a fresh PostgreSQL
    database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        yield request.getfixturevalue("postgres_url")
