"""Shared fixtures. Integration tests mark the real service they need (docker, slurm,
postgres); ``scripts/services.sh up`` starts them, and ``/var/lib/execbroker/services.env``
says how to reach them."""

from __future__ import annotations

import os
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
    from execbroker.launcher import fresh_postgres_database

    base = os.environ.get("EXECBROKER_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("EXECBROKER_TEST_POSTGRES_URL is not set: run scripts/services.sh up postgres")
    with fresh_postgres_database(base) as url:
        yield url
