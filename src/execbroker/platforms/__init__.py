"""Execution backends, found by name: ``type: local`` in a broker's config is
``execbroker.platforms.local``, whose ``create(options, broker=...)`` builds it."""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any

from execbroker.platforms.base import Platform

if TYPE_CHECKING:
    from execbroker.config import BrokerConfig

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class UnknownPlatform(ValueError):
    pass


def create_platform(options: dict[str, Any], *, broker: BrokerConfig) -> Platform:
    kind = options.get("type", "")
    if not _NAME.match(kind):
        raise UnknownPlatform(f"platform type {kind!r} is not a backend name")
    try:
        module = importlib.import_module(f"execbroker.platforms.{kind}")
    except ModuleNotFoundError as error:
        if error.name != f"execbroker.platforms.{kind}":
            raise
        raise UnknownPlatform(f"no platform backend called {kind!r}") from error
    own = {key: value for key, value in options.items() if key != "type"}
    return module.create(own, broker=broker)


def create_platforms(broker: BrokerConfig) -> list[Platform]:
    return [create_platform(item.model_dump(), broker=broker) for item in broker.platforms]
