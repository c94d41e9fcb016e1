"""``GET /metrics`` for Prometheus, the timing of every HTTP request it reports, and the access
log: one line a request, naming the user and the session it is about."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from execbroker import logs
from execbroker.api.dependencies import USER_KEY
from execbroker.metrics import CONTENT_TYPE, Metrics
from execbroker.service import BrokerService
from execbroker.web.auth import COOKIE

access = logging.getLogger("execbroker.access")


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

    app.add_middleware(_Timing, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        body = await run_in_threadpool(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE)


class _Timing:
    """Times every HTTP request to the start of its answer and writes its access line.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` would cost each request a
    task group and a stream of its own, a good part of what a small request costs.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        started = False

        async def timed(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self._answered(scope, message["status"], time.perf_counter() - began)
            await send(message)

        try:
            await self.app(scope, receive, timed)
        except Exception:
            # An error no handler answered: Starlette's outermost middleware answers it 500
            # (and logs its traceback) after this one; it is timed and logged here all the same.
            if not started:
                self._answered(scope, 500, time.perf_counter() - began)
            raise

    def _answered(self, scope: Scope, status: int, seconds: float) -> None:
        request = Request(scope)
        # The route's template (/sessions/{uuid}), never the path: ids would be unbounded labels.
        path = getattr(scope.get("route"), "path", None) or "unmatched"
        if path != "/ui/events":  # a stream lasts as long as its page: not a latency
            labels = (request.method, path, str(status))
            self.metrics.request_latency.labels(*labels).observe(seconds)
        _access(request, status, seconds)


def _who(request: Request) -> str | None:
    """The user a request speaks for (bearer token or the page's cookie), for the log."""
    known = request.scope.get(USER_KEY)  # its token already checked, by the route
    if known is not None:
        return str(known.name)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        user = request.app.state.authenticate.user_for(token.strip())
        return user.name if user else None
    sessions = getattr(request.app.state, "ui_sessions", None)
    login = sessions.check(request.cookies.get(COOKIE)) if sessions else None
    return login.user.name if login else None


def _access(request: Request, status: int, seconds: float) -> None:
    """The access log line (instead of uvicorn's), naming the session and user it is about."""
    params = request.scope.get("path_params") or {}
    uuid = params.get("uuid")
    path = request.scope["path"]  # not request.url: it parses the whole URL, each request
    is_offerset = path.startswith("/offersets/")
    with logs.bind(
        user=_who(request),
        session=str(uuid) if uuid and not is_offerset else None,
        offerset=str(uuid) if uuid and is_offerset else None,
    ):
        access.info("%s %s %d %.1f ms", request.method, path, status, seconds * 1000)
