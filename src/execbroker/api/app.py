"""The broker's web application: one FastAPI app per broker, with its monitor running inside."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from execbroker import __version__, kinds
from execbroker.api import broker, errors, metrics, tes, uws
from execbroker.api.auth import TokenAuthenticator
from execbroker.api.content import respond
from execbroker.api.errors import ErrorBody
from execbroker.config import BrokerConfig
from execbroker.model.requests import ExecutionRequest
from execbroker.model.updates import UpdateRequest
from execbroker.monitor import Monitor
from execbroker.platforms import create_platforms
from execbroker.service import BrokerService
from execbroker.store.engine import Database
from execbroker.timeutil import format_duration
from execbroker.web import broker_ui

log = logging.getLogger(__name__)


def create_app(config: BrokerConfig, *, run_monitor: bool = True) -> FastAPI:
    plain = [user.name for user in config.users if user.token is not None]
    if plain:
        log.warning(
            "broker %s: users %s have plain tokens in the config; store token_sha256 instead "
            "(execbroker hash-token prints it)",
            config.name,
            ", ".join(plain),
        )
    for line in config.tes.warnings():
        log.warning("broker %s: %s", config.name, line)
    database = Database.open(config.database_url)
    service = BrokerService(config=config, database=database, platforms=create_platforms(config))
    monitor = Monitor(service=service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(monitor.run()) if run_monitor else None
        yield
        if task is not None:
            await monitor.stop()
            await task
        database.close()

    app = FastAPI(
        title=f"execbroker: {config.name}",
        description=config.description or "An IVOA ExecutionBroker",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.service = service
    app.state.monitor = monitor
    app.state.authenticate = TokenAuthenticator(config)
    errors.install(app)
    app.include_router(broker.router)
    app.include_router(uws.router)  # IVOA UWS 1.1 at /uws/jobs
    app.include_router(tes.router)  # GA4GH TES 1.1 at /ga4gh/tes/v1
    metrics.install(app)  # GET /metrics
    broker_ui.install(app)  # the page: /ui

    @app.get("/health", summary="Is the broker up (no token needed)")
    def health() -> dict[str, str]:
        return {"status": "ok", "broker": config.name}

    @app.get(
        "/info", summary="What this broker offers: kinds, quota, sizes, prices (no token needed)"
    )
    def info(request: Request) -> Response:
        return respond(request, describe(service))

    _document_bodies(app)
    return app


def describe(service: BrokerService) -> dict[str, Any]:
    config = service.config
    quota = config.quota
    return {
        "name": config.name,
        "description": config.description,
        "platforms": list(service.platforms),
        "kinds": [{"kind": kind, "alias": kinds.alias(kind)} for kind in service.supported_kinds()],
        "quota": {
            "cores": quota.cores,
            "memory": quota.memory,
            "storage": quota.storage,
            "max_sessions": quota.max_sessions,
            "max_duration": format_duration(quota.max_duration),
        },
        "units": [unit.model_dump() for unit in config.units],
        "pricing": config.pricing.model_dump() if config.pricing else None,
        "free": _free(service),
    }


def _free(service: BrokerService) -> dict[str, int]:
    """What is neither booked nor held by offers now (totals: no one's sessions)."""
    usage = service.usage()
    free = usage.free
    return {
        "cores": free.cores,
        "memory": free.memory_gib,
        "storage": free.storage_gib,
        "sessions": usage.free_sessions,
    }


def _document_bodies(app: FastAPI) -> None:
    """Add the models of bodies we parse ourselves (JSON or YAML) to the OpenAPI document."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = default()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ExecutionRequest, UpdateRequest, ErrorBody):
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found
        _declare_bearer(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# Routes anyone may call; every other one needs the bearer token.
OPEN_PATHS = ("/health", "/info")


def _declare_bearer(schema: dict[str, Any]) -> None:
    """Declare the bearer token, and that every route but ``OPEN_PATHS`` needs it."""
    schemes = schema["components"].setdefault("securitySchemes", {})
    schemes["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "a token from the broker's config (Basic user:token is accepted too)",
    }
    for path, operations in schema.get("paths", {}).items():
        if path in OPEN_PATHS or path.startswith(("/docs", "/openapi", "/redoc")):
            continue
        for operation in operations.values():
            operation.setdefault("security", [{"bearer": []}])
