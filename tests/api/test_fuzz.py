"""Schemathesis throws generated requests, valid and invalid, at every documented operation:
never a 500."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.brokers import running_broker

AUTH = {"Authorization": "Bearer demo-alice"}


def test_no_generated_input_makes_the_broker_fail(tmp_path):
    with running_broker(tmp_path) as broker:
        schema = schemathesis.openapi.from_url(f"{broker.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 8
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode)


def _fuzz(operation, mode) -> None:
    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case):
        response = case.call(headers=AUTH)
        assert response.status_code < 500, (operation.label, case.body, response.text)

    try:
        call()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body): only the positive run applies.
        assert mode == GenerationMode.NEGATIVE
