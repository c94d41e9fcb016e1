"""Bounds on input that need no broker: YAML loaders, times, NUL bytes in models."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from execbroker.model import ExecutionRequest
from execbroker.safeyaml import AliasError, DepthError, DocumentLoader, depth_of, load_body
from execbroker.timeutil import (
    MAX_DURATION,
    TimeFormatError,
    parse_duration,
    parse_instant,
    parse_interval,
)


def test_body_yaml_refuses_aliases_and_depth_but_documents_keep_aliases():
    with pytest.raises(AliasError, match=r"aliases \(\*x\)"):
        load_body("a: &x [1]\nb: *x\n")
    with pytest.raises(DepthError, match="deeper than 64"):
        load_body("a: " + "[" * 65 + "]" * 65)
    assert depth_of(load_body("a: " + "[" * 63 + "]" * 63)) == 64
    merged = yaml.load("x: &base {a: 1}\ny: {<<: *base, b: 2}\n", Loader=DocumentLoader)
    assert merged["y"] == {"a": 1, "b": 2}
    with pytest.raises(DepthError):
        yaml.load("a: " + "[" * 100 + "]" * 100, Loader=DocumentLoader)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_duration, "PT99999999999999999999S"),
        (parse_duration, f"P{MAX_DURATION.days + 1}D"),
        (parse_duration, "P" + "9" * 100 + "D"),
        (parse_instant, "9999-12-31T23:59:59Z"),
        (parse_instant, "9999-12-31T23:59:59-05:00"),
        (parse_instant, "0001-01-01T00:00:00Z"),
        (parse_interval, "9999-12-31T23:59:59Z/PT1H"),
        (parse_interval, "PT1H/0001-01-01T00:01:00Z"),
    ],
)
def test_times_out_of_range_are_format_errors_not_overflows(parse, text):
    with pytest.raises(TimeFormatError):
        parse(text)


def test_times_in_range_still_parse():
    assert parse_duration(f"P{MAX_DURATION.days}D") == MAX_DURATION
    start, end = parse_interval("2999-12-30T00:00:00Z/PT1H")
    assert (end - start).total_seconds() == 3600


@pytest.mark.parametrize(
    ("executable", "named"),
    [
        ({"kind": "batch-script", "script": "echo\x00"}, "script"),
        ({"kind": "batch-script", "environment": {"A": "\x00"}}, "environment"),
        ({"kind": "batch-script", "environment": {"A\x00": "x"}}, "environment"),
        ({"kind": "docker-container", "image": {"locations": ["x\x00"]}}, "locations"),
        ({"kind": "docker-container", "command": ["a", "\x00"]}, "command"),
        ({"kind": "batch-script", "name": "n\x00"}, "name"),
    ],
)
def test_models_built_without_a_body_refuse_nul_bytes_too(executable, named):
    with pytest.raises(ValidationError, match=f"{named}: NUL bytes are not allowed"):
        ExecutionRequest.model_validate({"executable": executable})
