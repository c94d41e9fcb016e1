"""Shared fixtures. Integration tests mark the real service they need (docker, slurm,
postgres); ``scripts/services.sh up`` starts them, and ``/var/lib/execbroker/services.env``
says how to reach them."""

from __future__ import annotations

import os
from pathlib import Path

SERVICES_ENV = Path("/var/lib/execbroker/services.env")


def _load_services_env() -> None:
    if not SERVICES_ENV.exists():
        return
    for line in SERVICES_ENV.read_text().splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#"):
            os.environ.setdefault(name.removeprefix("export ").strip(), value.strip().strip('"'))


_load_services_env()
