"""The scratch PostgreSQL databases of tests and benchmarks: dropped afterwards even when a
connection into them was left open (a broker killed mid-run leaves its own)."""

from __future__ import annotations

import os

import psycopg
import pytest
from sqlalchemy.engine import make_url

from execbroker.launcher import fresh_postgres_database

pytestmark = pytest.mark.postgres


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_a_database_left_with_open_connections_is_dropped() -> None:
    base = os.environ.get("EXECBROKER_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("EXECBROKER_TEST_POSTGRES_URL is not set: run scripts/services.sh up postgres")
    with fresh_postgres_database(base, prefix="dropped") as url:
        name = make_url(url).database
        left = [psycopg.connect(_plain(url)) for _ in range(2)]
        left[0].execute("SELECT 1")  # one idle in a transaction, one idle
    with psycopg.connect(_plain(base), autocommit=True) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchall()
    assert found == []
    for connection in left:
        with pytest.raises(psycopg.OperationalError):
            connection.execute("SELECT 1")
