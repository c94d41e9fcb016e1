"""Which of the engine's stats say a directory is as ``put_files`` placed it (untouched)."""

from __future__ import annotations

import pytest

from execbroker.platforms import docker_engine

DIRECTORY, SYMLINK = 1 << 31, 1 << 27  # Go's os.FileMode bits
EPOCH = "1970-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("stat", "untouched"),
    [
        ({"mode": DIRECTORY | 0o777, "mtime": EPOCH, "linkTarget": ""}, True),
        # the same instant in an engine's own time zone
        ({"mode": DIRECTORY | 0o777, "mtime": "1970-01-01T01:00:00+01:00"}, True),
        ({"mode": DIRECTORY | 0o777, "mtime": "1970-01-01T00:00:00.000000001Z"}, False),
        ({"mode": DIRECTORY | 0o777, "mtime": "yesterday"}, False),
        ({"mode": DIRECTORY | 0o777, "mtime": "2026-12-02T04:50:32.6Z", "linkTarget": ""}, False),
        ({"mode": 0o644, "mtime": EPOCH, "linkTarget": ""}, False),
        ({"mode": SYMLINK | 0o777, "mtime": EPOCH, "linkTarget": "/"}, False),
        ({"mtime": EPOCH}, False),
        (None, False),
    ],
)
def test_only_a_directory_as_it_was_placed_is_untouched(stat, untouched):
    assert docker_engine.is_untouched(stat) is untouched
