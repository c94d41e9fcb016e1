"""A broker's log lines keep every field they show after ``logs.setup`` trims what records
gather (run in a fresh interpreter: ``setup`` configures the whole process)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging, sys
from execbroker import logs
logs.setup("info", sys.argv[1])
with logs.bind(user="alice", offerset="os-1"):
    logging.getLogger("execbroker.service").info("offer set %s: %s", "os-1", "YES")
"""


def _line(style: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, style], capture_output=True, text=True, check=True
    )
    return done.stderr.strip()


def test_a_json_line_has_time_level_logger_message_and_bound_ids() -> None:
    line = json.loads(_line("json"))
    assert line["level"] == "INFO"
    assert line["logger"] == "execbroker.service"
    assert line["message"] == "offer set os-1: YES"
    assert (line["user"], line["offerset"]) == ("alice", "os-1")
    assert line["time"].endswith("+00:00") and "T" in line["time"]


def test_a_text_line_names_level_logger_message_and_bound_ids() -> None:
    line = _line("text")
    assert " INFO execbroker.service: offer set os-1: YES [user=alice offerset=os-1]" in line
    assert line[:4].isdigit()  # the time first
