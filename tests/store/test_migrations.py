"""The Alembic migrations build exactly the tables the code maps, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from execbroker.store.engine import make_engine, migrate
from execbroker.store.tables import Base


def _differences(url: str) -> list[object]:
    engine = make_engine(url)
    migrate(engine)
    migrate(engine)  # a second upgrade is a no-op
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found = compare_metadata(context, Base.metadata)
    engine.dispose()
    return found


def test_sqlite_schema_matches_the_tables(tmp_path):
    assert _differences(f"sqlite:///{tmp_path / 'broker.db'}") == []


@pytest.mark.postgres
def test_postgres_schema_matches_the_tables(postgres_url):
    assert _differences(postgres_url) == []
