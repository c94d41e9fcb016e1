"""Which data resources and volumes a broker stages, and the NO it gives for the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

import pytest

from execbroker import kinds
from execbroker.config import DefaultsConfig
from execbroker.model.data import STAGING_ALLOWANCE, plan_data
from execbroker.model.requests import ExecutionRequest
from execbroker.negotiation import demand_for, unsupported
from execbroker.planner import Quota, Resources

DATA = {"kind": "simple-data-resource", "meta": {"name": "d"}, "location": "https://x.org/f"}


def _volume(**fields: str) -> dict[str, str]:
    return {"kind": "simple-volume-mount", "resource": "d", "path": "/input", **fields}


def test_a_mounted_http_resource_is_planned_at_its_path_read_only_by_default():
    plan = plan_data([DATA], [_volume()])
    assert plan.reasons == ()
    (mount,) = plan.mounts
    assert (mount.location, mount.path, mount.readonly) == (
        DATA["location"],
        PurePosixPath("/input"),
        True,
    )
    assert mount.file == PurePosixPath("/input/content")
    assert plan.preparing == STAGING_ALLOWANCE


def test_both_spellings_of_the_kinds_and_a_name_or_uuid_find_the_resource():
    old = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/"
    data = {**DATA, "kind": old + "data/simple-data-resource-1.0", "meta": {"uuid": "u-1"}}
    volume = {
        **_volume(resource="u-1", mode="READWRITE"),
        "kind": old + "volume/simple-volume-mount-1.0",
    }
    (mount,) = plan_data([data], [volume]).mounts
    assert mount.readonly is False


def test_data_no_volume_names_is_staged_under_data_not_ignored():
    (mount,) = plan_data([DATA], []).mounts
    assert mount.path == PurePosixPath("/data/0")


@pytest.mark.parametrize(
    ("kind", "service"),
    [
        (kinds.S3_DATA, "S3"),
        (kinds.IVOA_DATA, "IVOA"),
        (kinds.SKAO_DATA, "SKAO"),
        (kinds.RUCIO_DATA, "Rucio"),
    ],
)
def test_kinds_with_no_reachable_service_are_a_no_naming_the_service(kind, service):
    plan = plan_data([{"kind": kind, "meta": {"name": "d"}}], [])
    assert plan.mounts == ()
    (reason,) = plan.reasons
    assert reason.startswith("data[0]: cannot stage") and service in reason


@pytest.mark.parametrize(
    ("data", "volume", "expected"),
    [
        ({**DATA, "location": None}, _volume(), "data[0]: location is required"),
        ({**DATA, "location": "ftp://x.org/f"}, _volume(), "http and https locations only"),
        ({**DATA, "location": "file:///etc/shadow"}, _volume(), "http and https locations only"),
        ({**DATA, "checksum": "sha256:abc"}, _volume(), "data[0]: checksum"),
        (DATA, _volume(resource="other"), "compute.volumes[0].resource: 'other' names no"),
        (DATA, _volume(path="input"), "must be an absolute directory"),
        (DATA, _volume(path="/"), "must be an absolute directory"),
        (DATA, _volume(path="/a/../etc"), "plain name"),
        (DATA, _volume(path="/usr/share/x"), "inside /usr"),
        (DATA, _volume(path="/proc/1"), "inside /proc"),
        (DATA, _volume(path="/task/x"), "inside /task"),
        (DATA, _volume(mode="SOMETIMES"), "compute.volumes[0].mode"),
        (DATA, {"kind": "x-volume", "path": "/input"}, "simple-volume-mount only"),
    ],
)
def test_what_cannot_be_staged_or_mounted_is_a_reason_naming_the_field(data, volume, expected):
    plan = plan_data([data], [volume])
    assert plan.mounts == ()
    assert any(expected in reason for reason in plan.reasons), plan.reasons


def test_a_request_with_data_gets_reasons_only_from_a_platform_that_cannot_mount():
    request = ExecutionRequest.model_validate(
        {
            "executable": {"kind": "batch-script", "script": "true"},
            "compute": {"kind": "simple-compute-resource", "volumes": [_volume()]},
            "data": [DATA],
        }
    )
    assert unsupported(request) == []
    assert unsupported(request, stages_data=False) == [
        "data: the platform that runs this executable cannot mount data resources"
    ]


def test_the_grant_books_staging_time_on_top_of_the_requested_duration():
    request = ExecutionRequest.model_validate(
        {
            "executable": {"kind": "batch-script", "script": "true"},
            "data": [DATA, {**DATA, "meta": {"name": "e"}}],
            "schedule": {"requested": {"duration": "PT10M"}},
        }
    )
    quota = Quota(
        Resources(4, 8, 20),
        max_sessions=8,
        max_duration=timedelta(hours=1),
        horizon=timedelta(days=1),
    )
    demand = demand_for(request, defaults=DefaultsConfig(), quota=quota, now=datetime.now(UTC))
    assert (
        demand.duration.min == demand.duration.max == timedelta(minutes=10) + 2 * STAGING_ALLOWANCE
    )
