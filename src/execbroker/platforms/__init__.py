"""Execution backends, found by name: ``type: local`` in a broker's config is
``execbroker.platforms.local``, whose ``create(options, broker=...)`` builds it.

``fetch:`` is an option of every platform, handled here rather than by each backend: what
its ``location:`` fetches may reach besides public addresses (see ``execbroker.fetch``)."""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from execbroker import fetch
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
    own = {key: value for key, value in options.items() if key not in ("type", "fetch")}
    policy = fetch.FetchPolicy.model_validate(options.get("fetch") or {})
    return scoped(module.create(own, broker=broker), policy)


def scoped(platform: Platform, policy: fetch.FetchPolicy) -> Platform:
    """``platform`` whose ``check`` and ``start`` (where locations are judged and fetched)
    run under its own fetch policy. Wrapped on the instance, so its type is unchanged."""
    for method in ("check", "start"):
        setattr(platform, method, _under(getattr(platform, method), policy))
    platform.fetch_policy = policy  # type: ignore[attr-defined]  # judged at offer time too
    return platform


def _under(method: Callable[..., Any], policy: fetch.FetchPolicy) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with fetch.allowing(policy):
            return method(*args, **kwargs)

    return call


def create_platforms(broker: BrokerConfig) -> list[Platform]:
    return [create_platform(item.model_dump(), broker=broker) for item in broker.platforms]
