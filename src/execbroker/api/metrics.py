"""``GET /metrics`` for Prometheus, and the timing of every HTTP request it reports."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from execbroker.metrics import CONTENT_TYPE
from execbroker.service import BrokerService


def _state(service: BrokerService) -> dict[str, Any]:
    usage = service.usage()

    def amounts(resources: Any, sessions: int) -> dict[str, int]:
        return {
            "cores": resources.cores,
            "memory_gib": resources.memory_gib,
            "storage_gib": resources.storage_gib,
            "sessions": sessions,
        }

    return {
        "phases": service.phase_counts(),
        "used": amounts(usage.booked, usage.booked_sessions),
        "held": amounts(usage.held, usage.held_offersets),
        "limit": amounts(usage.limit, usage.max_sessions),
    }


def install(app: FastAPI) -> None:
    service: BrokerService = app.state.service
    metrics = service.metrics
    metrics.add_gauges(lambda: _state(service))

    @app.middleware("http")
    async def _time(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The route's template (/sessions/{uuid}), never the path: ids would be unbounded labels.
        path = getattr(route, "path", None) or "unmatched"
        if path != "/ui/events":  # a stream lasts as long as its page: not a latency
            metrics.request_latency.labels(request.method, path, str(response.status_code)).observe(
                time.perf_counter() - began
            )
        return response

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        body = await run_in_threadpool(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE)
