"""From a wire request to the planner's Demand, and what a broker says NO to up front.

Pure functions: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from execbroker import fetch
from execbroker.config import DefaultsConfig, RangeDefault
from execbroker.errors import InvalidRequest
from execbroker.model.common import MinMaxInt
from execbroker.model.data import DataPlan, plan_data
from execbroker.model.requests import ExecutionRequest
from execbroker.planner import Demand, Quota, Range


def _int_range(
    given: MinMaxInt | None, default: RangeDefault, field: str, *, least: int
) -> Range[int]:
    low = given.min if given is not None else None
    high = given.max if given is not None else None
    if low is None:
        low = default.min if high is None else min(default.min, high)
    if high is None:
        high = max(low, default.max)
    if high < least:
        raise InvalidRequest(f"{field}.max: must be at least {least}", field=f"{field}.max")
    return Range(max(low, least), high)


def _storage_range(request: ExecutionRequest, default: RangeDefault) -> Range[int]:
    if not request.storage:
        return Range(default.min, default.max)
    low = high = 0
    for index, item in enumerate(request.storage):
        size = _int_range(item.size, default, f"storage[{index}].size", least=0)
        low, high = low + size.min, high + size.max
    return Range(low, high)


def _duration_range(
    request: ExecutionRequest, default: timedelta, quota: Quota, preparing: timedelta
) -> Range[timedelta]:
    requested = request.schedule.requested if request.schedule else None
    low, high = requested.duration_bounds() if requested else (None, None)
    fallback = min(default, quota.max_duration)
    if low is None:
        low = fallback if high is None else min(fallback, high)
    if high is None:
        high = max(low, fallback)
    # The grant covers staging too: the task still gets the time it asked for once its
    # data is in place (the grant's end is when the task is stopped).
    return Range(low + preparing, high + preparing)


def _start_range(request: ExecutionRequest, now: datetime, quota: Quota) -> Range[datetime]:
    requested = request.schedule.requested if request.schedule else None
    window = requested.start_window() if requested else None
    if window is None:
        return Range(now, now + quota.horizon)
    return Range(*window)


def demand_for(
    request: ExecutionRequest, *, defaults: DefaultsConfig, quota: Quota, now: datetime
) -> Demand:
    """The ranges the planner negotiates over, with the broker's defaults for what is left open.

    Raises InvalidRequest, naming the field, for ranges no broker could satisfy.
    """
    compute = request.compute
    return Demand(
        cores=_int_range(
            compute.cores if compute else None, defaults.cores, "compute.cores", least=1
        ),
        memory_gib=_int_range(
            compute.memory if compute else None, defaults.memory, "compute.memory", least=1
        ),
        storage_gib=_storage_range(request, defaults.storage),
        duration=_duration_range(request, defaults.duration, quota, data_plan(request).preparing),
        start=_start_range(request, now, quota),
    )


def max_cost(request: ExecutionRequest, cost_type: str | None) -> float | None:
    """The least of the client's maximum costs that apply to this broker's kind of cost."""
    limits = [
        cost.max
        for cost in request.costs
        if cost.max is not None and (cost.type is None or cost.type == cost_type)
    ]
    return min(limits) if limits else None


def data_plan(request: ExecutionRequest) -> DataPlan:
    """The request's data resources as files to stage and where to mount them."""
    volumes = request.compute.volumes if request.compute is not None else []
    return plan_data([item.model_dump(mode="json") for item in request.data], volumes)


def unsupported(
    request: ExecutionRequest,
    *,
    stages_data: bool = True,
    fetch_policy: fetch.FetchPolicy | None = None,
) -> list[str]:
    """Parts of a request this broker cannot honour, so must not pretend to (reasons for NO).
    ``stages_data``: whether the platform chosen can stage and mount data resources, under
    ``fetch_policy`` (its ``fetch:`` config; None: public addresses only), as far as can be
    told without DNS; staging checks every address again."""
    plan = data_plan(request)
    reasons = list(plan.reasons)
    if plan.mounts and not stages_data:
        reasons.append("data: the platform that runs this executable cannot mount data resources")
    policy = fetch_policy or fetch.FetchPolicy()
    for mount in plan.mounts:
        refused = fetch.location_reason(mount.location, policy)
        if refused is not None:
            reasons.append(f"data[{mount.index}]: {refused}")
    reasons += [
        f"metrics[{index}]: this broker measures no metric of type {item.type or item.kind}"
        for index, item in enumerate(request.metrics)
        if item.min is not None or item.max is not None
    ]
    return reasons
