"""From requests to demands: defaults, sums and refusals, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execbroker.config import DefaultsConfig
from execbroker.errors import InvalidRequest
from execbroker.model.requests import ExecutionRequest
from execbroker.negotiation import demand_for, max_cost, unsupported
from execbroker.planner import Quota, Resources

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
QUOTA = Quota(Resources(4, 8, 20), max_sessions=4, max_duration=timedelta(hours=2))


def _request(**fields) -> ExecutionRequest:
    return ExecutionRequest.model_validate(
        {"executable": {"kind": "batch-script", "script": "true"}, **fields}
    )


def test_open_ranges_take_the_defaults_and_the_whole_horizon():
    demand = demand_for(_request(), defaults=DefaultsConfig(), quota=QUOTA, now=NOW)
    assert (demand.cores.min, demand.cores.max) == (1, 1)
    assert (demand.memory_gib.min, demand.memory_gib.max) == (1, 1)
    assert (demand.storage_gib.min, demand.storage_gib.max) == (0, 0)
    assert demand.duration.min == demand.duration.max == timedelta(hours=1)
    assert (demand.start.min, demand.start.max) == (NOW, NOW + QUOTA.horizon)


def test_half_open_ranges():
    request = _request(
        compute={"cores": {"min": 2}, "memory": {"max": 4}},
        schedule={"requested": {"duration": {"max": "PT30M"}}},
    )
    demand = demand_for(request, defaults=DefaultsConfig(), quota=QUOTA, now=NOW)
    assert (demand.cores.min, demand.cores.max) == (2, 2)
    assert (demand.memory_gib.min, demand.memory_gib.max) == (1, 4)
    assert demand.duration.min == demand.duration.max == timedelta(minutes=30)


def test_storage_adds_up():
    request = _request(storage=[{"size": {"min": 1, "max": 2}}, {"size": {"min": 3, "max": 5}}])
    demand = demand_for(request, defaults=DefaultsConfig(), quota=QUOTA, now=NOW)
    assert (demand.storage_gib.min, demand.storage_gib.max) == (4, 7)


def test_zero_cores_is_refused_naming_the_field():
    with pytest.raises(InvalidRequest) as error:
        demand_for(
            _request(compute={"cores": {"max": 0}}), defaults=DefaultsConfig(), quota=QUOTA, now=NOW
        )
    assert error.value.field == "compute.cores.max"


def test_max_cost_takes_the_tightest_limit_of_our_type():
    request = _request(costs=[{"type": "urn:a", "max": 5}, {"max": 3}, {"type": "urn:b", "max": 1}])
    assert max_cost(request, "urn:a") == 3
    assert max_cost(_request(), "urn:a") is None


def test_what_a_broker_cannot_honour_is_named():
    request = _request(
        data=[{"kind": "S3-data-resource", "bucket": "b"}],  # http(s) ones are staged
        metrics=[{"kind": "simple-minmax-float-metric", "type": "urn:flops", "min": 1}],
    )
    reasons = unsupported(request)
    assert any(reason.startswith("data[0]") for reason in reasons)
    assert any("urn:flops" in reason for reason in reasons)
