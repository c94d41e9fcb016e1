"""The OpenAPI document describes the bodies we parse ourselves (JSON or YAML)."""

from __future__ import annotations

import httpx

from tests.brokers import running_broker


def test_openapi_documents_requests_and_updates(tmp_path):
    with running_broker(tmp_path) as broker:
        document = httpx.get(f"{broker.url}/openapi.json").json()
        assert httpx.get(f"{broker.url}/docs").status_code == 200
    paths = document["paths"]
    for path in ("/requests", "/offersets", "/direct", "/sessions/{uuid}"):
        body = paths[path]["post"]["requestBody"]["content"]
        assert set(body) == {"application/json", "application/yaml", "application/xml"}
    schemas = document["components"]["schemas"]
    assert "ExecutionRequest" in schemas and "UpdateRequest" in schemas
    assert {"executable", "compute", "schedule", "costs"} <= set(
        schemas["ExecutionRequest"]["properties"]
    )
