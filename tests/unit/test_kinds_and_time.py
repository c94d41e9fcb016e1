"""Pure helpers: kind spellings and ISO-8601 parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execbroker import kinds
from execbroker.timeutil import (
    TimeFormatError,
    format_duration,
    format_instant,
    parse_duration,
    parse_interval,
)


@pytest.mark.parametrize(
    "spelling",
    [
        "docker-container",
        "DOCKER-CONTAINER",
        kinds.DOCKER_CONTAINER,
        "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
        "docker-container-1.0",
    ],
)
def test_every_spelling_of_a_kind_is_the_current_uri(spelling):
    assert kinds.canonical(spelling) == kinds.DOCKER_CONTAINER
    assert kinds.alias(spelling) == "docker-container"


def test_unknown_kinds_are_kept_as_given():
    assert kinds.canonical("silly-example") == "silly-example"
    assert not kinds.is_known("silly-example")


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2023-08-09T12:00:00Z/2023-08-09T13:00:00Z", "2023-08-09T12:00:00", "2023-08-09T13:00:00"),
        ("2023-08-09/PT2H", "2023-08-09T00:00:00", "2023-08-09T02:00:00"),
        ("PT2H/2023-08-09", "2023-08-08T22:00:00", "2023-08-09T00:00:00"),
        ("2023-08-09T12:00:00+02:00/PT1H", "2023-08-09T10:00:00", "2023-08-09T11:00:00"),
        ("2023-08-09T12:00:00Z", "2023-08-09T12:00:00", "2023-08-09T12:00:00"),
    ],
)
def test_intervals(text, start, end):
    assert parse_interval(text) == (
        datetime.fromisoformat(start).replace(tzinfo=UTC),
        datetime.fromisoformat(end).replace(tzinfo=UTC),
    )


@pytest.mark.parametrize("text", ["tomorrow", "2023-08-09/", "2023-08-10/2023-08-09", "a/b/c"])
def test_bad_intervals(text):
    with pytest.raises(TimeFormatError):
        parse_interval(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("PT90S", timedelta(seconds=90)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT0.5S", timedelta(seconds=0.5)),
    ],
)
def test_durations(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["P1M", "P1Y", "PT0S", "-PT1H", "1 hour", ""])
def test_bad_durations(text):
    with pytest.raises(TimeFormatError):
        parse_duration(text)


def test_formats_round_trip():
    instant = datetime(2026, 11, 23, 10, 0, 5, 123, tzinfo=UTC)
    assert format_instant(instant) == "2026-11-23T10:00:05Z"
    assert parse_duration(format_duration(timedelta(hours=1, minutes=30))) == timedelta(minutes=90)


@pytest.mark.parametrize("spelling", list(kinds.Spelling))
def test_respelling_in_place_gives_what_the_copy_does(spelling):
    """An answer's dump is respelt where it lies: the same kinds rewritten, at any depth (in
    lists of lists too), the rest untouched, however the kinds were given."""

    def document():
        return {
            "kind": kinds.OFFERSET_RESPONSE,
            "offers": [
                {
                    "kind": kinds.SCHEDULED_SESSION,
                    "executable": {"kind": "docker-container", "environment": {"kind": "x"}},
                    "compute": {"kind": kinds.SIMPLE_COMPUTE, "volumes": [[{"kind": "z"}]]},
                    "costs": [],
                    "phase": "OFFERED",
                }
            ],
            "count": 2,
            "kinds": ["docker-container"],  # not a "kind": a value like any other
        }

    copied = kinds.respell(document(), spelling)
    assert kinds.respell_in_place(document(), spelling) == copied
    assert copied["offers"][0]["executable"]["kind"] == kinds.spell(
        kinds.DOCKER_CONTAINER, spelling
    )
    assert copied["kinds"] == ["docker-container"]
