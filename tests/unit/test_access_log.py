"""The access log and the latency metric see every answer, a 500 from an unexpected error too
(Starlette answers it outside every middleware of ours)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from execbroker.api.metrics import _Timing
from execbroker.metrics import Metrics


def _app(metrics: Metrics) -> FastAPI:
    app = FastAPI()
    app.state.authenticate = SimpleNamespace(user_for=lambda token: None)
    app.add_middleware(_Timing, metrics=metrics)

    @app.get("/fine")
    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/broken/{uuid}")
    async def broken(uuid: str) -> None:
        raise RuntimeError("a bug")

    return app


def _latency_count(metrics: Metrics, path: str, status: str) -> float:
    value = metrics.registry.get_sample_value(
        "execbroker_http_request_seconds_count", {"method": "GET", "route": path, "status": status}
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("path", "route", "status"), [("/fine", "/fine", 200), ("/broken/x", "/broken/{uuid}", 500)]
)
def test_every_answer_is_logged_and_timed(path, route, status, caplog) -> None:
    metrics = Metrics()
    client = TestClient(_app(metrics), raise_server_exceptions=False)
    with client, caplog.at_level(logging.INFO, logger="execbroker.access"):
        assert client.get(path).status_code == status
    lines = [r.getMessage() for r in caplog.records if r.name == "execbroker.access"]
    assert len(lines) == 1 and lines[0].startswith(f"GET {path} {status} "), lines
    assert _latency_count(metrics, route, str(status)) == 1
