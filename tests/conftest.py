"""Shared fixtures. Integration tests mark the real service they need (docker, slurm,
postgres); ``scripts/services.sh up`` starts them, and ``/var/lib/execbroker/services.env``
says how to reach them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVICES_ENV = Path("/var/lib/execbroker/services.env")


def _load_services_env() -> None:
    if not SERVICES_ENV.exists():
        return
    for line in SERVICES_ENV.read_text().splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#"):
            os.environ.setdefault(name.removeprefix("export ").strip(), value.strip().strip('"'))


_load_services_env()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = os.environ.get("EXECBROKER_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("EXECBROKER_TEST_POSTGRES_URL is not set: run scripts/services.sh up postgres")
    url = make_url(base)
    name = f"execbroker_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
