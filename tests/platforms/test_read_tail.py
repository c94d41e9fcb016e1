"""``read_tail``: the log reader the file-based backends (local, slurm) share."""

from __future__ import annotations

import os

from execbroker.platforms.base import Logs, read_tail


def test_only_the_last_bytes_of_a_long_log_are_read(tmp_path):
    log = tmp_path / "stdout.log"
    log.write_bytes(b"old\n" * 1000 + b"new\n")
    assert read_tail(log, 8) == "old\nnew\n"
    assert read_tail(log) == log.read_text()


def test_a_log_not_written_yet_is_empty_and_a_cut_character_is_replaced(tmp_path):
    assert read_tail(tmp_path / "missing.log") == ""
    log = tmp_path / "stderr.log"
    log.write_bytes("é!".encode())
    assert read_tail(log, 2) == "\ufffd!"
    assert Logs.read(tmp_path / "missing.log", log) == Logs("", "é!")


def test_a_link_or_a_fifo_in_place_of_a_log_is_not_read(tmp_path):
    """The task owns its directory: what it puts in a log's place must not make the broker
    read a file the task could not, nor wait forever on a FIFO."""
    secret = tmp_path / "secret"
    secret.write_text("the broker's secret\n")
    link = tmp_path / "stdout.log"
    link.symlink_to(secret)
    fifo = tmp_path / "stderr.log"
    os.mkfifo(fifo)
    assert Logs.read(link, fifo) == Logs("", "")
